// The root agent: computes the placement plan, starts and registers the machines, watches their heartbeats through the health store
// (a machine whose lease runs out is declared failed, and the detection time is measured), drives
// training one iteration at a time, and drives recovery:
//   1. stop every surviving machine (a new recovery epoch: what was in flight is dropped),
//   2. restart the failed machines: on the same machine after a software failure (its memory kept),
//      on a replacement after a hardware failure (new, empty memory),
//   3. take stock of every machine's memory and of the persistent store, and roll every machine back to
//      the newest iteration that is complete for every shard: each shard from its owner's memory, else a
//      peer holding a replica, else the persistent store (else the initial state),
//   4. all-gather the parameters, and resume.
// A failure during any of it starts the recovery again with that machine added.

import type { CheckpointStore, StoredEntry } from "../core/store.ts";
import type { FailureKind, Machine, SimulatedCluster } from "./cluster.ts";
import { type HealthStore, InMemoryHealthStore } from "./health.ts";
import { clusterInterval, type ReplicationPolicy, validatePolicy } from "./interleaving.ts";
import { type PlacementPlan, placementPlan, replicaPeers } from "./placement.ts";
import {
  describeSource,
  type FaultPoint,
  type IterationPlan,
  openPersistentStore,
  type RestoreResult,
  type RestoreSource,
  type StepResult,
} from "./spec.ts";

export interface RootSettings {
  /** A machine whose heartbeat is this late is declared failed. */
  heartbeatTimeoutMs: number;
  /** Where machines' leases live (the in-memory store when absent). */
  health?: HealthStore;
}

export interface IterationReport {
  type: "iteration";
  iteration: number;
  /** The mean over machines of their mean losses: the loss of the global batch. */
  loss: number;
  milliseconds: number;
  /** What the iteration was asked to do: checkpoint or not, and how to replicate. */
  plan: IterationPlan;
  machines: StepResult[];
}

export interface FailureReport {
  rank: number;
  kind: FailureKind;
  where: string;
  /** On the network's clock (ms). */
  failedAt: number;
  detectedAt: number;
}

export interface RecoveryReport {
  type: "recovery";
  epoch: number;
  failures: FailureReport[];
  /** The iteration every machine rolled back to, and how many iterations were lost. */
  iteration: number;
  lostIterations: number;
  /** Where each machine's shard came from, and how long it took to fetch and to load. */
  machines: RestoreResult[];
  /** Milliseconds of each phase: the first failure to its detection, restarting machines, fetching the
   * shards (the slowest machine), loading them onto the GPUs, all-gathering the parameters. */
  detection: number;
  replacement: number;
  retrieval: number;
  load: number;
  synchronize: number;
  /** From the first failure to training resumed. */
  total: number;
  /** Shards restored from persistent storage. */
  fromPersistent: number;
  /** Sources that were tried and failed (a corrupt copy, say), with the reason. */
  skipped: string[];
}

export type RootEvent =
  | IterationReport
  | RecoveryReport
  | { type: "failure"; failure: FailureReport }
  | { type: "recovering"; epoch: number; phase: "stop" | "replace" | "retrieve" | "load" | "synchronize" };

/** How long closing the cluster waits for its Workers' threads to end. */
const WORKER_TEARDOWN_MS = 500;

/** Thrown into the work in progress when a machine is declared failed. */
class FailureAlarm extends Error {
  override name = "FailureAlarm";
}

/** What a recovery restores, decided from what every machine's memory and the persistent store hold. */
export interface RecoveryPlan {
  iteration: number;
  /** Per machine, the sources to try in order. */
  sources: RestoreSource[][];
}

/**
 * The newest iteration, up to `reached`, of which every shard has a copy somewhere (memory, or the
 * persistent store; iteration 0, the initial state, always has one), and where each machine can get its
 * shard of it. `reached` is the last iteration the root saw complete: every machine may have checkpointed
 * the one after it before a failure cut its all-gather short, but its loss was never reported, so the run
 * goes back to where the record is whole.
 */
