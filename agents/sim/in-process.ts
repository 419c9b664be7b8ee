// The cluster in one thread, on a virtual clock: every machine is the real worker agent (training, capture,
// replication, recovery), driven by the real root agent, its bytes crossing the real switch and landing in
// real checkpoint stores; only the GPU's arithmetic is a deterministic stand-in. Nothing happens unless the
// clock is advanced, and the same run happens every time: the chaos simulation's ground.
//
// The stand-in's state after each iteration depends on the state before it, the data step and the update,
// so a wrong rollback, a step skipped or done twice, or a restore from the wrong iteration all change the
// final state.

import { type CheckpointedState, Checkpointer } from "../../core/checkpointing.ts";
import type { ShardTensors } from "../../core/checkpoint.ts";
import type { Batch } from "../../core/data.ts";
import type { CheckpointStore } from "../../core/store.ts";
import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import { type GPT2Config, initialParameters, parameterLayout } from "../../core/model.ts";
import type { ShardRange } from "../../core/shard.ts";
import { type EngineSetup, initialShard, type TrainingEngine } from "../engine.ts";
import { VirtualClock } from "../protocol/clock.ts";
import {
  type ClusterSettings,
  type FaultPoint,
  type Heartbeat,
  hostMemory,
  type Machine,
  type MachineControl,
  machinePlace,
  type Machines,
} from "../protocol/spec.ts";
import { MachineAgent, silence } from "../worker-agent.ts";
import type { FailureKind, FailureRecord } from "./cluster.ts";
import { corruptNewestReplica, type MemoryStats, memoryStats } from "./host-faults.ts";
import { directChannel, Network, NetworkEndpoint } from "./network.ts";

/** The stand-in's parameters, m and v in host memory, checkpointed through the one checkpoint path. */
class HostState implements CheckpointedState {
  readonly config: GPT2Config;
  readonly totalFloats: number;
  step = 0;
  readonly params: Float32Array;
  readonly m: Float32Array;
  readonly v: Float32Array;

  constructor(config: GPT2Config, params: Float32Array) {
    this.config = config;
    this.totalFloats = params.length;
    this.params = params;
    this.m = new Float32Array(params.length);
    this.v = new Float32Array(params.length);
  }

  capture({ start, end }: ShardRange) {
    const tensors = { params: this.params.slice(start, end), m: this.m.slice(start, end), v: this.v.slice(start, end) };
    return Promise.resolve({
      blockedMilliseconds: 0,
      mapped: Promise.resolve({ tensors, checksums: null, release: () => {} }),
    });
  }

  write({ start }: ShardRange, tensors: ShardTensors) {
    this.params.set(tensors.params, start);
    this.m.set(tensors.m, start);
    this.v.set(tensors.v, start);
  }

  destroy() {}
}

/**
 * A deterministic stand-in for GPT-2 on a GPU. Its gradient is a fixed function of the parameters and the
 * batch's tokens, its update is AdamW in float64 rounded to float32, and its computation takes `computeMs`
 * of virtual time (so that training traffic leaves idle spans to replicate in).
 */
export class StandInEngine implements TrainingEngine {
  readonly #setup: EngineSetup;
  readonly #clock: VirtualClock;
  readonly #computeMs: number;
  readonly #state: HostState;
  readonly #checkpointer: Checkpointer;
  #grads: Float32Array;

