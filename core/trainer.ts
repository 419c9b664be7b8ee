// Single-node training: forward, backward, global-norm clipping and AdamW, one GPU submission a step.
// What resumes a run bit-exactly is explicit in `TrainerState`: parameters, AdamW m and v, the step,
// and the data order's position and RNG.

import { AdamW, type AdamWSettings } from "../kernels/adamw.ts";
import type { CaptureSource } from "./capture.ts";
import { type DecodedShard, DEFAULT_CHUNK_BYTES, type ShardMeta } from "./checkpoint.ts";
import { type Batch, BatchLoader, type Corpus, type DataState } from "./data.ts";
import { readBuffer, storageBuffer } from "./gpu.ts";
import { GPT2, type GPT2Config, initialParameters } from "./model.ts";

export interface TrainerSettings extends AdamWSettings {
  batch: number;
  time: number;
  /** Seeds the initial parameters and the data order. */
  seed: number;
}

/** nanoGPT's defaults for small models, with llm.c's clipping at 1. */
export const DEFAULT_TRAINER_SETTINGS: Omit<TrainerSettings, "batch" | "time"> = {
  lr: 1e-3,
  beta1: 0.9,
  beta2: 0.95,
  eps: 1e-8,
  weightDecay: 0.1,
  maxGradNorm: 1,
  seed: 1337,
};

/** The whole state a run resumes from, bit for bit. */
export interface TrainerState {
  /** Steps completed. */
  step: number;
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
  data: DataState;
}

export interface StepReport {
  step: number;
  loss: number;
  /** The global gradient norm before clipping. */
  gradNorm: number;
  milliseconds: number;
  tokensPerSecond: number;
}

export class Trainer {
  readonly model: GPT2;
  readonly settings: TrainerSettings;
  readonly loader: BatchLoader | null;
  #step = 0;
  readonly device: GPUDevice;
  readonly #adamw: AdamW;
  readonly #m: GPUBuffer;
  readonly #v: GPUBuffer;

  /** A model initialised from `settings.seed`; batches come from `corpus`, or are passed to `trainOn`. */
  constructor(device: GPUDevice, config: GPT2Config, settings: TrainerSettings, corpus?: Corpus) {
    if (corpus && corpus.vocabSize > config.vocab_size) {
      throw new Error(`the corpus has a vocabulary of ${corpus.vocabSize}, the model only ${config.vocab_size}`);
    }
    this.device = device;
    this.settings = settings;
    this.model = new GPT2(device, config, settings.batch, settings.time);
    this.model.writeParameters(initialParameters(config, settings.seed));
    this.loader = corpus ? new BatchLoader(corpus, settings.batch, settings.time, settings.seed) : null;
    this.#adamw = new AdamW(device);
    this.#m = storageBuffer(device, this.model.totalFloats * 4, "adamw m");
    this.#v = storageBuffer(device, this.model.totalFloats * 4, "adamw v");
  }

  get step(): number {
    return this.#step;
  }

  /** One training step on the next batch of the corpus. */
  trainStep(): Promise<StepReport> {
    if (!this.loader) throw new Error("this trainer has no corpus: pass batches to trainOn");
    return this.trainOn(this.loader.next());
  }

