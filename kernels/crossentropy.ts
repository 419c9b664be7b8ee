// Softmax and cross-entropy over the vocabulary, fused (llm.c's fused classifier).
// forward:  losses[R] = -log softmax(logits[r])[targets[r]] = log(sum exp(l - max)) + max - l[target]
// backward: logits[R,V] is overwritten with dlogits = (softmax(logits) - onehot(target)) * dloss,
//           dloss = 1 / R for the mean loss
// One thread per row, summing over the vocabulary in a fixed order.

import { type Binding, f32Word, gridFor, Kernel, perItemEntry } from "./kernel.ts";

const CROSSENTROPY_WGSL = /* wgsl */ `
struct Sizes { rows: u32, vocab: u32, dloss: f32, write_gradient: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> logits: array<f32>;
@group(0) @binding(2) var<storage, read_write> losses: array<f32>;
@group(0) @binding(3) var<storage, read> targets: array<u32>;

${perItemEntry("crossentropy")} {
  let r = flat_index(wid, lid, groups);
  if (r >= sizes.rows) { return; }
  let base = r * sizes.vocab;
  var max_logit = -3.0e38;
  for (var v = 0u; v < sizes.vocab; v++) { max_logit = max(max_logit, logits[base + v]); }
  var sum = 0.0;
  for (var v = 0u; v < sizes.vocab; v++) { sum += exp(logits[base + v] - max_logit); }
  let target_index = targets[r];
  losses[r] = log(sum) + max_logit - logits[base + target_index];
  if (sizes.write_gradient == 0u) { return; }
  let inv_sum = 1.0 / sum;
  for (var v = 0u; v < sizes.vocab; v++) {
    let p = exp(logits[base + v] - max_logit) * inv_sum;
    logits[base + v] = (p - select(0.0, 1.0, v == target_index)) * sizes.dloss;
  }
}
`;

export class CrossEntropy {
  readonly #kernel: Kernel;

  constructor(device: GPUDevice) {
    this.#kernel = new Kernel(device, "crossentropy", CROSSENTROPY_WGSL);
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
    const sizes = [rows, vocab, f32Word(1 / rows), writeGradient ? 1 : 0];
    this.#kernel.dispatch(pass, sizes, [logits, losses, targets], gridFor(rows));
  }
}
