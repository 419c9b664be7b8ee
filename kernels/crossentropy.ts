// Softmax and cross-entropy over the vocabulary, fused (llm.c's fused classifier).
// forward:  losses[R] = -log softmax(logits[r])[targets[r]] = log(sum exp(l - max)) + max - l[target]
// backward: logits[R,V] is overwritten with dlogits = (softmax(logits) - onehot(target)) * dloss,
//           dloss = 1 / R for the mean loss
// One thread per row, summing over the vocabulary in a fixed order.

import { type Binding, gridFor, Kernel, type KernelSpec, perItemEntry } from "./kernel.ts";

const CROSSENTROPY = {
  entryPoint: "crossentropy",
  uniforms: { rows: "u32", vocab: "u32", dloss: "f32", write_gradient: "u32" },
  storage: { logits: ["read_write", "f32"], losses: ["read_write", "f32"], targets: ["read", "u32"] },
  code: /* wgsl */ `
${perItemEntry("crossentropy")} {
  let r = flat_index(wid, lid, groups);
  if (r >= args.rows) { return; }
  let base = r * args.vocab;
  var max_logit = -3.0e38;
  for (var v = 0u; v < args.vocab; v++) { max_logit = max(max_logit, logits[base + v]); }
  var sum = 0.0;
  for (var v = 0u; v < args.vocab; v++) { sum += exp(logits[base + v] - max_logit); }
  let target_index = targets[r];
  losses[r] = log(sum) + max_logit - logits[base + target_index];
  if (args.write_gradient == 0u) { return; }
  let inv_sum = 1.0 / sum;
  for (var v = 0u; v < args.vocab; v++) {
    let p = exp(logits[base + v] - max_logit) * inv_sum;
    logits[base + v] = (p - select(0.0, 1.0, v == target_index)) * args.dloss;
  }
}
`,
} satisfies KernelSpec;

export class CrossEntropy {
  readonly #kernel: Kernel<typeof CROSSENTROPY>;

  constructor(device: GPUDevice) {
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
    const args = { rows, vocab, dloss: 1 / rows, write_gradient: writeGradient ? 1 : 0 };
    this.#kernel.dispatch(pass, args, { logits, losses, targets }, gridFor(rows));
  }
}
