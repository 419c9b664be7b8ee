// The optimizer step: global gradient-norm clipping and AdamW (decoupled weight decay, bias correction),
// over the flat parameter, gradient and moment buffers.
// gradnorm:  norm_sq[0] = sum of g^2 over all n gradients: GRID_THREADS threads each sum a fixed stride,
//            each workgroup adds its threads in a fixed tree, and one thread adds the workgroups in order.
//            The gradients may be in pieces (one binding each): each thread's strided sum goes on from
//            piece to piece through a scratch buffer, so the order, and the result, are those of one buffer.
// adamw:     g = grad * clip, clip = min(1, max_norm / norm) (no clipping when max_norm is 0);
//            m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//            p = p (1 - lr wd) - lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps)   (as torch.optim.AdamW)
//            element-wise, so a piece or a shard is updated on its own.
//            Four elements a thread (vec4 loads and stores, the same arithmetic on each): on llvmpipe every
//            storage access carries a bounds check and a per-thread load or store, and a vec4 pays for one
//            where four floats paid for four. A range that is not a multiple of 64 floats ends in a
//            second, scalar dispatch (binding offsets are 256-byte aligned).

import { type Binding, gridFor, Kernel, type KernelSpec, perItemEntry } from "./kernel.ts";

const NORM_GROUPS = 64;
const GRID_THREADS = NORM_GROUPS * 256;

// Global index `base + i` of the piece's element i goes to thread (base + i) mod GRID_THREADS.
const GRADNORM_THREADS = {
  entryPoint: "gradnorm_threads",
  uniforms: { n: "u32", base: "u32", first: "u32" },
  storage: { sums: ["read_write", "f32"], grads: ["read", "f32"] },
  code: /* wgsl */ `
@compute @workgroup_size(256)
fn gradnorm_threads(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let thread = wid.x * 256u + lid.x;
  var sum = 0.0;
  if (args.first == 0u) { sum = sums[thread]; }
  let first_index = (thread + ${GRID_THREADS}u - args.base % ${GRID_THREADS}u) % ${GRID_THREADS}u;
  for (var i = first_index; i < args.n; i += ${GRID_THREADS}u) { sum += grads[i] * grads[i]; }
  sums[thread] = sum;
}
`,
} satisfies KernelSpec;

const GRADNORM_PARTIAL = {
  entryPoint: "gradnorm_partial",
  uniforms: { n: "u32" },
  storage: { partial: ["read_write", "f32"], sums: ["read", "f32"] },
  code: /* wgsl */ `
var<workgroup> tree: array<f32, 256>;

@compute @workgroup_size(256)
fn gradnorm_partial(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  if (wid.x * 256u >= args.n) { return; }  // its threads had no gradients to sum
  tree[lid.x] = sums[wid.x * 256u + lid.x];
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (lid.x < stride) { tree[lid.x] += tree[lid.x + stride]; }
  }
  if (lid.x == 0u) { partial[wid.x] = tree[0]; }
}
`,
} satisfies KernelSpec;

const GRADNORM_FINAL = {
  entryPoint: "gradnorm_final",
  uniforms: { n: "u32" },
  storage: { norm_sq: ["read_write", "f32"], partial: ["read", "f32"] },
  code: /* wgsl */ `
@compute @workgroup_size(1)
fn gradnorm_final() {
  var sum = 0.0;
  // Only the workgroups that had gradients to sum wrote a partial.
  let used = min(${NORM_GROUPS}u, (args.n + 255u) / 256u);
  for (var g = 0u; g < used; g++) { sum += partial[g]; }
  norm_sq[0] = sum;
}
`,
} satisfies KernelSpec;

const adamwSpec = <E extends "f32" | "vec4<f32>">(element: E) => ({
  entryPoint: "adamw",
  label: `adamw_${element === "f32" ? "scalar" : "vec4"}`,
  uniforms: {
    lr: "f32",
    beta1: "f32",
    beta2: "f32",
    eps: "f32",
    weight_decay: "f32",
    bias_correction1: "f32",
    bias_correction2: "f32",
    max_norm: "f32",
  },
  // The settings and bias corrections change every step.
  rewriteUniforms: true,
  storage: {
    params: ["read_write", element],
    m: ["read_write", element],
    v: ["read_write", element],
    grads: ["read", element],
    norm_sq: ["read", "f32"],
  },
  code: /* wgsl */ `
${perItemEntry("adamw")} {
  let i = flat_index(wid, lid, groups);
  if (i >= arrayLength(&params)) { return; }
  var clip = 1.0;
  let norm = sqrt(norm_sq[0]);
  if (args.max_norm > 0.0 && norm > args.max_norm) { clip = args.max_norm / norm; }
  let g = grads[i] * clip;
  let m_new = args.beta1 * m[i] + (1.0 - args.beta1) * g;
  let v_new = args.beta2 * v[i] + (1.0 - args.beta2) * g * g;
  m[i] = m_new;
  v[i] = v_new;
  let m_hat = m_new / args.bias_correction1;
  let v_hat = v_new / args.bias_correction2;
  params[i] = params[i] * (1.0 - args.lr * args.weight_decay) - args.lr * m_hat / (sqrt(v_hat) + args.eps);
}
`,
} as const satisfies KernelSpec);
type AdamWSpec<E extends "f32" | "vec4<f32>"> = ReturnType<typeof adamwSpec<E>>;

