// The worker agent: one per machine. It trains its slice of every batch, reduce-scatters the gradients,
// updates its shard of the parameters and of AdamW's m and v, and all-gathers the parameters; it takes an
// in-memory checkpoint of its shard every iteration (configurable) into its host memory, sends it to the
// peers of the placement plan, keeps the replicas it receives, persists every P iterations, tells its
// heartbeats how far it is, and in a recovery fetches its shard into its own memory (from a peer or the
// persistent store, if it is not there) and loads it (or the initial state).
//
// It runs on whatever its host gives it (`MachineHost`): its training arithmetic (the GPU's, or a
// deterministic stand-in), its transport, its clock, its memory, the persistent store, and the means to
// heartbeat and to die. `sim/worker.ts` hosts it in a Worker with its own GPUDevice, driven by the root
// agent through comlink.

import { BatchLoader } from "../core/data.ts";
import { parameterLayout } from "../core/model.ts";
import type { InMemoryCheckpointStore } from "../core/memory-store.ts";
import { type ShardRange, shardRanges } from "../core/shard.ts";
import type { CheckpointStore, StoredEntry } from "../core/store.ts";
import { allGatherShards, allSum, reduceScatterMean } from "./collectives.ts";
import type { EngineSetup, TrainingEngine } from "./engine.ts";
import type { Clock } from "./protocol/clock.ts";
import { isCollective, type PhaseName, trafficEdges, TRAINING_ITERATION } from "./protocol/iteration.ts";
import {
  corpusFor,
  type FaultPoint,
  type IterationPlan,
  type MachineSpec,
  type MachineStatus,
  type RestoreSource,
  type StepResult,
} from "./protocol/spec.ts";
import { AbortedError, type Delivery, type Transport } from "./protocol/transport.ts";
import { CheckpointScheduler } from "./replication/interleaving.ts";
import { type ReplicationCommand, Replicator, SlotCopy } from "./replication/replicator.ts";

/** What a machine's agent is told: its place in the cluster and the job (its ports are its host's business). */
export type AgentSpec = Omit<MachineSpec, "memory" | "network" | "root" | "life">;

/** What a machine's agent runs on. */
export interface MachineHost {
  /** Its training arithmetic, made with the agent's hooks. */
  engine(setup: EngineSetup): TrainingEngine;
  transport: Transport;
  clock: Clock;
  /** Its host memory. */
  store: InMemoryCheckpointStore;
  persistent: CheckpointStore;
  /** The device it trains on, as reported. */
  adapter: string;
  /** Tells its heartbeats the iteration it has reached. */
  progress(iteration: number): void;
  /** An injected failure struck at `where`: the host stops its heartbeats and tells the cluster. */
  died(where: string): void;
  /** The cluster is shutting down: the host stops its heartbeats. */
  stop(): void;
}

/** The size of the messages a shard is fetched in during a recovery (a whole number of its chunks). */
const RETRIEVAL_PIECE_BYTES = 1 << 20;

/** A chunk of a checkpoint shard on the network (a replica, or a shard fetched in a recovery). */
interface ChunkInfo {
  owner: number;
  iteration: number;
  offset: number;
  total: number;
}

/** A shard arriving chunk by chunk, written in place into a slot of the store. */
interface Arrival {
  iteration: number;
  writer: ReturnType<InMemoryCheckpointStore["beginWrite"]>;
  received: number;
}

export class MachineAgent {
  readonly spec: AgentSpec;
  readonly #host: MachineHost;
  readonly #engine: TrainingEngine;
  readonly #loader: BatchLoader;
  readonly #shards: ShardRange[];
  readonly #shard: ShardRange;
  readonly #store: InMemoryCheckpointStore;
  readonly #persistent: CheckpointStore;
  readonly #network: Transport;
  /** This machine's own clock: the scheduler's and the timings' (each machine keeps its own time). */
  readonly #clock: Clock;
  /** What goes to the peers when, and which iteration this machine keeps (see replication/replicator.ts). */
  readonly #replication: Replicator;
  readonly #arrivals = new Map<number, Arrival>();
  readonly #arrivalWaiters = new Map<string, { resolve: () => void; reject: (error: Error) => void }>();
  /** Shards fetched in this recovery epoch that arrived before anyone waited for them: how each ended. */
  readonly #retrieved = new Map<string, Error | null>();
  readonly #faults: FaultPoint[] = [];
  /** The step, restore or synchronisation under way, which an abort waits for. */
  #current: Promise<unknown> = Promise.resolve();
  /** The checkpoint being published and sent. */
  #checkpointing: Promise<void> = Promise.resolve();
  #persisting: Promise<void> | null = null;
  #persistentSaves = 0;
  #persistentSkipped = 0;
  /** Set when an injected failure struck: the Worker is about to be terminated. */
  dead = false;

