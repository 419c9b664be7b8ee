// GPT-2 as published (Radford et al. 2019; Hugging Face's GPT2LMHeadModel): learned position embeddings,
// pre-LayerNorm blocks (eps 1e-5), GELU (tanh), causal self-attention, a final LayerNorm and an
// lm_head tied to the token embedding. The forward and backward follow llm.c's gpt2_forward and
// gpt2_backward step by step, on the kernels of kernels/.
//
// Parameters have one flat f32 layout (and the gradients the same), under Hugging Face's names and
// layouts, so GPT-2 weights load as they are: Conv1D weights are [in, out]. On the GPU that flat array is
// held in pieces that each fit one storage binding (`pieceStarts`): whole tensors, except wte, which
// may be cut into pieces of rows; the encoder and the lm_head run piece by piece over it.

import { Attention } from "../kernels/attention.ts";
import { CrossEntropy } from "../kernels/crossentropy.ts";
import { bucketTokens, Encoder, type WteRows } from "../kernels/encoder.ts";
import { Gelu } from "../kernels/gelu.ts";
import type { Binding } from "../kernels/kernel.ts";
import { LayerNorm } from "../kernels/layernorm.ts";
import { Matmul } from "../kernels/matmul.ts";
import { Residual } from "../kernels/residual.ts";
import { Sampler, type SampleSettings } from "../kernels/sample.ts";
import { PiecedBuffer, readBuffer, storageBuffer } from "./gpu.ts";
import { Rng } from "./random.ts";
import { STORAGE_ALIGNMENT_FLOATS } from "./shard.ts";

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

