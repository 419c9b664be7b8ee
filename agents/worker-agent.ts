// The worker agent: one per machine, in the machine's own Worker with its own GPUDevice. It trains its
// slice of every batch, reduce-scatters the gradients, updates its shard of the parameters and of
// AdamW's m and v, and all-gathers the parameters; it takes an in-memory checkpoint of its shard every
// iteration (configurable) into its host memory, sends it to the peers of the placement plan, keeps the
// replicas it receives, persists every P iterations, heartbeats to the root agent, and in a recovery
// fetches its shard into its own memory (from a peer or the persistent store, if it is not there) and loads
// it onto the GPU (or the initial state).
//
// The root agent drives it through comlink (`MachineApi` below); bulk bytes go through the network.

import * as Comlink from "comlink";
import type { DecodedShard } from "../core/checkpoint.ts";
import { Checkpointer } from "../core/checkpointing.ts";
import { BatchLoader } from "../core/data.ts";
import { acquireGpu, formatAdapter } from "../core/gpu.ts";
import { InMemoryCheckpointStore } from "../core/memory-store.ts";
import { initialParameters } from "../core/model.ts";
import { type ShardRange, shardRanges } from "../core/shard.ts";
import { readShardParameters, updateShard } from "../core/sharded.ts";
import type { CheckpointStore } from "../core/store.ts";
import { Trainer } from "../core/trainer.ts";
import { allGatherShards, allSum, reduceScatterMean } from "./collectives.ts";
import { CheckpointScheduler } from "./replication/interleaving.ts";
import { type ReplicationCommand, Replicator } from "./replication/replicator.ts";
import { type Clock, WallClock } from "./protocol/clock.ts";
import { isCollective, type PhaseName, trafficEdges, TRAINING_ITERATION } from "./protocol/iteration.ts";
import { AbortedError, type Delivery, type Transport } from "./protocol/transport.ts";
import { NetworkEndpoint } from "./sim/network.ts";
import {
  corpusFor,
  type FaultPoint,
  type IterationPlan,
  type MachineSpec,
  type MachineStatus,
  openPersistentStore,
  type RestoreSource,
  type StepResult,
} from "./protocol/spec.ts";

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

class MachineAgent {
  readonly spec: MachineSpec;
  readonly #trainer: Trainer;
  readonly #loader: BatchLoader;
  readonly #shards: ShardRange[];
  readonly #shard: ShardRange;
  readonly #store: InMemoryCheckpointStore;
  readonly #persistent: CheckpointStore;
  readonly #checkpointer: Checkpointer;
  readonly #network: Transport;
  /** This machine's own clock: the scheduler's and the timings' (each machine keeps its own time). */
  readonly #clock: Clock = new WallClock();
  /** What goes to the peers when, and which iteration this machine keeps (see replication/replicator.ts). */
  readonly #replication: Replicator;
  readonly #adapter: string;
  /** Sends the heartbeats from a thread of its own, so that long GPU work here never delays them. */
  readonly #heartbeat: Worker;
  /** [iteration]: what the heartbeats report, shared with the heartbeat thread. */
  readonly #progress = new Int32Array(new SharedArrayBuffer(4));
  readonly #arrivals = new Map<number, Arrival>();
  readonly #arrivalWaiters = new Map<string, { resolve: () => void; reject: (error: Error) => void }>();
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

  static async start(spec: MachineSpec): Promise<MachineAgent> {
    const gpu = await acquireGpu();
    const persistent = await openPersistentStore(spec.persistent);
    return new MachineAgent(spec, gpu.device, formatAdapter(gpu.adapter), persistent);
  }

