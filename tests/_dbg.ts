import { InMemoryCheckpointStore } from "../core/memory-store.ts";
import { patternShard } from "./checkpoint_fixtures.ts";
const store = InMemoryCheckpointStore.create(0, 64 << 20);
await store.save(0, 0, patternShard(0, 0, 200_000));
const progress = new Int32Array(new SharedArrayBuffer(8));
const writer = new Worker(new URL("./workers/checkpoint_writer.ts", import.meta.url), { type: "module" });
writer.postMessage({ buffer: store.buffer, progress: progress.buffer, floats: 200_000 });
for (let i = 0; i < 20; i++) {
  await new Promise((r) => setTimeout(r, 50));
  console.log(i, progress[0], progress[1], (await store.entries(0)).map((e) => e.iteration));
  if (i == 8) {
    writer.terminate();
    console.log("terminated");
  }
}
