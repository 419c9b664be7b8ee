// Softmax and cross-entropy over the vocabulary, fused (llm.c's fused classifier).
// forward:  losses[R] = -log softmax(logits[r])[targets[r]] = log(sum exp(l - max)) + max - l[target]
// backward: logits[R,V] is overwritten with dlogits = (softmax(logits) - onehot(target)) * dloss,
//           dloss = 1 / R for the mean loss
// One thread per row, summing over the vocabulary in a fixed order. Each pass over the vocabulary runs in
// chunks of VOCAB_CHUNK, one dispatch each, carrying the row's running max and sum on in `state`:
// llvmpipe silently stops an invocation's loops after 65535 iterations in all, fewer than GPT-2's 3 x 50257.
// The order of the sums, and so every bit of the result, is that of one loop.

import { type Binding, gridFor, Kernel, type KernelSpec, perItemEntry } from "./kernel.ts";

const VOCAB_CHUNK = 16384;

// What one dispatch does for its chunk [v_start, v_end) of every row.
const MAX = 0, SUM = 1, LOSS = 2, GRADIENT = 3;

const CROSSENTROPY = {
  entryPoint: "crossentropy",
  uniforms: { rows: "u32", vocab: "u32", dloss: "f32", phase: "u32", v_start: "u32", v_end: "u32" },
  storage: {
    logits: ["read_write", "f32"],
    losses: ["read_write", "f32"],
    targets: ["read", "u32"],
    state: ["read_write", "f32"],
  },
  code: /* wgsl */ `
${perItemEntry("crossentropy")} {
  let r = flat_index(wid, lid, groups);
  if (r >= args.rows) { return; }
  let base = r * args.vocab;
  if (args.phase == ${MAX}u) {
    var max_logit = -3.0e38;
    if (args.v_start > 0u) { max_logit = state[2u * r]; }
    for (var v = args.v_start; v < args.v_end; v++) { max_logit = max(max_logit, logits[base + v]); }
    state[2u * r] = max_logit;
    return;
  }
  let max_logit = state[2u * r];
  if (args.phase == ${SUM}u) {
    var sum = 0.0;
    if (args.v_start > 0u) { sum = state[2u * r + 1u]; }
    for (var v = args.v_start; v < args.v_end; v++) { sum += exp(logits[base + v] - max_logit); }
    state[2u * r + 1u] = sum;
    return;
  }
  let sum = state[2u * r + 1u];
  let target_index = targets[r];
  if (args.phase == ${LOSS}u) {
    losses[r] = log(sum) + max_logit - logits[base + target_index];
    return;
  }
  let inv_sum = 1.0 / sum;
  for (var v = args.v_start; v < args.v_end; v++) {
    let p = exp(logits[base + v] - max_logit) * inv_sum;
    logits[base + v] = (p - select(0.0, 1.0, v == target_index)) * args.dloss;
  }
}
`,
} satisfies KernelSpec;

export class CrossEntropy {
  readonly #kernel: Kernel<typeof CROSSENTROPY>;
  readonly #device: GPUDevice;
  /** Each row's running max and sum between chunks, grown to the most rows seen. */
  #state: GPUBuffer | null = null;

  constructor(device: GPUDevice) {
    this.#device = device;
    this.#kernel = new Kernel(device, CROSSENTROPY);
  }

  /**
   * losses[R] from logits[R,V] and targets[R] (u32); with `writeGradient`, logits becomes the gradient
   * of the mean loss over the R rows.
   */
  encode(
    pass: GPUComputePassEncoder,
    logits: Binding,
    losses: Binding,
    targets: Binding,
    rows: number,
    vocab: number,
    writeGradient: boolean,
  ) {
    if (!this.#state || this.#state.size < rows * 8) {
      this.#state?.destroy();
      this.#state = this.#device.createBuffer({
        label: "crossentropy max and sum",
        size: rows * 8,
        usage: GPUBufferUsage.STORAGE,
      });
    }
    const state = this.#state, dloss = 1 / rows;
    const dispatch = (phase: number, start: number, end: number) =>
      this.#kernel.dispatch(
        pass,
        { rows, vocab, dloss, phase, v_start: start, v_end: end },
        { logits, losses, targets, state },
        gridFor(rows),
      );
    const chunks = (phase: number) => {
      for (let start = 0; start < vocab; start += VOCAB_CHUNK) {
        dispatch(phase, start, Math.min(vocab, start + VOCAB_CHUNK));
      }
    };
    chunks(MAX);
    chunks(SUM);
    dispatch(LOSS, 0, 0);
    if (writeGradient) chunks(GRADIENT);
  }
}
