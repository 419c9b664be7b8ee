// Test Worker: loads the newest checkpoint of machine 0 over and over for a while and reports every
// load that returned anything but one whole, consistent checkpoint.

import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import { holdsPattern } from "../checkpoint_fixtures.ts";

onmessage = async ({ data }: MessageEvent<{ buffer: SharedArrayBuffer; milliseconds: number }>) => {
  const store = InMemoryCheckpointStore.attach(data.buffer);
  const problems: string[] = [];
  let reads = 0;
  const end = performance.now() + data.milliseconds;
  while (performance.now() < end) {
    try {
      const { entry, shard } = await store.load(0);
      if (!holdsPattern(shard.tensors, entry.iteration)) {
        problems.push(`iteration ${entry.iteration} holds other values`);
      }
      reads++;
    } catch (error) {
      problems.push((error as Error).message);
    }
  }
  postMessage({ reads, problems });
};
