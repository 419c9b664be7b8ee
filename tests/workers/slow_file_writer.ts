// Test subprocess: saves checkpoint 2 of machine 0 into a file store slowly (a bandwidth cap), printing
// "writing" once it has started, so that the test can kill it with SIGKILL in the middle of the write.

import { FileCheckpointStore } from "../../core/file-store.ts";
import { patternShard } from "../checkpoint_fixtures.ts";

const store = new FileCheckpointStore(Deno.args[0], { bandwidth: 1 << 20, ioChunkBytes: 64 << 10 });
const shard = patternShard(2, 0, 1_000_000); // 12 MB at 1 MiB/s: many seconds
console.log("writing");
await store.save(0, 2, shard);
console.log("finished");
