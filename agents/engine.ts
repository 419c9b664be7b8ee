// A machine's training arithmetic, as its worker agent uses it: the gradients of its rows of the batch, the
// optimizer step on its shard, its checkpoints in host memory and their restore. `GpuEngine` is GPT-2 on
// the machine's GPU (the trainer and its checkpointer); the chaos simulation puts a deterministic stand-in
// in its place, so that the agents' protocol runs the same either way.

import type { DecodedShard } from "../core/checkpoint.ts";
import { Checkpointer, type CheckpointerOptions } from "../core/checkpointing.ts";
import type { Batch, BatchLoader } from "../core/data.ts";
import { initialParameters, parameterLayout } from "../core/model.ts";
import { Rng } from "../core/random.ts";
import { type ShardRange, shardRanges } from "../core/shard.ts";
import { readShardParameters, updateShard } from "../core/sharded.ts";
import type { InMemoryCheckpointStore } from "../core/memory-store.ts";
import type { StoredEntry } from "../core/store.ts";
import { Trainer, type TrainerOptions, type TrainerSettings } from "../core/trainer.ts";
import type { TrainingSpec } from "./protocol/spec.ts";

export interface TrainingEngine {
  /** Iterations completed. */
  readonly step: number;
  /** Forward and backward on this machine's rows of the global batch: their mean loss. */
  computeGradients(batch: Batch): Promise<number>;
  /** The gradients of parameters [start, end), as the last `computeGradients` left them. */
  readGradients(start: number, end: number): Promise<Float32Array>;
  /** The optimizer step on this machine's shard, with the shard's averaged gradient and the global squared norm. */
  updateShard(grads: Float32Array, normSquared: number): void;
  readShardParameters(): Promise<Float32Array>;
  /** Writes parameters [start, start + values.length). */
  writeParameters(start: number, values: Float32Array): Promise<void>;
  /**
   * Starts a checkpoint of the shard as the last step left it, published in host memory after the previous
   * one (with the hooks given at creation): how long it held training up, and its publication.
   */
  checkpoint(): Promise<{ blockedMilliseconds: number; published: Promise<unknown> }>;
  /** Restores the shard, the step and the data order from checkpoint `iteration` in host memory. */
  restore(iteration: number): Promise<void>;
  /** Restores the state every run starts from: the seeded initial parameters, zero moments, iteration 0. */
  restoreInitial(): Promise<void>;
  /** This machine's shard of the state: its range of the parameters (every machine holds them all), m and v. */
  state(): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array }>;
  destroy(): void;
}

/** What an engine is made from, besides its device: the job, this machine's shard, its memory and data order. */
export interface EngineSetup {
  training: TrainingSpec;
  rank: number;
  shard: ShardRange;
  store: InMemoryCheckpointStore;
  /** The global batch's order, which the checkpoints save: every machine draws the same batches. */
  loader: BatchLoader;
  chunkBytes: number;
  /** The GPU staging buffers a checkpoint's capture alternates between (`CheckpointSpec.captureBuffers`). */
  captureBuffers: number;
  /** The checkpointer's hooks: the agent injects faults before a commit and replicates after a save. */
  beforeCommit: CheckpointerOptions["beforeCommit"];
  afterSave: (entry: StoredEntry) => void;
}

/** GPT-2 on a machine's GPU: the trainer, its sharded optimizer step, and the one checkpoint path. */
export class GpuEngine implements TrainingEngine {
  readonly #setup: EngineSetup;
  readonly #trainer: Trainer;
  readonly #checkpointer: Checkpointer;

