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

import { type Binding, gridFor, Kernel, perItemEntry } from "./kernel.ts";

const SIZES = /* wgsl */ `
struct Sizes { batch: u32, time: u32, channels: u32, heads: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;

// Thread i works on head h of position t of sequence b, i = ((b * T) + t) * NH + h.
struct Item { b: u32, t: u32, h: u32, hs: u32, scale: f32 }
fn item_of(i: u32) -> Item {
  let hs = sizes.channels / sizes.heads;
  return Item(i / (sizes.time * sizes.heads), (i / sizes.heads) % sizes.time, i % sizes.heads, hs,
              1.0 / sqrt(f32(hs)));
}
// Offsets of the query, key and value of head h at position (b, t) in qkv, and of its output in [B,T,C].
fn q_at(b: u32, t: u32, h: u32, hs: u32) -> u32 { return (b * sizes.time + t) * 3u * sizes.channels + h * hs; }
fn out_at(b: u32, t: u32, h: u32, hs: u32) -> u32 { return (b * sizes.time + t) * sizes.channels + h * hs; }
fn att_row(b: u32, h: u32, t: u32) -> u32 { return ((b * sizes.heads + h) * sizes.time + t) * sizes.time; }`;

const ATTENTION_FORWARD_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> att: array<f32>;
@group(0) @binding(3) var<storage, read> qkv: array<f32>;

${perItemEntry("attention_forward")} {
  let i = flat_index(wid, lid, groups);
  if (i >= sizes.batch * sizes.time * sizes.heads) { return; }
  let it = item_of(i);
  let q = q_at(it.b, it.t, it.h, it.hs);
  let row = att_row(it.b, it.h, it.t);
  var max_score = -3.0e38;
  for (var t2 = 0u; t2 <= it.t; t2++) {
    let k = q_at(it.b, t2, it.h, it.hs) + sizes.channels;
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
  for (var t2 = 0u; t2 < sizes.time; t2++) {
    att[row + t2] = select(0.0, att[row + t2] * inv_sum, t2 <= it.t);
  }
  let o = out_at(it.b, it.t, it.h, it.hs);
  for (var j = 0u; j < it.hs; j++) {
    var acc = 0.0;
    for (var t2 = 0u; t2 <= it.t; t2++) {
      acc += att[row + t2] * qkv[q_at(it.b, t2, it.h, it.hs) + 2u * sizes.channels + j];
    }
    out[o + j] = acc;
  }
}
`;

// Pass 1, one thread per query position: dpre (kept in `dpre`, [B,NH,T,T]) and dq.
const ATTENTION_BACKWARD_QUERY_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(2) var<storage, read_write> dpre: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read> qkv: array<f32>;
@group(0) @binding(5) var<storage, read> att: array<f32>;

${perItemEntry("attention_backward_query")} {
  let i = flat_index(wid, lid, groups);
  if (i >= sizes.batch * sizes.time * sizes.heads) { return; }
  let it = item_of(i);
  let row = att_row(it.b, it.h, it.t);
  let o = out_at(it.b, it.t, it.h, it.hs);
  var att_dot_datt = 0.0;
  for (var t2 = 0u; t2 <= it.t; t2++) {
    let v = q_at(it.b, t2, it.h, it.hs) + 2u * sizes.channels;
    var datt = 0.0;
    for (var j = 0u; j < it.hs; j++) { datt += dout[o + j] * qkv[v + j]; }
    dpre[row + t2] = datt;
    att_dot_datt += att[row + t2] * datt;
  }
  for (var t2 = 0u; t2 < sizes.time; t2++) {
    dpre[row + t2] = select(0.0, att[row + t2] * (dpre[row + t2] - att_dot_datt), t2 <= it.t);
  }
  let q = q_at(it.b, it.t, it.h, it.hs);
  for (var j = 0u; j < it.hs; j++) {
    var acc = 0.0;
    for (var t2 = 0u; t2 <= it.t; t2++) {
      acc += dpre[row + t2] * qkv[q_at(it.b, t2, it.h, it.hs) + sizes.channels + j];
    }
    dqkv[q + j] += acc * it.scale;
  }
}
`;

// Pass 2, one thread per key position t2 (item.t): dk and dv, summing over the queries t >= t2.
const ATTENTION_BACKWARD_KEY_VALUE_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> dqkv: array<f32>;
@group(0) @binding(2) var<storage, read> dpre: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read> qkv: array<f32>;
@group(0) @binding(5) var<storage, read> att: array<f32>;

${perItemEntry("attention_backward_key_value")} {
  let i = flat_index(wid, lid, groups);
  if (i >= sizes.batch * sizes.time * sizes.heads) { return; }
  let it = item_of(i);
  let t2 = it.t;
  let k = q_at(it.b, t2, it.h, it.hs) + sizes.channels;
  let v = k + sizes.channels;
  for (var j = 0u; j < it.hs; j++) {
    var dk = 0.0;
    var dv = 0.0;
    for (var t = t2; t < sizes.time; t++) {
      let cell = att_row(it.b, it.h, t) + t2;
      dk += dpre[cell] * qkv[q_at(it.b, t, it.h, it.hs) + j];
      dv += att[cell] * dout[out_at(it.b, t, it.h, it.hs) + j];
    }
    dqkv[k + j] += dk * it.scale;
    dqkv[v + j] += dv;
  }
}
`;

export class Attention {
  readonly #forward: Kernel;
  readonly #backwardQuery: Kernel;
  readonly #backwardKeyValue: Kernel;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, "attention_forward", ATTENTION_FORWARD_WGSL);
    this.#backwardQuery = new Kernel(device, "attention_backward_query", ATTENTION_BACKWARD_QUERY_WGSL);
    this.#backwardKeyValue = new Kernel(device, "attention_backward_key_value", ATTENTION_BACKWARD_KEY_VALUE_WGSL);
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
    this.#forward.dispatch(pass, [batch, time, channels, heads], [out, att, qkv], gridFor(batch * time * heads));
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
    const sizes = [batch, time, channels, heads], grid = gridFor(batch * time * heads);
    this.#backwardQuery.dispatch(pass, sizes, [dqkv, dpre, dout, qkv, att], grid);
    this.#backwardKeyValue.dispatch(pass, sizes, [dqkv, dpre, dout, qkv, att], grid);
  }
}