/** The number of floats in a tensor of `shape`. */
function floats(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/**
 * One block's parameters, in flat-buffer order: llm.c's name (as in its ParameterTensors) for Hugging
 * Face's name under `h.<l>.` and the shape.
 */
function blockParameterShapes(C: number) {
  return {
    ln1w: ["ln_1.weight", [C]],
    ln1b: ["ln_1.bias", [C]],
    qkvw: ["attn.c_attn.weight", [C, 3 * C]],
    qkvb: ["attn.c_attn.bias", [3 * C]],
    attprojw: ["attn.c_proj.weight", [C, C]],
    attprojb: ["attn.c_proj.bias", [C]],
    ln2w: ["ln_2.weight", [C]],
    ln2b: ["ln_2.bias", [C]],
    fcw: ["mlp.c_fc.weight", [C, 4 * C]],
    fcb: ["mlp.c_fc.bias", [4 * C]],
    fcprojw: ["mlp.c_proj.weight", [4 * C, C]],
    fcprojb: ["mlp.c_proj.bias", [C]],
  } satisfies Record<string, [string, number[]]>;
}

/** The parameters in Hugging Face GPT-2 order, with their offsets in the flat buffer. */
export function parameterLayout(config: GPT2Config): { specs: ParameterSpec[]; totalFloats: number } {
  const { vocab_size: V, n_ctx: maxT, n_embd: C, n_layer: L } = validateConfig(config);
  const shapes: [string, number[]][] = [["wte.weight", [V, C]], ["wpe.weight", [maxT, C]]];
  for (let l = 0; l < L; l++) {
    for (const [name, shape] of Object.values(blockParameterShapes(C))) shapes.push([`h.${l}.${name}`, shape]);
  }
  shapes.push(["ln_f.weight", [C]], ["ln_f.bias", [C]]);
  let offset = 0;
  const specs = shapes.map(([name, shape]) => {
    const size = floats(shape);
    const spec = { name, shape, offset, size };
    // Each tensor starts on a storage-binding boundary, so that it can be bound on its own.
    offset += Math.ceil(size / STORAGE_ALIGNMENT_FLOATS) * STORAGE_ALIGNMENT_FLOATS;
    return spec;
  });
  return { specs, totalFloats: offset };
}

function gcd(a: number, b: number): number {
  return b === 0 ? a : gcd(b, a % b);
}

/**
 * Where the pieces of the flat parameters start (in floats) when each piece may hold at most `maxBytes`:
 * as many whole tensors as fit, in layout order, and wte in pieces of whole rows when it alone is larger.
 * Every start is a tensor's or a row's, on a storage-binding boundary, so tensors and shards bind in place.
 */
export function pieceStarts(config: GPT2Config, maxBytes: number): number[] {
  const { specs, totalFloats } = parameterLayout(config);
  const maxFloats = Math.floor(maxBytes / 4 / STORAGE_ALIGNMENT_FLOATS) * STORAGE_ALIGNMENT_FLOATS;
  const cuts: number[] = [];
  specs.forEach((spec, i) => {
    cuts.push(spec.offset);
    const end = specs[i + 1]?.offset ?? totalFloats;
    if (end - spec.offset <= maxFloats) return;
    const rowFloats = spec.shape[1];
    if (spec.name !== "wte.weight") {
      throw new Error(`${spec.name} (${spec.size * 4} bytes) does not fit one storage binding of ${maxBytes} bytes`);
    }
    const step = STORAGE_ALIGNMENT_FLOATS / gcd(rowFloats, STORAGE_ALIGNMENT_FLOATS); // rows to an aligned start
    const rows = Math.floor(maxFloats / rowFloats / step) * step;
    if (rows === 0) throw new Error(`not even ${step} rows of wte fit one storage binding of ${maxBytes} bytes`);
    for (let row = rows; row < spec.shape[0]; row += rows) cuts.push(spec.offset + row * rowFloats);
  });
  cuts.push(totalFloats);
  const starts = [0];
  for (let i = 1; i < cuts.length; i++) if (cuts[i] - starts.at(-1)! > maxFloats) starts.push(cuts[i - 1]);
  return starts;
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

/** One block's parameters, shaped as in `blockParameterShapes`. */
type BlockParameters = Record<keyof ReturnType<typeof blockParameterShapes>, GPUBufferBinding>;

/** A piece of wte: the binding of its rows. */
interface WtePiece {
  binding: GPUBufferBinding;
  rows: WteRows;
}

/** The parameters (or their gradients) as ranges of the flat pieces, under llm.c's names. */
interface ParameterTensors {
  wte: WtePiece[]; // (V,C), in pieces of rows
  wpe: GPUBufferBinding; // (maxT,C)
  blocks: BlockParameters[];
  lnfw: GPUBufferBinding; // (C)
  lnfb: GPUBufferBinding; // (C)
}

/** The tensors of `flat`, in `parameterLayout(config)`. */
function parameterTensors(config: GPT2Config, flat: PiecedBuffer): ParameterTensors {
  const specs = new Map(parameterLayout(config).specs.map((spec) => [spec.name, spec]));
  const tensor = (name: string): GPUBufferBinding => {
    const { offset, size } = specs.get(name)!;
    return flat.binding(offset, offset + size);
  };
  const blockNames = Object.entries(blockParameterShapes(config.n_embd)).map(([key, [name]]) => [key, name]);
  const wte = specs.get("wte.weight")!, C = config.n_embd;
  return {
    wte: flat.parts(wte.offset, wte.offset + wte.size).map(({ binding, start, end }) => ({
      binding,
      rows: { start: (start - wte.offset) / C, end: (end - wte.offset) / C },
    })),
    wpe: tensor("wpe.weight"),
    blocks: Array.from(
      { length: config.n_layer },
      (_, l) => Object.fromEntries(blockNames.map(([key, name]) => [key, tensor(`h.${l}.${name}`)])) as BlockParameters,
    ),
    lnfw: tensor("ln_f.weight"),
    lnfb: tensor("ln_f.bias"),
  };
}

/** The shape of each of one block's activations (llm.c's ActivationTensors, one layer's share). */
function blockActivationShapes(B: number, T: number, C: number, NH: number) {
  return {
    ln1: [B, T, C],
    ln1Mean: [B, T],
    ln1Rstd: [B, T],
    qkv: [B, T, 3 * C],
    atty: [B, T, C],
    att: [B, NH, T, T],
    attproj: [B, T, C],
    residual2: [B, T, C],
    ln2: [B, T, C],
    ln2Mean: [B, T],
    ln2Rstd: [B, T],
    fch: [B, T, 4 * C],
    fchGelu: [B, T, 4 * C],
    fcproj: [B, T, C],
    residual3: [B, T, C],
  };
}
type BlockActivations<Buffer = GPUBuffer> = Record<keyof ReturnType<typeof blockActivationShapes>, Buffer>;

// The block activations whose gradients the backward passes between its steps (residual3's is the
// gradient of the block's output); the means and rstds have none, and att's is one scratch buffer.
const BLOCK_GRADIENTS = [
  "ln1",
  "qkv",
  "atty",
  "attproj",
  "residual2",
  "ln2",
  "fch",
  "fchGelu",
  "fcproj",
  "residual3",
] as const;
type BlockGradients<Buffer = GPUBuffer> = Pick<BlockActivations<Buffer>, typeof BLOCK_GRADIENTS[number]>;

/** The activations of a forward, kept for the backward. */
interface ActivationTensors<Buffer = GPUBuffer> {
  encoded: Buffer; // (B,T,C)
  blocks: BlockActivations<Buffer>[];
  lnf: Buffer; // (B,T,C)
  lnfMean: Buffer; // (B,T)
  lnfRstd: Buffer; // (B,T)
  logits: Buffer; // (B,T,V); after a forward with the gradient, dlogits
}

/** The gradients of the activations. */
interface ActivationGradients<Buffer = GPUBuffer> {
  encoded: Buffer; // (B,T,C)
  blocks: BlockGradients<Buffer>[];
  preatt: Buffer; // (B,NH,T,T), of the attention scores before the softmax: scratch, shared by the blocks
  lnf: Buffer; // (B,T,C)
}

/**
 * Every buffer a model for batch B x sequence T has besides its parameters and gradients, made by
 * `buffer`: the GPU buffers of a model, or their sizes for a memory plan made before anything is allocated.
 */
function activationBuffers<Buffer>(
  config: GPT2Config,
  B: number,
  T: number,
  buffer: (shape: number[], label: string) => Buffer,
) {
  const { vocab_size: V, n_embd: C, n_head: NH, n_layer: L } = config;
  const blockShapes = blockActivationShapes(B, T, C, NH);
  const acts: ActivationTensors<Buffer> = {
    encoded: buffer([B, T, C], "encoded"),
    blocks: Array.from({ length: L }, (_, l) => {
      const entries = Object.entries(blockShapes).map(([name, shape]) => [name, buffer(shape, `block ${l} ${name}`)]);
      return Object.fromEntries(entries) as BlockActivations<Buffer>;
    }),
    lnf: buffer([B, T, C], "lnf"),
    lnfMean: buffer([B, T], "lnf mean"),
    lnfRstd: buffer([B, T], "lnf rstd"),
    logits: buffer([B, T, V], "logits"),
  };
  const gradActs: ActivationGradients<Buffer> = {
    encoded: buffer([B, T, C], "d encoded"),
    blocks: Array.from({ length: L }, (_, l) => {
      const entries = BLOCK_GRADIENTS.map((name) => [name, buffer(blockShapes[name], `d block ${l} ${name}`)]);
      return Object.fromEntries(entries) as BlockGradients<Buffer>;
    }),
    preatt: buffer([B, NH, T, T], "d preatt"),
    lnf: buffer([B, T, C], "d lnf"),
  };
  return {
    acts,
    gradActs,
    losses: buffer([B, T], "losses"),
    tokens: buffer([B, T], "tokens"),
    targets: buffer([B, T], "targets"),
    buckets: {
      starts: buffer([B * T + 1], "bucket starts"),
      positions: buffer([B * T], "bucket positions"),
      tokens: buffer([B * T], "bucket tokens"),
    },
    ones: buffer([B * T], "ones"),
    lmHeadPartial: buffer([B, T, C], "lm_head dx partial"),
  };
}

/** What a model's activations for batch B x sequence T take on the GPU: in all, and the largest one buffer. */
export function activationBytes(
  config: GPT2Config,
  B: number,
  T: number,
): { total: number; largest: number; label: string } {
  const sizes = { total: 0, largest: 0, label: "" };
  activationBuffers(config, B, T, (shape, label) => {
    const bytes = Math.max(4, floats(shape) * 4);
    sizes.total += bytes;
    if (bytes > sizes.largest) Object.assign(sizes, { largest: bytes, label });
  });
  return sizes;
}

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
  /** out += A·B: the bias gradients (1ᵀ·dy) */
  readonly accumulate: Matmul;
  /** dx += dlogits·wte, the sum over the vocabulary carried on from one piece of wte to the next */
  readonly lmHeadInputGrad: Matmul;

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
    this.lmHeadInputGrad = new Matmul(device, { accumulate: true, splitK: true });
  }
}