  constructor(setup: EngineSetup, clock: VirtualClock, computeMs: number) {
    const { training, shard, store, rank, loader, chunkBytes } = setup;
    this.#setup = setup;
    this.#clock = clock;
    this.#computeMs = computeMs;
    this.#state = new HostState(training.config, initialParameters(training.config, training.optimizer.seed));
    this.#grads = new Float32Array(this.#state.totalFloats);
    this.#checkpointer = new Checkpointer(this.#state, store, {
      shard,
      owner: rank,
      data: loader,
      chunkBytes,
      beforeCommit: setup.beforeCommit,
      afterSave: setup.afterSave,
    });
  }

  get step(): number {
    return this.#state.step;
  }

  async computeGradients({ inputs, targets }: Batch): Promise<number> {
    await new Promise<void>((resolve) => this.#clock.setTimer(this.#computeMs, resolve));
    let tokens = 0;
    for (let i = 0; i < inputs.length; i++) tokens = (tokens * 31 + inputs[i] * 7 + targets[i]) % 1_000_003;
    const phase = tokens / 1_000_003, params = this.#state.params;
    let loss = 0;
    for (let i = 0; i < params.length; i++) {
      this.#grads[i] = Math.fround(Math.sin(params[i] * 7.3 + phase + i * 1e-3) * 0.05);
      loss += params[i] * params[i];
    }
    return Math.fround(loss / params.length + phase);
  }

  readGradients(start: number, end: number): Promise<Float32Array> {
    return Promise.resolve(this.#grads.slice(start, end));
  }

  updateShard(grads: Float32Array, normSquared: number) {
    const { lr, beta1, beta2, eps, weightDecay, maxGradNorm } = this.#setup.training.optimizer;
    const { params, m, v } = this.#state, { start } = this.#setup.shard, t = this.#state.step + 1;
    const clip = maxGradNorm > 0 ? Math.min(1, maxGradNorm / (Math.sqrt(normSquared) + 1e-6)) : 1;
    for (let j = 0; j < grads.length; j++) {
      const i = start + j, g = grads[j] * clip;
      m[i] = Math.fround(beta1 * m[i] + (1 - beta1) * g);
      v[i] = Math.fround(beta2 * v[i] + (1 - beta2) * g * g);
      const step = (m[i] / (1 - beta1 ** t)) / (Math.sqrt(v[i] / (1 - beta2 ** t)) + eps);
      params[i] = Math.fround(params[i] - lr * (step + weightDecay * params[i]));
    }
    this.#state.step = t;
  }

  readShardParameters(): Promise<Float32Array> {
    const { start, end } = this.#setup.shard;
    return Promise.resolve(this.#state.params.slice(start, end));
  }

  writeParameters(start: number, values: Float32Array) {
    this.#state.params.set(values, start);
    return Promise.resolve();
  }

  checkpoint() {
    return this.#checkpointer.afterStep();
  }

  async restore(iteration: number) {
    await this.#checkpointer.restore(iteration);
  }

  restoreInitial() {
    this.#checkpointer.restoreShard(initialShard(this.#setup, this.#checkpointer.meta()));
    return Promise.resolve();
  }

  state() {
    const { start, end } = this.#setup.shard, { params, m, v } = this.#state;
    return Promise.resolve({ params: params.slice(start, end), m: m.slice(start, end), v: v.slice(start, end) });
  }

  destroy() {
    this.#checkpointer.destroy();
  }
}

/** Makes a machine's engine: the stand-in, unless a test plants another. */
export type EngineFactory = (setup: EngineSetup, clock: VirtualClock, computeMs: number) => TrainingEngine;

interface Slot {
  memory: WebAssembly.Memory | SharedArrayBuffer | null;
  agent: MachineAgent | null;
  incarnation: number;
  /** The kind of failure an armed fault point of this machine stands for. */
  armedKind: FailureKind;
  lastFailure: FailureRecord | null;
  /** Until this time (virtual ms) its heartbeats do not reach the root: a slow machine, or a slow link. */
  silentUntil: number;
  /** Its next write to the persistent store fails (a full disk, a lost connection to the store). */
  persistFails: boolean;
  /** Where its heartbeats go: the root that launched it, or one that took over. */
  onHeartbeat: (heartbeat: Heartbeat) => void;
}

/** A cluster of worker agents in this thread, with the stand-in engine, on a virtual clock. */
export class InProcessCluster implements Machines {
  readonly settings: ClusterSettings;
  readonly clock = new VirtualClock();
  readonly network: Network;
  /** The persistent store every machine shares (and the root reads). */
  readonly persistent: InMemoryCheckpointStore;
  readonly #computeMs: number;
  readonly #engine: EngineFactory;
  readonly #slots: Slot[];

  /**
   * `settings.persistent` must be of kind "memory"; a step's computation takes `computeMs` of virtual time.
   * `engine` replaces the stand-in (a test plants a bug there, to show that the checks catch it).
   */
  constructor(settings: ClusterSettings, options: { computeMs?: number; engine?: EngineFactory } = {}) {
    if (settings.persistent.kind !== "memory") {
      throw new Error("an in-process cluster keeps its persistent store in memory");
    }
    this.settings = settings;
    this.#computeMs = options.computeMs ?? 20;
    this.#engine = options.engine ?? ((setup, clock, computeMs) => new StandInEngine(setup, clock, computeMs));
    this.network = new Network(settings.network, { clock: this.clock });
    const { totalFloats } = parameterLayout(settings.training.config);
    this.persistent = InMemoryCheckpointStore.create(
      0,
      (1 << 16) + settings.machines * 3 * (totalFloats * 12 + (64 << 10)),
      { slotsPerOwner: 3, maxOwners: settings.machines, machines: settings.machines, place: "the persistent store" },
    );
    this.#slots = Array.from({ length: settings.machines }, () => ({
      memory: null,
      agent: null,
      incarnation: -1,
      armedKind: "software",
      lastFailure: null,
      silentUntil: 0,
      persistFails: false,
      onHeartbeat: () => {},
    }));
  }

  launch(rank: number, epoch: number, replicaPeers: number[], onHeartbeat: (heartbeat: Heartbeat) => void) {
    const slot = this.#slots[rank];
    if (slot.agent) return Promise.reject(new Error(`machine ${rank} is already running`));
    slot.memory ??= hostMemory(this.settings, rank).memory;
    const incarnation = ++slot.incarnation;
    const [switchSide, machineSide] = directChannel();
    this.network.attach(rank, switchSide);
    let iteration = 0, beating = true;
    const { settings, clock } = this;
    const agent = new MachineAgent(machinePlace(settings, rank, incarnation, epoch, replicaPeers), {
      engine: (setup) => this.#engine(setup, clock, this.#computeMs),
      transport: new NetworkEndpoint(rank, machineSide, epoch),
      clock,
      store: InMemoryCheckpointStore.attach(slot.memory, { incarnation }),
      persistent: this.#persistentFor(slot),
      adapter: "a deterministic stand-in",
      progress: (reached) => iteration = reached,
      died: (where) => this.#fail(rank, slot.armedKind, where),
      stop: () => beating = false,
    });
    slot.agent = agent;
    slot.onHeartbeat = onHeartbeat;
    const beat = () => {
      if (!beating || slot.agent !== agent) return;
      if (clock.now() >= slot.silentUntil) slot.onHeartbeat({ rank, incarnation, iteration });
      clock.setTimer(settings.heartbeatMs, beat);
    };
    beat();
    return agent.status().then((status): Machine => ({ rank, incarnation, control: answering(agent), status }));
  }

  adopt(rank: number, incarnation: number, onHeartbeat: (heartbeat: Heartbeat) => void): Promise<Machine | null> {
    const slot = this.#slots[rank], agent = slot.agent;
    if (!agent || slot.incarnation !== incarnation) return Promise.resolve(null);
    slot.onHeartbeat = onHeartbeat;
    return agent.status().then((status) => ({ rank, incarnation, control: answering(agent), status }));
  }

  /**
   * Injects a failure of `kind` into `ranks`: at once, or when each reaches `point` (an iteration's step,
   * checkpoint write or replication, or its next recovery).
   */
  inject(ranks: number[], kind: FailureKind, point?: FaultPoint) {
    for (const rank of ranks) {
      const slot = this.#slots[rank];
      if (!slot.agent) throw new Error(`machine ${rank} is already down`);
      if (!point) {
        this.#fail(rank, kind, "at once");
      } else {
        slot.armedKind = kind;
        slot.agent.injectFault(point);
      }
    }
  }

  /**
   * Machine `rank` goes on working, but its heartbeats do not reach the root for `ms`: past the lease, the root
   * suspects it wrongly and must fence it.
   */
  slow(rank: number, ms: number) {
    this.#slots[rank].silentUntil = this.clock.now() + ms;
  }

  /** Corrupts the newest replica machine `rank` holds for a peer (see `corruptNewestReplica`). */
  corrupt(rank: number): number | null {
    return corruptNewestReplica(this.#slots[rank].memory, rank);
  }

  /** Machine `rank`'s next write to the persistent store fails: the checkpoint is not persisted. */
  failPersist(rank: number) {
    this.#slots[rank].persistFails = true;
  }

  /**
   * Zeroes the second half of machine `rank`'s newest checkpoint in the persistent store, as a write torn by a
   * crash leaves it; returns its iteration (none stored: null). A restore must detect it and fall back.
   */
  tearPersisted(rank: number): number | null {
    const newest = this.persistent.stats().byOwner.get(rank)?.newest;
    if (newest === undefined) return null;
    const torn = this.persistent.withCheckpoint(rank, newest, (bytes) => {
      bytes.fill(0, bytes.length >> 1);
      return true;
    });
    return torn ? newest : null;
  }

  /** What machine `rank`'s host memory holds (none while its hardware is lost). */
  memoryStats(rank: number): MemoryStats | null {
    return memoryStats(this.#slots[rank].memory);
  }

  isRunning(rank: number): boolean {
    return this.#slots[rank].agent !== null;
  }

  lastFailure(rank: number): FailureRecord | null {
    return this.#slots[rank].lastFailure;
  }

  fence(rank: number) {
    this.#fail(rank, "software", "fenced: declared failed while it still ran");
  }

  shutdown() {
    for (const slot of this.#slots) {
      slot.agent?.halt();
      slot.agent = null;
    }
    this.network.close();
    return Promise.resolve();
  }

  /** The persistent store as machine `slot` writes to it: its save fails once when a fault is armed. */
  #persistentFor(slot: Slot): CheckpointStore {
    const store = this.persistent;
    return {
      description: store.description,
      save(owner, iteration, shard) {
        if (!slot.persistFails) return store.save(owner, iteration, shard);
        slot.persistFails = false;
        return Promise.reject(new Error("the persistent store refused the write (an injected fault)"));
      },
      load: (owner, expect) => store.load(owner, expect),
      entries: (owner) => store.entries(owner),
    };
  }

  #fail(rank: number, kind: FailureKind, where: string) {
    const slot = this.#slots[rank];
    if (!slot.agent) return;
    slot.agent.halt();
    slot.agent = null;
    this.network.detach(rank, `machine ${rank} failed`);
    if (kind === "hardware") slot.memory = null;
    slot.lastFailure = { rank, kind, where, at: this.clock.now() };
  }
}

/** The agent's controls as the root calls them: a machine that has failed answers nothing, ever. */
function answering(agent: MachineAgent): MachineControl {
  const call = <T>(work: () => Promise<T> | T) =>
    agent.dead ? silence() : Promise.resolve(work()).then((value) => agent.dead ? silence() : value);
  return {
    step: (plan) => call(() => agent.step(plan)),
    abort: (epoch) => call(() => agent.abort(epoch)),
    fetch: (iteration, source) => call(() => agent.fetch(iteration, source)),
    load: (iteration, initial) => call(() => agent.load(iteration, initial)),
    serve: (owner, iteration, to) => call(() => agent.serve(owner, iteration, to)),
    synchronize: () => call(() => agent.synchronize()),
    status: () => call(() => agent.status()),
    state: () => call(() => agent.state()),
    shutdown: () => call(() => agent.shutdown()),
  };
}