/** [first, first + bytes) of `binding`, in bytes. */
function subrange(binding: Binding, first: number, bytes: number): GPUBufferBinding {
  return binding instanceof GPUBuffer
    ? { buffer: binding, offset: first, size: bytes }
    : { buffer: binding.buffer, offset: (binding.offset ?? 0) + first, size: bytes };
}

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
  readonly #threads: Kernel<typeof GRADNORM_THREADS>;
  readonly #partial: Kernel<typeof GRADNORM_PARTIAL>;
  readonly #final: Kernel<typeof GRADNORM_FINAL>;
  readonly #update: Kernel<AdamWSpec<"vec4<f32>">>;
  readonly #updateTail: Kernel<AdamWSpec<"f32">>;
  readonly #threadSums: GPUBuffer;
  readonly #partialSums: GPUBuffer;
  /** The squared global gradient norm of the last step, [1]; the trainer reads it for its log. */
  readonly normSquared: GPUBuffer;

  constructor(device: GPUDevice) {
    this.#threads = new Kernel(device, GRADNORM_THREADS);
    this.#partial = new Kernel(device, GRADNORM_PARTIAL);
    this.#final = new Kernel(device, GRADNORM_FINAL);
    this.#update = new Kernel(device, adamwSpec("vec4<f32>"));
    this.#updateTail = new Kernel(device, adamwSpec("f32"));
    const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
    this.#threadSums = device.createBuffer({ label: "gradnorm thread sums", size: GRID_THREADS * 4, usage: storage });
    this.#partialSums = device.createBuffer({ label: "gradnorm partials", size: NORM_GROUPS * 4, usage: storage });
    this.normSquared = device.createBuffer({ label: "gradnorm", size: 4, usage: storage });
  }

  /**
   * normSquared = the sum of squares of the gradients: `pieces`, in order, hold consecutive ranges
   * [start, end) of them.
   */
  encodeGradNorm(pass: GPUComputePassEncoder, pieces: { binding: Binding; start: number; end: number }[]) {
    const sums = this.#threadSums;
    pieces.forEach(({ binding, start, end }, i) => {
      const args = { n: end - start, base: start, first: i === 0 ? 1 : 0 };
      this.#threads.dispatch(pass, args, { sums, grads: binding }, [NORM_GROUPS]);
    });
    const n = pieces.at(-1)!.end;
    this.#partial.dispatch(pass, { n }, { partial: this.#partialSums, sums }, [NORM_GROUPS]);
    this.#final.dispatch(pass, { n }, { norm_sq: this.normSquared, partial: this.#partialSums }, [1]);
  }

  /**
   * Step `t` (1-based) of AdamW over params, m, v (the first n floats of each binding) with grads[n],
   * clipped by the norm that `encodeGradNorm` put in normSquared. The step's settings are written with
   * queue.writeBuffer, so one command buffer holds the updates of one step only (of every piece of it).
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
    const args = {
      lr: settings.lr,
      beta1: settings.beta1,
      beta2: settings.beta2,
      eps: settings.eps,
      weight_decay: settings.weightDecay,
      bias_correction1: 1 - settings.beta1 ** t,
      bias_correction2: 1 - settings.beta2 ** t,
      max_norm: settings.maxGradNorm,
    };
    const norm_sq = this.normSquared, aligned = Math.floor(n / 64) * 64;
    const part = (first: number, end: number) => {
      const bind = (binding: Binding) => subrange(binding, first * 4, (end - first) * 4);
      return { params: bind(params), m: bind(m), v: bind(v), grads: bind(grads), norm_sq };
    };
    if (aligned > 0) this.#update.dispatch(pass, args, part(0, aligned), gridFor(aligned / 4));
    if (aligned < n) this.#updateTail.dispatch(pass, args, part(aligned, n), gridFor(n - aligned));
  }
}
