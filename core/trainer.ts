// Single-node training: forward, backward, global-norm clipping and AdamW, one GPU submission a step.
// What resumes a run bit-exactly is explicit in `TrainerState`: parameters, AdamW m and v, the step,
// and the data order's position and RNG. Sharded data-parallel training updates a trainer's state a shard
// at a time (sharded.ts), and checkpoints take it a shard at a time (checkpointing.ts); a cluster machine's
// trainer holds m and v for its shard only, since it never updates the rest (ZeRO-1).

import { AdamW, type AdamWSettings } from "../kernels/adamw.ts";
import { type Batch, BatchLoader, type Corpus, type DataState } from "./data.ts";
import { PiecedBuffer, READBACK_STAGING_BYTES, readBuffer, UPLOAD_PIECE_BYTES } from "./gpu.ts";
import { shardRanges } from "./shard.ts";
import {
  activationBytes,
  GPT2,
  type GPT2Config,
  type GPT2Options,
  initialParameters,
  parameterLayout,
} from "./model.ts";

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
  /** AdamW's moments over the trainer's `range`: all of the parameters, or a cluster machine's shard. */
  m: Float32Array;
  v: Float32Array;
  data: DataState;
}

/** Whether two arrays hold the same floats, bit for bit (so -0 is not 0, and a NaN is told by its bits). */
export function sameBits(a: Float32Array, b: Float32Array): boolean {
  if (a.length !== b.length) return false;
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.every((word, i) => word === y[i]);
}

/**
 * A SHA-256 of a state's parameters and AdamW moments, bit for bit: two states with the same digest are
 * the same, so a run's final state can be compared with another's after its memory is given back.
 */
