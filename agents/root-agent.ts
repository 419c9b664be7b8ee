// The root agent's driver: it runs the pure protocol of protocol/root.ts against the machines. It
// computes the placement plan, starts and registers the machines, turns a machine's expired lease in the
// health store into a detection, carries out each command the protocol returns (a step on every machine;
// in a recovery: stop the survivors, restart or replace the failed machines, survey every memory and the
// persistent store, fetch, load, synchronize) and feeds back what came of it, stamped with the time on the
// injected clock. A command's result is always fed back with the epoch it was issued in: the protocol
// drops those a newer failure superseded.

import type { CheckpointStore } from "../core/store.ts";
import type { Clock } from "./protocol/clock.ts";
import { AbortedError } from "./protocol/transport.ts";
import { type HealthStore, InMemoryHealthStore } from "./protocol/health.ts";
import { type ReplicationPolicy, validatePolicy } from "./replication/interleaving.ts";
import { type PlacementPlan, placementPlan, replicaPeers } from "./replication/placement.ts";
import {
  changedSavedState,
  initialRootState,
  type IterationReport,
  type RecoveryPlan,
  type RecoveryReport,
  resumedRootState,
  type RootCommand,
  type RootEvent,
  type RootInput,
  type RootState,
  type SavedRootState,
  transition,
  type UnusableCopy,
} from "./protocol/root.ts";
import {
  describeSource,
  type Machine,
  type Machines,
  openPersistentStore,
  type RestoreResult,
} from "./protocol/spec.ts";

/** Where a root keeps its epoch and iteration in the health store, for one that may take over from it. */
const SAVED_KEY = "root/state";

export interface RootSettings {
  /** A machine whose heartbeat is this late is declared failed. */
  heartbeatTimeoutMs: number;
  /** Where machines' leases live (an in-memory store on the machines' clock when absent). */
  health?: HealthStore;
  /** The persistent store, as the root reads what it holds (opened from the cluster's settings when absent). */
  persistent?: CheckpointStore;
}

/** Runs `body`, reporting its error instead of throwing it: someone else's bug must not stop the protocol. */
function guarded(what: string, body: () => void) {
  try {
    body();
  } catch (error) {
    console.error(`${what} failed: ${(error as Error).message}`);
  }
}

/** A machine's key in the health store: its incarnation, and the lease its heartbeats keep alive. */
interface Registration {
  incarnation: number;
  lease: number;
}

/** A machine went down while a command needed it: the detection that follows supersedes the command. */
class MachineDown extends Error {
  override name = "MachineDown";
}

/** Starting a failed rank failed: no lease covers it, so the protocol hears of it as `startFailed`. */
class StartFailed extends Error {
  override name = "StartFailed";
  readonly rank: number;

  constructor(rank: number, cause: Error) {
    super(cause.message);
    this.rank = rank;
  }
}

export class RootAgent {
  readonly machines: Machines;
  /** Where each machine's checkpoint is replicated (the cluster settings' strategy and m). */
  readonly plan: PlacementPlan;
  readonly settings: RootSettings;
  readonly health: HealthStore;
  readonly clock: Clock;
  readonly #persistent: CheckpointStore;
  #state: RootState;
  /** The running machine of each rank (null while it is down). */
  readonly #running: (Machine | null)[];
  readonly #leases = new Map<number, Registration>();
  readonly #launching = new Map<number, Promise<Machine>>();
  readonly #listeners = new Set<(event: RootEvent) => void>();
  readonly #heartbeatListeners = new Set<(rank: number) => void>();
  readonly #unwatch: () => void;
  #advance: { resolve: (report: IterationReport | RecoveryReport) => void; reject: (error: Error) => void } | null =
    null;

