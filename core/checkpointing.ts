// The one checkpoint path, for a single-node run and a cluster machine alike: after a step, capture the
// trainer's shard of the state from the GPU (training goes on), write it from the mapped staging memory
// straight into a slot of the in-memory store, and hand the published checkpoint on (a cluster machine
// replicates and persists it); and restore the shard from the newest valid checkpoint in the store. The
// state may also be a stand-in's in host memory (the chaos simulation's), through the same path.

import { CheckpointCapture, type PendingCapture } from "./capture.ts";
import { type DecodedShard, DEFAULT_CHUNK_BYTES, type ShardMeta, type ShardTensors } from "./checkpoint.ts";
import type { BatchLoader } from "./data.ts";
import type { GPT2Config } from "./model.ts";
import type { InMemoryCheckpointStore } from "./memory-store.ts";
import { type ShardRange, shardRanges } from "./shard.ts";
import type { LoadResult, StoredEntry } from "./store.ts";
import { Trainer } from "./trainer.ts";

/** The state checkpoints are taken of and restored to: a trainer's on its GPU, or a stand-in's. */
export interface CheckpointedState {
  readonly config: GPT2Config;
  readonly totalFloats: number;
  /** Iterations completed: a checkpoint's iteration, and what a restore sets. */
  step: number;
  /** Starts copying `shard` of params, m and v out; training may go on once it returns. */
  capture(shard: ShardRange): Promise<PendingCapture>;
  /** Puts `shard` of params, m and v back. */
  write(shard: ShardRange, tensors: ShardTensors): void;
  destroy(): void;
}

/** A trainer's state on its GPU: captured through staging buffers, written back with the queue. */
class TrainerState implements CheckpointedState {
  readonly #trainer: Trainer;
  readonly #capture: CheckpointCapture;

  constructor(
    trainer: Trainer,
    floats: number,
    options: { chunkBytes: number; buffers?: number; checksumsOnGpu?: boolean },
  ) {
    this.#trainer = trainer;
    this.#capture = new CheckpointCapture(trainer.device, floats, options);
  }

  get config(): GPT2Config {
    return this.#trainer.model.config;
  }

  get totalFloats(): number {
    return this.#trainer.model.totalFloats;
  }

  get step(): number {
    return this.#trainer.step;
  }

  set step(step: number) {
    this.#trainer.step = step;
  }

  capture({ start, end }: ShardRange): Promise<PendingCapture> {
    const { model, m, v } = this.#trainer;
    return this.#capture.begin({ params: model.params, m, v, start, end });
  }

  write({ start }: ShardRange, tensors: ShardTensors) {
    const { model, m, v } = this.#trainer;
    for (const [flat, values] of [[model.params, tensors.params], [m, tensors.m], [v, tensors.v]] as const) {
      flat.write(start, values);
    }
  }

  destroy() {
    this.#capture.destroy();
  }
}

export interface CheckpointTiming {
  /** How long training was held up by the checkpoint. */
  blockedMilliseconds: number;
  /** From the start of the capture to the checkpoint being published in the store. */
  totalMilliseconds: number;
  entry: StoredEntry;
}

/** The data order a checkpoint saves and a restore puts back. */
export type DataOrder = Pick<BatchLoader, "state" | "restore">;

export interface CheckpointerOptions {
  /** The range of the state checkpointed; by default all of it, as a single-node run takes it. */
  shard?: ShardRange;
  /** The machine the checkpoints belong to; by default the store's. */
  owner?: number;
  /**
   * By default the trainer's loader. A cluster machine passes its own: it draws the global batch, of which
   * its trainer sees only its rows.
   */
  data?: DataOrder;
  chunkBytes?: number;
  /** The GPU staging buffers captures alternate between (2 by default; see CheckpointCapture). */
  captureBuffers?: number;
  /** False on a software adapter (see CheckpointCapture). */
  checksumsOnGpu?: boolean;
  /**
   * Runs once a checkpoint is written into its slot, before it is published: if it throws, the checkpoint
   * is never published (a machine that dies in the middle of writing one).
   */
  beforeCommit?: (meta: ShardMeta) => void;
  /** Runs once a checkpoint is published in the store: a cluster machine replicates and persists it here. */
  afterSave?: (entry: StoredEntry) => void;
}

