// The optimizer step: global gradient-norm clipping and AdamW (decoupled weight decay, bias correction),
// over the flat parameter, gradient and moment buffers.
// gradnorm:  norm_sq[0] = sum of g^2 over all n gradients: GRID_THREADS threads each sum a fixed stride,
//            each workgroup adds its threads in a fixed tree, and one thread adds the workgroups in order.
// adamw:     g = grad * clip, clip = min(1, max_norm / norm) (no clipping when max_norm is 0);
//            m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//            p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)   (as torch.optim.AdamW)

import { type Binding, f32Word, gridFor, Kernel, perItemEntry } from "./kernel.ts";

const NORM_GROUPS = 64;

const GRADNORM_PARTIAL_WGSL = /* wgsl */ `
struct Sizes { n: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> partial: array<f32>;
@group(0) @binding(2) var<storage, read> grads: array<f32>;

var<workgroup> sums: array<f32, 256>;

@compute @workgroup_size(256)
fn gradnorm_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  var sum = 0.0;
  for (var i = wid.x * 256u + lid.x; i < sizes.n; i += ${NORM_GROUPS * 256}u) { sum += grads[i] * grads[i]; }
  sums[lid.x] = sum;
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (lid.x < stride) { sums[lid.x] += sums[lid.x + stride]; }
  }
  if (lid.x == 0u) { partial[wid.x] = sums[0]; }
}
`;

const GRADNORM_FINAL_WGSL = /* wgsl */ `
struct Sizes { n: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> norm_sq: array<f32>;
@group(0) @binding(2) var<storage, read> partial: array<f32>;

@compute @workgroup_size(1)
fn gradnorm_final() {
  var sum = 0.0;
  // Only the workgroups that had gradients to sum wrote a partial.
  let used = min(${NORM_GROUPS}u, (sizes.n + 255u) / 256u);
  for (var g = 0u; g < used; g++) { sum += partial[g]; }
  norm_sq[0] = sum;
}
`;

const ADAMW_WGSL = /* wgsl */ `
struct Step {
  n: u32, lr: f32, beta1: f32, beta2: f32,
  eps: f32, weight_decay: f32, bias_correction1: f32, bias_correction2: f32,
  max_norm: f32,
}
@group(0) @binding(0) var<uniform> step: Step;
@group(0) @binding(1) var<storage, read_write> params: array<f32>;
@group(0) @binding(2) var<storage, read_write> m: array<f32>;
@group(0) @binding(3) var<storage, read_write> v: array<f32>;
@group(0) @binding(4) var<storage, read> grads: array<f32>;
@group(0) @binding(5) var<storage, read> norm_sq: array<f32>;

${perItemEntry("adamw")} {
  let i = flat_index(wid, lid, groups);
  if (i >= step.n) { return; }
  var clip = 1.0;
  let norm = sqrt(norm_sq[0]);
  if (step.max_norm > 0.0 && norm > step.max_norm) { clip = step.max_norm / norm; }
  let g = grads[i] * clip;
  let m_new = step.beta1 * m[i] + (1.0 - step.beta1) * g;
  let v_new = step.beta2 * v[i] + (1.0 - step.beta2) * g * g;
  m[i] = m_new;
  v[i] = v_new;
  let m_hat = m_new / step.bias_correction1;
  let v_hat = v_new / step.bias_correction2;
  params[i] = params[i] * (1.0 - step.lr * step.weight_decay) - step.lr * m_hat / (sqrt(v_hat) + step.eps);
}
`;

export interface AdamWSettings {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Clip the global gradient norm to this; 0 turns clipping off. */
  maxGradNorm: number;
}

export class AdamW {
  readonly #device: GPUDevice;
  readonly #partial: Kernel;
  readonly #final: Kernel;
  readonly #update: Kernel;
  readonly #partialSums: GPUBuffer;
  /** The squared global gradient norm of the last step, [1]; the trainer reads it for its log. */
  readonly normSquared: GPUBuffer;
  readonly #stepUniform: GPUBuffer;

  constructor(device: GPUDevice) {
    this.#device = device;
    this.#partial = new Kernel(device, "gradnorm_partial", GRADNORM_PARTIAL_WGSL);
    this.#final = new Kernel(device, "gradnorm_final", GRADNORM_FINAL_WGSL);
    this.#update = new Kernel(device, "adamw", ADAMW_WGSL);
    const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.#partialSums = device.createBuffer({ label: "gradnorm partials", size: NORM_GROUPS * 4, usage: storage });
    this.normSquared = device.createBuffer({ label: "gradnorm", size: 4, usage: storage });
    this.#stepUniform = device.createBuffer({
      label: "adamw step",
      size: 48,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  /** normSquared = the sum of squares of grads[n]. */
  encodeGradNorm(pass: GPUComputePassEncoder, grads: Binding, n: number) {
    this.#partial.dispatch(pass, [n], [this.#partialSums, grads], [NORM_GROUPS]);
    this.#final.dispatch(pass, [n], [this.normSquared, this.#partialSums], [1]);
  }

  /**
   * Step `t` (1-based) of AdamW over params, m, v (all [n]) with grads[n], clipped by the norm that
   * `encodeGradNorm` put in normSquared. Writes the step's settings with queue.writeBuffer, so one
   * command buffer holds at most one update.
   */
  encodeUpdate(
    pass: GPUComputePassEncoder,
    params: Binding,
    m: Binding,
    v: Binding,
    grads: Binding,
    n: number,
    t: number,
    settings: AdamWSettings,
  ) {
    const words = new Uint32Array([
      n,
      f32Word(settings.lr),
      f32Word(settings.beta1),
      f32Word(settings.beta2),
      f32Word(settings.eps),
      f32Word(settings.weightDecay),
      f32Word(1 - settings.beta1 ** t),
      f32Word(1 - settings.beta2 ** t),
      f32Word(settings.maxGradNorm),
    ]);
    this.#device.queue.writeBuffer(this.#stepUniform, 0, words);
    this.#update.dispatch(pass, this.#stepUniform, [params, m, v, grads, this.normSquared], gridFor(n));
  }
}