export interface GPT2Options {
  /**
   * The most bytes one piece of the parameters may hold, below the adapter's limit: tests lower it to
   * cut the model into many pieces on any adapter.
   */
  maxBindingBytes?: number;
}

/** The largest storage binding (and buffer) this device allows, in bytes. */
export function bindingLimit(device: GPUDevice): number {
  return Math.min(device.limits.maxStorageBufferBindingSize, device.limits.maxBufferSize);
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
  /** Where each piece of the flat parameters starts: params, grads and AdamW's m and v are all cut so. */
  readonly pieceStarts: number[];
  /** All parameters, flat, in `specs` layout. */
  readonly params: PiecedBuffer;
  /** Their gradients, same layout; zeroed and accumulated by every backward. */
  readonly grads: PiecedBuffer;
  /** The loss of every position, [B*T]. */
  readonly losses: GPUBuffer;

  readonly #device: GPUDevice;
  readonly #kernels: Kernels;
  readonly #paramTensors: ParameterTensors;
  readonly #gradTensors: ParameterTensors;
  readonly #acts: ActivationTensors;
  readonly #gradActs: ActivationGradients;
  readonly #tokens: GPUBuffer;
  readonly #targets: GPUBuffer;
  readonly #buckets: { starts: GPUBuffer; positions: GPUBuffer; tokens: GPUBuffer };
  #bucketCount = 0;
  readonly #ones: GPUBuffer;
  /** dlnf's accumulators between the pieces of wte. */
  readonly #lmHeadPartial: GPUBuffer;
  readonly #allBuffers: GPUBuffer[] = [];

  constructor(device: GPUDevice, config: GPT2Config, batch: number, time: number, options: GPT2Options = {}) {
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
    const limit = bindingLimit(device);
    this.pieceStarts = pieceStarts(config, Math.min(limit, options.maxBindingBytes ?? limit));
    this.#kernels = new Kernels(device);

    const { largest, label } = activationBytes(config, batch, time);
    if (largest > limit) {
      throw new Error(
        `${label} (${largest} bytes for batch ${batch} x sequence ${time}) exceeds this adapter's largest ` +
          `storage binding (${limit} bytes): choose a smaller batch or sequence`,
      );
    }
    this.params = this.flatBuffer("params");
    this.grads = this.flatBuffer("grads");
    this.#paramTensors = parameterTensors(config, this.params);
    this.#gradTensors = parameterTensors(config, this.grads);
    const made = activationBuffers(config, batch, time, (shape, label) => {
      const created = storageBuffer(device, floats(shape) * 4, label);
      this.#allBuffers.push(created);
      return created;
    });
    ({ acts: this.#acts, gradActs: this.#gradActs, losses: this.losses, buckets: this.#buckets } = made);
    ({ tokens: this.#tokens, targets: this.#targets, ones: this.#ones, lmHeadPartial: this.#lmHeadPartial } = made);
    device.queue.writeBuffer(this.#ones, 0, new Float32Array(batch * time).fill(1));
  }

  /** The bytes of every GPU buffer this model holds (what a memory plan is checked against). */
  get allocatedBytes(): number {
    return [...this.#allBuffers, ...[this.params, this.grads].flatMap((flat) => flat.pieces.map((p) => p.buffer))]
      .reduce((sum, buffer) => sum + buffer.size, 0);
  }

  /** A zeroed flat array in the parameters' layout and pieces (AdamW's m and v are made so). */
  flatBuffer(label: string): PiecedBuffer {
    return PiecedBuffer.allocate(this.#device, this.pieceStarts, this.totalFloats, label);
  }

  /** Uploads all parameters (flat, `specs` layout), a piece at a time (see `PiecedBuffer.upload`). */
  async writeParameters(params: Float32Array) {
    if (params.length !== this.totalFloats) {
      throw new Error(`expected ${this.totalFloats} parameter floats, got ${params.length}`);
    }
    await this.params.upload(0, params);
  }

  readParameters(): Promise<Float32Array> {
    return this.params.read();
  }

  readGradients(): Promise<Float32Array> {
    return this.grads.read();
  }

  /** The logits of the last forward without the gradient, [B,T,V]. */
  get logits(): GPUBuffer {
    return this.#acts.logits;
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
    const k = this.#kernels, p = this.#paramTensors, a = this.#acts;
    const { vocab_size: V, n_embd: C, n_layer: L } = this.config, B = this.batch, T = this.time, BT = B * T;
    const pass = encoder.beginComputePass({ label: "forward" });
    // encoder: tokens (B,T) -> wte[token] + wpe[t] (B,T,C), each piece of wte for the tokens in its rows
    for (const wte of p.wte) k.encoder.forward(pass, a.encoded, this.#tokens, wte.binding, p.wpe, B, T, C, wte.rows);
    for (let l = 0; l < L; l++) this.#blockForward(pass, l);
    const residual = a.blocks[L - 1].residual3;
    // ln_f: (B,T,C) -> (B,T,C)
    k.layernorm.forward(pass, a.lnf, a.lnfMean, a.lnfRstd, residual, p.lnfw, p.lnfb, BT, C);
    // lm_head, tied to wte: (B,T,C) · wteᵀ -> logits (B,T,V), each piece of wte its block of columns
    for (const { binding, rows } of p.wte) {
      const view = { outStride: V, outOffset: rows.start };
      k.lmHead.encode(pass, a.logits, a.lnf, binding, null, BT, rows.end - rows.start, C, view);
    }
    // cross-entropy: logits (B,T,V), targets (B,T) -> losses (B,T); with the gradient, logits -> dlogits
    k.crossEntropy.encode(pass, a.logits, this.losses, this.#targets, BT, V, withGradient);
    pass.end();
  }

  /** Records the backward pass of the last `encodeForward(…, true)`: `grads` ends up holding dLoss/dParams. */
  encodeBackward(encoder: GPUCommandEncoder) {
    // Every gradient accumulates (+=), so all start at zero; preatt is overwritten, not accumulated.
    const da = this.#gradActs;
    this.grads.encodeClear(encoder);
    for (const buffer of [da.encoded, da.lnf, ...da.blocks.flatMap((block) => Object.values(block))]) {
      encoder.clearBuffer(buffer);
    }
    const k = this.#kernels, p = this.#paramTensors, dp = this.#gradTensors, a = this.#acts;
    const { vocab_size: V, n_embd: C, n_layer: L } = this.config, B = this.batch, T = this.time, BT = B * T;
    const pass = encoder.beginComputePass({ label: "backward" });
    // lm_head: dlogits (B,T,V) -> dlnf (B,T,C) += dlogits · wte, its sum over V running on through the
    // pieces of wte in order; dwte (V,C) += dlogitsᵀ · lnf, a piece's rows from its block of columns.
    p.wte.forEach(({ binding, rows }, i) => {
      const view = {
        aStride: V,
        aOffset: rows.start,
        partial: this.#lmHeadPartial,
        first: i === 0,
        last: i === p.wte.length - 1,
      };
      k.lmHeadInputGrad.encode(pass, da.lnf, a.logits, binding, null, BT, C, rows.end - rows.start, view);
    });
    for (const { binding, rows } of dp.wte) {
      const view = { aStride: V, aOffset: rows.start };
      k.linearWeightGrad.encode(pass, binding, a.logits, a.lnf, null, rows.end - rows.start, C, BT, view);
    }
    // ln_f: dlnf (B,T,C) -> d residual (B,T,C), dlnfw, dlnfb (C)
    const residual = a.blocks[L - 1].residual3, dresidual = da.blocks[L - 1].residual3;
    k.layernorm.backward(pass, dresidual, dp.lnfw, dp.lnfb, da.lnf, residual, p.lnfw, a.lnfMean, a.lnfRstd, BT, C);
    for (let l = L - 1; l >= 0; l--) this.#blockBackward(pass, l);
    // encoder: dencoded (B,T,C) -> dwte (V,C), piece by piece, and dwpe (maxT,C)
    for (const { binding, rows } of dp.wte) {
      k.encoder.backwardWte(pass, binding, da.encoded, this.#buckets, this.#bucketCount, B, T, C, rows);
    }
    k.encoder.backwardWpe(pass, dp.wpe, da.encoded, B, T, C);
    pass.end();
  }

  /** Block l's forward: the residual stream x (B,T,C) -> residual3 (B,T,C). */
  #blockForward(pass: GPUComputePassEncoder, l: number) {
    const k = this.#kernels, p = this.#paramTensors.blocks[l], a = this.#acts.blocks[l];
    const x = l === 0 ? this.#acts.encoded : this.#acts.blocks[l - 1].residual3;
    const { n_embd: C, n_head: NH } = this.config, B = this.batch, T = this.time, BT = B * T;
    // ln_1: x (B,T,C) -> ln1 (B,T,C)
    k.layernorm.forward(pass, a.ln1, a.ln1Mean, a.ln1Rstd, x, p.ln1w, p.ln1b, BT, C);
    // attn.c_attn: ln1 (B,T,C) -> qkv (B,T,3C)
    k.linear.encode(pass, a.qkv, a.ln1, p.qkvw, p.qkvb, BT, 3 * C, C);
    // attention: qkv (B,T,3C) -> atty (B,T,C), att (B,NH,T,T)
    k.attention.forward(pass, a.atty, a.att, a.qkv, B, T, C, NH);
    // attn.c_proj: atty (B,T,C) -> attproj (B,T,C)
    k.linear.encode(pass, a.attproj, a.atty, p.attprojw, p.attprojb, BT, C, C);
    // residual: x + attproj -> residual2 (B,T,C)
    k.residual.forward(pass, a.residual2, x, a.attproj, BT * C);
    // ln_2: residual2 (B,T,C) -> ln2 (B,T,C)
    k.layernorm.forward(pass, a.ln2, a.ln2Mean, a.ln2Rstd, a.residual2, p.ln2w, p.ln2b, BT, C);
    // mlp.c_fc: ln2 (B,T,C) -> fch (B,T,4C)
    k.linear.encode(pass, a.fch, a.ln2, p.fcw, p.fcb, BT, 4 * C, C);
    // gelu: fch (B,T,4C) -> fchGelu (B,T,4C)
    k.gelu.forward(pass, a.fchGelu, a.fch, BT * 4 * C);
    // mlp.c_proj: fchGelu (B,T,4C) -> fcproj (B,T,C)
    k.linear.encode(pass, a.fcproj, a.fchGelu, p.fcprojw, p.fcprojb, BT, C, 4 * C);
    // residual: residual2 + fcproj -> residual3 (B,T,C)
    k.residual.forward(pass, a.residual3, a.residual2, a.fcproj, BT * C);
  }

  /** Block l's backward, its forward's steps in reverse: dresidual3 (B,T,C) -> dx (B,T,C), and its dparams. */
  #blockBackward(pass: GPUComputePassEncoder, l: number) {
    const k = this.#kernels, p = this.#paramTensors.blocks[l], dp = this.#gradTensors.blocks[l];
    const a = this.#acts.blocks[l], da = this.#gradActs.blocks[l];
    const x = l === 0 ? this.#acts.encoded : this.#acts.blocks[l - 1].residual3;
    const dx = l === 0 ? this.#gradActs.encoded : this.#gradActs.blocks[l - 1].residual3;
    const { n_embd: C, n_head: NH } = this.config, B = this.batch, T = this.time, BT = B * T;
    // residual: dresidual3 -> dresidual2, dfcproj
    k.residual.backward(pass, da.residual2, da.fcproj, da.residual3, BT * C);
    // mlp.c_proj: dfcproj (B,T,C) -> dfchGelu (B,T,4C), dfcprojw, dfcprojb
    this.#linearBackward(pass, da.fchGelu, dp.fcprojw, dp.fcprojb, da.fcproj, a.fchGelu, p.fcprojw, BT, 4 * C, C);
    // gelu: dfchGelu (B,T,4C) -> dfch (B,T,4C)
    k.gelu.backward(pass, da.fch, a.fch, da.fchGelu, BT * 4 * C);
    // mlp.c_fc: dfch (B,T,4C) -> dln2 (B,T,C), dfcw, dfcb
    this.#linearBackward(pass, da.ln2, dp.fcw, dp.fcb, da.fch, a.ln2, p.fcw, BT, C, 4 * C);
    // ln_2: dln2 (B,T,C) -> dresidual2 (B,T,C), dln2w, dln2b
    k.layernorm.backward(
      pass,
      da.residual2,
      dp.ln2w,
      dp.ln2b,
      da.ln2,
      a.residual2,
      p.ln2w,
      a.ln2Mean,
      a.ln2Rstd,
      BT,
      C,
    );
    // residual: dresidual2 -> dx, dattproj
    k.residual.backward(pass, dx, da.attproj, da.residual2, BT * C);
    // attn.c_proj: dattproj (B,T,C) -> datty (B,T,C), dattprojw, dattprojb
    this.#linearBackward(pass, da.atty, dp.attprojw, dp.attprojb, da.attproj, a.atty, p.attprojw, BT, C, C);
    // attention: datty (B,T,C) -> dqkv (B,T,3C), through dpreatt (B,NH,T,T)
    k.attention.backward(pass, da.qkv, this.#gradActs.preatt, da.atty, a.qkv, a.att, B, T, C, NH);
    // attn.c_attn: dqkv (B,T,3C) -> dln1 (B,T,C), dqkvw, dqkvb
    this.#linearBackward(pass, da.ln1, dp.qkvw, dp.qkvb, da.qkv, a.ln1, p.qkvw, BT, C, 3 * C);
    // ln_1: dln1 (B,T,C) -> dx (B,T,C), dln1w, dln1b
    k.layernorm.backward(pass, dx, dp.ln1w, dp.ln1b, da.ln1, x, p.ln1w, a.ln1Mean, a.ln1Rstd, BT, C);
  }

  /**
   * The backward of the Conv1D layer y[rows,outputs] = x[rows,inputs]·w + b (llm.c matmul_backward):
   * dx += dy·wᵀ, dw += xᵀ·dy, db += the sum of dy over the rows.
   */
  #linearBackward(
    pass: GPUComputePassEncoder,
    dx: Binding,
    dw: Binding,
    db: Binding,
    dy: Binding,
    x: Binding,
    w: Binding,
    rows: number,
    inputs: number,
    outputs: number,
  ) {
    const k = this.#kernels;
    k.linearInputGrad.encode(pass, dx, dy, w, null, rows, inputs, outputs);
    k.linearWeightGrad.encode(pass, dw, x, dy, null, inputs, outputs, rows);
    // The bias gradient as 1ᵀ·dy: a [1,rows] row of ones times dy, summed in the same order as any matmul.
    k.accumulate.encode(pass, db, this.#ones, dy, null, 1, outputs, rows);
  }

  destroy() {
    for (const buffer of this.#allBuffers) buffer.destroy();
    this.params.destroy();
    this.grads.destroy();
  }
}

export interface GenerateSettings extends SampleSettings {
  /** How many tokens to generate after the prompt. */
  tokens: number;
  /** Seeds the draws. */
  seed: number;
}

/**
 * Tokens sampled on the GPU from `model` (batch 1, its sequence long enough for the prompt and the new
 * tokens) after `prompt`, yielded as each is drawn. Each token is a forward over the whole sequence so far:
 * attention is causal, so the positions not yet filled (token 0) change nothing before them.
 */
export async function* generate(
  device: GPUDevice,
  model: GPT2,
  prompt: readonly number[],
  settings: GenerateSettings,
): AsyncGenerator<number> {
  if (model.batch !== 1) throw new Error(`generation runs on a model of batch 1, not ${model.batch}`);
  if (prompt.length === 0) throw new Error("the prompt needs at least one token");
  if (prompt.length + settings.tokens > model.time) {
    throw new Error(
      `${prompt.length} prompt tokens and ${settings.tokens} new ones exceed the model's sequence of ${model.time}`,
    );
  }
  const sampler = new Sampler(device), rng = new Rng(settings.seed), V = model.config.vocab_size;
  const token = storageBuffer(device, 4, "sampled token");
  const sequence = [...prompt];
  try {
    for (let i = 0; i < settings.tokens; i++) {
      const inputs = Array.from({ length: model.time }, (_, t) => sequence[t] ?? 0);
      model.setBatch(inputs, inputs);
      const encoder = device.createCommandEncoder({ label: `generate ${i}` });
      model.encodeForward(encoder, false);
      const pass = encoder.beginComputePass({ label: "sample" });
      sampler.encode(pass, token, model.logits, (sequence.length - 1) * V, V, rng.uniform(), settings);
      pass.end();
      device.queue.submit([encoder.finish()]);
      const next = new Uint32Array(await readBuffer(device, token))[0];
      sequence.push(next);
      yield next;
    }
  } finally {
    token.destroy();
  }
}