  private constructor(spec: MachineSpec, device: GPUDevice, adapter: string, persistent: CheckpointStore) {
    this.spec = spec;
    this.#adapter = adapter;
    const { training } = spec;
    this.#trainer = new Trainer(device, training.config, {
      ...training.optimizer,
      batch: training.batchPerMachine,
      time: training.time,
    });
    this.#loader = new BatchLoader(
      corpusFor(training),
      training.batchPerMachine * spec.machines,
      training.time,
      training.optimizer.seed,
    );
    this.#shards = shardRanges(this.#trainer.model.totalFloats, spec.machines);
    this.#shard = this.#shards[spec.rank];
    this.#store = InMemoryCheckpointStore.attach(spec.memory, { incarnation: spec.incarnation });
    this.#persistent = persistent;
    this.#checkpointer = new Checkpointer(this.#trainer, this.#store, {
      shard: this.#shard,
      owner: spec.rank,
      data: this.#loader, // the global batch's order: the trainer sees only this machine's rows
      chunkBytes: spec.checkpoint.chunkBytes,
      checksumsOnGpu: false, // see CheckpointCapture: on a software adapter it only blocks training longer
      beforeCommit: ({ iteration }) => {
        if (this.#faultDue("checkpoint", iteration)) this.#die(`in the middle of writing checkpoint ${iteration}`);
      },
      afterSave: ({ iteration }) => this.#replicateAndPersist(iteration),
    });
    this.#network = new NetworkEndpoint(spec.rank, spec.network, spec.epoch);
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
    this.#heartbeat = startHeartbeat(spec, this.#progress);
  }

  /**
   * One iteration of sharded data-parallel training, with the checkpoint and replication that `plan` asks
   * for: the phases of `TRAINING_ITERATION`, in order, each timed.
   */
  step(plan: IterationPlan): Promise<StepResult> {
    return this.#run(async (epoch) => {
      const t = this.#trainer.step + 1, rank = this.spec.rank, machines = this.spec.machines;
      // Every machine has replicated the checkpoints of `plan.keep`: a recovery from peers may roll everyone
      // back to it, so this machine keeps its own and the replicas it holds of it until a newer one is kept.
      this.#carryOut(this.#replication.beginIteration(plan, this.#store.has(rank, plan.keep)));
      let loss = 0, grads!: Float32Array, reduced!: Float32Array, normSquared = 0, shard!: Float32Array;
      let checkpointBlocked = 0;
      const run: Record<PhaseName, () => Promise<void>> = {
        gradients: async () => {
          // Every machine draws the same global batch and trains on its rows of it.
          const global = this.#loader.next(), rows = this.spec.training.batchPerMachine * this.spec.training.time;
          loss = await this.#trainer.computeGradients({
            inputs: global.inputs.subarray(rank * rows, (rank + 1) * rows),
            targets: global.targets.subarray(rank * rows, (rank + 1) * rows),
          });
          this.#fault("step", t);
          grads = await this.#trainer.model.readGradients();
        },
        "reduce-scatter": async () => {
          reduced = await reduceScatterMean(this.#network, grads, this.#shards, `${t}`, epoch);
        },
        "gradient norm": async () => {
          let squares = 0;
          for (const g of reduced) squares += g * g;
          normSquared = await allSum(this.#network, squares, machines, `${t}/norm`, epoch);
        },
        update: async () => {
          updateShard(this.#trainer, this.#shard, reduced, normSquared);
          shard = await readShardParameters(this.#trainer, this.#shard);
        },
        checkpoint: async () => {
          if (plan.checkpoint) checkpointBlocked = await this.#beginCheckpoint();
        },
        "all-gather": async () => {
          const params = await allGatherShards(this.#network, shard, this.#shards, `${t}/params`, epoch);
          this.#trainer.model.writeParameters(params);
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
      Atomics.store(this.#progress, 0, t);
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
    const t = this.#trainer.step;
    const { blockedMilliseconds, published } = await this.#checkpointer.afterStep();
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
      // The copies: one for the peers, taken only if this checkpoint will be replicated; one for the
      // persistent store, when one is due.
      commands = this.#replication.published(t, bytes, this.#clock.now());
      this.#persist(t, bytes);
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
  #persist(iteration: number, bytes: Uint8Array) {
    const every = this.spec.checkpoint.persistEvery;
    if (!every || iteration % every) return;
    if (this.#persisting) {
      this.#persistentSkipped++;
      return;
    }
    this.#persisting = this.#persistent.save(this.spec.rank, iteration, bytes.slice()).then(
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
    const waiter = this.#arrivalWaiters.get(`${owner}/${iteration}`);
    this.#arrivalWaiters.delete(`${owner}/${iteration}`);
    try {
      arrival.writer.commit();
      waiter?.resolve();
    } catch (error) {
      console.error(`machine ${this.spec.rank}: ${(error as Error).message}`);
      waiter?.reject(error as Error);
    }
  }

  /** Stops what this machine was doing and moves to recovery epoch `epoch`. */
  async abort(epoch: number) {
    this.#network.abort(epoch);
    this.#replication.reset();
    for (const { reject } of this.#arrivalWaiters.values()) reject(new AbortedError(`recovery ${epoch} began`));
    this.#arrivalWaiters.clear();
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
      if (initial) this.#checkpointer.restoreShard(this.#initialShard());
      else await this.#checkpointer.restore(iteration);
      Atomics.store(this.#progress, 0, this.#trainer.step);
      await this.#trainer.device.queue.onSubmittedWorkDone();
      return this.#clock.now() - start;
    });
  }

  /** The state every run starts from: the seeded initial parameters, zero moments, the data order's start. */
  #initialShard(): DecodedShard {
    const { start, end } = this.#shard, { training } = this.spec;
    const loader = new BatchLoader(corpusFor(training), 1, training.time, training.optimizer.seed);
    const meta = { ...this.#checkpointer.meta(), iteration: 0, data: loader.state };
    const params = initialParameters(training.config, training.optimizer.seed).slice(start, end);
    const zeros = () => new Float32Array(end - start);
    return { meta, tensors: { params, m: zeros(), v: zeros() } };
  }

  /** Resolves when `owner`'s checkpoint `iteration` has arrived whole and been published here. */
  #arrival(owner: number, iteration: number): Promise<void> {
    // A verified read, not `has`: a corrupt copy already here must not pass for the one on its way.
    if (this.#store.withCheckpoint(owner, iteration, () => true)) return Promise.resolve();
    return new Promise((resolve, reject) => this.#arrivalWaiters.set(`${owner}/${iteration}`, { resolve, reject }));
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

  /** After every shard is restored: all-gathers the parameters, so every machine has all of them again. */
  synchronize(): Promise<void> {
    return this.#run(async (epoch) => {
      const shard = await readShardParameters(this.#trainer, this.#shard);
      const tag = `sync/${this.#trainer.step}`;
      this.#trainer.model.writeParameters(await allGatherShards(this.#network, shard, this.#shards, tag, epoch));
    });
  }

  async status(): Promise<MachineStatus> {
    return {
      rank: this.spec.rank,
      incarnation: this.spec.incarnation,
      iteration: this.#trainer.step,
      adapter: this.#adapter,
      memory: await this.#store.entries(),
      arenaBytes: this.#store.arenaBytes,
      persistentSaves: this.#persistentSaves,
      persistentSkipped: this.#persistentSkipped,
    };
  }

  /** This machine's state: all the parameters, and its shard of m and v. */
  async state(): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array }> {
    const { params, m, v } = await this.#trainer.exportState();
    const { start, end } = this.#shard;
    return { params, m: m.slice(start, end), v: v.slice(start, end) };
  }

  /** Releases the GPU and stops heartbeating: the cluster is shutting down. */
  shutdown() {
    this.dead = true; // answers nothing more
    this.#heartbeat.terminate();
    this.#checkpointer.destroy();
    this.#trainer.destroy();
    this.#trainer.device.destroy();
  }

  /** Arms an injected failure. */
  injectFault(fault: FaultPoint) {
    this.#faults.push(fault);
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
      this.#heartbeat.terminate();
      this.#network.close();
      this.spec.life.postMessage({ rank: this.spec.rank, where });
    }
    throw new MachineDied(where);
  }
}

// The heartbeat thread: it posts { rank, incarnation, iteration } to the root agent's port at every interval.
const HEARTBEAT_SOURCE = `onmessage = ({ data: { root, intervalMs, rank, incarnation, progress } }) => {
  const iteration = new Int32Array(progress);
  const beat = () => root.postMessage({ rank, incarnation, iteration: Atomics.load(iteration, 0) });
  beat();
  setInterval(beat, intervalMs);
};`;

/**
 * The machine's heartbeat thread (a Worker of its Worker, from a Blob so that it needs no file of its own
 * in the page's bundle). It ends with the machine: terminated by it, or with it.
 */
function startHeartbeat(spec: MachineSpec, progress: Int32Array): Worker {
  const url = URL.createObjectURL(new Blob([HEARTBEAT_SOURCE], { type: "text/javascript" }));
  const heartbeat = new Worker(url, { type: "module", name: `machine ${spec.rank} heartbeat` });
  URL.revokeObjectURL(url);
  heartbeat.postMessage({
    root: spec.root,
    intervalMs: spec.heartbeatMs,
    rank: spec.rank,
    incarnation: spec.incarnation,
    progress: progress.buffer,
  }, [spec.root]);
  return heartbeat;
}

/** Unwinds a machine that has just failed (see `#die`). */
class MachineDied extends Error {
  override name = "MachineDied";
}

/** What a dead machine answers: nothing, ever. */
const silence = () => new Promise<never>(() => {});

let agent: MachineAgent | null = null;

/** Calls `body` on the started machine; a machine that has failed never answers. */
function onMachine<T>(body: (machine: MachineAgent) => T | Promise<T>): Promise<T> {
  if (!agent) return Promise.reject(new Error("this machine has not been started"));
  if (agent.dead) return silence();
  return Promise.resolve(body(agent));
}

/** What the root agent calls on a machine (through comlink). */
const api = {
  async start(spec: MachineSpec): Promise<MachineStatus> {
    agent = await MachineAgent.start(spec);
    return agent.status();
  },
  step: (plan: IterationPlan) => onMachine((machine) => machine.step(plan)),
  abort: (epoch: number) => onMachine((machine) => machine.abort(epoch)),
  fetch: (iteration: number, source: RestoreSource) => onMachine((machine) => machine.fetch(iteration, source)),
  load: (iteration: number, initial: boolean) => onMachine((machine) => machine.load(iteration, initial)),
  serve: (owner: number, iteration: number, to: number) => onMachine((machine) => machine.serve(owner, iteration, to)),
  synchronize: () => onMachine((machine) => machine.synchronize()),
  status: () => onMachine((machine) => machine.status()),
  state: () => onMachine((machine) => machine.state()),
  injectFault: (fault: FaultPoint) => onMachine((machine) => machine.injectFault(fault)),
  shutdown: () => onMachine((machine) => machine.shutdown()),
};

export type MachineApi = typeof api;

Comlink.expose(api);
