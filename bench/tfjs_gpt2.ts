// The peer for the training benchmark: the same GPT-2 (same config, same Hugging Face layout, same
// initial weights) written with TensorFlow.js ops on its WebGPU backend, trained with tf.train.adam on
// the same batches. tfjs has no decoupled weight decay or fused kernels of ours: it is what a user of
// a general framework would write.

import * as tf from "@tensorflow/tfjs";
import "@tensorflow/tfjs-backend-webgpu";
import type { Batch } from "../core/data.ts";
import { type GPT2Config, parameterLayout } from "../core/model.ts";

/** Switches tfjs to its WebGPU backend (once per process); false where it cannot start. */
export async function useTfjsWebGPU(): Promise<boolean> {
  // tfjs warns about its Node.js bindings on every start in Deno; the WebGPU backend is what is measured.
  return await tf.setBackend("webgpu") && tf.getBackend() === "webgpu";
}

/** The GPU device of tfjs's WebGPU backend: where to catch the validation errors tfjs does not raise. */
export function tfjsDevice(): GPUDevice {
  return (tf.backend() as unknown as { device: GPUDevice }).device;
}

export class TfjsGPT2 {
  readonly #config: GPT2Config;
  readonly #variables: Map<string, tf.Variable>;
  readonly #optimizer: tf.Optimizer;
  readonly #mask: tf.Tensor;

  constructor(config: GPT2Config, params: Float32Array, time: number, lr: number) {
    this.#config = config;
    this.#variables = new Map(
      parameterLayout(config).specs.map((spec) => [
        spec.name,
        tf.variable(tf.tensor(params.subarray(spec.offset, spec.offset + spec.size), spec.shape), true, spec.name),
      ]),
    );
    this.#optimizer = tf.train.adam(lr, 0.9, 0.95, 1e-8);
    // Causal mask: a large finite negative above the diagonal (no -inf, as in our kernels).
    this.#mask = tf.tidy(() => tf.sub(1, tf.linalg.bandPart(tf.ones([time, time]), -1, 0)).mul(-1e9));
  }

  #p(name: string): tf.Variable {
    return this.#variables.get(name)!;
  }

  #layernorm(x: tf.Tensor, prefix: string): tf.Tensor {
    const { mean, variance } = tf.moments(x, -1, true);
    return x.sub(mean).mul(tf.rsqrt(variance.add(1e-5))).mul(this.#p(`${prefix}.weight`)).add(
      this.#p(`${prefix}.bias`),
    );
  }

  #linear(x: tf.Tensor2D, prefix: string): tf.Tensor2D {
    return tf.matMul(x, this.#p(`${prefix}.weight`) as tf.Tensor2D).add(this.#p(`${prefix}.bias`));
  }

  #loss(batch: Batch, B: number, T: number): tf.Scalar {
    const { n_embd: C, n_head: NH, n_layer: L, vocab_size: V } = this.#config, hs = C / NH;
    const inputs = tf.tensor1d(Int32Array.from(batch.inputs), "int32");
    const targets = tf.tensor1d(Int32Array.from(batch.targets), "int32");
    const positions = tf.tile(tf.range(0, T, 1, "int32"), [B]);
    let x = tf.gather(this.#p("wte.weight"), inputs).add(tf.gather(this.#p("wpe.weight"), positions)) as tf.Tensor2D;
    const heads = (t: tf.Tensor) => t.reshape([B, T, NH, hs]).transpose([0, 2, 1, 3]);
    for (let l = 0; l < L; l++) {
      const h = `h.${l}`;
      const qkv = this.#linear(this.#layernorm(x, `${h}.ln_1`) as tf.Tensor2D, `${h}.attn.c_attn`);
      const [q, k, v] = tf.split(qkv, 3, 1).map(heads);
      const att = tf.softmax(tf.matMul(q, k, false, true).mul(1 / Math.sqrt(hs)).add(this.#mask));
      const y = tf.matMul(att, v).transpose([0, 2, 1, 3]).reshape([B * T, C]) as tf.Tensor2D;
      x = x.add(this.#linear(y, `${h}.attn.c_proj`));
      const m = this.#linear(this.#layernorm(x, `${h}.ln_2`) as tf.Tensor2D, `${h}.mlp.c_fc`);
      const gelu = m.mul(0.5).mul(tf.tanh(m.add(m.pow(3).mul(0.044715)).mul(Math.sqrt(2 / Math.PI))).add(1));
      x = x.add(this.#linear(gelu as tf.Tensor2D, `${h}.mlp.c_proj`));
    }
    const logits = tf.matMul(
      this.#layernorm(x, "ln_f") as tf.Tensor2D,
      this.#p("wte.weight") as tf.Tensor2D,
      false,
      true,
    );
    return tf.losses.softmaxCrossEntropy(tf.oneHot(targets, V), logits) as tf.Scalar;
  }

  /** One Adam step on `batch`; returns the loss (read back, so the step has finished). */
  async trainOn(batch: Batch, B: number, T: number): Promise<number> {
    const loss = this.#optimizer.minimize(() => this.#loss(batch, B, T), true)!;
    const value = (await loss.data())[0];
    loss.dispose();
    return value;
  }

  dispose() {
    for (const variable of this.#variables.values()) variable.dispose();
    this.#mask.dispose();
    this.#optimizer.dispose();
  }
}
