// LayerNorm over the channels of each position (llm.c layernorm_forward / layernorm_backward), eps 1e-5.
// forward:  out[R,C] = (x - mean) * rstd * weight + bias; keeps mean[R] and rstd[R] for the backward.
// backward: dx[R,C] += (weight*dout - mean(weight*dout) - norm * mean(weight*dout*norm)) * rstd
//           dweight[C] += sum over rows of dout*norm; dbias[C] += sum over rows of dout
// One thread per row for the row-wise parts and one thread per channel for the sums over rows,
// each looping in a fixed order: no atomics, same result every run.

import { type Binding, gridFor, Kernel, type KernelSpec, perItemEntry } from "./kernel.ts";

const SIZES = { rows: "u32", channels: "u32" } as const;

const LAYERNORM_FORWARD = {
  entryPoint: "layernorm_forward",
  uniforms: SIZES,
  storage: {
    out: ["read_write", "f32"],
    mean: ["read_write", "f32"],
    rstd: ["read_write", "f32"],
    x: ["read", "f32"],
    weight: ["read", "f32"],
    bias: ["read", "f32"],
  },
  code: /* wgsl */ `
${perItemEntry("layernorm_forward")} {
  let row = flat_index(wid, lid, groups);
  if (row >= args.rows) { return; }
  let base = row * args.channels;
  let n = f32(args.channels);
  var sum = 0.0;
  for (var c = 0u; c < args.channels; c++) { sum += x[base + c]; }
  let m = sum / n;
  var squares = 0.0;
  for (var c = 0u; c < args.channels; c++) { let d = x[base + c] - m; squares += d * d; }
  let s = 1.0 / sqrt(squares / n + 1e-5);
  for (var c = 0u; c < args.channels; c++) {
    out[base + c] = (x[base + c] - m) * s * weight[c] + bias[c];
  }
  mean[row] = m;
  rstd[row] = s;
}
`,
} satisfies KernelSpec;

const LAYERNORM_BACKWARD_INPUT = {
  entryPoint: "layernorm_backward_input",
  uniforms: SIZES,
  storage: {
    dx: ["read_write", "f32"],
    dout: ["read", "f32"],
    x: ["read", "f32"],
    weight: ["read", "f32"],
    mean: ["read", "f32"],
    rstd: ["read", "f32"],
  },
  code: /* wgsl */ `
${perItemEntry("layernorm_backward_input")} {
  let row = flat_index(wid, lid, groups);
  if (row >= args.rows) { return; }
  let base = row * args.channels;
  let m = mean[row];
  let s = rstd[row];
  var dnorm_mean = 0.0;
  var dnorm_norm_mean = 0.0;
  for (var c = 0u; c < args.channels; c++) {
    let dnorm = weight[c] * dout[base + c];
    dnorm_mean += dnorm;
    dnorm_norm_mean += dnorm * (x[base + c] - m) * s;
  }
  dnorm_mean /= f32(args.channels);
  dnorm_norm_mean /= f32(args.channels);
  for (var c = 0u; c < args.channels; c++) {
    let norm = (x[base + c] - m) * s;
    dx[base + c] += (weight[c] * dout[base + c] - dnorm_mean - norm * dnorm_norm_mean) * s;
  }
}
`,
} satisfies KernelSpec;

const LAYERNORM_BACKWARD_PARAMS = {
  entryPoint: "layernorm_backward_params",
  uniforms: SIZES,
  storage: {
    dweight: ["read_write", "f32"],
    dbias: ["read_write", "f32"],
    dout: ["read", "f32"],
    x: ["read", "f32"],
    mean: ["read", "f32"],
    rstd: ["read", "f32"],
  },
  code: /* wgsl */ `
${perItemEntry("layernorm_backward_params")} {
  let c = flat_index(wid, lid, groups);
  if (c >= args.channels) { return; }
  var dw = 0.0;
  var db = 0.0;
  for (var row = 0u; row < args.rows; row++) {
    let i = row * args.channels + c;
    dw += dout[i] * (x[i] - mean[row]) * rstd[row];
    db += dout[i];
  }
  dweight[c] += dw;
  dbias[c] += db;
}
`,
} satisfies KernelSpec;

export class LayerNorm {
  readonly #forward: Kernel<typeof LAYERNORM_FORWARD>;
  readonly #backwardInput: Kernel<typeof LAYERNORM_BACKWARD_INPUT>;
  readonly #backwardParams: Kernel<typeof LAYERNORM_BACKWARD_PARAMS>;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, LAYERNORM_FORWARD);
    this.#backwardInput = new Kernel(device, LAYERNORM_BACKWARD_INPUT);
    this.#backwardParams = new Kernel(device, LAYERNORM_BACKWARD_PARAMS);
  }

  /** out[R,C], mean[R], rstd[R] from x[R,C], weight[C], bias[C]. */
  forward(
    pass: GPUComputePassEncoder,
    out: Binding,
    mean: Binding,
    rstd: Binding,
    x: Binding,
    weight: Binding,
    bias: Binding,
    rows: number,
    channels: number,
  ) {
    this.#forward.dispatch(pass, { rows, channels }, { out, mean, rstd, x, weight, bias }, gridFor(rows));
  }

  /** dx[R,C] +=, dweight[C] +=, dbias[C] += from dout[R,C] and the forward's x, weight, mean, rstd. */
  backward(
    pass: GPUComputePassEncoder,
    dx: Binding,
    dweight: Binding,
    dbias: Binding,
    dout: Binding,
    x: Binding,
    weight: Binding,
    mean: Binding,
    rstd: Binding,
    rows: number,
    channels: number,
  ) {
    const sizes = { rows, channels };
    this.#backwardInput.dispatch(pass, sizes, { dx, dout, x, weight, mean, rstd }, gridFor(rows));
    this.#backwardParams.dispatch(pass, sizes, { dweight, dbias, dout, x, mean, rstd }, gridFor(channels));
  }
}
