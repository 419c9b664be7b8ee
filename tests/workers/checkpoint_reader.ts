// Test Worker: loads the newest checkpoint of machine 0 over and over, counting its reads in the shared
// array's first word, until the test has set a count to reach in its second word and it is reached; then
// reports every load that returned anything but one whole, consistent checkpoint.

import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import { holdsPattern } from "../checkpoint_fixtures.ts";

onmessage = async ({ data }: MessageEvent<{ buffer: SharedArrayBuffer; progress: SharedArrayBuffer }>) => {
  const store = InMemoryCheckpointStore.attach(data.buffer);
  const progress = new Int32Array(data.progress); // [reads, reads to reach (0 until the test sets it)]
  const problems: string[] = [];
  for (let reads = 0, until = 0; until === 0 || reads < until; until = Atomics.load(progress, 1)) {
    try {
      const { entry, shard } = await store.load(0);
      if (!holdsPattern(shard.tensors, entry.iteration)) {
        problems.push(`iteration ${entry.iteration} holds other values`);
      }
    } catch (error) {
      problems.push((error as Error).message);
    }
    Atomics.store(progress, 0, ++reads);
  }
  postMessage(problems);
};
