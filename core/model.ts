// GPT-2 as published (Radford et al. 2019; Hugging Face's GPT2LMHeadModel): learned position embeddings,
// pre-LayerNorm blocks (eps 1e-5), GELU (tanh), causal self-attention, a final LayerNorm and an
// lm_head tied to the token embedding. The forward and backward follow llm.c's gpt2_forward and
// gpt2_backward step by step, on the kernels of kernels/.
//
// Parameters live in one flat f32 buffer (and the gradients in a second one of the same layout), under
// Hugging Face's names and layouts, so GPT-2 weights load as they are: Conv1D weights are [in, out].

import { Attention } from "../kernels/attention.ts";
import { CrossEntropy } from "../kernels/crossentropy.ts";
import { bucketTokens, Encoder } from "../kernels/encoder.ts";
import { Gelu } from "../kernels/gelu.ts";
import type { Binding } from "../kernels/kernel.ts";
import { LayerNorm } from "../kernels/layernorm.ts";
import { Matmul } from "../kernels/matmul.ts";
import { Residual } from "../kernels/residual.ts";
import { readBuffer, storageBuffer } from "./gpu.ts";
import { Rng } from "./random.ts";

/** The model's shape, with Hugging Face's names for the fields. */
export interface GPT2Config {
  vocab_size: number;
  /** The longest sequence (rows of wpe). */
  n_ctx: number;
  n_embd: number;
  n_head: number;
  n_layer: number;
}

/** Model sizes by name: byte-level ones for the lab and the tests, and GPT-2 small (124M) as published. */
export const MODEL_PRESETS: Record<string, GPT2Config> = {
  tiny: { vocab_size: 256, n_ctx: 64, n_embd: 64, n_head: 4, n_layer: 2 },
  small: { vocab_size: 256, n_ctx: 128, n_embd: 128, n_head: 4, n_layer: 4 },
  medium: { vocab_size: 256, n_ctx: 256, n_embd: 256, n_head: 8, n_layer: 6 },
  gpt2: { vocab_size: 50257, n_ctx: 1024, n_embd: 768, n_head: 12, n_layer: 12 },
};

/** Throws a clear error unless every field is a positive integer and n_embd divides into n_head heads. */
export function validateConfig(config: GPT2Config): GPT2Config {
  for (const field of ["vocab_size", "n_ctx", "n_embd", "n_head", "n_layer"] as const) {
    const value = config?.[field];
    if (!Number.isInteger(value) || value <= 0) {
      throw new Error(`config.${field} must be a positive integer, got ${JSON.stringify(value)}`);
    }
  }
  if (config.n_embd % config.n_head !== 0) {
    throw new Error(`config.n_embd (${config.n_embd}) must be a multiple of config.n_head (${config.n_head})`);
  }
  return config;
}

/** One parameter tensor inside the flat buffer; offset and size count floats. */
export interface ParameterSpec {
  name: string;
  shape: number[];
  offset: number;
  size: number;
}

// Tensors start on 256-byte boundaries, WebGPU's largest storage-binding offset alignment, so every
// tensor can be bound on its own; the layout is then the same on every adapter.
const TENSOR_ALIGNMENT_FLOATS = 64;

