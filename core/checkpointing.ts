// A checkpoint of a training run every iteration, into a store: capture the shard from the GPU right
// after the step is submitted (training goes on), write it from the mapped staging memory straight into
// a slot of the in-memory store, and restore a run from the newest valid checkpoint.

import { CheckpointCapture } from "./capture.ts";
import type { InMemoryCheckpointStore } from "./memory-store.ts";
import type { LoadResult, StoredEntry } from "./store.ts";
import type { Trainer } from "./trainer.ts";

export interface CheckpointTiming {
  /** How long training was held up by the checkpoint. */
  blockedMilliseconds: number;
  /** From the start of the capture to the checkpoint being published in the store. */
  totalMilliseconds: number;
  entry: StoredEntry;
}

/** The whole state of a single-node run as one shard (the cluster gives each machine its own range). */
export class Checkpointer {
  readonly store: InMemoryCheckpointStore;
  readonly owner: number;
  readonly #trainer: Trainer;
  readonly #capture: CheckpointCapture;

  /** `checksumsOnGpu`: false on a software adapter (see CheckpointCapture). */
  constructor(
    trainer: Trainer,
    store: InMemoryCheckpointStore,
    options: { owner?: number; checksumsOnGpu?: boolean } = {},
  ) {
    this.#trainer = trainer;
    this.store = store;
    this.owner = options.owner ?? store.node;
    this.#capture = new CheckpointCapture(trainer.device, trainer.model.totalFloats, {
      checksumsOnGpu: options.checksumsOnGpu,
    });
  }

  /**
   * Starts a checkpoint of the state the last submitted step leaves; returns once training may go on,
   * with the time it was held up and a promise of the published checkpoint.
   */
  async afterStep(): Promise<{ blockedMilliseconds: number; published: Promise<CheckpointTiming> }> {
    const start = performance.now();
    const meta = this.#trainer.checkpointMeta(this.owner);
    const pending = await this.#capture.begin(this.#trainer.checkpointSource());
    const blockedMilliseconds = performance.now() - start;
    const published = pending.mapped.then(({ tensors, checksums, release }) => {
      try {
        const entry = this.store.saveShard(meta, tensors, checksums ?? undefined);
        return { blockedMilliseconds, totalMilliseconds: performance.now() - start, entry };
      } finally {
        release();
      }
    });
    return { blockedMilliseconds, published };
  }

  /**
   * Restores the trainer from the newest valid checkpoint in the store, uploading it to the GPU straight
   * from the arena (falling back past corrupt ones); returns which one and what was passed over.
   */
  async restore(): Promise<{ entry: StoredEntry; skipped: LoadResult["skipped"] }> {
    const { entry, skipped } = await this.store.useNewest(
      this.owner,
      { config: this.#trainer.model.config },
      (shard) => this.#trainer.restoreShard(shard),
    );
    return { entry, skipped };
  }

  destroy() {
    this.#capture.destroy();
  }
}
