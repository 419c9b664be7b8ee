// Shards for the checkpoint tests: small, seeded, and recognisable from their iteration alone.

import { encodeShard, type ShardMeta, type ShardTensors } from "../core/checkpoint.ts";
import type { GPT2Config } from "../core/model.ts";

export const CONFIG: GPT2Config = { vocab_size: 97, n_ctx: 16, n_embd: 48, n_head: 3, n_layer: 2 };

/** Metadata of the shard machine `owner` holds (of 4, `floats` each) at `iteration`, in small chunks so that there are many. */
export function shardMeta(iteration: number, owner = 0, floats = 10_000, chunkBytes = 4096): ShardMeta {
  return {
    config: CONFIG,
    iteration,
    data: { position: iteration, rng: 12345 + iteration },
    owner,
    shard: { index: owner, count: 4, start: owner * floats, end: (owner + 1) * floats, totalFloats: 4 * floats },
    chunkBytes,
    createdAt: 1_700_000_000_000 + iteration,
  };
}

/** Tensors whose every value says which iteration (and tensor) they belong to. */
export function patternTensors(iteration: number, floats = 10_000): ShardTensors {
  return {
    params: new Float32Array(floats).fill(iteration + 0.25),
    m: new Float32Array(floats).fill(iteration + 0.5),
    v: new Float32Array(floats).fill(iteration + 0.75),
  };
}

export function patternShard(iteration: number, owner = 0, floats = 10_000): Uint8Array {
  return encodeShard(shardMeta(iteration, owner, floats), patternTensors(iteration, floats));
}

/** True when every value of the tensors is the pattern of `iteration`. */
export function holdsPattern(tensors: ShardTensors, iteration: number): boolean {
  const is = (value: number) => (x: number) => x === Math.fround(value); // as the f32 tensors hold it
  return tensors.params.every(is(iteration + 0.25)) && tensors.m.every(is(iteration + 0.5)) &&
    tensors.v.every(is(iteration + 0.75));
}