/** The parameters in Hugging Face GPT-2 order, with their offsets in the flat buffer. */
export function parameterLayout(config: GPT2Config): { specs: ParameterSpec[]; totalFloats: number } {
  const { vocab_size: V, n_ctx: maxT, n_embd: C, n_layer: L } = validateConfig(config);
  const shapes: [string, number[]][] = [["wte.weight", [V, C]], ["wpe.weight", [maxT, C]]];
  for (let l = 0; l < L; l++) {
    shapes.push(
      [`h.${l}.ln_1.weight`, [C]],
      [`h.${l}.ln_1.bias`, [C]],
      [`h.${l}.attn.c_attn.weight`, [C, 3 * C]],
      [`h.${l}.attn.c_attn.bias`, [3 * C]],
      [`h.${l}.attn.c_proj.weight`, [C, C]],
      [`h.${l}.attn.c_proj.bias`, [C]],
      [`h.${l}.ln_2.weight`, [C]],
      [`h.${l}.ln_2.bias`, [C]],
      [`h.${l}.mlp.c_fc.weight`, [C, 4 * C]],
      [`h.${l}.mlp.c_fc.bias`, [4 * C]],
      [`h.${l}.mlp.c_proj.weight`, [4 * C, C]],
      [`h.${l}.mlp.c_proj.bias`, [C]],
    );
  }
  shapes.push(["ln_f.weight", [C]], ["ln_f.bias", [C]]);
  let offset = 0;
  const specs = shapes.map(([name, shape]) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const spec = { name, shape, offset, size };
    offset += Math.ceil(size / TENSOR_ALIGNMENT_FLOATS) * TENSOR_ALIGNMENT_FLOATS;
    return spec;
  });
  return { specs, totalFloats: offset };
}

/** The number of trainable parameters (without the alignment padding). */
export function parameterCount(config: GPT2Config): number {
  return parameterLayout(config).specs.reduce((sum, spec) => sum + spec.size, 0);
}

/**
 * GPT-2's initialisation (as in nanoGPT): weights N(0, 0.02), the residual projections (attn.c_proj,
 * mlp.c_proj) N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm weights 1. Seeded, so every machine
 * and every run starts from the same model.
 */
export function initialParameters(config: GPT2Config, seed: number): Float32Array {
  const { specs, totalFloats } = parameterLayout(config);
  const params = new Float32Array(totalFloats);
  const rng = new Rng(seed);
  const residualStd = 0.02 / Math.sqrt(2 * config.n_layer);
  for (const spec of specs) {
    const values = params.subarray(spec.offset, spec.offset + spec.size);
    if (/ln_\d\.weight$|ln_f\.weight$/.test(spec.name)) values.fill(1);
    else if (spec.name.endsWith(".weight")) {
      const std = spec.name.endsWith("c_proj.weight") ? residualStd : 0.02;
      for (let i = 0; i < values.length; i++) values[i] = rng.normal() * std;
    }
  }
  return params;
}

/** The activations of one block, as named in llm.c: [B*T, size per position] each, att [B,NH,T,T]. */
type LayerActivations = Record<typeof ACTIVATIONS[number][0], GPUBuffer>;
/** The gradients the backward of one block passes between its steps. */
type LayerGradients = Record<typeof GRADIENTS[number], GPUBuffer>;

// Floats per position for each activation, in multiples of C ("att" is per head and position: T floats).
const ACTIVATIONS = [
  ["ln1", 1],
  ["ln1Mean", 0],
  ["ln1Rstd", 0],
  ["qkv", 3],
  ["atty", 1],
  ["att", -1],
  ["attproj", 1],
  ["residual2", 1],
  ["ln2", 1],
  ["ln2Mean", 0],
  ["ln2Rstd", 0],
  ["fch", 4],
  ["fchGelu", 4],
  ["fcproj", 1],
  ["residual3", 1],
] as const;
const GRADIENTS = ["ln1", "qkv", "atty", "attproj", "residual2", "ln2", "fch", "fchGelu", "fcproj"] as const;

/** The kernels the model runs, compiled once per device. */
class Kernels {
  readonly encoder: Encoder;
  readonly layernorm: LayerNorm;
  readonly attention: Attention;
  readonly gelu: Gelu;
  readonly residual: Residual;
  readonly crossEntropy: CrossEntropy;
  /** y = x·W + b */
  readonly linear: Matmul;
  /** logits = x·wteᵀ */
  readonly lmHead: Matmul;
  /** dx += dy·Wᵀ */
  readonly linearInputGrad: Matmul;
  /** dW += xᵀ·dy */
  readonly linearWeightGrad: Matmul;
  /** out += A·B: the lm_head's dx (dlogits·wte) and bias gradients (1ᵀ·dy) */
  readonly accumulate: Matmul;

