// Chaos: a seeded soak of failures against the real agents, in one thread on a virtual clock
// (`InProcessCluster`). One seed draws every fault (which machines, what kind, at which point of an
// iteration or of a recovery), and the clock and the network run the same way every time, so a seed is a
// reproducible run: every event goes into a history whose hash the same seed always gives again. After
// the run, a checker holds its invariants against the same cluster trained without failures:
// - every loss reported, iterations computed again after a rollback included, equals the failure-free one;
// - the final parameters and AdamW moments equal the failure-free run's, bit for bit;
// - no recovery rolls back past the last persistent checkpoint it could have used (one interval more for each
//   persistent write made to fail or torn), nor forward past the last iteration the root saw complete;
// - every machine's host memory holds only what its placement puts there, within its slots, after every event;
// - the share of uniformly drawn pairs of hardware failures that memory alone could recover from agrees with
//   the placement's exact probability, within its 99% interval.
// `drive` and `checkRun` serve the live Worker cluster too (live-chaos.ts).

import { Rng } from "../../core/random.ts";
import type { RootEvent } from "../protocol/root.ts";
import {
  type ClusterSettings,
  defaultClusterSettings,
  describeSource,
  type FaultPoint,
  largestCheckpointBytes,
} from "../protocol/spec.ts";
import {
  placementGroup,
  type PlacementPlan,
  placementPlan,
  type PlacementStrategy,
  recoveryProbability,
} from "../replication/placement.ts";
import { RootAgent } from "../root-agent.ts";
import { type Clock, VirtualClock } from "../protocol/clock.ts";
import type { FailureKind } from "./cluster.ts";
import type { MemoryStats } from "./host-faults.ts";
import { type EngineFactory, InProcessCluster } from "./in-process.ts";

export interface ChaosOptions {
  seed: number;
  machines: number;
  /** Failures to inject (a group or a pair counts each machine). */
  failures: number;
  placement: PlacementStrategy;
  replicas: number;
}

/**
 * A fault as the seed draws it: machines, kind, and where it strikes. Besides failures:
 * - "slow": a machine whose heartbeats stop reaching the root for a while though it works on (the root
 *   suspects it wrongly and must fence it);
 * - "corrupt": a replica corrupted in a machine's memory just before its owner's hardware fails (the recovery
 *   must pass it over and fall back to another copy);
 * - "persist-fail": a machine's next write to the persistent store fails (its older persisted copy stays);
 * - "persist-torn": a machine's newest persisted copy torn, just before its whole placement group is lost (the
 *   recovery must detect it and fall back to an older checkpoint complete for every shard);
 * - "root": the root agent's process lost, between iterations or once a step has begun: a new root takes
 *   over from what the health store kept (which stands for etcd here: it outlives the root).
 */
export interface Fault {
  /** Injected before this iteration begins. */
  iteration: number;
  ranks: number[];
  kind: FailureKind | "slow" | "corrupt" | "persist-fail" | "persist-torn" | "root";
  /** Where in the iteration (or the next recovery) it strikes; at once when absent. */
  point?: FaultPoint;
  /** Two machines drawn uniformly (not a placement group): the recovery probability's own experiment. */
  uniformPair?: boolean;
}

export interface ChaosReport {
  options: ChaosOptions;
  iterations: number;
  /** Every event, one line each, with its virtual time: what the hash is of. */
  history: string[];
  hash: string;
  /** Faults injected, by kind: machines failed or fenced (a torn copy's whole group), writes made to fail. */
  injected: Record<string, number>;
  /** Shards restored, by source. */
  restored: Record<string, number>;
  recoveries: number;
  lostIterations: number;
  /** Sources a recovery tried and passed over (a corrupt copy), falling back to the next. */
  passedOver: number;
  /** Virtual time the run took (ms), and the mean from a failure's detection to training resumed. */
  virtualMs: number;
  meanRecoveryMs: number;
  /**
   * Two machines' hardware lost at once (drawn uniformly): how many, how many memory alone could recover, the
   * placement's exact probability of that, and the 99% confidence interval of the share observed.
   */
  pairs: { failures: number; fromMemory: number; exact: number; interval: [number, number] };
  /** The invariants that broke, each with the first event where it did (none: the run passed). */
  violations: string[];
}