  /** `built`: the model and kernels `prepareModel` built ahead for this job, else they are built here. */
  constructor(device: GPUDevice, setup: EngineSetup, built?: PreparedModel) {
    const { training, shard, store, rank, loader, chunkBytes, captureBuffers } = setup;
    this.#setup = setup;
    // AdamW's moments for this machine's shard only: it updates nothing else.
    this.#trainer = new Trainer(device, training.config, trainerSettings(training), undefined, { range: shard, built });
    this.#checkpointer = new Checkpointer(this.#trainer, store, {
      shard,
      owner: rank,
      data: loader, // the global batch's order: the trainer sees only this machine's rows
      chunkBytes,
      captureBuffers,
      checksumsOnGpu: false, // see CheckpointCapture: on a software adapter it only blocks training longer
      beforeCommit: setup.beforeCommit,
      afterSave: setup.afterSave,
    });
  }

  get step(): number {
    return this.#trainer.step;
  }

  computeGradients(batch: Batch): Promise<number> {
    return this.#trainer.computeGradients(batch);
  }

  readGradients(start: number, end: number): Promise<Float32Array> {
    return this.#trainer.model.grads.read(start, end);
  }

  updateShard(grads: Float32Array, normSquared: number) {
    updateShard(this.#trainer, this.#setup.shard, grads, normSquared);
  }

  readShardParameters(): Promise<Float32Array> {
    return readShardParameters(this.#trainer, this.#setup.shard);
  }

  writeParameters(start: number, values: Float32Array) {
    return this.#trainer.model.params.upload(start, values);
  }

  checkpoint() {
    return this.#checkpointer.afterStep();
  }

  async restore(iteration: number) {
    await this.#checkpointer.restore(iteration);
    await this.#trainer.device.queue.onSubmittedWorkDone();
  }

  async restoreInitial() {
    this.#checkpointer.restoreShard(initialShard(this.#setup, this.#checkpointer.meta()));
    await this.#trainer.device.queue.onSubmittedWorkDone();
  }

  async state() {
    const { start, end } = this.#setup.shard;
    const params = await this.readShardParameters();
    return { params, m: await this.#trainer.m.read(start, end), v: await this.#trainer.v.read(start, end) };
  }

  destroy() {
    this.#checkpointer.destroy();
    this.#trainer.destroy();
    this.#trainer.device.destroy();
  }
}

function trainerSettings(training: TrainingSpec): TrainerSettings {
  return { ...training.optimizer, batch: training.batchPerMachine, time: training.time };
}

/** GPT-2's buffers, holding the initial parameters, and AdamW's kernels, built before the machine knows its shard. */
export type PreparedModel = NonNullable<TrainerOptions["built"]>;

/**
 * What a `GpuEngine` for `training` needs before it has a rank (a spare machine builds it while it waits):
 * the model's buffers holding the initial parameters, and every pipeline compiled and run once on a
 * throwaway batch and update, since a software adapter compiles a pipeline's code at its first dispatch.
 * An engine made with it starts from the initial state all the same.
 */
export async function prepareModel(
  device: GPUDevice,
  training: TrainingSpec,
  machines: number,
): Promise<PreparedModel> {
  const tokens = new Uint32Array(training.batchPerMachine * training.time);
  // A shard's update, with moments the size of the one the engine will hold: first 0's, as good as any.
  const range = shardRanges(parameterLayout(training.config).totalFloats, machines)[0];
  const warm = new Trainer(device, training.config, trainerSettings(training), undefined, { range });
  const initial = await readShardParameters(warm, range);
  await warm.computeGradients({ inputs: tokens, targets: tokens });
  updateShard(warm, range, new Float32Array(range.end - range.start), 1);
  await device.queue.onSubmittedWorkDone(); // every pipeline has run: compiled
  warm.model.params.write(range.start, initial); // the update's trace: the rest never changed
  warm.m.destroy();
  warm.v.destroy();
  return { model: warm.model, adamw: warm.adamw, seed: training.optimizer.seed };
}

/** The state every run starts from, as a shard: the seeded initial parameters, zero moments, the data order's start. */
export function initialShard(setup: EngineSetup, meta: DecodedShard["meta"]): DecodedShard {
  const { shard: { start, end }, training } = setup;
  const params = initialParameters(training.config, training.optimizer.seed).slice(start, end);
  const zeros = () => new Float32Array(end - start);
  const data = { position: 0, rng: new Rng(training.optimizer.seed).state }; // a BatchLoader's before its first batch
  return { meta: { ...meta, iteration: 0, data }, tensors: { params, m: zeros(), v: zeros() } };
}
