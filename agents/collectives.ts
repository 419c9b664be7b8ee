// The collectives of sharded data-parallel training, over the simulated network in a fixed ring order,
// so that every sum is taken in the same order in every run (the float results are then bit-identical
// whatever failures happened in between, for the same number of machines).
//
// Shards: the flat state [totalFloats] cut into N contiguous ranges (core/shard.ts).
// reduce-scatter: machine r ends with shard r of the sum over machines, divided by N. Shard c's partial
//                 sum starts at machine c+1 and travels the ring, each machine adding its own part:
//                 ((g[c+1] + g[c+2]) + ...) + g[c], in float32.
// Each takes the recovery epoch its caller began in: once a recovery has begun, it fails (AbortedError)
// instead of taking a message meant for the iteration that replaces it.
// all-gather:     every machine ends with every machine's piece, passed around the ring in N-1 steps.
// Neither holds the whole state on the host: a machine's part of a shard is read when the ring needs it,
// and each gathered piece is handed on as it arrives (at GPT-2 124M the whole state is 475 MiB).

import type { ShardRange } from "../core/shard.ts";
import type { Transport } from "./protocol/transport.ts";

const floatsOf = (bytes: Uint8Array) => new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
const bytesOf = (floats: Float32Array) => new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength);

/**
 * Machine `rank`'s shard of the mean of every machine's values [totalFloats], of which `part(c)` gives
 * this machine's part in shard c (read when the ring needs it, so that the whole is never held at once).
 */
export async function reduceScatterMean(
  network: Transport,
  part: (c: number) => Promise<Float32Array>,
  shards: ShardRange[],
  tag: string,
  epoch: number,
): Promise<Float32Array> {
  const n = shards.length, rank = network.rank;
  const next = (rank + 1) % n, previous = (rank + n - 1) % n;
  // One accumulator, summed into in place: a send copies what it sends (Transport), so it may change after.
  const accumulator = new Float32Array(Math.max(...shards.map(({ start, end }) => end - start)));
  let partial = await part((rank + n - 1) % n);
  for (let step = 0; step < n - 1; step++) {
    network.send(next, "training", "reduce-scatter", `${tag}/rs/${step}`, bytesOf(partial));
    const received = floatsOf((await network.receive(previous, `${tag}/rs/${step}`, epoch)).bytes);
    const own = await part((rank + 2 * n - 2 - step) % n);
    partial = accumulator.subarray(0, own.length);
    for (let i = 0; i < own.length; i++) partial[i] = received[i] + own[i];
  }
  const mean = n > 1 ? partial : partial.slice(); // one machine: its own values, which are the caller's
  for (let i = 0; i < mean.length; i++) mean[i] /= n;
  return mean;
}

/**
 * The ring's N-1 steps: each sends the piece it has last (its own first) and hands the one it receives to
 * `arrived` (every machine sees every machine's piece); no more than that one received piece is held.
 */
async function ring(
  network: Transport,
  count: number,
  tag: string,
  epoch: number,
  own: Uint8Array,
  arrived: (c: number, bytes: Uint8Array) => unknown,
) {
  const rank = network.rank, next = (rank + 1) % count, previous = (rank + count - 1) % count;
  let piece = own;
  for (let step = 0; step < count - 1; step++) {
    network.send(next, "training", "all-gather", `${tag}/ag/${step}`, piece);
    piece = (await network.receive(previous, `${tag}/ag/${step}`, epoch)).bytes;
    await arrived((rank + count - 1 - step) % count, piece);
  }
}

/** Every machine's `piece`, by rank (the pieces may differ in length). */
export async function allGather(
  network: Transport,
  piece: Uint8Array,
  count: number,
  tag: string,
  epoch: number,
): Promise<Uint8Array[]> {
  const pieces: Uint8Array[] = new Array(count);
  pieces[network.rank] = piece;
  await ring(network, count, tag, epoch, piece, (c, bytes) => pieces[c] = bytes);
  return pieces;
}

/**
 * Every machine's shard of the flat state, handed to `arrived` with the shard's index: this machine's own
 * first, then each as it arrives, before it is passed on (so `arrived` must not change it).
 */
export async function allGatherShards(
  network: Transport,
  shard: Float32Array,
  shards: ShardRange[],
  tag: string,
  epoch: number,
  arrived: (c: number, values: Float32Array) => unknown,
): Promise<void> {
  await arrived(network.rank, shard);
  await ring(network, shards.length, tag, epoch, bytesOf(shard), (c, bytes) => arrived(c, floatsOf(bytes)));
}

/** The sum, in rank order, of one number from each machine. */
export async function allSum(
  network: Transport,
  value: number,
  count: number,
  tag: string,
  epoch: number,
): Promise<number> {
  const pieces = await allGather(network, new Uint8Array(Float64Array.of(value).buffer), count, tag, epoch);
  return pieces.reduce((sum, piece) => sum + new Float64Array(piece.slice().buffer)[0], 0);
}