/** The model the soak trains: small, so that a thousand failures take minutes. */
export function chaosSettings(options: ChaosOptions): ClusterSettings {
  const settings = defaultClusterSettings({ kind: "memory", bandwidth: 20e6 });
  Object.assign(settings, {
    machines: options.machines,
    replicas: options.replicas,
    placement: options.placement,
  });
  settings.training = {
    ...settings.training,
    config: { vocab_size: 32, n_ctx: 16, n_embd: 16, n_head: 2, n_layer: 1 },
    batchPerMachine: 1,
    time: 8,
    corpus: { tokens: 4096, seed: options.seed },
  };
  settings.network = { bandwidth: 10e6, latencyMs: 0.05 };
  settings.checkpoint.chunkBytes = 4096; // a shard is a few chunks, so a failure can strike mid-replica
  return settings;
}

const POINTS = ["step", "checkpoint", "replication"] as const;

/** The lease the soak's root gives a machine, and how long a slow machine's heartbeats are lost: past it. */
const LEASE_MS = 200, SLOW_MS = 2 * LEASE_MS;

/** `count` failures from `seed`: single machines, pairs, whole groups, at points of iterations and of recoveries. */
export function drawFaults(options: ChaosOptions, plan: PlacementPlan): Fault[] {
  const rng = new Rng(options.seed), faults: Fault[] = [];
  let iteration = 2, injected = 0;
  while (injected < options.failures) {
    iteration += 1 + rng.below(3);
    const first = rng.below(options.machines), draw = rng.uniform();
    const uniformPair = draw >= 0.1 && draw < 0.25 && options.machines > 1;
    const ranks = draw < 0.1
      ? placementGroup(plan, first)
      : uniformPair
      ? [first, (first + 1 + rng.below(options.machines - 1)) % options.machines]
      : [first];
    const odd = rng.uniform();
    if (odd < 0.16) {
      const kind = (["slow", "corrupt", "persist-fail", "persist-torn"] as const)[Math.floor(odd / 0.04)];
      faults.push({ iteration, ranks: [first], kind });
      // A slow machine is fenced; a corrupt replica's owner fails; a torn copy's whole group is lost.
      injected += kind === "persist-torn" ? placementGroup(plan, first).length : kind === "persist-fail" ? 0 : 1;
      continue;
    }
    if (odd < 0.18) {
      // The root's loss fails no machine: it counts as none.
      faults.push({
        iteration,
        ranks: [],
        kind: "root",
        ...(rng.uniform() < 0.5 ? { point: { phase: "step", iteration } } : {}),
      });
      continue;
    }
    const kind: FailureKind = rng.uniform() < 0.5 ? "software" : "hardware";
    const where = rng.below(POINTS.length + 1);
    const point = where < POINTS.length ? { phase: POINTS[where], iteration } : undefined;
    faults.push({ iteration, ranks, kind, point, ...(uniformPair ? { uniformPair } : {}) });
    // A failure in the recovery this one starts, now and then: a second failure cancelling the first attempt.
    if (rng.uniform() < 0.1) {
      const other = (first + 1 + rng.below(Math.max(1, options.machines - 1))) % options.machines;
      if (!ranks.includes(other)) faults.push({ iteration, ranks: [other], kind, point: { phase: "recovery" } });
    }
    injected += faults.filter((f) => f.iteration === iteration).reduce((n, f) => n + f.ranks.length, 0);
  }
  return faults;
}

/** A run on an in-process cluster: what it reported, and how it ended. */
export interface InProcessRun {
  losses: Map<number, number>;
  history: string[];
  /** The final state; null if the run could not go on (an advance failed: `stopped` says why). */
  state: { params: Float32Array; m: Float32Array; v: Float32Array } | null;
  stopped: string | null;
  virtualMs: number;
  events: RootEvent[];
  injected: Record<string, number>;
  /** The first time a machine's host memory held more than its budget or what it should not hold; null if never. */
  memoryViolation: string | null;
  /**
   * Failures of two machines' hardware at once, each with whether memory alone could serve the recovery that
   * followed (it may still read the store: when that resumes sooner).
   */
  pairs: { ranks: number[]; fromMemory: boolean }[];
  /** The iterations at which a persistent write was made to fail, or a persisted copy torn. */
  persistFaults: number[];
}

/**
 * What the soak drives: the in-process cluster (every fault), or the Worker cluster of `--live` (whose
 * network, heartbeats and persistent files run on the wall clock: no slow machines or persistent faults).
 */
