// GELU, tanh approximation (GPT-2's "gelu_new"; llm.c gelu_forward / gelu_backward).
// forward:  out[N] = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))
// backward: dx[N] += dout * d out/dx
// WGSL's tanh may overflow to NaN for large arguments on some implementations, and NaN checks are not
// reliable there, so tanh is computed from exp on a clamped argument (|u| >= 10 is ±1 in f32 anyway).

import { type Binding, gridFor, Kernel, type KernelSpec, perItemEntry } from "./kernel.ts";

const GELU_COMMON = /* wgsl */ `
const SQRT_2_OVER_PI: f32 = 0.7978845608028654;

fn safe_tanh(u: f32) -> f32 {
  let e = exp(2.0 * clamp(u, -10.0, 10.0));
  return (e - 1.0) / (e + 1.0);
}`;

const GELU_FORWARD = {
  entryPoint: "gelu_forward",
  uniforms: { n: "u32" },
  storage: { out: ["read_write", "f32"], x: ["read", "f32"] },
  code: /* wgsl */ `${GELU_COMMON}

${perItemEntry("gelu_forward")} {
  let i = flat_index(wid, lid, groups);
  if (i >= args.n) { return; }
  let v = x[i];
  out[i] = 0.5 * v * (1.0 + safe_tanh(SQRT_2_OVER_PI * (v + 0.044715 * v * v * v)));
}
`,
} satisfies KernelSpec;

const GELU_BACKWARD = {
  entryPoint: "gelu_backward",
  uniforms: { n: "u32" },
  storage: { dx: ["read_write", "f32"], x: ["read", "f32"], dout: ["read", "f32"] },
  code: /* wgsl */ `${GELU_COMMON}

${perItemEntry("gelu_backward")} {
  let i = flat_index(wid, lid, groups);
  if (i >= args.n) { return; }
  let v = x[i];
  let u = SQRT_2_OVER_PI * (v + 0.044715 * v * v * v);
  let th = safe_tanh(u);
  let sech2 = 1.0 - th * th;
  let local_grad = 0.5 * (1.0 + th) + 0.5 * v * sech2 * SQRT_2_OVER_PI * (1.0 + 3.0 * 0.044715 * v * v);
  dx[i] += local_grad * dout[i];
}
`,
} satisfies KernelSpec;

export class Gelu {
  readonly #forward: Kernel<typeof GELU_FORWARD>;
  readonly #backward: Kernel<typeof GELU_BACKWARD>;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, GELU_FORWARD);
    this.#backward = new Kernel(device, GELU_BACKWARD);
  }

  /** out[n] = gelu(x[n]) */
  forward(pass: GPUComputePassEncoder, out: Binding, x: Binding, n: number) {
    this.#forward.dispatch(pass, { n }, { out, x }, gridFor(n));
  }

  /** dx[n] += gelu'(x[n]) * dout[n] */
  backward(pass: GPUComputePassEncoder, dx: Binding, x: Binding, dout: Binding, n: number) {
    this.#backward.dispatch(pass, { n }, { dx, x, dout }, gridFor(n));
  }
}
