// The one checkpoint path, for a single-node run and a cluster machine alike: after a step, capture the
// trainer's shard of the state from the GPU (training goes on), write it from the mapped staging memory
// straight into a slot of the in-memory store, and hand the published checkpoint on (a cluster machine
// replicates and persists it); and restore the shard from the newest valid checkpoint in the store.

import { CheckpointCapture } from "./capture.ts";
import { type DecodedShard, DEFAULT_CHUNK_BYTES, type ShardMeta } from "./checkpoint.ts";
import type { BatchLoader } from "./data.ts";
import type { InMemoryCheckpointStore } from "./memory-store.ts";
import { type ShardRange, shardRanges } from "./shard.ts";
import type { LoadResult, StoredEntry } from "./store.ts";
import type { Trainer } from "./trainer.ts";

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
  readonly #trainer: Trainer;
  readonly #data: DataOrder;
  readonly #chunkBytes: number;
  readonly #options: CheckpointerOptions;
  readonly #capture: CheckpointCapture;
  /** The last checkpoint's publication: the next one waits for it. */
  #last: Promise<unknown> = Promise.resolve();

  constructor(trainer: Trainer, store: InMemoryCheckpointStore, options: CheckpointerOptions = {}) {
    const data = options.data ?? trainer.loader;
    if (!data) throw new Error("a checkpoint saves the data order: give the trainer a corpus or the checkpointer one");
    this.#trainer = trainer;
    this.#data = data;
    this.#options = options;
    this.store = store;
    this.owner = options.owner ?? store.node;
    this.shard = options.shard ?? shardRanges(trainer.model.totalFloats, 1)[0];
    this.#chunkBytes = options.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    this.#capture = new CheckpointCapture(trainer.device, this.shard.end - this.shard.start, {
      chunkBytes: this.#chunkBytes,
      checksumsOnGpu: options.checksumsOnGpu,
    });
  }

  /** The metadata of the shard as the run is now: taken when its capture begins. */
  meta(): ShardMeta {
    const { model, step } = this.#trainer;
    return {
      config: model.config,
      iteration: step,
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
    const meta = this.meta(), { model, m, v } = this.#trainer, { start, end } = this.shard;
    const pending = await this.#capture.begin({ params: model.params, m, v, start, end });
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
      { config: this.#trainer.model.config, iteration },
      (shard) => this.restoreShard(shard),
    );
    return { entry, skipped };
  }

  /** Puts a shard's state back: its range of params, m and v on the GPU, the step and the data order. */
  restoreShard({ meta, tensors }: DecodedShard) {
    const { model, m, v, device } = this.#trainer, { start, end, totalFloats } = meta.shard;
    if (totalFloats !== model.totalFloats || JSON.stringify(meta.config) !== JSON.stringify(model.config)) {
      throw new Error(`the checkpoint is of another model (${JSON.stringify(meta.config)})`);
    }
    for (const [buffer, values] of [[model.params, tensors.params], [m, tensors.m], [v, tensors.v]] as const) {
      if (values.length !== end - start) {
        throw new Error(`checkpoint shard: ${values.length} floats for a range of ${end - start}`);
      }
      device.queue.writeBuffer(buffer, start * 4, values);
    }
    this.#trainer.step = meta.iteration;
    this.#data.restore(meta.data);
  }

  destroy() {
    this.#capture.destroy();
  }
}