export interface ChaosCluster {
  readonly clock: Clock;
  isRunning(rank: number): boolean;
  inject(ranks: number[], kind: FailureKind, point?: FaultPoint): Promise<void> | void;
  /** Corrupts the newest replica machine `rank` holds; returns its owner (none held: null). */
  corrupt(rank: number): number | null;
  memoryStats(rank: number): MemoryStats | null;
  slow?(rank: number, ms: number): void;
  failPersist?(rank: number): void;
  tearPersisted?(rank: number): number | null;
}

/**
 * Trains `iterations` iterations on an in-process cluster, injecting `faults` on the way (each before its
 * iteration begins), with every event in the history; `engine` replaces the stand-in.
 */
export async function trainInProcess(
  settings: ClusterSettings,
  iterations: number,
  faults: Fault[],
  engine?: EngineFactory,
): Promise<InProcessRun> {
  const cluster = new InProcessCluster(settings, { engine }), { clock } = cluster;
  const root = await clock.until(
    RootAgent.start(cluster, { heartbeatTimeoutMs: LEASE_MS, persistent: cluster.persistent }),
  );
  try {
    return await drive(root, cluster, iterations, faults);
  } finally {
    await root.close();
  }
}

/** Advances `root` to `iterations`, injecting `faults` into `cluster` on the way, with every event in the history. */
export async function drive(
  first: RootAgent,
  cluster: ChaosCluster,
  iterations: number,
  faults: Fault[],
): Promise<InProcessRun> {
  const { clock } = cluster;
  const settle = <T>(work: Promise<T>) => clock instanceof VirtualClock ? clock.until(work) : work;
  const history: string[] = [], events: RootEvent[] = [], losses = new Map<number, number>();
  const injected: Record<string, number> = {};
  const log = (line: string) => history.push(`${clock.now().toFixed(3)} ${line}`);
  let memoryViolation: string | null = null;
  const pairs: InProcessRun["pairs"] = [];
  let pair: number[] | null = null, root = first;
  const persistFaults: number[] = [];
  const listen = (root: RootAgent) =>
    root.onEvent((event) => {
      events.push(event);
      if (event.type !== "failure" && event.type !== "recovering") {
        memoryViolation ??= checkMemory(cluster, root, event.type);
      }
      if (event.type === "recovery" && pair) {
        const detected = event.detections.map((d) => d.rank).sort((a, b) => a - b);
        if (detected.join() === pair.join()) {
          pairs.push({ ranks: pair, fromMemory: event.choice.newestInMemory !== null });
        }
        pair = null;
      }
      if (event.type === "iteration") {
        losses.set(event.iteration, event.loss);
        log(`iteration ${event.iteration} loss ${event.loss}`);
      } else if (event.type === "failure") {
        log(`detected machine ${event.detection.rank}.${event.detection.incarnation}`);
      } else if (event.type === "recovering") {
        log(`recovery ${event.epoch} ${event.phase}`);
      } else {
        const sources = event.machines.map((m) => describeSource(m.source));
        const passedOver = event.skipped.length ? `; passed over: ${event.skipped.join("; ")}` : "";
        log(`recovered to ${event.iteration} (${event.lostIterations} lost) from ${sources.join(", ")}${passedOver}`);
      }
    });
  let stop = listen(root);
  const ended = (state: InProcessRun["state"], stopped: string | null): InProcessRun => {
    stop();
    return {
      losses,
      history,
      state,
      stopped,
      virtualMs: clock.now(),
      events,
      injected,
      memoryViolation,
      pairs,
      persistFaults,
    };
  };
  let next = 0;
  while (root.iteration < iterations) {
    for (; next < faults.length && faults[next].iteration <= root.iteration + 1; next++) {
      const fault = faults[next], up = fault.ranks.filter((rank) => cluster.isRunning(rank));
      if (fault.kind === "root") {
        injected.root = (injected.root ?? 0) + 1;
        // Once a step has begun, the machines are left part-way through it.
        if (fault.point) root.advance().catch(() => {});
        root.lose();
        stop();
        log(`root lost ${fault.point ? "in a step" : "between iterations"}; a new root takes over`);
        root = await settle(RootAgent.takeOver(root.machines, { ...root.settings, health: root.health }));
        stop = listen(root);
        continue;
      }
      if (!up.length) continue; // an earlier fault took them down already
      const where = fault.point
        ? `${fault.point.phase}${"iteration" in fault.point ? ` ${fault.point.iteration}` : ""}`
        : "at once";
      const label = fault.kind === "software" || fault.kind === "hardware"
        ? `${fault.kind} ${fault.point?.phase ?? "at once"}`
        : fault.kind;
      const { slow, failPersist, tearPersisted } = cluster;
      if (
        (fault.kind === "slow" && !slow) || (fault.kind === "persist-fail" && !failPersist) ||
        (fault.kind === "persist-torn" && !tearPersisted)
      ) {
        log(`skip ${fault.kind} into ${up.join(", ")}: the deterministic mode's only`);
        continue;
      }
      log(`inject ${fault.kind} into ${up.join(", ")} ${where}`);
      if (fault.kind === "persist-fail" || fault.kind === "persist-torn") persistFaults.push(root.iteration);
      injected[label] = (injected[label] ?? 0) +
        (fault.kind === "persist-torn" ? placementGroup(root.plan, up[0]).length : up.length);
      if (fault.kind === "slow") slow!.call(cluster, up[0], SLOW_MS);
      else if (fault.kind === "persist-fail") failPersist!.call(cluster, up[0]);
      else if (fault.kind === "corrupt") {
        // The replica is needed at once: its owner's hardware fails.
        const owner = cluster.corrupt(up[0]);
        if (owner !== null && cluster.isRunning(owner)) await cluster.inject([owner], "hardware");
      } else if (fault.kind === "persist-torn") {
        // The persisted copy is needed at once: every machine that holds the shard in memory is lost.
        const torn = tearPersisted!.call(cluster, up[0]);
        if (torn !== null) log(`tore machine ${up[0]}'s persisted checkpoint ${torn}`);
        await cluster.inject(placementGroup(root.plan, up[0]).filter((rank) => cluster.isRunning(rank)), "hardware");
      } else {
        await cluster.inject(up, fault.kind, fault.point);
        const alone = faults.filter((f) => f.iteration === fault.iteration).length === 1;
        if (fault.kind === "hardware" && fault.uniformPair && up.length === 2 && alone) {
          pair = [...up].sort((a, b) => a - b);
        }
      }
    }
    try {
      await settle(root.advance());
    } catch (error) {
      const stopped = `the advance after iteration ${root.iteration} failed: ${(error as Error).message}`;
      log(stopped);
      return ended(null, stopped);
    }
  }
  return ended(await settle(root.state()), null);
}

