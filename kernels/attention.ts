// Causal multi-head self-attention (llm.c attention_forward / attention_backward).
// In:  qkv[B,T,3C], the query, key and value of every position side by side; head h uses channels
//      h*hs .. (h+1)*hs of each, hs = C / NH.
// forward:  att[B,NH,T,T] = softmax over t2 <= t of (q_t · k_t2) / sqrt(hs), the max subtracted first
//           (zero where t2 > t); out[B,T,C] = sum over t2 of att[t,t2] * v_t2
// backward: datt = dout_t · v_t2; dpre = att * (datt - sum(att * datt)) (softmax backward);
//           dq_t += sum over t2 of dpre[t,t2] k_t2 / sqrt(hs); dk_t2 += sum over t of dpre[t,t2] q_t / sqrt(hs);
//           dv_t2 += sum over t of att[t,t2] dout_t
// The backward's sums over t are scatter-adds in llm.c; here one kernel owns dq (one thread per query
// position) and a second owns dk and dv (one thread per key position), each summing in a fixed order.
// The causal mask is a loop bound, never a -inf: implementations may assume there are no infinities.

import { type Binding, gridFor, Kernel, type KernelSpec, perItemEntry } from "./kernel.ts";

const SIZES = { batch: "u32", time: "u32", channels: "u32", heads: "u32" } as const;

const HELPERS = /* wgsl */ `
// Thread i works on head h of position t of sequence b, i = ((b * T) + t) * NH + h.
struct Item { b: u32, t: u32, h: u32, hs: u32, scale: f32 }
fn item_of(i: u32) -> Item {
  let hs = args.channels / args.heads;
  return Item(i / (args.time * args.heads), (i / args.heads) % args.time, i % args.heads, hs,
              1.0 / sqrt(f32(hs)));
}
// Offsets of the query, key and value of head h at position (b, t) in qkv, and of its output in [B,T,C].
fn q_at(b: u32, t: u32, h: u32, hs: u32) -> u32 { return (b * args.time + t) * 3u * args.channels + h * hs; }
fn out_at(b: u32, t: u32, h: u32, hs: u32) -> u32 { return (b * args.time + t) * args.channels + h * hs; }
fn att_row(b: u32, h: u32, t: u32) -> u32 { return ((b * args.heads + h) * args.time + t) * args.time; }`;

const ATTENTION_FORWARD = {
  entryPoint: "attention_forward",
  uniforms: SIZES,
  storage: { out: ["read_write", "f32"], att: ["read_write", "f32"], qkv: ["read", "f32"] },
  code: /* wgsl */ `${HELPERS}

${perItemEntry("attention_forward")} {
  let i = flat_index(wid, lid, groups);
  if (i >= args.batch * args.time * args.heads) { return; }
  let it = item_of(i);
  let q = q_at(it.b, it.t, it.h, it.hs);
  let row = att_row(it.b, it.h, it.t);
  var max_score = -3.0e38;
  for (var t2 = 0u; t2 <= it.t; t2++) {
    let k = q_at(it.b, t2, it.h, it.hs) + args.channels;
    var dot = 0.0;
    for (var j = 0u; j < it.hs; j++) { dot += qkv[q + j] * qkv[k + j]; }
    let score = dot * it.scale;
    att[row + t2] = score;
    max_score = max(max_score, score);
  }
  var sum = 0.0;
  for (var t2 = 0u; t2 <= it.t; t2++) {
    let e = exp(att[row + t2] - max_score);
    att[row + t2] = e;
    sum += e;
  }
  let inv_sum = 1.0 / sum;
  for (var t2 = 0u; t2 < args.time; t2++) {
    att[row + t2] = select(0.0, att[row + t2] * inv_sum, t2 <= it.t);
  }
  let o = out_at(it.b, it.t, it.h, it.hs);
  for (var j = 0u; j < it.hs; j++) {
    var acc = 0.0;
    for (var t2 = 0u; t2 <= it.t; t2++) {
      acc += att[row + t2] * qkv[q_at(it.b, t2, it.h, it.hs) + 2u * args.channels + j];
    }
    out[o + j] = acc;
  }
}
`,
} satisfies KernelSpec;

