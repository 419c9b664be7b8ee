// Single-node training: forward, backward, global-norm clipping and AdamW, one GPU submission a step.
// What resumes a run bit-exactly is explicit in `TrainerState`: parameters, AdamW m and v, the step,
// and the data order's position and RNG. Sharded data-parallel training updates a trainer's state a shard
// at a time (sharded.ts), and checkpoints take it a shard at a time (checkpointing.ts).

import { AdamW, type AdamWSettings } from "../kernels/adamw.ts";
import { type Batch, BatchLoader, type Corpus, type DataState } from "./data.ts";
import { type PiecedBuffer, readBuffer } from "./gpu.ts";
import { GPT2, type GPT2Config, type GPT2Options, initialParameters } from "./model.ts";

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
  /** Steps completed; whatever restores a state or takes an optimizer step outside `trainOn` sets it too. */
  step = 0;
  readonly device: GPUDevice;
  /** The optimizer's kernels, and the squared gradient norm its update clips by. */
  readonly adamw: AdamW;
  /** AdamW's moments, laid out and cut into pieces as model.params. */
  readonly m: PiecedBuffer;
  readonly v: PiecedBuffer;

  /** A model initialised from `settings.seed`; batches come from `corpus`, or are passed to `trainOn`. */
  constructor(
    device: GPUDevice,
    config: GPT2Config,
    settings: TrainerSettings,
    corpus?: Corpus,
    options: GPT2Options = {},
  ) {
    if (corpus && corpus.vocabSize > config.vocab_size) {
      throw new Error(`the corpus has a vocabulary of ${corpus.vocabSize}, the model only ${config.vocab_size}`);
    }
    this.device = device;
    this.settings = settings;
    this.model = new GPT2(device, config, settings.batch, settings.time, options);
    this.model.writeParameters(initialParameters(config, settings.seed));
    this.loader = corpus ? new BatchLoader(corpus, settings.batch, settings.time, settings.seed) : null;
    this.adamw = new AdamW(device);
    this.m = this.model.flatBuffer("adamw m");
    this.v = this.model.flatBuffer("adamw v");
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
    this.adamw.encodeGradNorm(pass, this.model.grads.parts(0, n));
    this.encodeUpdate(pass, 0, n);
    pass.end();
    this.device.queue.submit([encoder.finish()]);
    const loss = await this.model.readMeanLoss();
    const normSquared = new Float32Array(await readBuffer(this.device, this.adamw.normSquared))[0];
    this.step++;
    const milliseconds = performance.now() - start;
    const tokens = this.settings.batch * this.settings.time;
    return {
      step: this.step,
      loss,
      gradNorm: Math.sqrt(normSquared),
      milliseconds,
      tokensPerSecond: tokens / (milliseconds / 1000),
    };
  }

  /**
   * Records AdamW's step `this.step + 1` over [start, end) of params, m and v, piece by piece, with the
   * gradients in model.grads and the norm in adamw.normSquared.
   */
  encodeUpdate(pass: GPUComputePassEncoder, start: number, end: number) {
    const [params, m, v, grads] = [this.model.params, this.m, this.v, this.model.grads].map((flat) =>
      flat.parts(start, end)
    );
    params.forEach((part, i) => {
      const n = part.end - part.start;
      this.adamw.encodeUpdate(
        pass,
        part.binding,
        m[i].binding,
        v[i].binding,
        grads[i].binding,
        n,
        this.step + 1,
        this.settings,
      );
    });
  }

  /** Forward and backward on `batch` without an update: returns the mean loss, and model.grads holds the gradients. */
  async computeGradients(batch: Batch): Promise<number> {
    this.device.queue.submit([this.#encodeGradients(batch).finish()]);
    return await this.model.readMeanLoss();
  }

  #encodeGradients(batch: Batch): GPUCommandEncoder {
    this.model.setBatch(batch.inputs, batch.targets);
    const encoder = this.device.createCommandEncoder({ label: `step ${this.step + 1}` });
    this.model.encodeForward(encoder, true);
    this.model.encodeBackward(encoder);
    return encoder;
  }

  /** Where the data order is; without a corpus, batches come from the caller and there is no order to save. */
  get #dataState(): DataState {
    return this.loader?.state ?? { position: 0, rng: 0 };
  }

  async exportState(): Promise<TrainerState> {
    return {
      step: this.step,
      params: await this.model.readParameters(),
      m: await this.m.read(),
      v: await this.v.read(),
      data: this.#dataState,
    };
  }

  importState(state: TrainerState) {
    const n = this.model.totalFloats;
    for (const [name, values] of [["params", state.params], ["m", state.m], ["v", state.v]] as const) {
      if (values.length !== n) throw new Error(`trainer state: ${name} has ${values.length} floats, the model ${n}`);
    }
    this.model.writeParameters(state.params);
    this.m.write(0, state.m);
    this.v.write(0, state.v);
    this.loader?.restore(state.data);
    this.step = state.step;
  }

  destroy() {
    this.model.destroy();
    this.m.destroy();
    this.v.destroy();
  }
}