  /** Starts every machine and registers it. */
  static async start(machines: Machines, settings: RootSettings): Promise<RootAgent> {
    const persistent = settings.persistent ?? await openPersistentStore(machines.settings.persistent);
    const root = new RootAgent(machines, settings, persistent);
    try {
      await Promise.all(root.#running.map((_, rank) => root.#launch(rank, 0)));
    } catch (error) {
      await root.close();
      throw error;
    }
    return root;
  }

  /**
   * Takes over the cluster a lost root left, from what it saved in the health store (`settings.health`, which
   * must have outlived it): the machines it registered that still run are adopted, with new leases; those
   * that do not are failures to recover from. The first advance rolls every machine back to the newest
   * checkpoint complete for every shard, in a new epoch, so nothing of the lost root's last step or
   * recovery is used.
   */
  static async takeOver(machines: Machines, settings: RootSettings & { health: HealthStore }): Promise<RootAgent> {
    const { health } = settings, adopt = machines.adopt?.bind(machines);
    if (!adopt) throw new Error("this cluster's machines cannot be adopted by another root");
    const saved = (await health.get(SAVED_KEY)).get(SAVED_KEY) as SavedRootState | undefined;
    if (!saved) throw new Error("the health store holds no root's state to take over from");
    const registered = await health.get("machines/");
    const persistent = settings.persistent ?? await openPersistentStore(machines.settings.persistent);
    const root = new RootAgent(machines, settings, persistent, saved);
    const lost: { rank: number; incarnation: number }[] = [];
    await Promise.all(root.#running.map(async (_, rank) => {
      const entry = registered.get(`machines/${rank}`) as Registration | undefined;
      if (!entry) return lost.push({ rank, incarnation: -1 });
      // The lost root's lease: nobody renews it any more.
      await health.revoke(entry.lease);
      const machine = await adopt(rank, entry.incarnation, (beat) => root.#heartbeat(beat.rank, beat.incarnation));
      if (machine) await root.#enrol(machine);
      else lost.push({ rank, incarnation: entry.incarnation });
    }));
    for (const { rank, incarnation } of lost) {
      root.#dispatch({ type: "detected", rank, incarnation, at: root.clock.now() });
    }
    return root;
  }