  constructor(spec: AgentSpec, host: MachineHost) {
    this.spec = spec;
    this.#host = host;
    const { training } = spec;
    this.#loader = new BatchLoader(
      corpusFor(training),
      training.batchPerMachine * spec.machines,
      training.time,
      training.optimizer.seed,
    );
    this.#store = host.store;
    this.#persistent = host.persistent;
    this.#network = host.transport;
    this.#clock = host.clock;
    this.#shards = shardRanges(parameterLayout(training.config).totalFloats, spec.machines);
    this.#shard = this.#shards[spec.rank];
    this.#engine = host.engine({
      training,
      rank: spec.rank,
      shard: this.#shard,
      store: this.#store,
      loader: this.#loader,
      chunkBytes: spec.checkpoint.chunkBytes,
      captureBuffers: spec.checkpoint.captureBuffers,
      beforeCommit: ({ iteration }) => {
        if (this.dead) throw new MachineDied("halted"); // a machine stopped from outside publishes nothing more
        if (this.#faultDue("checkpoint", iteration)) this.#die(`in the middle of writing checkpoint ${iteration}`);
      },
      afterSave: ({ iteration }: StoredEntry) => this.#replicateAndPersist(iteration),
    });
    this.#replication = new Replicator(
      new CheckpointScheduler(
        spec.checkpoint.replication,
        spec.bandwidth,
        spec.checkpoint.chunkBytes,
        spec.replicaPeers,
      ),
    );
    const receive = (delivery: Delivery) => {
      try {
        this.#receiveChunk(delivery);
      } catch (error) {
        if (!(error instanceof MachineDied)) throw error;
      }
    };
    this.#network.handle("checkpoint", receive);
    this.#network.handle("retrieval", receive);
  }

  /**
   * One iteration of sharded data-parallel training, with the checkpoint and replication that `plan` asks
   * for: the phases of `TRAINING_ITERATION`, in order, each timed.
   */
  step(plan: IterationPlan): Promise<StepResult> {
    return this.#run(async (epoch) => {
      const t = this.#engine.step + 1, rank = this.spec.rank, machines = this.spec.machines;
      // Every machine has replicated the checkpoints of `plan.keep`: a recovery from peers may roll everyone
      // back to it, so this machine keeps its own and the replicas it holds of it until a newer one is kept.
      this.#carryOut(this.#replication.beginIteration(plan, this.#store.has(rank, plan.keep)));
      let loss = 0, reduced!: Float32Array, normSquared = 0, shard!: Float32Array;
      let checkpointBlocked = 0;
      const run: Record<PhaseName, () => Promise<void>> = {
        gradients: async () => {
          // Every machine draws the same global batch and trains on its rows of it.
          const global = this.#loader.next(), rows = this.spec.training.batchPerMachine * this.spec.training.time;
          loss = await this.#engine.computeGradients({
            inputs: global.inputs.subarray(rank * rows, (rank + 1) * rows),
            targets: global.targets.subarray(rank * rows, (rank + 1) * rows),
          });
          this.#fault("step", t);
        },
        "reduce-scatter": async () => {
          // Each shard's gradients are read back as the ring reaches them.
          const part = (c: number) => this.#engine.readGradients(this.#shards[c].start, this.#shards[c].end);
          reduced = await reduceScatterMean(this.#network, part, this.#shards, `${t}`, epoch);
        },
        "gradient norm": async () => {
          let squares = 0;
          for (const g of reduced) squares += g * g;
          normSquared = await allSum(this.#network, squares, machines, `${t}/norm`, epoch);
        },
        update: async () => {
          this.#engine.updateShard(reduced, normSquared);
          shard = await this.#engine.readShardParameters();
        },
        checkpoint: async () => {
          if (plan.checkpoint) checkpointBlocked = await this.#beginCheckpoint();
        },
        "all-gather": async () => {
          await allGatherShards(this.#network, shard, this.#shards, `${t}/params`, epoch, this.#writeShard);
        },
      };
      const ms = {} as Record<PhaseName, number>;
      for (const [index, phase] of TRAINING_ITERATION.entries()) {
        const { opens, closes } = trafficEdges(TRAINING_ITERATION, index, isCollective);
        if (opens) this.#replication.trainingBusy(this.#clock.now());
        const start = this.#clock.now();
        await run[phase.name]();
        ms[phase.name] = this.#clock.now() - start;
        if (closes) this.#carryOut(this.#replication.trainingIdle(this.#clock.now()));
      }
      this.#host.progress(t);
      return {
        iteration: t,
        loss,
        compute: ms.gradients,
        reduceScatter: ms["reduce-scatter"] + ms["gradient norm"],
        update: ms.update + ms.checkpoint,
        allGather: ms["all-gather"],
        checkpointBlocked,
        replicatedIteration: this.#replication.replicatedIteration,
        idleSpans: this.#replication.scheduler.profile.spans,
        neededInterval: this.#replication.scheduler.neededInterval(),
      };
    });
  }

  /**
   * Starts the capture of this iteration's shard, to be written into host memory (after the previous one)
   * and then replicated and persisted; returns how long it held training up.
   */
  async #beginCheckpoint(): Promise<number> {
    const t = this.#engine.step;
    const { blockedMilliseconds, published } = await this.#engine.checkpoint();
    this.#checkpointing = published.then(() => {}, (error) => {
      // A machine that died, or is shutting down, drops the checkpoint it was writing: nothing to report.
      if (!(error instanceof MachineDied) && !this.dead) {
        console.error(`machine ${this.spec.rank}: checkpoint ${t}: ${error.message}`);
      }
    });
    return blockedMilliseconds;
  }

  /** This machine's checkpoint `t`, just published in its memory: sent to the peers and persisted. */
  #replicateAndPersist(t: number) {
    let commands: ReplicationCommand[] = [];
    const kept = this.#store.withCheckpoint(this.spec.rank, t, (bytes) => {
      // One copy, taken only if this checkpoint will be replicated or persisted, serves both.
      const checkpoint = new SlotCopy(bytes);
      commands = this.#replication.published(t, checkpoint, this.#clock.now());
      this.#persist(t, checkpoint);
      return true;
    });
    if (!kept) throw new Error(`checkpoint ${t} vanished from memory right after it was written`);
    this.#carryOut(commands);
  }

  /** Carries out what the replication bookkeeping asks for. */
  #carryOut(commands: ReplicationCommand[]) {
    const rank = this.spec.rank;
    try {
      for (const command of commands) {
        if (command.do === "send") this.#sendPiece(command);
        else if (command.do === "mark replicated") {
          for (const to of this.spec.replicaPeers) this.#store.markReplicated(rank, command.iteration, to);
        } else if (command.do === "store again") {
          const { iteration, bytes } = command;
          this.#store.write(rank, iteration, bytes.length, (slot) => slot.set(bytes));
        } else {
          this.#store.keep(command.iteration);
        }
      }
    } catch (error) {
      if (!(error instanceof MachineDied)) throw error;
    }
  }

  #sendPiece({ order, piece, total }: Extract<ReplicationCommand, { do: "send" }>) {
    const { iteration, peer, offset } = order;
    if (offset >= total / 2 && this.#faultDue("replication", iteration)) {
      this.#die(`in the middle of replicating checkpoint ${iteration} to machine ${peer}`);
    }
    const info: ChunkInfo = { owner: this.spec.rank, iteration, offset, total };
    this.#network.send(peer, "checkpoint", "replica", `replica/${iteration}/${offset}`, piece, info, () => {
      this.#carryOut(this.#replication.sent(order, this.#clock.now()));
    });
  }

  /** Every `persistEvery` iterations, a copy to the persistent store, unless the last one is still being written. */
  #persist(iteration: number, checkpoint: SlotCopy) {
    const every = this.spec.checkpoint.persistEvery;
    if (!every || iteration % every) return;
    if (this.#persisting) {
      this.#persistentSkipped++;
      return;
    }
    this.#persisting = this.#persistent.save(this.spec.rank, iteration, checkpoint.take()).then(
      () => void this.#persistentSaves++,
      (error) => console.error(`machine ${this.spec.rank}: persisting checkpoint ${iteration}: ${error.message}`),
    ).finally(() => this.#persisting = null);
  }

  /** A chunk of a shard arriving: written in place; the shard is published when its last byte is in. */
  #receiveChunk(delivery: Delivery) {
    const { owner, iteration, offset, total } = delivery.info as ChunkInfo;
    let arrival = this.#arrivals.get(owner);
    if (!arrival || arrival.iteration !== iteration) {
      // A newer shard of the same owner replaces one that never completed (its sender failed).
      arrival = { iteration, writer: this.#store.beginWrite(owner, iteration, total), received: 0 };
      this.#arrivals.set(owner, arrival);
    }
    arrival.writer.bytes.set(delivery.bytes, offset);
    arrival.received += delivery.bytes.length;
    if (delivery.kind === "retrieval" && this.#faultDue("recovery")) {
      this.#die(`in the middle of fetching checkpoint ${iteration} from machine ${delivery.from}`);
    }
    if (arrival.received < total) return;
    this.#arrivals.delete(owner);
    const key = `${owner}/${iteration}`, waiter = this.#arrivalWaiters.get(key);
    this.#arrivalWaiters.delete(key);
    let failure: Error | null = null;
    try {
      arrival.writer.commit();
    } catch (error) {
      failure = error as Error;
      console.error(`machine ${this.spec.rank}: ${failure.message}`);
    }
    if (waiter) failure ? waiter.reject(failure) : waiter.resolve();
    else if (delivery.kind === "retrieval") this.#retrieved.set(key, failure);
  }

  /** Stops what this machine was doing and moves to recovery epoch `epoch`. */
  async abort(epoch: number) {
    this.#network.abort(epoch);
    this.#replication.reset();
    for (const { reject } of this.#arrivalWaiters.values()) reject(new AbortedError(`recovery ${epoch} began`));
    this.#arrivalWaiters.clear();
    this.#retrieved.clear();
    this.#arrivals.clear(); // their slots stay unpublished until a later write reclaims them
    await this.#current.catch(() => {});
    await this.#checkpointing;
  }

  /**
   * A recovery's first phase: brings this machine's shard of checkpoint `iteration` into its own memory
   * from `source` (a peer sends it when the root asks it to `serve`; the persistent store is read), and
   * returns its size. From its own memory or the initial state, there is nothing to fetch.
   */
  fetch(iteration: number, source: RestoreSource): Promise<number> {
    return this.#run(async () => {
      if (source.from !== "peer" && this.#faultDue("recovery")) this.#die("in the middle of a recovery");
      const expect = { config: this.spec.training.config, iteration };
      if (source.from === "peer") await this.#arrival(this.spec.rank, iteration);
      if (source.from === "persistent") {
        const { shard } = await this.#persistent.load(this.spec.rank, expect);
        return this.#store.saveShard(shard.meta, shard.tensors).bytes;
      }
      if (source.from === "initial") return 0;
      const bytes = this.#store.withCheckpoint(this.spec.rank, iteration, (bytes) => bytes.length);
      if (bytes === null) {
        throw new Error(`machine ${this.spec.rank} holds no valid checkpoint ${iteration} of its own`);
      }
      return bytes;
    });
  }

  /**
   * A recovery's second phase: puts checkpoint `iteration` of this machine's shard from its memory onto the
   * GPU (or the initial state, for iteration 0 without a checkpoint); returns the milliseconds it took.
   */
  load(iteration: number, initial: boolean): Promise<number> {
    return this.#run(async () => {
      const start = this.#clock.now();
      if (initial) await this.#engine.restoreInitial();
      else await this.#engine.restore(iteration);
      this.#host.progress(this.#engine.step);
      return this.#clock.now() - start;
    });
  }

  /** Resolves when `owner`'s checkpoint `iteration` has arrived whole and been published here. */
  #arrival(owner: number, iteration: number): Promise<void> {
    // Waits for the fetched bytes themselves: a copy already in memory (a corrupt one, say) is not them.
    const key = `${owner}/${iteration}`, retrieved = this.#retrieved.get(key);
    if (retrieved !== undefined) {
      this.#retrieved.delete(key);
      return retrieved ? Promise.reject(retrieved) : Promise.resolve();
    }
    return new Promise((resolve, reject) => this.#arrivalWaiters.set(key, { resolve, reject }));
  }

  /** Sends `owner`'s checkpoint `iteration` from this machine's memory to machine `to` (a recovery's fetch). */
  serve(owner: number, iteration: number, to: number): number {
    // Nothing else needs the link in a recovery, so the shard goes in large pieces: fewer messages.
    const pieceBytes = Math.max(1, Math.floor(RETRIEVAL_PIECE_BYTES / this.spec.checkpoint.chunkBytes)) *
      this.spec.checkpoint.chunkBytes;
    const sent = this.#store.withCheckpoint(owner, iteration, (bytes) => {
      for (let offset = 0; offset < bytes.length; offset += pieceBytes) {
        const info: ChunkInfo = { owner, iteration, offset, total: bytes.length };
        const piece = bytes.subarray(offset, offset + pieceBytes);
        this.#network.send(to, "retrieval", "fetch", `fetch/${owner}/${iteration}/${offset}`, piece, info);
      }
      return bytes.length;
    });
    if (sent === null) {
      throw new Error(`machine ${this.spec.rank} holds no valid checkpoint ${iteration} of machine ${owner}`);
    }
    return sent;
  }

  /** Uploads shard `c` of the parameters, gathered from its machine. */
  #writeShard = (c: number, values: Float32Array) => this.#engine.writeParameters(this.#shards[c].start, values);

  /** After every shard is restored: all-gathers the parameters, so every machine has all of them again. */
  synchronize(): Promise<void> {
    return this.#run(async (epoch) => {
      const shard = await this.#engine.readShardParameters();
      await allGatherShards(this.#network, shard, this.#shards, `sync/${this.#engine.step}`, epoch, this.#writeShard);
    });
  }

  async status(): Promise<MachineStatus> {
    return {
      rank: this.spec.rank,
      incarnation: this.spec.incarnation,
      iteration: this.#engine.step,
      adapter: this.#host.adapter,
      memory: await this.#store.entries(),
      arenaBytes: this.#store.arenaBytes,
      persistentSaves: this.#persistentSaves,
      persistentSkipped: this.#persistentSkipped,
    };
  }

  /** This machine's shard of the state: its range of the parameters, m and v. */
  state(): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array }> {
    return this.#engine.state();
  }

  /** Releases the engine and stops heartbeating: the cluster is shutting down. */
  shutdown() {
    this.dead = true; // answers nothing more
    this.#host.stop();
    this.#engine.destroy();
  }

  /** Arms an injected failure. */
  injectFault(fault: FaultPoint) {
    this.#faults.push(fault);
  }

  /**
   * Stops this machine where it is, from outside (a failure that strikes at once, where no thread can be
   * terminated): it goes silent, and what it was doing publishes and sends nothing more.
   */
  halt() {
    this.dead = true;
    this.#network.close();
  }

  /** Runs `body` as the operation an abort waits for; it fails with AbortedError if a recovery begins. */
  #run<T>(body: (epoch: number) => Promise<T>): Promise<T> {
    const result = body(this.#network.epoch).catch((error) => {
      if (error instanceof MachineDied) return silence();
      throw error;
    });
    this.#current = result;
    return result;
  }

  #faultDue(phase: FaultPoint["phase"], iteration?: number): boolean {
    const index = this.#faults.findIndex((fault) =>
      fault.phase === phase && (fault.phase === "recovery" || fault.iteration === iteration)
    );
    if (index < 0) return false;
    this.#faults.splice(index, 1);
    return true;
  }

  #fault(phase: "step", iteration: number) {
    if (this.#faultDue(phase, iteration)) this.#die(`in the middle of iteration ${iteration}`);
  }

  /**
   * An injected failure: the machine stops here. It tells the cluster (which terminates its Worker), goes
   * silent (no heartbeats, no messages), and unwinds what it was doing without ever answering the root.
   */
  #die(where: string): never {
    if (!this.dead) {
      this.dead = true;
      this.#network.close();
      this.#host.died(where);
    }
    throw new MachineDied(where);
  }
}

/** Unwinds a machine that has just failed (see `#die`). */
class MachineDied extends Error {
  override name = "MachineDied";
}

/** What a dead machine answers: nothing, ever. */
export const silence = () => new Promise<never>(() => {});
