// LayerNorm over the channels of each position (llm.c layernorm_forward / layernorm_backward), eps 1e-5.
// forward:  out[R,C] = (x - mean) * rstd * weight + bias; keeps mean[R] and rstd[R] for the backward.
// backward: dx[R,C] += (weight*dout - mean(weight*dout) - norm * mean(weight*dout*norm)) * rstd
//           dweight[C] += sum over rows of dout*norm; dbias[C] += sum over rows of dout
// One thread per row for the row-wise parts and one thread per channel for the sums over rows,
// each looping in a fixed order: no atomics, same result every run.

import { Binding, gridFor, Kernel, perItemEntry } from "./kernel.ts";

const SIZES = /* wgsl */ `
struct Sizes { rows: u32, channels: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;`;

const LAYERNORM_FORWARD_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> out: array<f32>;
@group(0) @binding(2) var<storage, read_write> mean: array<f32>;
@group(0) @binding(3) var<storage, read_write> rstd: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> weight: array<f32>;
@group(0) @binding(6) var<storage, read> bias: array<f32>;

${perItemEntry("layernorm_forward")} {
  let row = flat_index(wid, lid, groups);
  if (row >= sizes.rows) { return; }
  let base = row * sizes.channels;
  let n = f32(sizes.channels);
  var sum = 0.0;
  for (var c = 0u; c < sizes.channels; c++) { sum += x[base + c]; }
  let m = sum / n;
  var squares = 0.0;
  for (var c = 0u; c < sizes.channels; c++) { let d = x[base + c] - m; squares += d * d; }
  let s = 1.0 / sqrt(squares / n + 1e-5);
  for (var c = 0u; c < sizes.channels; c++) {
    out[base + c] = (x[base + c] - m) * s * weight[c] + bias[c];
  }
  mean[row] = m;
  rstd[row] = s;
}
`;

const LAYERNORM_BACKWARD_INPUT_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> dx: array<f32>;
@group(0) @binding(2) var<storage, read> dout: array<f32>;
@group(0) @binding(3) var<storage, read> x: array<f32>;
@group(0) @binding(4) var<storage, read> weight: array<f32>;
@group(0) @binding(5) var<storage, read> mean: array<f32>;
@group(0) @binding(6) var<storage, read> rstd: array<f32>;

${perItemEntry("layernorm_backward_input")} {
  let row = flat_index(wid, lid, groups);
  if (row >= sizes.rows) { return; }
  let base = row * sizes.channels;
  let m = mean[row];
  let s = rstd[row];
  var dnorm_mean = 0.0;
  var dnorm_norm_mean = 0.0;
  for (var c = 0u; c < sizes.channels; c++) {
    let dnorm = weight[c] * dout[base + c];
    dnorm_mean += dnorm;
    dnorm_norm_mean += dnorm * (x[base + c] - m) * s;
  }
  dnorm_mean /= f32(sizes.channels);
  dnorm_norm_mean /= f32(sizes.channels);
  for (var c = 0u; c < sizes.channels; c++) {
    let norm = (x[base + c] - m) * s;
    dx[base + c] += (weight[c] * dout[base + c] - dnorm_mean - norm * dnorm_norm_mean) * s;
  }
}
`;

const LAYERNORM_BACKWARD_PARAMS_WGSL = /* wgsl */ `${SIZES}
@group(0) @binding(1) var<storage, read_write> dweight: array<f32>;
@group(0) @binding(2) var<storage, read_write> dbias: array<f32>;
@group(0) @binding(3) var<storage, read> dout: array<f32>;
@group(0) @binding(4) var<storage, read> x: array<f32>;
@group(0) @binding(5) var<storage, read> mean: array<f32>;
@group(0) @binding(6) var<storage, read> rstd: array<f32>;

${perItemEntry("layernorm_backward_params")} {
  let c = flat_index(wid, lid, groups);
  if (c >= sizes.channels) { return; }
  var dw = 0.0;
  var db = 0.0;
  for (var row = 0u; row < sizes.rows; row++) {
    let i = row * sizes.channels + c;
    dw += dout[i] * (x[i] - mean[row]) * rstd[row];
    db += dout[i];
  }
  dweight[c] += dw;
  dbias[c] += db;
}
`;

export class LayerNorm {
  readonly #forward: Kernel;
  readonly #backwardInput: Kernel;
  readonly #backwardParams: Kernel;

  constructor(device: GPUDevice) {
    this.#forward = new Kernel(device, "layernorm_forward", LAYERNORM_FORWARD_WGSL);
    this.#backwardInput = new Kernel(device, "layernorm_backward_input", LAYERNORM_BACKWARD_INPUT_WGSL);
    this.#backwardParams = new Kernel(device, "layernorm_backward_params", LAYERNORM_BACKWARD_PARAMS_WGSL);
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
    this.#forward.dispatch(pass, [rows, channels], [out, mean, rstd, x, weight, bias], gridFor(rows));
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
    this.#backwardInput.dispatch(pass, [rows, channels], [dx, dout, x, weight, mean, rstd], gridFor(rows));
    this.#backwardParams.dispatch(pass, [rows, channels], [dweight, dbias, dout, x, mean, rstd], gridFor(channels));
  }
}
