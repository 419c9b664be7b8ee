// Sampling the next token from one row of logits, on the GPU: greedy (the first argmax) or, seeded by a
// uniform draw from the host, softmax(logits / temperature) over the top k. One workgroup: each thread
// owns the strided slice v = t, t + 256, ...; every reduction runs in a fixed tree or in thread order, so
// the same logits and draw give the same token. The top k are those at or above a threshold found by
// bisection on counts (ties at the threshold are kept); each thread's loops stay far under the 65535
// iterations llvmpipe allows an invocation.

import { type Binding, Kernel, type KernelSpec } from "./kernel.ts";

const THREADS = 256;
const BISECTIONS = 32;

const SAMPLE = {
  entryPoint: "sample",
  uniforms: { vocab: "u32", base: "u32", top_k: "u32", temperature: "f32", u: "f32" },
  // A new draw every token: one uniform buffer, rewritten.
  rewriteUniforms: true,
  storage: { logits: ["read", "f32"], token: ["read_write", "u32"] },
  code: /* wgsl */ `
var<workgroup> best: array<f32, ${THREADS}>;
var<workgroup> best_index: array<u32, ${THREADS}>;
var<workgroup> least: array<f32, ${THREADS}>;
var<workgroup> counts: array<u32, ${THREADS}>;
var<workgroup> sums: array<f32, ${THREADS}>;
var<workgroup> chosen_thread: u32;
var<workgroup> remainder: f32;

fn logit(v: u32) -> f32 { return logits[args.base + v]; }

// counts[0] = how many logits are at least tau.
fn count_at_least(t: u32, tau: f32) {
  var n = 0u;
  for (var v = t; v < args.vocab; v += ${THREADS}u) { if (logit(v) >= tau) { n++; } }
  counts[t] = n;
  for (var stride = ${THREADS / 2}u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (t < stride) { counts[t] += counts[t + stride]; }
  }
  workgroupBarrier();
}

@compute @workgroup_size(${THREADS})
fn sample(@builtin(local_invocation_id) lid: vec3<u32>) {
  let t = lid.x;
  var m = -3.0e38;
  var mi = 0u;
  var lo = 3.0e38;
  for (var v = t; v < args.vocab; v += ${THREADS}u) {
    let l = logit(v);
    if (l > m) { m = l; mi = v; }
    lo = min(lo, l);
  }
  best[t] = m;
  best_index[t] = mi;
  least[t] = lo;
  for (var stride = ${THREADS / 2}u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (t < stride) {
      let other = best[t + stride];
      let other_index = best_index[t + stride];
      if (other > best[t] || (other == best[t] && other_index < best_index[t])) {
        best[t] = other;
        best_index[t] = other_index;
      }
      least[t] = min(least[t], least[t + stride]);
    }
  }
  workgroupBarrier();
  let max_logit = best[0];
  if (args.temperature == 0.0) {
    if (t == 0u) { token[0] = best_index[0]; }
    return;
  }
  // The largest tau (to bisection's precision) with at least top_k logits at or above it.
  var tau = least[0];
  if (args.top_k > 0u && args.top_k < args.vocab) {
    var hi = max_logit;
    for (var i = 0u; i < ${BISECTIONS}u; i++) {
      let mid = tau + (hi - tau) * 0.5;
      count_at_least(t, mid);
      if (counts[0] >= args.top_k) { tau = mid; } else { hi = mid; }
      workgroupBarrier();
    }
  }
  var sum = 0.0;
  for (var v = t; v < args.vocab; v += ${THREADS}u) {
    let l = logit(v);
    if (l >= tau) { sum += exp((l - max_logit) / args.temperature); }
  }
  sums[t] = sum;
  workgroupBarrier();
  if (t == 0u) {
    var total = 0.0;
    for (var i = 0u; i < ${THREADS}u; i++) { total += sums[i]; }
    var goal = args.u * total;
    chosen_thread = ${THREADS - 1}u;
    for (var i = 0u; i < ${THREADS}u; i++) {
      if (goal < sums[i]) { chosen_thread = i; break; }
      goal -= sums[i];
    }
    remainder = goal;
    token[0] = best_index[0];  // where rounding leaves the draw past every weight
  }
  workgroupBarrier();
  if (t == chosen_thread) {
    var left = remainder;
    for (var v = t; v < args.vocab; v += ${THREADS}u) {
      let l = logit(v);
      if (l < tau) { continue; }
      left -= exp((l - max_logit) / args.temperature);
      if (left < 0.0) { token[0] = v; return; }
    }
  }
}
`,
} satisfies KernelSpec;

export interface SampleSettings {
  /** 0 samples greedily: the first argmax. */
  temperature: number;
  /** Sample among the k largest logits; 0 for all of them. */
  topK: number;
}

export class Sampler {
  readonly #kernel: Kernel<typeof SAMPLE>;

  constructor(device: GPUDevice) {
    this.#kernel = new Kernel(device, SAMPLE);
  }

  /**
   * token[0] = the token drawn from logits[base, base + vocab) with the uniform draw `u` in [0, 1). The
   * draw is a rewritten uniform: one sample per command buffer.
   */
  encode(
    pass: GPUComputePassEncoder,
    token: Binding,
    logits: Binding,
    base: number,
    vocab: number,
    u: number,
    { temperature, topK }: SampleSettings,
  ) {
    const args = { vocab, base, top_k: topK, temperature, u };
    this.#kernel.dispatch(pass, args, { logits, token }, [1]);
  }
}
