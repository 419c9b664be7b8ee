// Residual connection (llm.c residual_forward / residual_backward).
// forward:  out[N] = a[N] + b[N]
// backward: dA[N] += dOut[N]; dB[N] += dOut[N]   (the gradient passes through both branches)
// Each thread owns one element of every output, so there is no race and no atomic.

import { type Binding, gridFor, Kernel, type KernelSpec, perItemEntry } from "./kernel.ts";

const RESIDUAL_FORWARD = {
  entryPoint: "residual_forward",
  uniforms: { n: "u32" },
  storage: { out: ["read_write", "f32"], a: ["read", "f32"], b: ["read", "f32"] },
  code: /* wgsl */ `
${perItemEntry("residual_forward")} {
  let i = flat_index(wid, lid, groups);
  if (i < args.n) { out[i] = a[i] + b[i]; }
}
`,
} satisfies KernelSpec;

const RESIDUAL_BACKWARD = {
  entryPoint: "residual_backward",
  uniforms: { n: "u32" },
  storage: { d_a: ["read_write", "f32"], d_b: ["read_write", "f32"], d_out: ["read", "f32"] },
  code: /* wgsl */ `
${perItemEntry("residual_backward")} {
  let i = flat_index(wid, lid, groups);
  if (i < args.n) {
    d_a[i] += d_out[i];
    d_b[i] += d_out[i];
  }
}
`,
} satisfies KernelSpec;

export class Residual {
  readonly #forward: Kernel<typeof RESIDUAL_FORWARD>;
  readonly #backward: Kernel<typeof RESIDUAL_BACKWARD>;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, RESIDUAL_FORWARD);
    this.#backward = new Kernel(device, RESIDUAL_BACKWARD);
  }

  /** out[n] = a[n] + b[n] */
  forward(pass: GPUComputePassEncoder, out: Binding, a: Binding, b: Binding, n: number) {
    this.#forward.dispatch(pass, { n }, { out, a, b }, gridFor(n));
  }

  /** dA[n] += dOut[n]; dB[n] += dOut[n] */
  backward(pass: GPUComputePassEncoder, dA: Binding, dB: Binding, dOut: Binding, n: number) {
    this.#backward.dispatch(pass, { n }, { d_a: dA, d_b: dB, d_out: dOut }, gridFor(n));
  }
}