export function planRecovery(
  machines: number,
  memories: StoredEntry[][],
  persistent: StoredEntry[],
  reached = Infinity,
): RecoveryPlan {
  const inMemory = (owner: number, iteration: number) =>
    memories.flatMap((entries, holder) =>
      entries.some((entry) => entry.owner === owner && entry.iteration === iteration) ? [holder] : []
    );
  const persisted = (owner: number, iteration: number) =>
    persistent.some((entry) => entry.owner === owner && entry.iteration === iteration);
  const iterations = [...new Set([...memories.flat(), ...persistent].map((entry) => entry.iteration))]
    .filter((iteration) => iteration <= reached)
    .sort((a, b) => b - a);
  const ranks = Array.from({ length: machines }, (_, rank) => rank);
  const iteration =
    iterations.find((candidate) =>
      ranks.every((owner) => inMemory(owner, candidate).length || persisted(owner, candidate))
    ) ?? 0;
  const sources = ranks.map((owner): RestoreSource[] => {
    const holders = inMemory(owner, iteration);
    return [
      ...(holders.includes(owner) ? [{ from: "local" as const }] : []),
      ...holders.filter((holder) => holder !== owner).map((peer) => ({ from: "peer" as const, peer })),
      ...(persisted(owner, iteration) ? [{ from: "persistent" as const }] : []),
      ...(iteration === 0 ? [{ from: "initial" as const }] : []),
    ];
  });
  return { iteration, sources };
}

export class RootAgent {
  readonly cluster: SimulatedCluster;
  /** Where each machine's checkpoint is replicated (the cluster settings' strategy and m). */
  readonly plan: PlacementPlan;
  readonly settings: RootSettings;
  readonly health: HealthStore;
  readonly #persistent: CheckpointStore;
  readonly #machines: (Machine | null)[];
  readonly #leases = new Map<number, { lease: number; incarnation: number }>();
  readonly #pending = new Map<number, FailureReport>();
  readonly #launching = new Map<number, Promise<Machine>>();
  readonly #listeners = new Set<(event: RootEvent) => void>();
  readonly #heartbeatListeners = new Set<(rank: number) => void>();
  readonly #unwatch: () => void;
  #alarm: { promise: Promise<never>; reject: (error: Error) => void } | null = null;
  #iteration = 0;
  /** A checkpoint every this many iterations, replicated by this policy (see `setCheckpointing`). */
  #checkpointing: { every: number; policy: ReplicationPolicy };
  /** The checkpoints of iterations that are multiples of this are replicated (see interleaving.ts). */
  #replicateEvery: number | null = null;
  /** The newest iteration every machine has replicated: every machine keeps it (see the worker's `#keep`). */
  #keep = 0;
  #epoch = 0;
  #closed = false;

