// A machine's replication bookkeeping as a state machine with no I/O and no clock: which checkpoints it
// copies out for its peers, which pieces go on the wire when (its `CheckpointScheduler` decides), which
// checkpoints have reached every peer, and which one the cluster keeps. Each input returns the commands the
// worker agent carries out (put a piece on the wire, record a replica in its memory, keep an iteration),
// and the worker feeds back when each piece has left its NIC.
//
// It holds two kinds of copies, since a checkpoint's slot in memory may be reused while it is still needed:
// those being or waiting to be replicated, and those that reached every peer, until the cluster keeps one
// at least as new (the iteration a recovery from peers may roll every machine back to).

import type { IterationPlan } from "../protocol/spec.ts";
import type { CheckpointScheduler, PieceOrder } from "./interleaving.ts";

export type ReplicationCommand =
  /** Put `piece` (bytes [offset, offset + bytes) of a checkpoint `total` bytes long) on the wire to `order.peer`. */
  | { do: "send"; order: PieceOrder; piece: Uint8Array; total: number }
  /** Checkpoint `iteration` has reached every peer. */
  | { do: "mark replicated"; iteration: number }
  /** Store this machine's own checkpoint `iteration` again: newer ones evicted it before the cluster kept it. */
  | { do: "store again"; iteration: number; bytes: Uint8Array }
  /** Keep `iteration` (own and replicas) when reusing slots. */
  | { do: "keep"; iteration: number };

/**
 * A checkpoint in its slot, copied out at most once: the peers and the persistent store read the same copy,
 * which outlives the slot (GPT-2 124M: 356 MiB a machine per copy).
 */
export class SlotCopy {
  readonly slot: Uint8Array;
  #copy: Uint8Array | null = null;

  constructor(slot: Uint8Array) {
    this.slot = slot;
  }

  /** The copy, taken the first time it is asked for (while the slot is still this checkpoint's). */
  take(): Uint8Array {
    return this.#copy ??= this.slot.slice();
  }
}

export class Replicator {
  readonly scheduler: CheckpointScheduler;
  /** Copies of the checkpoints being and waiting to be replicated, by iteration. */
  readonly #sending = new Map<number, Uint8Array>();
  /** Copies of those that reached every peer, until the cluster keeps one at least as new. */
  readonly #replicated = new Map<number, Uint8Array>();
  #kept = 0;

  constructor(scheduler: CheckpointScheduler) {
    this.scheduler = scheduler;
  }

  /**
   * An iteration begins with `plan`. If the cluster now keeps a newer iteration, this machine keeps it too;
   * `keptIsStored` says whether its own checkpoint of `plan.keep` is still in its memory.
   */
  beginIteration(plan: IterationPlan, keptIsStored: boolean): ReplicationCommand[] {
    this.scheduler.interval = plan.replicateEvery;
    this.scheduler.policy = plan.policy;
    this.scheduler.beginIteration();
    if (plan.keep === this.#kept) return [];
    const own = this.#replicated.get(plan.keep), commands: ReplicationCommand[] = [];
    if (own && !keptIsStored) commands.push({ do: "store again", iteration: plan.keep, bytes: own });
    commands.push({ do: "keep", iteration: plan.keep });
    this.#kept = plan.keep;
    for (const iteration of this.#replicated.keys()) if (iteration <= plan.keep) this.#replicated.delete(iteration);
    return commands;
  }

  /** Training traffic starts at `now`: nothing is released until it stops. */
  trainingBusy(now: number) {
    this.scheduler.trainingBusy(now);
  }

  /** Training traffic stops at `now`: an idle span opens. */
  trainingIdle(now: number): ReplicationCommand[] {
    this.scheduler.trainingIdle(now);
    return this.#release(now);
  }

  /** Checkpoint `iteration` is published in this machine's memory (`checkpoint`: its slot, copied if it is to go out). */
  published(iteration: number, checkpoint: SlotCopy, now: number): ReplicationCommand[] {
    if (this.scheduler.offer(iteration, checkpoint.slot.length)) this.#sending.set(iteration, checkpoint.take());
    return this.#release(now);
  }

  /** A piece has left this machine's NIC at `now`. */
  sent(order: PieceOrder, now: number): ReplicationCommand[] {
    const commands: ReplicationCommand[] = [];
    if (this.scheduler.sent(order, now)) {
      commands.push({ do: "mark replicated", iteration: order.iteration });
      const copy = this.#sending.get(order.iteration);
      if (copy) this.#replicated.set(order.iteration, copy);
    }
    return [...commands, ...this.#release(now)];
  }

  /** A recovery began: what was being sent is abandoned (the copies that reached every peer stay). */
  reset() {
    this.scheduler.reset();
    this.#sending.clear();
  }

  /** The newest of this machine's checkpoints that reached every peer (0: none yet). */
  get replicatedIteration(): number {
    return this.scheduler.replicated.at(-1)?.iteration ?? 0;
  }

  /** Every piece the scheduler releases now; the copies it no longer needs are dropped. */
  #release(now: number): ReplicationCommand[] {
    const commands: ReplicationCommand[] = [];
    for (let order; (order = this.scheduler.next(now));) {
      const copy = this.#sending.get(order.iteration)!;
      commands.push({
        do: "send",
        order,
        piece: copy.subarray(order.offset, order.offset + order.bytes),
        total: copy.length,
      });
    }
    for (const iteration of this.#sending.keys()) {
      if (iteration !== this.scheduler.sending && !this.scheduler.queued.includes(iteration)) {
        this.#sending.delete(iteration);
      }
    }
    return commands;
  }
}