  private constructor(
    machines: Machines,
    settings: RootSettings,
    persistent: CheckpointStore,
    saved?: SavedRootState,
  ) {
    const { heartbeatMs, placement, replicas, checkpoint } = machines.settings, count = machines.settings.machines;
    if (!(settings.heartbeatTimeoutMs > heartbeatMs)) {
      throw new Error(
        `the heartbeat timeout (${settings.heartbeatTimeoutMs} ms) must exceed the interval (${heartbeatMs} ms)`,
      );
    }
    this.machines = machines;
    this.settings = settings;
    this.clock = machines.clock;
    this.plan = placementPlan(placement, count, replicas);
    this.health = settings.health ?? new InMemoryHealthStore(this.clock);
    this.#persistent = persistent;
    const initial = initialRootState(count, { every: checkpoint.every, policy: checkpoint.replication.policy }, {
      networkBytesPerSecond: machines.settings.network.bandwidth,
      persistentBytesPerSecond: machines.settings.persistent.bandwidth ?? null,
    });
    this.#state = saved ? resumedRootState(initial, saved) : initial;
    this.#running = new Array(count).fill(null);
    this.#unwatch = this.health.watch("machines/", (event) => {
      if (event.type !== "delete") return;
      const rank = Number(event.key.slice("machines/".length)), held = this.#leases.get(rank);
      if (!held) return;
      this.#leases.delete(rank);
      this.#running[rank] = null;
      this.#dispatch({ type: "detected", rank, incarnation: held.incarnation, at: this.clock.now() });
    });
  }

  /**
   * Changes, from the next iteration on, how often the machines checkpoint and how they replicate: the
   * bench compares policies within one run this way, and the lab lets a user switch them live.
   */
  setCheckpointing(change: { every?: number; policy?: ReplicationPolicy }) {
    const every = change.every ?? this.#state.checkpointing.every;
    const policy = change.policy ?? this.#state.checkpointing.policy;
    if (!Number.isInteger(every) || every < 1) {
      throw new Error(`checkpoint every must be a positive integer, got ${every}`);
    }
    this.#dispatch({ type: "configure", every, policy: validatePolicy(policy) });
  }

  /** Iterations completed (after a recovery: the iteration rolled back to). */
  get iteration(): number {
    return this.#state.iteration;
  }

  get epoch(): number {
    return this.#state.epoch;
  }

  /** The machine running each rank (null while it is down), as the root knows them. */
  get members(): readonly (Machine | null)[] {
    return this.#running;
  }

  /** The protocol's state (read only). */
  get protocol(): Readonly<RootState> {
    return this.#state;
  }

  onEvent(listener: (event: RootEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Calls `listener` with the machine's rank at each heartbeat of a registered machine. */
  onHeartbeat(listener: (rank: number) => void): () => void {
    this.#heartbeatListeners.add(listener);
    return () => this.#heartbeatListeners.delete(listener);
  }

  /** One iteration on every machine; or, if a machine has failed, the recovery. */
  advance(): Promise<IterationReport | RecoveryReport> {
    if (this.#state.mode === "closed") return Promise.reject(new Error("the root agent has been closed"));
    if (this.#advance) return Promise.reject(new Error("an advance is already under way"));
    const done = new Promise<IterationReport | RecoveryReport>((resolve, reject) => {
      this.#advance = { resolve, reject };
    });
    this.#dispatch({ type: "advance", at: this.clock.now() });
    return done;
  }

  /** Advances until `iteration` is completed, returning every report on the way. */
  async runUntil(iteration: number): Promise<(IterationReport | RecoveryReport)[]> {
    const reports: (IterationReport | RecoveryReport)[] = [];
    while (this.iteration < iteration) reports.push(await this.advance());
    return reports;
  }

  /**
   * The cluster's state, put together from every machine's shard of it: each machine sends its own range of the
   * parameters, not all of them (GPT-2 124M's 475 MiB from each of four machines took the host's last GiBs).
   */
  async state(): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array }> {
    const states = await Promise.all(this.#all().map((machine) => machine.control.state()));
    const concat = (parts: Float32Array[]) => {
      const whole = new Float32Array(parts.reduce((sum, part) => sum + part.length, 0));
      parts.reduce((at, part) => (whole.set(part, at), at + part.length), 0);
      return whole;
    };
    const [params, m, v] = (["params", "m", "v"] as const).map((name) => concat(states.map((state) => state[name])));
    return { params, m, v };
  }

  /**
   * The root's process is lost: it acts on nothing more, and leaves the machines running and the health store
   * as they are, for a root that takes over (an advance under way never settles).
   */
  lose() {
    this.#state = { ...this.#state, mode: "closed", step: null, recovery: null };
    this.#unwatch();
    this.#leases.clear();
    this.#advance = null;
  }

  /** Stops the cluster. */
  async close() {
    this.#dispatch({ type: "close" });
    this.#unwatch();
    if (this.health instanceof InMemoryHealthStore) this.health.close();
    await this.machines.shutdown();
  }

  // --- the protocol's loop ------------------------------------------------------------------------

  #dispatch(input: RootInput) {
    const { state, commands } = transition(this.#state, input);
    const saved = changedSavedState(this.#state, state);
    this.#state = state;
    if (saved) {
      this.health.put(SAVED_KEY, saved).catch((error) =>
        console.error(`saving the root's state for a successor failed: ${error.message}`)
      );
    }
    for (const command of commands) this.#carryOut(command);
  }

  #carryOut(command: RootCommand) {
    switch (command.do) {
      case "emit":
        for (const listener of this.#listeners) {
          guarded("a listener of the root agent's events", () => listener(command.event));
        }
        return;
      case "settle":
      case "reject": {
        const advance = this.#advance;
        this.#advance = null;
        if (command.do === "settle") advance?.resolve(command.report);
        else advance?.reject(new Error(command.error));
        return;
      }
      case "fence":
        this.#running[command.rank] = null;
        guarded("fencing a machine", () => this.machines.fence(command.rank));
        return;
      case "step":
        return this.#answer(command.epoch, async () => {
          const results = await Promise.all(this.#all().map((machine) => machine.control.step(command.plan)));
          return { type: "stepped", epoch: command.epoch, results, at: this.clock.now() };
        });
      case "stop":
        return this.#answer(command.epoch, async () => {
          await Promise.all(command.ranks.map((rank) => this.#machine(rank).control.abort(command.epoch)));
          return { type: "stopped", epoch: command.epoch, at: this.clock.now() };
        });
      case "replace":
        return this.#answer(command.epoch, async () => {
          // A machine an abandoned attempt restarted runs already (or is starting: that launch is joined),
          // in that attempt's epoch: it moves to this one.
          const launched = await Promise.all(command.ranks.map((rank) =>
            this.#running[rank] ??
              this.#launch(rank, command.epoch).catch((error: Error) => Promise.reject(new StartFailed(rank, error)))
          ));
          await Promise.all(launched.map((machine) => machine.control.abort(command.epoch)));
          return { type: "replaced", epoch: command.epoch, at: this.clock.now() };
        });
      case "survey":
        return this.#answer(command.epoch, async () => {
          const statuses = await Promise.all(this.#all().map((machine) => machine.control.status()));
          const persistent = await this.#persistent.entries();
          const memories = statuses.map((status) => status.memory);
          return { type: "surveyed", epoch: command.epoch, memories, persistent, at: this.clock.now() };
        });
      case "fetch":
        return this.#answer(command.epoch, async () => {
          const skipped: string[] = [], unusable: UnusableCopy[] = [];
          // Every shard is brought into its machine's memory first, and only then loaded onto the GPUs: the
          // fetches do not wait behind the loads (the simulated machines share this computer's cores).
          const results = await Promise.all(
            this.#all().map((machine) => this.#fetch(machine, command.plan, command.epoch, skipped, unusable)),
          );
          const at = this.clock.now();
          if (results.includes(null)) return { type: "unusable", epoch: command.epoch, copies: unusable, skipped, at };
          return { type: "fetched", epoch: command.epoch, results: results as RestoreResult[], skipped, at };
        });
      case "load":
        return this.#answer(command.epoch, async () => {
          const milliseconds = await Promise.all(
            this.#all().map((machine, rank) => machine.control.load(command.iteration, command.initial[rank])),
          );
          return { type: "loaded", epoch: command.epoch, milliseconds, at: this.clock.now() };
        });
      case "synchronize":
        return this.#answer(command.epoch, async () => {
          await Promise.all(this.#all().map((machine) => machine.control.synchronize()));
          return { type: "synchronized", epoch: command.epoch, at: this.clock.now() };
        });
    }
  }

  /**
   * Runs a command's work and feeds back its result. A failure that a machine going down explains is
   * dropped (the detection supersedes the command), as is one of an epoch already superseded; a failed
   * rank's start that failed is fed back as such; any other ends the advance with its error.
   */
  #answer(epoch: number, work: () => Promise<RootInput>) {
    work().then(
      (result) => this.#dispatch(result),
      (error: Error) => {
        if (error instanceof MachineDown || error.name === "AbortedError" || epoch !== this.#state.epoch) return;
        this.#dispatch(
          error instanceof StartFailed
            ? { type: "startFailed", epoch, rank: error.rank, error: error.message, at: this.clock.now() }
            : { type: "failed", epoch, error: error.message },
        );
      },
    );
  }

  /**
   * Fetches one machine's shard into its memory from the first of its plan's sources that works; null if none
   * does, with every copy it tried added to `unusable` (the plan is then made again without them).
   */
  async #fetch(
    machine: Machine,
    plan: RecoveryPlan,
    epoch: number,
    skipped: string[],
    unusable: UnusableCopy[],
  ): Promise<RestoreResult | null> {
    for (const source of plan.sources[machine.rank]) {
      // A superseded attempt tries no further source: it might overwrite what the newer one restores.
      if (epoch !== this.#state.epoch) throw new AbortedError(`recovery ${epoch} was superseded`);
      try {
        // A fetch from a peer starts when the peer starts sending.
        const began = this.clock.now();
        if (source.from === "peer") {
          await this.#machine(source.peer).control.serve(machine.rank, plan.iteration, machine.rank);
        }
        const bytes = await machine.control.fetch(plan.iteration, source);
        const retrieveMilliseconds = source.from === "local" ? 0 : this.clock.now() - began;
        return { source, iteration: plan.iteration, bytes, retrieveMilliseconds, loadMilliseconds: 0 };
      } catch (error) {
        if (error instanceof MachineDown || (error as Error).name === "AbortedError") throw error;
        skipped.push(`machine ${machine.rank} from ${describeSource(source)}: ${(error as Error).message}`);
        if (source.from === "initial") throw error; // the initial state comes from no copy: nothing older to try
        const holder = source.from === "peer" ? source.peer : source.from === "local" ? machine.rank : "persistent";
        unusable.push({ owner: machine.rank, iteration: plan.iteration, holder });
      }
    }
    return null;
  }

  // --- membership ---------------------------------------------------------------------------------

  #machine(rank: number): Machine {
    const machine = this.#running[rank];
    if (!machine) throw new MachineDown(`machine ${rank} is down`);
    return machine;
  }

  /** Every machine, by rank; a MachineDown if one is down. */
  #all(): Machine[] {
    return this.#running.map((_, rank) => this.#machine(rank));
  }

  /**
   * Starts machine `rank` in `epoch` and registers it; a launch already under way (one a restarted
   * recovery abandoned) is joined, not repeated.
   */
  #launch(rank: number, epoch: number): Promise<Machine> {
    let launching = this.#launching.get(rank);
    if (!launching) {
      launching = this.#register(rank, epoch).finally(() => this.#launching.delete(rank));
      this.#launching.set(rank, launching);
    }
    return launching;
  }

  async #register(rank: number, epoch: number): Promise<Machine> {
    const machine = await this.machines.launch(
      rank,
      epoch,
      replicaPeers(this.plan, rank),
      (heartbeat) => this.#heartbeat(heartbeat.rank, heartbeat.incarnation),
    );
    return this.#enrol(machine);
  }

  /** Registers a running machine under a lease its heartbeats keep alive. */
  async #enrol(machine: Machine): Promise<Machine> {
    const lease = await this.health.grant(this.settings.heartbeatTimeoutMs);
    // A lost root's launch that finishes late registers nothing: the root that took over decides.
    if (this.#state.mode === "closed") {
      await this.health.revoke(lease);
      throw new Error("the root agent has been closed");
    }
    const registration: Registration = { incarnation: machine.incarnation, lease };
    await this.health.put(`machines/${machine.rank}`, registration, lease);
    this.#leases.set(machine.rank, registration);
    this.#running[machine.rank] = machine;
    return machine;
  }

  #heartbeat(rank: number, incarnation: number) {
    const held = this.#leases.get(rank);
    if (held?.incarnation !== incarnation) return; // a fenced incarnation's: never renews anything
    this.health.keepAlive(held.lease).catch((error) =>
      console.error(`keeping machine ${rank}'s lease alive failed: ${error.message}`)
    );
    for (const listener of this.#heartbeatListeners) guarded("a listener of heartbeats", () => listener(rank));
  }
}

export type { IterationReport, RecoveryReport, RootEvent } from "./protocol/root.ts";