/** Checkpoints of a trainer's shard of the state into a store, published in the order they are taken. */
export class Checkpointer {
  readonly store: InMemoryCheckpointStore;
  readonly owner: number;
  readonly shard: ShardRange;
  readonly #state: CheckpointedState;
  readonly #data: DataOrder;
  readonly #chunkBytes: number;
  readonly #options: CheckpointerOptions;
  /** The last checkpoint's publication: the next one waits for it. */
  #last: Promise<unknown> = Promise.resolve();

  /** Checkpoints of a trainer's state on its GPU, or of any other `CheckpointedState`. */
  constructor(source: Trainer | CheckpointedState, store: InMemoryCheckpointStore, options: CheckpointerOptions = {}) {
    const data = options.data ?? (source instanceof Trainer ? source.loader : undefined);
    if (!data) throw new Error("a checkpoint saves the data order: give the trainer a corpus or the checkpointer one");
    this.#data = data;
    this.#options = options;
    this.store = store;
    this.owner = options.owner ?? store.node;
    this.shard = options.shard ??
      shardRanges(source instanceof Trainer ? source.model.totalFloats : source.totalFloats, 1)[0];
    this.#chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.#state = source instanceof Trainer
      ? new TrainerState(source, this.shard.end - this.shard.start, {
        chunkBytes: this.#chunkBytes,
        buffers: options.captureBuffers,
        checksumsOnGpu: options.checksumsOnGpu,
      })
      : source;
  }

  /** The metadata of the shard as the run is now: taken when its capture begins. */
  meta(): ShardMeta {
    return {
      config: this.#state.config,
      iteration: this.#state.step,
      data: this.#data.state,
      owner: this.owner,
      shard: this.shard,
      chunkBytes: this.#chunkBytes,
      createdAt: Date.now(),
    };
  }

  /**
   * Starts a checkpoint of the state the last submitted step leaves; returns once training may go on,
   * with the time it was held up and a promise of the published checkpoint.
   */
  async afterStep(): Promise<{ blockedMilliseconds: number; published: Promise<CheckpointTiming> }> {
    const began = performance.now();
    const meta = this.meta();
    const pending = await this.#state.capture(this.shard);
    const blockedMilliseconds = performance.now() - began;
    const published = this.#last.then(() => pending.mapped).then(({ tensors, checksums, release }) => {
      let entry: StoredEntry;
      try {
        entry = this.store.saveShard(meta, tensors, checksums ?? undefined, this.#options.beforeCommit);
      } finally {
        release();
      }
      const totalMilliseconds = performance.now() - began;
      this.#options.afterSave?.(entry);
      return { blockedMilliseconds, totalMilliseconds, entry };
    });
    this.#last = published.catch(() => {}); // a failed checkpoint does not hold the next one back
    return { blockedMilliseconds, published };
  }

  /**
   * Restores the shard from the newest valid checkpoint in the store (of `iteration`, if given), uploading
   * it to the GPU straight from the arena (falling back past corrupt ones); returns which one and what was
   * passed over.
   */
  async restore(iteration?: number): Promise<{ entry: StoredEntry; skipped: LoadResult["skipped"] }> {
    const { entry, skipped } = await this.store.useNewest(
      this.owner,
      { config: this.#state.config, iteration },
      (shard) => this.restoreShard(shard),
    );
    return { entry, skipped };
  }

  /** Puts a shard's state back: its range of params, m and v on the GPU, the step and the data order. */
  restoreShard({ meta, tensors }: DecodedShard) {
    const state = this.#state, { start, end, totalFloats } = meta.shard;
    if (totalFloats !== state.totalFloats || JSON.stringify(meta.config) !== JSON.stringify(state.config)) {
      throw new Error(`the checkpoint is of another model (${JSON.stringify(meta.config)})`);
    }
    for (const values of [tensors.params, tensors.m, tensors.v]) {
      if (values.length !== end - start) {
        throw new Error(`checkpoint shard: ${values.length} floats for a range of ${end - start}`);
      }
    }
    state.write(meta.shard, tensors);
    state.step = meta.iteration;
    this.#data.restore(meta.data);
  }

  destroy() {
    this.#state.destroy();
  }
}