  /** One training step on `batch`: forward, backward, clipping and AdamW. */
  async trainOn(batch: Batch): Promise<StepReport> {
    const start = performance.now();
    const encoder = this.#encodeGradients(batch);
    const pass = encoder.beginComputePass({ label: "optimizer" });
    const n = this.model.totalFloats;
    this.#adamw.encodeGradNorm(pass, this.model.grads, n);
    this.#adamw.encodeUpdate(
      pass,
      this.model.params,
      this.#m,
      this.#v,
      this.model.grads,
      n,
      this.#step + 1,
      this.settings,
    );
    pass.end();
    this.device.queue.submit([encoder.finish()]);
    const loss = await this.model.readMeanLoss();
    const normSquared = new Float32Array(await readBuffer(this.device, this.#adamw.normSquared))[0];
    this.#step++;
    const milliseconds = performance.now() - start;
    const tokens = this.settings.batch * this.settings.time;
    return {
      step: this.#step,
      loss,
      gradNorm: Math.sqrt(normSquared),
      milliseconds,
      tokensPerSecond: tokens / (milliseconds / 1000),
    };
  }

  /** Forward and backward on `batch` without an update: returns the mean loss, and model.grads holds the gradients. */
  async computeGradients(batch: Batch): Promise<number> {
    this.device.queue.submit([this.#encodeGradients(batch).finish()]);
    return await this.model.readMeanLoss();
  }

  #encodeGradients(batch: Batch): GPUCommandEncoder {
    this.model.setBatch(batch.inputs, batch.targets);
    const encoder = this.device.createCommandEncoder({ label: `step ${this.#step + 1}` });
    this.model.encodeForward(encoder, true);
    this.model.encodeBackward(encoder);
    return encoder;
  }

  /**
   * One optimizer step on the shard [start, end) of the state, as sharded data-parallel training takes it:
   * `grads` is that range of the gradient averaged over every machine and `normSquared` the squared norm
   * of the whole averaged gradient (the cluster sums it); the rest of params, m and v is left as it is.
   * The shard must start on a 64-float boundary (a storage binding's offset is 256-byte aligned).
   */
  updateShard({ start, end }: { start: number; end: number }, grads: Float32Array, normSquared: number) {
    const n = end - start;
    if (grads.length !== n) throw new Error(`updateShard: ${grads.length} gradients for a range of ${n}`);
    const queue = this.device.queue;
    queue.writeBuffer(this.model.grads, start * 4, grads);
    queue.writeBuffer(this.#adamw.normSquared, 0, Float32Array.of(normSquared));
    const range = (buffer: GPUBuffer): GPUBufferBinding => ({ buffer, offset: start * 4, size: n * 4 });
    const encoder = this.device.createCommandEncoder({ label: `shard update ${this.#step + 1}` });
    const pass = encoder.beginComputePass({ label: "optimizer shard" });
    const { params, grads: gradients } = this.model;
    this.#adamw.encodeUpdate(
      pass,
      range(params),
      range(this.#m),
      range(this.#v),
      range(gradients),
      n,
      this.#step + 1,
      this.settings,
    );
    pass.end();
    queue.submit([encoder.finish()]);
    this.#step++;
  }

  /** The parameters in [start, end). */
  async readParameterRange({ start, end }: { start: number; end: number }): Promise<Float32Array> {
    return new Float32Array(await readBuffer(this.device, this.model.params, (end - start) * 4, start * 4));
  }

  /** The GPU buffers a checkpoint shard of [start, end) (default: the whole state) is captured from. */
  checkpointSource(start = 0, end = this.model.totalFloats): CaptureSource {
    return { params: this.model.params, m: this.#m, v: this.#v, start, end };
  }

  /**
   * The metadata of a shard of this run's state as it is now (call it when the capture begins); by
   * default the shard is the whole state, as a single-node run checkpoints it.
   */
  checkpointMeta(
    owner: number,
    shard: ShardMeta["shard"] = {
      index: 0,
      count: 1,
      start: 0,
      end: this.model.totalFloats,
      totalFloats: this.model.totalFloats,
    },
    chunkBytes = DEFAULT_CHUNK_BYTES,
  ): ShardMeta {
    const data = this.#dataState;
    return { config: this.model.config, iteration: this.#step, data, owner, shard, chunkBytes, createdAt: Date.now() };
  }

  /** Where the data order is; without a corpus, batches come from the caller and there is no order to save. */
  get #dataState(): DataState {
    return this.loader?.state ?? { position: 0, rng: 0 };
  }

  /** Puts a checkpoint shard's state back on the GPU: its range of params, m and v, the step and the data order. */
  restoreShard({ meta, tensors }: DecodedShard) {
    const { start, end, totalFloats } = meta.shard;
    if (totalFloats !== this.model.totalFloats || JSON.stringify(meta.config) !== JSON.stringify(this.model.config)) {
      throw new Error(`the checkpoint is of another model (${JSON.stringify(meta.config)})`);
    }
    const queue = this.device.queue;
    for (
      const [buffer, values] of [[this.model.params, tensors.params], [this.#m, tensors.m], [
        this.#v,
        tensors.v,
      ]] as const
    ) {
      if (values.length !== end - start) {
        throw new Error(`checkpoint shard: ${values.length} floats for a range of ${end - start}`);
      }
      queue.writeBuffer(buffer, start * 4, values);
    }
    this.#step = meta.iteration;
    this.loader?.restore(meta.data);
  }

  async exportState(): Promise<TrainerState> {
    const read = async (buffer: GPUBuffer) => new Float32Array(await readBuffer(this.device, buffer));
    return {
      step: this.#step,
      params: await this.model.readParameters(),
      m: await read(this.#m),
      v: await read(this.#v),
      data: this.#dataState,
    };
  }

  importState(state: TrainerState) {
    const n = this.model.totalFloats;
    for (const [name, values] of [["params", state.params], ["m", state.m], ["v", state.v]] as const) {
      if (values.length !== n) throw new Error(`trainer state: ${name} has ${values.length} floats, the model ${n}`);
    }
    this.model.writeParameters(state.params);
    this.device.queue.writeBuffer(this.#m, 0, state.m);
    this.device.queue.writeBuffer(this.#v, 0, state.v);
    this.loader?.restore(state.data);
    this.#step = state.step;
  }

  destroy() {
    this.model.destroy();
    this.#m.destroy();
    this.#v.destroy();
  }
}
