// Test Worker: writes checkpoints 1, 2, 3, ... of machine 0 into a memory store, a piece at a time as
// chunks arriving from the network would. Once it has finished `writes` of them and the reader has read
// `reads` times (the count in the shared array's first word), it stops half way through the next write
// and posts that write's iteration, leaving the slot half written for the test to terminate it there.

import { writeShard } from "../../core/checkpoint.ts";
import { shardLayout } from "../../core/checkpoint.ts";
import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import { patternTensors, shardMeta } from "../checkpoint_fixtures.ts";

onmessage = (
  { data }: MessageEvent<
    { buffer: SharedArrayBuffer; progress: SharedArrayBuffer; floats: number; writes: number; reads: number }
  >,
) => {
  const store = InMemoryCheckpointStore.attach(data.buffer);
  const reads = new Int32Array(data.progress);
  for (let iteration = 1;; iteration++) {
    const meta = shardMeta(iteration, 0, data.floats);
    const encoded = writeShard(
      new Uint8Array(shardLayout(meta).totalBytes),
      meta,
      patternTensors(iteration, data.floats),
    );
    const slot = store.beginWrite(0, iteration, encoded.length);
    for (let at = 0; at < encoded.length; at += 64 << 10) {
      if (iteration > data.writes && Atomics.load(reads, 0) >= data.reads && at >= encoded.length / 2) {
        postMessage(iteration);
        return;
      }
      slot.bytes.set(encoded.subarray(at, at + (64 << 10)), at);
    }
    slot.commit();
  }
};
