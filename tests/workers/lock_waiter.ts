// Test Worker: attaches a memory store and saves a first checkpoint of machine `owner` there, which takes
// the arena's lock, posting "saving" just before and the iteration saved (or the error) once done. Its
// clocks leap a day at every reading, so that a lock broken after any length of time is broken at once.

import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import { patternShard } from "../checkpoint_fixtures.ts";

const DAY = 86_400_000;
let leaps = 0;
const dateNow = Date.now, performanceNow = performance.now.bind(performance);
Date.now = () => dateNow() + DAY * ++leaps;
performance.now = () => performanceNow() + DAY * ++leaps;

onmessage = async ({ data }: MessageEvent<{ buffer: SharedArrayBuffer; owner: number }>) => {
  const store = InMemoryCheckpointStore.attach(data.buffer);
  const shard = patternShard(1, data.owner);
  postMessage("saving");
  try {
    postMessage((await store.save(data.owner, 1, shard)).iteration);
  } catch (error) {
    postMessage((error as Error).message);
  }
};
