// Token + position embedding (llm.c encoder_forward / encoder_backward).
// forward:  out[B,T,C] = wte[tokens[b,t], :] + wpe[t, :]
// backward: dwte[v,:] += sum of dout[b,t,:] over the positions whose token is v
//           dwpe[t,:] += sum over b of dout[b,t,:]
// The scatter-add of the backward is turned into a gather so that no two threads write one value:
// the host, which knows the tokens, lists for each distinct token the positions that hold it
// (`TokenBuckets`), and one thread per (token, channel) sums those positions in increasing order.

import { type Binding, gridFor, Kernel, perItemEntry } from "./kernel.ts";

const SIZES = /* wgsl */ `
struct Sizes { batch: u32, time: u32, channels: u32, buckets: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;`;

const ENCODER_FORWARD_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> tokens: array<u32>;
@group(0) @binding(3) var<storage, read> wte: array<f32>;
@group(0) @binding(4) var<storage, read> wpe: array<f32>;

${perItemEntry("encoder_forward")} {
  let i = flat_index(wid, lid, groups);
  if (i >= sizes.batch * sizes.time * sizes.channels) { return; }
  let position = i / sizes.channels;  // b * T + t
  let c = i % sizes.channels;
  let t = position % sizes.time;
  out[i] = wte[tokens[position] * sizes.channels + c] + wpe[t * sizes.channels + c];
}
`;

// bucket_starts[j]..bucket_starts[j+1] index bucket_positions for the j-th distinct token, bucket_tokens[j].
const ENCODER_BACKWARD_WTE_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> dwte: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> bucket_starts: array<u32>;
@group(0) @binding(4) var<storage, read> bucket_positions: array<u32>;
@group(0) @binding(5) var<storage, read> bucket_tokens: array<u32>;

${perItemEntry("encoder_backward_wte")} {
  let i = flat_index(wid, lid, groups);
  if (i >= sizes.buckets * sizes.channels) { return; }
  let bucket = i / sizes.channels;
  let c = i % sizes.channels;
  var sum = 0.0;
  for (var j = bucket_starts[bucket]; j < bucket_starts[bucket + 1u]; j++) {
    sum += dout[bucket_positions[j] * sizes.channels + c];
  }
  dwte[bucket_tokens[bucket] * sizes.channels + c] += sum;
}
`;

const ENCODER_BACKWARD_WPE_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> dwpe: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;

${perItemEntry("encoder_backward_wpe")} {
  let i = flat_index(wid, lid, groups);  // t * C + c
  if (i >= sizes.time * sizes.channels) { return; }
  var sum = 0.0;
  for (var b = 0u; b < sizes.batch; b++) {
    sum += dout[b * sizes.time * sizes.channels + i];
  }
  dwpe[i] += sum;
}
`;

/** The positions of each distinct token of a batch, in the CSR layout the wte backward reads. */
export interface TokenBuckets {
  /** starts[j]..starts[j+1] are bucket j's entries in `positions`; length buckets + 1. */
  starts: Uint32Array;
  /** b*T + t of every position, grouped by token, increasing within a bucket. */
  positions: Uint32Array;
  /** The token of each bucket. */
  tokens: Uint32Array;
}

/** Groups the positions of `tokens` (one batch, flattened [B*T]) by token id. */
export function bucketTokens(tokens: ArrayLike<number>): TokenBuckets {
  const byToken = new Map<number, number[]>();
  for (let position = 0; position < tokens.length; position++) {
    const list = byToken.get(tokens[position]);
    if (list) list.push(position);
    else byToken.set(tokens[position], [position]);
  }
  const ids = [...byToken.keys()].sort((a, b) => a - b);
  const starts = new Uint32Array(ids.length + 1);
  const positions = new Uint32Array(tokens.length);
  let next = 0;
  ids.forEach((id, j) => {
    starts[j] = next;
    for (const position of byToken.get(id)!) positions[next++] = position;
  });
  starts[ids.length] = next;
  return { starts, positions, tokens: Uint32Array.from(ids) };
}

export class Encoder {
  readonly #forward: Kernel;
  readonly #backwardWte: Kernel;
  readonly #backwardWpe: Kernel;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, "encoder_forward", ENCODER_FORWARD_WGSL);
    this.#backwardWte = new Kernel(device, "encoder_backward_wte", ENCODER_BACKWARD_WTE_WGSL);
    this.#backwardWpe = new Kernel(device, "encoder_backward_wpe", ENCODER_BACKWARD_WPE_WGSL);
  }

  /** out[B,T,C] from tokens[B,T] (u32), wte[V,C], wpe[maxT,C]. */
  forward(
    pass: GPUComputePassEncoder,
    out: Binding,
    tokens: Binding,
    wte: Binding,
    wpe: Binding,
    batch: number,
    time: number,
    channels: number,
  ) {
    this.#forward.dispatch(pass, [batch, time, channels, 0], [out, tokens, wte, wpe], gridFor(batch * time * channels));
  }

  /**
   * dwte += and dwpe += from dout[B,T,C]; `buckets` holds the starts, positions and tokens of
   * `bucketTokens` in three u32 storage buffers, for `bucketCount` distinct tokens.
   */
  backward(
    pass: GPUComputePassEncoder,
    dwte: Binding,
    dwpe: Binding,
    dout: Binding,
    buckets: { starts: Binding; positions: Binding; tokens: Binding },
    bucketCount: number,
    batch: number,
    time: number,
    channels: number,
  ) {
    const sizes = [batch, time, channels, bucketCount];
    this.#backwardWte.dispatch(
      pass,
      sizes,
      [dwte, dout, buckets.starts, buckets.positions, buckets.tokens],
      gridFor(bucketCount * channels),
    );
    this.#backwardWpe.dispatch(pass, sizes, [dwpe, dout], gridFor(time * channels));
  }
}