  constructor(device: GPUDevice) {
    this.encoder = new Encoder(device);
    this.layernorm = new LayerNorm(device);
    this.attention = new Attention(device);
    this.gelu = new Gelu(device);
    this.residual = new Residual(device);
    this.crossEntropy = new CrossEntropy(device);
    this.linear = new Matmul(device, { bias: true });
    this.lmHead = new Matmul(device, { transposeB: true });
    this.linearInputGrad = new Matmul(device, { transposeB: true, accumulate: true });
    this.linearWeightGrad = new Matmul(device, { transposeA: true, accumulate: true });
    this.accumulate = new Matmul(device, { accumulate: true });
  }
}

/**
 * GPT-2 on one GPUDevice for batches of B sequences of T tokens: parameters, gradients, activations
 * and their gradients on the GPU; `encodeForward` and `encodeBackward` record a training step.
 */
export class GPT2 {
  readonly config: GPT2Config;
  readonly batch: number;
  readonly time: number;
  readonly specs: ParameterSpec[];
  readonly totalFloats: number;
  /** All parameters, flat, in `specs` layout. */
  readonly params: GPUBuffer;
  /** Their gradients, same layout; zeroed and accumulated by every backward. */
  readonly grads: GPUBuffer;
  /** The loss of every position, [B*T]. */
  readonly losses: GPUBuffer;