// Pass 1, one thread per query position: dpre (kept in `dpre`, [B,NH,T,T]) and dq.
const ATTENTION_BACKWARD_QUERY = {
  entryPoint: "attention_backward_query",
  uniforms: SIZES,
  storage: {
    dqkv: ["read_write", "f32"],
    dpre: ["read_write", "f32"],
    dout: ["read", "f32"],
    qkv: ["read", "f32"],
    att: ["read", "f32"],
  },
  code: /* wgsl */ `${HELPERS}

${perItemEntry("attention_backward_query")} {
  let i = flat_index(wid, lid, groups);
  if (i >= args.batch * args.time * args.heads) { return; }
  let it = item_of(i);
  let row = att_row(it.b, it.h, it.t);
  let o = out_at(it.b, it.t, it.h, it.hs);
  var att_dot_datt = 0.0;
  for (var t2 = 0u; t2 <= it.t; t2++) {
    let v = q_at(it.b, t2, it.h, it.hs) + 2u * args.channels;
    var datt = 0.0;
    for (var j = 0u; j < it.hs; j++) { datt += dout[o + j] * qkv[v + j]; }
    dpre[row + t2] = datt;
    att_dot_datt += att[row + t2] * datt;
  }
  for (var t2 = 0u; t2 < args.time; t2++) {
    dpre[row + t2] = select(0.0, att[row + t2] * (dpre[row + t2] - att_dot_datt), t2 <= it.t);
  }
  let q = q_at(it.b, it.t, it.h, it.hs);
  for (var j = 0u; j < it.hs; j++) {
    var acc = 0.0;
    for (var t2 = 0u; t2 <= it.t; t2++) {
      acc += dpre[row + t2] * qkv[q_at(it.b, t2, it.h, it.hs) + args.channels + j];
    }
    dqkv[q + j] += acc * it.scale;
  }
}
`,
} satisfies KernelSpec;

// Pass 2, one thread per key position t2 (item.t): dk and dv, summing over the queries t >= t2.
const ATTENTION_BACKWARD_KEY_VALUE = {
  entryPoint: "attention_backward_key_value",
  uniforms: SIZES,
  storage: {
    dqkv: ["read_write", "f32"],
    dpre: ["read", "f32"],
    dout: ["read", "f32"],
    qkv: ["read", "f32"],
    att: ["read", "f32"],
  },
  code: /* wgsl */ `${HELPERS}

${perItemEntry("attention_backward_key_value")} {
  let i = flat_index(wid, lid, groups);
  if (i >= args.batch * args.time * args.heads) { return; }
  let it = item_of(i);
  let t2 = it.t;
  let k = q_at(it.b, t2, it.h, it.hs) + args.channels;
  let v = k + args.channels;
  for (var j = 0u; j < it.hs; j++) {
    var dk = 0.0;
    var dv = 0.0;
    for (var t = t2; t < args.time; t++) {
      let cell = att_row(it.b, it.h, t) + t2;
      dk += dpre[cell] * qkv[q_at(it.b, t, it.h, it.hs) + j];
      dv += att[cell] * dout[out_at(it.b, t, it.h, it.hs) + j];
    }
    dqkv[k + j] += dk * it.scale;
    dqkv[v + j] += dv;
  }
}
`,
} satisfies KernelSpec;

export class Attention {
  readonly #forward: Kernel<typeof ATTENTION_FORWARD>;
  readonly #backwardQuery: Kernel<typeof ATTENTION_BACKWARD_QUERY>;
  readonly #backwardKeyValue: Kernel<typeof ATTENTION_BACKWARD_KEY_VALUE>;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, ATTENTION_FORWARD);
    this.#backwardQuery = new Kernel(device, ATTENTION_BACKWARD_QUERY);
    this.#backwardKeyValue = new Kernel(device, ATTENTION_BACKWARD_KEY_VALUE);
  }

  /** out[B,T,C] and att[B,NH,T,T] from qkv[B,T,3C]. */
  forward(
    pass: GPUComputePassEncoder,
    out: Binding,
    att: Binding,
    qkv: Binding,
    batch: number,
    time: number,
    channels: number,
    heads: number,
  ) {
    this.#forward.dispatch(pass, { batch, time, channels, heads }, { out, att, qkv }, gridFor(batch * time * heads));
  }

  /** dqkv[B,T,3C] += from dout[B,T,C] and the forward's qkv and att; dpre[B,NH,T,T] is scratch. */
  backward(
    pass: GPUComputePassEncoder,
    dqkv: Binding,
    dpre: Binding,
    dout: Binding,
    qkv: Binding,
    att: Binding,
    batch: number,
    time: number,
    channels: number,
    heads: number,
  ) {
    const sizes = { batch, time, channels, heads }, grid = gridFor(batch * time * heads);
    this.#backwardQuery.dispatch(pass, sizes, { dqkv, dpre, dout, qkv, att }, grid);
    this.#backwardKeyValue.dispatch(pass, sizes, { dqkv, dpre, dout, qkv, att }, grid);
  }
}
