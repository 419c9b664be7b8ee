// Test Worker: writes checkpoints 1, 2, 3, ... into a memory store as slowly as a large state would go,
// a chunk at a time, recording each as started and finished in a shared progress array, until it is
// terminated.

import { writeShard } from "../../core/checkpoint.ts";
import { shardLayout } from "../../core/checkpoint.ts";
import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import { patternTensors, shardMeta } from "../checkpoint_fixtures.ts";

onmessage = async (
  { data }: MessageEvent<{ buffer: SharedArrayBuffer; progress: SharedArrayBuffer; floats: number }>,
) => {
  const store = InMemoryCheckpointStore.attach(data.buffer);
  const progress = new Int32Array(data.progress); // [started, finished]
  for (let iteration = 1;; iteration++) {
    const meta = shardMeta(iteration, 0, data.floats);
    const encoded = writeShard(
      new Uint8Array(shardLayout(meta).totalBytes),
      meta,
      patternTensors(iteration, data.floats),
    );
    Atomics.store(progress, 0, iteration);
    // Copy in pieces with pauses, as chunks arriving from the network would, so that termination lands
    // in the middle of a write.
    const slot = store.beginWrite(0, iteration, encoded.length);
    for (let at = 0; at < encoded.length; at += 64 << 10) {
      slot.bytes.set(encoded.subarray(at, at + (64 << 10)), at);
      await new Promise((resolve) => setTimeout(resolve, 1));
    }
    slot.commit();
    Atomics.store(progress, 1, iteration);
  }
};