export async function stateDigest(state: Pick<TrainerState, "params" | "m" | "v">): Promise<string> {
  const digests = await Promise.all(
    (["params", "m", "v"] as const).map((name) =>
      crypto.subtle.digest("SHA-256", state[name] as Float32Array<ArrayBuffer>)
    ),
  );
  const all = new Uint8Array(
    await crypto.subtle.digest("SHA-256", new Uint8Array(digests.flatMap((d) => [...new Uint8Array(d)]))),
  );
  return Array.from(all, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

/** Whether two states' parameters and AdamW moments are equal bit for bit. */
export function sameState(a: Pick<TrainerState, "params" | "m" | "v">, b: Pick<TrainerState, "params" | "m" | "v">) {
  return (["params", "m", "v"] as const).every((name) => sameBits(a[name], b[name]));
}

export interface TrainerOptions extends GPT2Options {
  /** The range of the flat state this trainer updates, in floats (a cluster machine's shard); by default all. */
  range?: { start: number; end: number };
  /**
   * The model and AdamW's kernels, built ahead on this device for this config, batch and sequence (a spare
   * machine's), the model holding the initial parameters of `seed` (GPT-2's take 17 s to draw here).
   */
  built?: Pick<Trainer, "model" | "adamw"> & { seed: number };
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
  /** The range of the flat state the optimizer updates, in floats. */
  readonly range: { start: number; end: number };
  /**
   * AdamW's moments over `range` only, addressed as model.params is (float i of the state is float i here)
   * and cut at the same piece boundaries, so that each piece of a range binds beside its parameters.
   */
  readonly m: PiecedBuffer;
  readonly v: PiecedBuffer;

  /** A model initialised from `settings.seed`; batches come from `corpus`, or are passed to `trainOn`. */
  constructor(
    device: GPUDevice,
    config: GPT2Config,
    settings: TrainerSettings,
    corpus?: Corpus,
    options: TrainerOptions = {},
  ) {
    if (corpus && corpus.vocabSize > config.vocab_size) {
      throw new Error(`the corpus has a vocabulary of ${corpus.vocabSize}, the model only ${config.vocab_size}`);
    }
    this.device = device;
    this.settings = settings;
    const built = options.built, job = JSON.stringify([config, settings.batch, settings.time, settings.seed]);
    if (built && JSON.stringify([built.model.config, built.model.batch, built.model.time, built.seed]) !== job) {
      throw new Error("the model built ahead is for another config, batch, sequence or seed");
    }
    this.model = built?.model ?? new GPT2(device, config, settings.batch, settings.time, options);
    // Whole, once: a new machine's checkpoint slots are still untouched, so the staging copy fits beside them.
    if (!built) this.model.params.write(0, initialParameters(config, settings.seed));
    this.loader = corpus ? new BatchLoader(corpus, settings.batch, settings.time, settings.seed) : null;
    this.adamw = built?.adamw ?? new AdamW(device);
    const total = this.model.totalFloats, { start, end } = options.range ?? { start: 0, end: total };
    if (!(Number.isInteger(start) && Number.isInteger(end) && 0 <= start && start < end && end <= total)) {
      throw new Error(`the trainer's range [${start}, ${end}) is not inside the ${total} floats of the state`);
    }
    this.range = { start, end };
    // Pieces start where the parameters' pieces do, and at `start` itself (a shard starts on a binding boundary).
    const starts = [start, ...this.model.pieceStarts.filter((s) => s > start && s < end)];
    this.m = PiecedBuffer.allocate(device, starts, end, "adamw m");
    this.v = PiecedBuffer.allocate(device, starts, end, "adamw v");
  }

  /** One training step on the next batch of the corpus. */
  trainStep(): Promise<StepReport> {
    if (!this.loader) throw new Error("this trainer has no corpus: pass batches to trainOn");
    return this.trainOn(this.loader.next());
  }

  /** One training step on `batch`: forward, backward, clipping and AdamW. */
  async trainOn(batch: Batch): Promise<StepReport> {
    const start = performance.now();
    const encoder = this.device.createCommandEncoder({ label: `step ${this.step + 1}` });
    this.encodeStep(encoder, batch);
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

  /** Records one training step on `batch` into `encoder`: forward, backward, clipping and AdamW. */
  encodeStep(encoder: GPUCommandEncoder, batch: Batch) {
    this.#encodeGradients(encoder, batch);
    const pass = encoder.beginComputePass({ label: "optimizer" });
    const n = this.model.totalFloats;
    this.adamw.encodeGradNorm(pass, this.model.grads.parts(0, n));
    this.encodeUpdate(pass, 0, n);
    pass.end();
  }

  /**
   * Records AdamW's step `this.step + 1` over [start, end) of params, m and v, piece by piece, with the
   * gradients in model.grads and the norm in adamw.normSquared.
   */
  encodeUpdate(pass: GPUComputePassEncoder, start: number, end: number) {
    if (start < this.range.start || end > this.range.end) {
      throw new Error(`this trainer holds AdamW's moments for [${this.range.start}, ${this.range.end}) only`);
    }
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
    const encoder = this.device.createCommandEncoder({ label: `gradients ${this.step + 1}` });
    this.#encodeGradients(encoder, batch);
    this.device.queue.submit([encoder.finish()]);
    return await this.model.readMeanLoss();
  }

  #encodeGradients(encoder: GPUCommandEncoder, batch: Batch) {
    this.model.setBatch(batch.inputs, batch.targets);
    this.model.encodeForward(encoder, true);
    this.model.encodeBackward(encoder);
  }

  /** Where the data order is; without a corpus, batches come from the caller and there is no order to save. */
  get #dataState(): DataState {
    return this.loader?.state ?? { position: 0, rng: 0 };
  }

  async exportState(): Promise<TrainerState> {
    return {
      step: this.step,
      params: await this.model.readParameters(),
      m: await this.m.read(this.range.start, this.range.end),
      v: await this.v.read(this.range.start, this.range.end),
      data: this.#dataState,
    };
  }

  importState(state: TrainerState) {
    const { start, end } = this.range;
    const sizes = { params: this.model.totalFloats, m: end - start, v: end - start };
    for (const [name, n] of Object.entries(sizes) as [keyof typeof sizes, number][]) {
      const values = state[name];
      if (values.length !== n) throw new Error(`trainer state: ${name} has ${values.length} floats, expected ${n}`);
    }
    this.model.params.write(0, state.params);
    this.m.write(start, state.m);
    this.v.write(start, state.v);
    this.loader?.restore(state.data);
    this.step = state.step;
  }

  destroy() {
    this.model.destroy();
    this.m.destroy();
    this.v.destroy();
  }
}

/** What a plan of a machine's memory is made for: the model, its batch and sequence, and its checkpoints. */
export interface MemoryPlanSettings {
  config: GPT2Config;
  batch: number;
  time: number;
  /** Machines the state is sharded over (1 for a single-node run). */
  machines: number;
  /** Checkpoint slots each machine keeps, for itself and for each peer it holds replicas of. */
  slotsPerOwner: number;
  /** GPU staging buffers its checkpoints are captured through (`CheckpointSpec.captureBuffers`). */
  captureBuffers: number;
  /** Owners whose checkpoints a machine holds: its own and its replicas' (GEMINI's m). */
  owners: number;
  /** The encoded size of the largest machine's checkpoint. */
  checkpointBytes: number;
  chunkBytes: number;
}

/** One machine's memory, line by line, in bytes; the sums are what the whole cluster needs. */
export interface MemoryPlan {
  gpu: [string, number][];
  host: [string, number][];
  gpuBytes: number;
  hostBytes: number;
  /** The largest single buffer, which must fit one storage binding. */
  largestBinding: { label: string; bytes: number };
}

/**
 * What a cluster machine's runtime takes besides the plan's buffers, measured on llvmpipe: 64 MiB for a
 * Worker with its GPU device and compiled pipelines (a GPU device alone took 73 MiB in Deno's main thread;
 * 4 machines of a 0.07M-parameter model, 266 MiB in all), and 64 MiB for the ArrayBuffers of past iterations
 * that V8 has not yet collected (what bench/memory-plan.ts found beyond the buffers at 10.6M parameters).
 */
const RUNTIME_BYTES = 128 << 20;

/** A machine's memory, computed from the shapes before anything is allocated. */
export function planMemory(s: MemoryPlanSettings): MemoryPlan {
  const { totalFloats } = parameterLayout(s.config);
  const flat = totalFloats * 4;
  const shardFloats = Math.max(...shardRanges(totalFloats, s.machines).map(({ start, end }) => end - start));
  const shard = shardFloats * 4;
  const chunks = Math.ceil((3 * shardFloats * 4) / s.chunkBytes);
  const captureBytes = (3 * shardFloats + chunks) * 4;
  const activations = activationBytes(s.config, s.batch, s.time);
  const gpu: [string, number][] = [
    ["parameters", flat],
    ["gradients", flat],
    [
      s.machines === 1 ? "AdamW m and v" : `AdamW m and v for the machine's shard (1/${s.machines} of the state)`,
      2 * shardFloats * 4,
    ],
    [`activations and their gradients, batch ${s.batch} x sequence ${s.time}`, activations.total],
    [
      `checkpoint staging (${s.captureBuffers} capture(s) of the shard's params, m and v)`,
      s.captureBuffers * captureBytes + chunks * 4,
    ],
  ];
  const host: [string, number][] = [
    [
      `in-memory checkpoints (${s.slotsPerOwner} slots x ${s.owners} owners: its own and the replicas it keeps)`,
      s.slotsPerOwner * s.owners * s.checkpointBytes,
    ],
    ["a shard's gradients read back, and a gathered shard on its way to the GPU", 2 * shard],
    // A whole upload happens only as a machine starts, before its checkpoint slots fill.
    [
      "the parameters' upload, a piece at a time (WebGPU keeps a copy of a written piece until it is done)",
      Math.min(flat, UPLOAD_PIECE_BYTES),
    ],
    [
      "the captures mapped to be written out (wgpu's GL backend reads a mapped buffer into host memory)",
      s.captureBuffers * captureBytes,
    ],
    ["readback staging (a piece at a time)", Math.min(flat, READBACK_STAGING_BYTES)],
    ["the shard in transit: its averaged gradients, its parameters, a message sent and one received", 4 * shard],
    // The replicator's copies outlive their slots (see Replicator): the newest replicated one until the
    // cluster keeps it, while the next is sent.
    [
      "its checkpoints' copies on their way out (two to its peers: one being sent, one not yet kept; one to the persistent store)",
      3 * s.checkpointBytes,
    ],
    ["the machine's runtime (a Worker, its GPU device, dead buffers not yet collected)", RUNTIME_BYTES],
  ];
  const sum = (rows: [string, number][]) => rows.reduce((total, [, bytes]) => total + bytes, 0);
  const largestBinding = { label: activations.label, bytes: activations.largest };
  return { gpu, host, gpuBytes: sum(gpu), hostBytes: sum(host), largestBinding };
}

/** Where a plan must fit: the largest storage binding, and the memory it may take in all. */
export interface MemoryBudget {
  bindingBytes: number;
  /** Bytes the whole cluster may take; on a software adapter the GPU's buffers are host memory too. */
  availableBytes: number;
  gpuInHostMemory: boolean;
}

/** Bytes the whole cluster takes of the budget: the host's share, and the GPU's where it is host memory. */
function clusterBytes(plan: MemoryPlan, machines: number, budget: MemoryBudget): number {
  return machines * (plan.hostBytes + (budget.gpuInHostMemory ? plan.gpuBytes : 0));
}

/**
 * The plan for `settings`, or one clear error that names why it does not fit and the largest batch (at this
 * sequence) and the largest sequence (at this batch) that would.
 */
export function fitMemory(settings: MemoryPlanSettings, budget: MemoryBudget): MemoryPlan {
  const fits = (batch: number, time: number) => {
    const plan = planMemory({ ...settings, batch, time });
    return plan.largestBinding.bytes <= budget.bindingBytes &&
      clusterBytes(plan, settings.machines, budget) <= budget.availableBytes;
  };
  const plan = planMemory(settings);
  if (fits(settings.batch, settings.time)) return plan;
  const largest = (limit: number, ok: (n: number) => boolean) => {
    let n = 0;
    for (let step = 2 ** Math.floor(Math.log2(limit)); step >= 1; step /= 2) {
      if (n + step <= limit && ok(n + step)) n += step;
    }
    return n;
  };
  const batch = largest(settings.batch, (b) => fits(b, settings.time));
  const time = largest(settings.time, (t) => fits(settings.batch, t));
  const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(2)} GiB`;
  const needed = clusterBytes(plan, settings.machines, budget);
  const why = [
    plan.largestBinding.bytes > budget.bindingBytes
      ? `its ${plan.largestBinding.label} (${plan.largestBinding.bytes} bytes) exceeds the adapter's largest ` +
        `storage binding (${budget.bindingBytes} bytes)`
      : "",
    needed > budget.availableBytes
      ? `${settings.machines} machines need ${gib(needed)} (${gib(plan.gpuBytes)} GPU and ${gib(plan.hostBytes)} ` +
        `host memory each), ${gib(budget.availableBytes)} is available`
      : "",
  ].filter(Boolean).join(", and ");
  const instead = [
    batch > 0 ? `batch ${batch} at sequence ${settings.time}` : "",
    time > 0 ? `sequence ${time} at batch ${settings.batch}` : "",
  ].filter(Boolean);
  throw new Error(
    `batch ${settings.batch} x sequence ${settings.time} does not fit: ${why}; ` +
      (instead.length
        ? `the largest that would: ${instead.join(", or ")}`
        : "no batch or sequence would: use fewer machines or a smaller model"),
  );
}