  readonly #device: GPUDevice;
  readonly #kernels: Kernels;
  readonly #specByName: Map<string, ParameterSpec>;
  readonly #tokens: GPUBuffer;
  readonly #targets: GPUBuffer;
  readonly #buckets: { starts: GPUBuffer; positions: GPUBuffer; tokens: GPUBuffer };
  #bucketCount = 0;
  readonly #ones: GPUBuffer;
  readonly #acts: {
    encoded: GPUBuffer;
    layers: LayerActivations[];
    lnf: GPUBuffer;
    lnfMean: GPUBuffer;
    lnfRstd: GPUBuffer;
    logits: GPUBuffer;
  };
  readonly #grads: {
    residuals: GPUBuffer[];
    layers: LayerGradients[];
    dpre: GPUBuffer;
    lnf: GPUBuffer;
  };
  readonly #allBuffers: GPUBuffer[] = [];

  constructor(device: GPUDevice, config: GPT2Config, batch: number, time: number) {
    validateConfig(config);
    if (!Number.isInteger(batch) || batch <= 0) throw new Error(`batch size must be a positive integer, got ${batch}`);
    if (!Number.isInteger(time) || time <= 0 || time > config.n_ctx) {
      throw new Error(`sequence length must be an integer from 1 to n_ctx = ${config.n_ctx}, got ${time}`);
    }
    this.#device = device;
    this.config = config;
    this.batch = batch;
    this.time = time;
    ({ specs: this.specs, totalFloats: this.totalFloats } = parameterLayout(config));
    const limit = device.limits.maxStorageBufferBindingSize;
    if (this.totalFloats * 4 > limit) {
      throw new Error(
        `the model's ${this.totalFloats * 4} bytes of parameters exceed this adapter's largest storage binding ` +
          `(${limit} bytes); choose a smaller model`,
      );
    }
    this.#specByName = new Map(this.specs.map((spec) => [spec.name, spec]));
    this.#kernels = new Kernels(device);

    const { vocab_size: V, n_embd: C, n_head: NH, n_layer: L } = config, BT = batch * time;
    const buffer = (floats: number, label: string) => {
      const created = storageBuffer(device, floats * 4, label);
      this.#allBuffers.push(created);
      return created;
    };
    this.params = buffer(this.totalFloats, "params");
    this.grads = buffer(this.totalFloats, "grads");
    this.losses = buffer(BT, "losses");
    this.#tokens = buffer(BT, "tokens");
    this.#targets = buffer(BT, "targets");
    this.#buckets = {
      starts: buffer(BT + 1, "bucket starts"),
      positions: buffer(BT, "bucket positions"),
      tokens: buffer(BT, "bucket tokens"),
    };
    this.#ones = buffer(BT, "ones");
    device.queue.writeBuffer(this.#ones, 0, new Float32Array(BT).fill(1));
    // Per-position float counts: C times the multiple in ACTIVATIONS; 0 means one float; -1 (att) NH*T.
    const floatsPerPosition = (multiple: number) => multiple > 0 ? multiple * C : multiple === 0 ? 1 : NH * time;
    const sizeOf = new Map<string, number>(
      ACTIVATIONS.map(([name, multiple]) => [name, BT * floatsPerPosition(multiple)]),
    );
    const layers = <N extends string>(names: readonly N[], label: string) =>
      Array.from(
        { length: L },
        (_, l) =>
          Object.fromEntries(names.map((name) => [name, buffer(sizeOf.get(name)!, `${label} ${l} ${name}`)])) as Record<
            N,
            GPUBuffer
          >,
      );
    this.#acts = {
      encoded: buffer(BT * C, "encoded"),
      layers: layers(ACTIVATIONS.map(([name]) => name), "layer"),
      lnf: buffer(BT * C, "lnf"),
      lnfMean: buffer(BT, "lnf mean"),
      lnfRstd: buffer(BT, "lnf rstd"),
      logits: buffer(BT * V, "logits"),
    };
    this.#grads = {
      // residuals[l] is the gradient of block l's input (residuals[0]: of the embeddings), residuals[L] of the last output.
      residuals: Array.from({ length: L + 1 }, (_, l) => buffer(BT * C, `d residual ${l}`)),
      layers: layers(GRADIENTS, "d layer"),
      dpre: buffer(batch * NH * time * time, "d preatt"),
      lnf: buffer(BT * C, "d lnf"),
    };
  }

  /** The range of the flat parameter buffer (or of `flat`, in the same layout) that holds `name`. */
  tensor(name: string, flat: GPUBuffer = this.params): GPUBufferBinding {
    const spec = this.#specByName.get(name);
    if (!spec) throw new Error(`GPT-2 has no parameter named "${name}"`);
    return { buffer: flat, offset: spec.offset * 4, size: spec.size * 4 };
  }

  /** Uploads all parameters (flat, `specs` layout). */
  writeParameters(params: Float32Array) {
    if (params.length !== this.totalFloats) {
      throw new Error(`expected ${this.totalFloats} parameter floats, got ${params.length}`);
    }
    this.#device.queue.writeBuffer(this.params, 0, params);
  }

  async readParameters(): Promise<Float32Array> {
    return new Float32Array(await readBuffer(this.#device, this.params));
  }

  async readGradients(): Promise<Float32Array> {
    return new Float32Array(await readBuffer(this.#device, this.grads));
  }

  /** The mean of the last forward's per-position losses, summed in order in float64. */
  async readMeanLoss(): Promise<number> {
    const losses = new Float32Array(await readBuffer(this.#device, this.losses, this.batch * this.time * 4));
    let sum = 0;
    for (const loss of losses) sum += loss;
    return sum / losses.length;
  }

  /** Sets the batch: inputs and targets, each B*T token ids (row-major [B,T]). */
  setBatch(inputs: ArrayLike<number>, targets: ArrayLike<number>) {
    const BT = this.batch * this.time, V = this.config.vocab_size;
    for (const [name, ids] of [["inputs", inputs], ["targets", targets]] as const) {
      if (ids.length !== BT) {
        throw new Error(`${name}: expected ${BT} token ids (B=${this.batch} x T=${this.time}), got ${ids.length}`);
      }
      for (let i = 0; i < ids.length; i++) {
        if (!Number.isInteger(ids[i]) || ids[i] < 0 || ids[i] >= V) {
          throw new Error(`${name}: token id ${ids[i]} at position ${i} is outside the vocabulary 0..${V - 1}`);
        }
      }
    }
    const queue = this.#device.queue;
    queue.writeBuffer(this.#tokens, 0, Uint32Array.from(inputs));
    queue.writeBuffer(this.#targets, 0, Uint32Array.from(targets));
    const buckets = bucketTokens(inputs);
    queue.writeBuffer(this.#buckets.starts, 0, buckets.starts);
    queue.writeBuffer(this.#buckets.positions, 0, buckets.positions);
    queue.writeBuffer(this.#buckets.tokens, 0, buckets.tokens);
    this.#bucketCount = buckets.tokens.length;
  }

  /**
   * Records the forward pass: losses for every position; with `withGradient`, the logits buffer is left
   * holding the gradient of the mean loss, ready for `encodeBackward`.
   */
  encodeForward(encoder: GPUCommandEncoder, withGradient: boolean) {
    const k = this.#kernels, a = this.#acts, p = (name: string) => this.tensor(name);
    const { vocab_size: V, n_embd: C, n_head: NH, n_layer: L } = this.config;
    const B = this.batch, T = this.time, BT = B * T;
    const pass = encoder.beginComputePass({ label: "forward" });
    k.encoder.forward(pass, a.encoded, this.#tokens, p("wte.weight"), p("wpe.weight"), B, T, C);
    for (let l = 0; l < L; l++) {
      const x = l === 0 ? a.encoded : a.layers[l - 1].residual3, y = a.layers[l], h = `h.${l}`;
      k.layernorm.forward(pass, y.ln1, y.ln1Mean, y.ln1Rstd, x, p(`${h}.ln_1.weight`), p(`${h}.ln_1.bias`), BT, C);
      k.linear.encode(pass, y.qkv, y.ln1, p(`${h}.attn.c_attn.weight`), p(`${h}.attn.c_attn.bias`), BT, 3 * C, C);
      k.attention.forward(pass, y.atty, y.att, y.qkv, B, T, C, NH);
      k.linear.encode(pass, y.attproj, y.atty, p(`${h}.attn.c_proj.weight`), p(`${h}.attn.c_proj.bias`), BT, C, C);
      k.residual.forward(pass, y.residual2, x, y.attproj, BT * C);
      k.layernorm.forward(
        pass,
        y.ln2,
        y.ln2Mean,
        y.ln2Rstd,
        y.residual2,
        p(`${h}.ln_2.weight`),
        p(`${h}.ln_2.bias`),
        BT,
        C,
      );
      k.linear.encode(pass, y.fch, y.ln2, p(`${h}.mlp.c_fc.weight`), p(`${h}.mlp.c_fc.bias`), BT, 4 * C, C);
      k.gelu.forward(pass, y.fchGelu, y.fch, BT * 4 * C);
      k.linear.encode(pass, y.fcproj, y.fchGelu, p(`${h}.mlp.c_proj.weight`), p(`${h}.mlp.c_proj.bias`), BT, C, 4 * C);
      k.residual.forward(pass, y.residual3, y.residual2, y.fcproj, BT * C);
    }
    k.layernorm.forward(
      pass,
      a.lnf,
      a.lnfMean,
      a.lnfRstd,
      a.layers[L - 1].residual3,
      p("ln_f.weight"),
      p("ln_f.bias"),
      BT,
      C,
    );
    k.lmHead.encode(pass, a.logits, a.lnf, p("wte.weight"), null, BT, V, C);
    k.crossEntropy.encode(pass, a.logits, this.losses, this.#targets, BT, V, withGradient);
    pass.end();
  }

  /** Records the backward pass of the last `encodeForward(…, true)`: `grads` ends up holding dLoss/dParams. */
  encodeBackward(encoder: GPUCommandEncoder) {
    encoder.clearBuffer(this.grads);
    const g = this.#grads;
    for (const buffer of [...g.residuals, g.lnf, ...g.layers.flatMap((layer) => Object.values(layer))]) {
      encoder.clearBuffer(buffer);
    }
    const k = this.#kernels, a = this.#acts, p = (name: string) => this.tensor(name);
    const d = (name: string) => this.tensor(name, this.grads);
    const { vocab_size: V, n_embd: C, n_head: NH, n_layer: L } = this.config;
    const B = this.batch, T = this.time, BT = B * T;
    const pass = encoder.beginComputePass({ label: "backward" });

    // lm_head, tied to wte: logits = lnf·wteᵀ, and a.logits now holds dlogits.
    k.accumulate.encode(pass, g.lnf, a.logits, p("wte.weight"), null, BT, C, V);
    k.linearWeightGrad.encode(pass, d("wte.weight"), a.logits, a.lnf, null, V, C, BT);
    const last = a.layers[L - 1].residual3;
    k.layernorm.backward(
      pass,
      g.residuals[L],
      d("ln_f.weight"),
      d("ln_f.bias"),
      g.lnf,
      last,
      p("ln_f.weight"),
      a.lnfMean,
      a.lnfRstd,
      BT,
      C,
    );

    for (let l = L - 1; l >= 0; l--) {
      const x = l === 0 ? a.encoded : a.layers[l - 1].residual3, y = a.layers[l], dy = g.layers[l], h = `h.${l}`;
      const dx = g.residuals[l], dout = g.residuals[l + 1];
      k.residual.backward(pass, dy.residual2, dy.fcproj, dout, BT * C);
      this.#linearBackward(pass, dy.fchGelu, `${h}.mlp.c_proj`, dy.fcproj, y.fchGelu, BT, 4 * C, C);
      k.gelu.backward(pass, dy.fch, y.fch, dy.fchGelu, BT * 4 * C);
      this.#linearBackward(pass, dy.ln2, `${h}.mlp.c_fc`, dy.fch, y.ln2, BT, C, 4 * C);
      k.layernorm.backward(
        pass,
        dy.residual2,
        d(`${h}.ln_2.weight`),
        d(`${h}.ln_2.bias`),
        dy.ln2,
        y.residual2,
        p(`${h}.ln_2.weight`),
        y.ln2Mean,
        y.ln2Rstd,
        BT,
        C,
      );
      k.residual.backward(pass, dx, dy.attproj, dy.residual2, BT * C);
      this.#linearBackward(pass, dy.atty, `${h}.attn.c_proj`, dy.attproj, y.atty, BT, C, C);
      k.attention.backward(pass, dy.qkv, g.dpre, dy.atty, y.qkv, y.att, B, T, C, NH);
      this.#linearBackward(pass, dy.ln1, `${h}.attn.c_attn`, dy.qkv, y.ln1, BT, C, 3 * C);
      k.layernorm.backward(
        pass,
        dx,
        d(`${h}.ln_1.weight`),
        d(`${h}.ln_1.bias`),
        dy.ln1,
        x,
        p(`${h}.ln_1.weight`),
        y.ln1Mean,
        y.ln1Rstd,
        BT,
        C,
      );
    }
    k.encoder.backward(
      pass,
      d("wte.weight"),
      d("wpe.weight"),
      g.residuals[0],
      this.#buckets,
      this.#bucketCount,
      B,
      T,
      C,
    );
    pass.end();
  }

  /** The backward of y[rows,out] = x[rows,in]·W + b for the Conv1D layer `layer`: dx, dW and db all accumulate. */
  #linearBackward(
    pass: GPUComputePassEncoder,
    dx: Binding,
    layer: string,
    dy: Binding,
    x: Binding,
    rows: number,
    inputs: number,
    outputs: number,
  ) {
    const k = this.#kernels;
    k.linearInputGrad.encode(pass, dx, dy, this.tensor(`${layer}.weight`), null, rows, inputs, outputs);
    k.linearWeightGrad.encode(pass, this.tensor(`${layer}.weight`, this.grads), x, dy, null, inputs, outputs, rows);
    k.accumulate.encode(pass, this.tensor(`${layer}.bias`, this.grads), this.#ones, dy, null, 1, outputs, rows);
  }

  destroy() {
    for (const buffer of this.#allBuffers) buffer.destroy();
  }
}
