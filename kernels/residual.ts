// Residual connection (llm.c residual_forward / residual_backward).
// forward:  out[N] = a[N] + b[N]
// backward: dA[N] += dOut[N]; dB[N] += dOut[N]   (the gradient passes through both branches)
// Each thread owns one element of every output, so there is no race and no atomic.

import { FLAT_INDEX_WGSL, gridFor, Kernel } from "./kernel.ts";

const RESIDUAL_WGSL = /* wgsl */ `
struct Sizes { n: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
${FLAT_INDEX_WGSL}

@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read> a: array<f32>;
@group(0) @binding(3) var<storage, read> b: array<f32>;

@compute @workgroup_size(256)
fn residual_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                    @builtin(num_workgroups) groups: vec3<u32>) {
  let i = flat_index(wid, lid, groups);
  if (i < sizes.n) { out[i] = a[i] + b[i]; }
}
`;

const RESIDUAL_BACKWARD_WGSL = /* wgsl */ `
struct Sizes { n: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
${FLAT_INDEX_WGSL}

@group(0) @binding(1) var<storage, read_write> d_a: array<f32>;
@group(0) @binding(2) var<storage, read_write> d_b: array<f32>;
@group(0) @binding(3) var<storage, read> d_out: array<f32>;

@compute @workgroup_size(256)
fn residual_backward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
                     @builtin(num_workgroups) groups: vec3<u32>) {
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
    this.#forward = new Kernel(device, "residual_forward", RESIDUAL_WGSL, "residual_forward");
    this.#backward = new Kernel(device, "residual_backward", RESIDUAL_BACKWARD_WGSL, "residual_backward");
  }

  /** out[n] = a[n] + b[n] */
  forward(pass: GPUComputePassEncoder, out: GPUBuffer, a: GPUBuffer, b: GPUBuffer, n: number) {
    this.#forward.dispatch(pass, [n], [out, a, b], gridFor(n));
  }

  /** dA[n] += dOut[n]; dB[n] += dOut[n] */
  backward(pass: GPUComputePassEncoder, dA: GPUBuffer, dB: GPUBuffer, dOut: GPUBuffer, n: number) {
    this.#backward.dispatch(pass, [n], [dA, dB, dOut], gridFor(n));
  }
}
