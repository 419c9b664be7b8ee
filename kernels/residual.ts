// Residual connection (llm.c residual_forward / residual_backward).
// forward:  out[N] = a[N] + b[N]
// backward: dA[N] += dOut[N]; dB[N] += dOut[N]   (the gradient passes through both branches)
// Each thread owns one element of every output, so there is no race and no atomic.

import { type Binding, gridFor, Kernel, perItemEntry } from "./kernel.ts";

const RESIDUAL_WGSL = /* wgsl */ `
struct Sizes { n: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

${perItemEntry("residual_forward")} {
  let i = flat_index(wid, lid, groups);
  if (i < sizes.n) { out[i] = a[i] + b[i]; }
}
`;

const RESIDUAL_BACKWARD_WGSL = /* wgsl */ `
struct Sizes { n: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;

@group(0) @binding(1) var<storage, read_write> d_a: array<f32>;
@group(0) @binding(2) var<storage, read_write> d_b: array<f32>;
@group(0) @binding(3) var<storage, read> d_out: array<f32>;

${perItemEntry("residual_backward")} {
  let i = flat_index(wid, lid, groups);
  if (i < sizes.n) {
    d_a[i] += d_out[i];
    d_b[i] += d_out[i];
  }
}
`;

export class Residual {
  readonly #forward: Kernel;
  readonly #backward: Kernel;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, "residual_forward", RESIDUAL_WGSL);
    this.#backward = new Kernel(device, "residual_backward", RESIDUAL_BACKWARD_WGSL);
  }

  /** out[n] = a[n] + b[n] */
  forward(pass: GPUComputePassEncoder, out: Binding, a: Binding, b: Binding, n: number) {
    this.#forward.dispatch(pass, [n], [out, a, b], gridFor(n));
  }

  /** dA[n] += dOut[n]; dB[n] += dOut[n] */
  backward(pass: GPUComputePassEncoder, dA: Binding, dB: Binding, dOut: Binding, n: number) {
    this.#backward.dispatch(pass, [n], [dA, dB, dOut], gridFor(n));
  }
}