/**
 * Whether every machine's host memory holds only what it should, within its budget: its own checkpoints and
 * the replicas of the peers that the placement sends to it, each in no more than its slots (so nothing
 * leaks across recoveries). The first breach, named after the event it followed; null if none.
 */
function checkMemory(cluster: ChaosCluster, root: RootAgent, after: string): string | null {
  const { plan } = root, settings = root.machines.settings;
  const budget = settings.checkpoint.slotsPerOwner * largestCheckpointBytes(settings);
  for (let rank = 0; rank < plan.machines; rank++) {
    const stats = cluster.memoryStats(rank);
    if (!stats) continue;
    const allowed = new Set([rank, ...plan.holders.flatMap((holders, owner) => holders.includes(rank) ? [owner] : [])]);
    const where = `machine ${rank}'s memory, after an ${after} event at ${cluster.clock.now().toFixed(3)} ms`;
    if (stats.allocatedBytes > stats.arenaBytes) {
      return `${where}: ${stats.allocatedBytes} bytes allocated in an arena of ${stats.arenaBytes}`;
    }
    for (const [owner, held] of stats.byOwner) {
      if (!allowed.has(owner)) return `${where}: holds machine ${owner}'s checkpoint, not placed there`;
      if (held.bytes > budget) return `${where}: machine ${owner}'s checkpoints take ${held.bytes} bytes`;
    }
  }
  return null;
}

/** The Wilson score interval at 99% for `successes` of `trials` (all of [0, 1] without trials). */
function wilsonInterval(successes: number, trials: number): [number, number] {
  if (!trials) return [0, 1];
  const z = 2.576, p = successes / trials, z2n = (z * z) / trials;
  const centre = (p + z2n / 2) / (1 + z2n);
  const half = (z / (1 + z2n)) * Math.sqrt((p * (1 - p)) / trials + z2n / (4 * trials));
  return [Math.max(0, centre - half), Math.min(1, centre + half)];
}

async function sha256(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((byte) => byte.toString(16).padStart(2, "0")).join("");
}

