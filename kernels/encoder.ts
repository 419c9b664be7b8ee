// Token + position embedding (llm.c encoder_forward / encoder_backward).
// forward:  out[B,T,C] = wte[tokens[b,t], :] + wpe[t, :]
// backward: dwte[v,:] += sum of dout[b,t,:] over the positions whose token is v
//           dwpe[t,:] += sum over b of dout[b,t,:]
// The scatter-add of the backward is turned into a gather so that no two threads write one value:
// the host, which knows the tokens, lists for each distinct token the positions that hold it
// (`TokenBuckets`), and one thread per (token, channel) sums those positions in increasing order.
// wte may be in pieces of rows (a GPT-2 wte is bigger than one storage binding): each dispatch reads or
// writes the rows [row_start, row_end) of one piece, and leaves the tokens outside it to the others.

import { type Binding, gridFor, Kernel, type KernelSpec, perItemEntry } from "./kernel.ts";

const SIZES = {
  batch: "u32",
  time: "u32",
  channels: "u32",
  buckets: "u32",
  row_start: "u32",
  row_end: "u32",
} as const;

const ENCODER_FORWARD = {
  entryPoint: "encoder_forward",
  uniforms: SIZES,
  storage: { out: ["read_write", "f32"], tokens: ["read", "u32"], wte: ["read", "f32"], wpe: ["read", "f32"] },
  code: /* wgsl */ `
${perItemEntry("encoder_forward")} {
  let i = flat_index(wid, lid, groups);
  if (i >= args.batch * args.time * args.channels) { return; }
  let position = i / args.channels;  // b * T + t
  let c = i % args.channels;
  let t = position % args.time;
  let token = tokens[position];
  if (token < args.row_start || token >= args.row_end) { return; }
  out[i] = wte[(token - args.row_start) * args.channels + c] + wpe[t * args.channels + c];
}
`,
} satisfies KernelSpec;

// bucket_starts[j]..bucket_starts[j+1] index bucket_positions for the j-th distinct token, bucket_tokens[j].
const ENCODER_BACKWARD_WTE = {
  entryPoint: "encoder_backward_wte",
  uniforms: SIZES,
  storage: {
    dwte: ["read_write", "f32"],
    dout: ["read", "f32"],
    bucket_starts: ["read", "u32"],
    bucket_positions: ["read", "u32"],
    bucket_tokens: ["read", "u32"],
  },
  code: /* wgsl */ `
${perItemEntry("encoder_backward_wte")} {
  let i = flat_index(wid, lid, groups);
  if (i >= args.buckets * args.channels) { return; }
  let bucket = i / args.channels;
  let c = i % args.channels;
  let token = bucket_tokens[bucket];
  if (token < args.row_start || token >= args.row_end) { return; }
  var sum = 0.0;
  for (var j = bucket_starts[bucket]; j < bucket_starts[bucket + 1u]; j++) {
    sum += dout[bucket_positions[j] * args.channels + c];
  }
  dwte[(token - args.row_start) * args.channels + c] += sum;
}
`,
} satisfies KernelSpec;

const ENCODER_BACKWARD_WPE = {
  entryPoint: "encoder_backward_wpe",
  uniforms: SIZES,
  storage: { dwpe: ["read_write", "f32"], dout: ["read", "f32"] },
  code: /* wgsl */ `
${perItemEntry("encoder_backward_wpe")} {
  let i = flat_index(wid, lid, groups);  // t * C + c
  if (i >= args.time * args.channels) { return; }
  var sum = 0.0;
  for (var b = 0u; b < args.batch; b++) {
    sum += dout[b * args.time * args.channels + i];
  }
  dwpe[i] += sum;
}
`,
} satisfies KernelSpec;

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

/** The rows of wte a binding holds; by default all of them. */
export interface WteRows {
  start: number;
  end: number;
}
const ALL_ROWS: WteRows = { start: 0, end: 2 ** 32 - 1 };

function sizes(batch: number, time: number, channels: number, buckets: number, rows: WteRows) {
  return { batch, time, channels, buckets, row_start: rows.start, row_end: rows.end };
}

export class Encoder {
  readonly #forward: Kernel<typeof ENCODER_FORWARD>;
  readonly #backwardWte: Kernel<typeof ENCODER_BACKWARD_WTE>;
  readonly #backwardWpe: Kernel<typeof ENCODER_BACKWARD_WPE>;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, ENCODER_FORWARD);
    this.#backwardWte = new Kernel(device, ENCODER_BACKWARD_WTE);
    this.#backwardWpe = new Kernel(device, ENCODER_BACKWARD_WPE);
  }

  /** out[B,T,C] from tokens[B,T] (u32), wte[V,C] (or its `rows`), wpe[maxT,C]. */
  forward(
    pass: GPUComputePassEncoder,
    out: Binding,
    tokens: Binding,
    wte: Binding,
    wpe: Binding,
    batch: number,
    time: number,
    channels: number,
    rows = ALL_ROWS,
  ) {
    this.#forward.dispatch(
      pass,
      sizes(batch, time, channels, 0, rows),
      { out, tokens, wte, wpe },
      gridFor(batch * time * channels),
    );
  }

  /**
   * dwte += from dout[B,T,C], for the `rows` of wte that `dwte` holds; `buckets` holds the starts,
   * positions and tokens of `bucketTokens` in three u32 storage buffers, for `bucketCount` distinct tokens.
   */
  backwardWte(
    pass: GPUComputePassEncoder,
    dwte: Binding,
    dout: Binding,
    buckets: { starts: Binding; positions: Binding; tokens: Binding },
    bucketCount: number,
    batch: number,
    time: number,
    channels: number,
    rows = ALL_ROWS,
  ) {
    this.#backwardWte.dispatch(
      pass,
      sizes(batch, time, channels, bucketCount, rows),
      { dwte, dout, bucket_starts: buckets.starts, bucket_positions: buckets.positions, bucket_tokens: buckets.tokens },
      gridFor(bucketCount * channels),
    );
  }

  /** dwpe += from dout[B,T,C]. */
  backwardWpe(
    pass: GPUComputePassEncoder,
    dwpe: Binding,
    dout: Binding,
    batch: number,
    time: number,
    channels: number,
  ) {
    this.#backwardWpe.dispatch(
      pass,
      sizes(batch, time, channels, 0, ALL_ROWS),
      { dwpe, dout },
      gridFor(time * channels),
    );
  }
}