  /** Starts every machine of `cluster` and registers it. */
  static async start(cluster: SimulatedCluster, settings: RootSettings): Promise<RootAgent> {
    const root = new RootAgent(cluster, settings, await openPersistentStore(cluster.settings.persistent));
    try {
      await Promise.all(root.#machines.map((_, rank) => root.#launch(rank)));
    } catch (error) {
      await root.close();
      throw error;
    }
    return root;
  }

  private constructor(cluster: SimulatedCluster, settings: RootSettings, persistent: CheckpointStore) {
    if (!(settings.heartbeatTimeoutMs > cluster.settings.heartbeatMs)) {
      throw new Error(
        `the heartbeat timeout (${settings.heartbeatTimeoutMs} ms) must exceed the interval ` +
          `(${cluster.settings.heartbeatMs} ms)`,
      );
    }
    this.cluster = cluster;
    this.settings = settings;
    const { placement, machines, replicas } = cluster.settings;
    this.plan = placementPlan(placement, machines, replicas);
    this.health = settings.health ?? new InMemoryHealthStore();
    this.#persistent = persistent;
    const { every, replication } = cluster.settings.checkpoint;
    this.#checkpointing = { every, policy: replication.policy };
    this.#machines = new Array(cluster.settings.machines).fill(null);
    this.#unwatch = this.health.watch("machines/", (event) => {
      if (event.type === "delete") this.#declareFailed(Number(event.key.slice("machines/".length)));
    });
  }

  /**
   * Changes, from the next iteration on, how often the machines checkpoint and how they replicate: the
   * bench compares policies within one run this way, and the lab lets a user switch them live.
   */
  setCheckpointing(change: { every?: number; policy?: ReplicationPolicy }) {
    const every = change.every ?? this.#checkpointing.every, policy = change.policy ?? this.#checkpointing.policy;
    if (!Number.isInteger(every) || every < 1) {
      throw new Error(`checkpoint every must be a positive integer, got ${every}`);
    }
    this.#checkpointing = { every, policy: validatePolicy(policy) };
  }

  /** Iterations completed (after a recovery: the iteration rolled back to). */
  get iteration(): number {
    return this.#iteration;
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** The running machine of each rank (null while it is down). */
  get machines(): readonly (Machine | null)[] {
    return this.#machines;
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
  async advance(): Promise<IterationReport | RecoveryReport> {
    if (this.#closed) throw new Error("the root agent has been closed");
    if (!this.#pending.size) {
      try {
        return this.#emit(await this.#guard(this.#step()));
      } catch (error) {
        if (!(error instanceof FailureAlarm)) throw error;
      }
    }
    return this.#emit(await this.#recover());
  }

  /** Advances until `iteration` is completed, returning every report on the way. */
  async runUntil(iteration: number): Promise<(IterationReport | RecoveryReport)[]> {
    const reports: (IterationReport | RecoveryReport)[] = [];
    while (this.#iteration < iteration) reports.push(await this.advance());
    return reports;
  }

  /**
   * Injects a failure of `kind` into `ranks`: at once; after `afterMs` milliseconds, wherever they are
   * then; or when each reaches `point` (an iteration's step, checkpoint write or replication, or its
   * next recovery).
   */
  async injectFailure(ranks: number[], kind: FailureKind, when?: FaultPoint | { afterMs: number }) {
    const machines = ranks.map((rank) => {
      const machine = this.#machines[rank];
      if (!machine) throw new Error(`machine ${rank} is already down`);
      return machine;
    });
    if (!when) return this.cluster.fail(ranks, kind);
    if ("afterMs" in when) {
      setTimeout(() => this.cluster.fail(ranks.filter((rank) => this.#machines[rank]), kind), when.afterMs);
      return;
    }
    for (const machine of machines) await this.cluster.arm(machine, kind, when);
  }

  /** Every machine's state: the parameters (machine 0's; all hold the same) and m and v from each shard. */
  async state(): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array }> {
    const states = await Promise.all(this.#running().map((machine) => machine.api.state()));
    const concat = (parts: Float32Array[]) => {
      const whole = new Float32Array(parts.reduce((sum, part) => sum + part.length, 0));
      parts.reduce((at, part) => (whole.set(part, at), at + part.length), 0);
      return whole;
    };
    return { params: states[0].params, m: concat(states.map((s) => s.m)), v: concat(states.map((s) => s.v)) };
  }

  /**
   * Stops the cluster: each running machine first releases its GPU device in its own thread (a Worker
   * terminated while it holds one can bring the process down as it exits), then every Worker ends.
   */
  async close() {
    this.#closed = true;
    this.#unwatch();
    if (this.health instanceof InMemoryHealthStore) this.health.close();
    const released = this.#machines.map((machine) => machine?.api.shutdown());
    await Promise.race([Promise.allSettled(released), new Promise((resolve) => setTimeout(resolve, 2000))]);
    this.cluster.shutdown();
    // Workers end some time after terminate(). wgpu's GL backend crashed here when one Worker's GL teardown
    // overlapped another's setup (EGL BadDisplay), so whatever uses the GPU next waits for it.
    await new Promise((resolve) => setTimeout(resolve, WORKER_TEARDOWN_MS));
  }

  // --- training -------------------------------------------------------------------------------

  async #step(): Promise<IterationReport> {
    const start = performance.now();
    const { every, policy } = this.#checkpointing;
    const plan = {
      checkpoint: (this.#iteration + 1) % every === 0,
      policy,
      replicateEvery: this.#replicateEvery,
      keep: this.#keep,
    };
    const results = await Promise.all(this.#running().map((machine) => machine.api.step(plan)));
    this.#iteration = results[0].iteration;
    this.#replicateEvery = clusterInterval(results.map((result) => result.neededInterval)) ?? plan.replicateEvery;
    this.#keep = Math.max(this.#keep, Math.min(...results.map((result) => result.replicatedIteration)));
    const loss = results.reduce((sum, result) => sum + result.loss, 0) / results.length;
    return {
      type: "iteration",
      iteration: this.#iteration,
      loss,
      milliseconds: performance.now() - start,
      plan,
      machines: results,
    };
  }

  #running(): Machine[] {
    const running = this.#machines.filter((machine): machine is Machine => machine !== null);
    if (running.length !== this.#machines.length) throw new FailureAlarm("a machine is down");
    return running;
  }

  // --- membership and failure detection -------------------------------------------------------

  /**
   * Starts machine `rank` and registers it; a launch already under way (one a restarted recovery
   * abandoned) is joined, not repeated.
   */
  #launch(rank: number): Promise<Machine> {
    let launching = this.#launching.get(rank);
    if (!launching) {
      launching = this.#register(rank).finally(() => this.#launching.delete(rank));
      this.#launching.set(rank, launching);
    }
    return launching;
  }

  async #register(rank: number): Promise<Machine> {
    const machine = await this.cluster.launch(
      rank,
      this.#epoch,
      replicaPeers(this.plan, rank),
      (heartbeat) => this.#heartbeat(heartbeat.rank, heartbeat.incarnation),
    );
    const lease = await this.health.grant(this.settings.heartbeatTimeoutMs);
    await this.health.put(`machines/${rank}`, { incarnation: machine.incarnation }, lease);
    this.#leases.set(rank, { lease, incarnation: machine.incarnation });
    this.#machines[rank] = machine;
    return machine;
  }

  #heartbeat(rank: number, incarnation: number) {
    const held = this.#leases.get(rank);
    if (held?.incarnation !== incarnation) return;
    this.health.keepAlive(held.lease);
    for (const listener of this.#heartbeatListeners) listener(rank);
  }

  /** A machine's lease ran out: it is failed. If it is in fact still running (late heartbeats), it is fenced off. */
  #declareFailed(rank: number) {
    const machine = this.#machines[rank];
    if (!machine || this.#closed) return;
    this.#machines[rank] = null;
    this.#leases.delete(rank);
    const detectedAt = this.cluster.network.now();
    if (this.cluster.isRunning(rank)) this.cluster.fail([rank], "software");
    const seen = this.cluster.lastFailure(rank)!;
    const failure: FailureReport = { rank, kind: seen.kind, where: seen.where, failedAt: seen.at, detectedAt };
    this.#pending.set(rank, failure);
    this.#emit({ type: "failure", failure });
    this.#alarm?.reject(new FailureAlarm(`machine ${rank} failed`));
    this.#alarm = null;
  }

  /** `work`, unless a machine is declared failed first: then a FailureAlarm (and `work` is abandoned). */
  #guard<T>(work: Promise<T>): Promise<T> {
    work.catch(() => {}); // once abandoned, its failure (an abort) is expected
    if (this.#pending.size) return Promise.reject(new FailureAlarm("a machine is down"));
    if (!this.#alarm) {
      let reject!: (error: Error) => void;
      const promise = new Promise<never>((_, reject_) => reject = reject_);
      promise.catch(() => {});
      this.#alarm = { promise, reject };
    }
    return Promise.race([work, this.#alarm.promise]);
  }

  // --- recovery -------------------------------------------------------------------------------

  async #recover(): Promise<RecoveryReport> {
    const failures: FailureReport[] = [];
    const reached = this.#iteration;
    for (;;) {
      failures.push(...this.#pending.values());
      this.#pending.clear();
      try {
        return await this.#guard(this.#recoverOnce(failures, reached));
      } catch (error) {
        if (!(error instanceof FailureAlarm)) throw error;
      }
    }
  }

  async #recoverOnce(failures: FailureReport[], reached: number): Promise<RecoveryReport> {
    const epoch = ++this.#epoch, clock = () => this.cluster.network.now();
    // An attempt that a newer failure superseded goes no further than its next step.
    const current = <T>(value: T): T => {
      if (this.#epoch !== epoch) throw new FailureAlarm(`recovery ${epoch} was superseded`);
      return value;
    };
    this.#emit({ type: "recovering", epoch, phase: "stop" });
    const survivors = this.#machines.filter((machine): machine is Machine => machine !== null);
    current(await Promise.all(survivors.map((machine) => machine.api.abort(epoch))));
    this.#emit({ type: "recovering", epoch, phase: "replace" });
    const replaceStart = clock();
    const down = this.#machines.flatMap((machine, rank) => machine ? [] : [rank]);
    const launched = current(await Promise.all(down.map((rank) => this.#launch(rank))));
    // A machine whose launch began in an abandoned attempt started in that attempt's epoch.
    current(await Promise.all(launched.map((machine) => machine.api.abort(epoch))));
    const replacement = clock() - replaceStart;

    this.#emit({ type: "recovering", epoch, phase: "retrieve" });
    const machines = this.#running();
    const statuses = current(await Promise.all(machines.map((machine) => machine.api.status())));
    const plan = planRecovery(
      machines.length,
      statuses.map((status) => status.memory),
      current(await this.#persistent.entries()),
      reached,
    );
    const skipped: string[] = [];
    // Every shard is brought into its machine's memory first, and only then loaded onto the GPUs: the
    // fetches do not wait behind the loads (the simulated machines share this computer's cores).
    const fetched = current(await Promise.all(machines.map((machine) => this.#fetch(machine, plan, skipped))));
    this.#emit({ type: "recovering", epoch, phase: "load" });
    const loads = current(
      await Promise.all(
        machines.map((machine, i) => machine.api.load(plan.iteration, fetched[i].source.from === "initial")),
      ),
    );
    const restored = fetched.map((result, i) => ({ ...result, loadMilliseconds: loads[i] }));

    this.#emit({ type: "recovering", epoch, phase: "synchronize" });
    const syncStart = clock();
    current(await Promise.all(machines.map((machine) => machine.api.synchronize())));
    const end = clock();
    this.#iteration = plan.iteration;
    const first = failures.reduce((a, b) => (a.failedAt <= b.failedAt ? a : b));
    return {
      type: "recovery",
      epoch,
      failures,
      iteration: plan.iteration,
      lostIterations: reached - plan.iteration,
      machines: restored,
      detection: first.detectedAt - first.failedAt,
      replacement,
      retrieval: Math.max(...restored.map((result) => result.retrieveMilliseconds)),
      load: Math.max(...restored.map((result) => result.loadMilliseconds)),
      synchronize: end - syncStart,
      total: end - first.failedAt,
      fromPersistent: restored.filter((result) => result.source.from === "persistent").length,
      skipped,
    };
  }

  /** Fetches one machine's shard into its memory from the first of its plan's sources that works. */
  async #fetch(machine: Machine, plan: RecoveryPlan, skipped: string[]): Promise<RestoreResult> {
    for (const source of plan.sources[machine.rank]) {
      try {
        // A fetch from a peer starts when the peer starts sending.
        const began = performance.now();
        if (source.from === "peer") {
          const peer = this.#machines[source.peer];
          if (!peer) throw new FailureAlarm(`machine ${source.peer} is down`);
          await peer.api.serve(machine.rank, plan.iteration, machine.rank);
        }
        const bytes = await machine.api.fetch(plan.iteration, source);
        const retrieveMilliseconds = source.from === "local" ? 0 : performance.now() - began;
        return { source, iteration: plan.iteration, bytes, retrieveMilliseconds, loadMilliseconds: 0 };
      } catch (error) {
        if ((error as Error).name === "AbortedError" || error instanceof FailureAlarm) throw error;
        skipped.push(`machine ${machine.rank} from ${describeSource(source)}: ${(error as Error).message}`);
      }
    }
    throw new Error(
      `machine ${machine.rank} could not restore iteration ${plan.iteration} from any source` +
        (skipped.length ? ` (${skipped.join("; ")})` : ""),
    );
  }

  #emit<T extends RootEvent>(event: T): T {
    for (const listener of this.#listeners) listener(event);
    return event;
  }
}