/**
 * A soak of `options.failures` failures from `options.seed`, checked against the failure-free run. `planted`
 * replaces the machines' engine in the run with failures (a test plants a bug there: the checks must catch it).
 */
export async function runChaos(options: ChaosOptions, planted?: EngineFactory): Promise<ChaosReport> {
  const settings = chaosSettings(options);
  const faults = drawFaults(options, placementPlan(options.placement, options.machines, options.replicas));
  const iterations = faults.at(-1)!.iteration + 3;
  const run = await trainInProcess(settings, iterations, faults, planted);
  const reference = await trainInProcess(settings, iterations, []);
  return checkRun(options, settings, iterations, run, reference);
}

/** The report on `run`, with every invariant checked against `reference`, the same cluster without failures. */
export async function checkRun(
  options: ChaosOptions,
  settings: ClusterSettings,
  iterations: number,
  run: InProcessRun,
  reference: InProcessRun,
): Promise<ChaosReport> {
  const plan = placementPlan(options.placement, options.machines, options.replicas);
  const violations: string[] = run.stopped ? [run.stopped] : [];
  for (const [iteration, loss] of run.losses) {
    if (!Object.is(loss, reference.losses.get(iteration))) {
      violations.push(
        `iteration ${iteration}'s loss ${loss} is not the failure-free ${reference.losses.get(iteration)}`,
      );
      break;
    }
  }
  for (const name of ["params", "m", "v"] as const) {
    if (!run.state || !reference.state) break;
    const at = run.state[name].findIndex((value, i) => !Object.is(value, reference.state![name][i]));
    if (at >= 0) violations.push(`the final ${name} differ from the failure-free run's (first at float ${at})`);
  }
  const recoveries = run.events.flatMap((event) => event.type === "recovery" ? [event] : []);
  const persistEvery = settings.checkpoint.persistEvery;
  for (const recovery of recoveries) {
    const reached = recovery.iteration + recovery.lostIterations;
    const persisted = persistEvery ? reached - (reached % persistEvery) : 0;
    // The newest persistent checkpoint bounds the loss: a persist may still be in flight (one interval
    // more), and each persistent write made to fail or torn shortly before may cost one more.
    const faulted = run.persistFaults.filter((at) => at <= reached && at > reached - 3 * persistEvery).length;
    const bound = persisted - persistEvery * (1 + faulted);
    if (recovery.iteration < bound) {
      violations.push(`recovery ${recovery.epoch} rolled back to ${recovery.iteration}, before ${bound}`);
    }
  }
  if (run.memoryViolation) violations.push(run.memoryViolation);
  const pairs = {
    failures: run.pairs.length,
    fromMemory: run.pairs.filter((pair) => pair.fromMemory).length,
    exact: options.machines >= 2 ? recoveryProbability(plan, 2) : 1,
    interval: wilsonInterval(run.pairs.filter((pair) => pair.fromMemory).length, run.pairs.length),
  };
  if (pairs.exact < pairs.interval[0] || pairs.exact > pairs.interval[1]) {
    violations.push(
      `${pairs.fromMemory} of ${pairs.failures} pairs of hardware failures recoverable from memory alone: the 99% interval ` +
        `[${pairs.interval.map((x) => x.toFixed(3)).join(", ")}] excludes the placement's exact ${
          pairs.exact.toFixed(3)
        }`,
    );
  }
  const restored: Record<string, number> = {};
  for (const recovery of recoveries) {
    for (const { source } of recovery.machines) restored[source.from] = (restored[source.from] ?? 0) + 1;
  }
  // A recovery a new root began (after the old one's loss) had no failure to detect: it is not timed.
  const recoveryMs = recoveries.filter((r) => r.detections.length).map((r) =>
    r.resumedAt - Math.min(...r.detections.map((d) => d.detectedAt))
  );
  return {
    options,
    iterations,
    history: run.history,
    hash: await sha256(run.history.join("\n")),
    injected: run.injected,
    restored,
    recoveries: recoveries.length,
    lostIterations: recoveries.reduce((sum, r) => sum + r.lostIterations, 0),
    passedOver: recoveries.reduce((sum, r) => sum + r.skipped.length, 0),
    virtualMs: run.virtualMs,
    pairs,
    meanRecoveryMs: recoveryMs.length ? recoveryMs.reduce((a, b) => a + b, 0) / recoveryMs.length : 0,
    violations,
  };
}
