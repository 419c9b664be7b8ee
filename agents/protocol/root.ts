// The root agent's protocol as a pure state machine: `transition(state, input)` returns the next state and
// the commands to carry out, with no I/O and no clock (every input carries the time it happened, read by
// the driver). The driver (root-agent.ts) carries out the commands against the machines and feeds back what
// came of them as inputs.
//
//   idle ──advance──▶ stepping ──stepped──▶ idle
//     │                  │
//     │ advance, with    │ a machine detected failed
//     │ failures pending ▼
//     └────────────▶ recovering(epoch e): stop ▶ replace ▶ retrieve ▶ load ▶ synchronize ──▶ idle
//                        │
//                        └─ a machine detected failed: recovering(epoch e + 1), from stop again
//
//   stepping or recovering ──a command failed──▶ idle; the advance is rejected, and the next one recovers
//   recovering(epoch e), a failed rank's start failed ──▶ recovering(epoch e + 1), starting it again
//
// Every command carries the epoch it was issued in, and every result the epoch of its command: a result
// from an epoch a newer failure superseded is dropped here, so cancelling a recovery (or a step) is a
// transition, not something each await has to check.

import type { StoredEntry } from "../../core/store.ts";
import type { ReplicationPolicy } from "../replication/interleaving.ts";
import { clusterInterval } from "../replication/interleaving.ts";
import type { IterationPlan, RestoreResult, RestoreSource, StepResult } from "./spec.ts";

export type RecoveryPhase = "stop" | "replace" | "retrieve" | "load" | "synchronize";

/** A machine the root declared failed: its lease ran out at `detectedAt` (on the root's clock). */
export interface Detection {
  rank: number;
  /** Which start of the rank failed (a replacement may fail too). */
  incarnation: number;
  detectedAt: number;
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

/** A recovery as the root saw it, from the first detection to training resumed. */
export interface RecoveryReport {
  type: "recovery";
  epoch: number;
  /** The failures it recovered from, in the order detected (a failure during a recovery restarts it). */
  detections: Detection[];
  /** The iteration every machine rolled back to, and how many iterations were lost. */
  iteration: number;
  lostIterations: number;
  /** Where each machine's shard came from, and how long it took to fetch and to load. */
  machines: RestoreResult[];
  /** Milliseconds of each phase of the last attempt: restarting machines, fetching the shards (the slowest
   * machine), loading them onto the GPUs, all-gathering the parameters. */
  replacement: number;
  retrieval: number;
  load: number;
  synchronize: number;
  /** When training resumed, on the root's clock. */
  resumedAt: number;
  /** Shards restored from persistent storage. */
  fromPersistent: number;
  /** Sources that were tried and failed (a corrupt copy, say), with the reason. */
  skipped: string[];
  /** Starts of failed ranks that failed themselves, each followed by a new attempt. */
  failedStarts: FailedStart[];
  /** The iterations it could have rolled back to, their estimated costs, and why it chose `iteration`. */
  choice: RollbackChoice;
}

/** A failed rank's start that failed too: its machine left while it was being launched, say. */
export interface FailedStart {
  rank: number;
  error: string;
  /** When the root heard of it, on its clock. */
  at: number;
}

export type RootEvent =
  | IterationReport
  | RecoveryReport
  | { type: "failure"; detection: Detection }
  | { type: "recovering"; epoch: number; phase: RecoveryPhase };

/** What a recovery restores, decided from what every machine's memory and the persistent store hold. */
export interface RecoveryPlan {
  iteration: number;
  /** Per machine, the sources to try in order. */
  sources: RestoreSource[][];
  /** Every iteration it could have rolled back to, with its estimated cost, and why it chose this one. */
  choice: RollbackChoice;
}

/** What the root knows of the cluster's speeds, to estimate what a rollback costs. */
export interface CostEstimates {
  /** Bytes/s of a machine's link: a peer sends the shards it serves one after another. */
  networkBytesPerSecond: number;
  /** Bytes/s a machine reads from the persistent store (unknown: null). */
  persistentBytesPerSecond: number | null;
  /** The recent iterations' median time (none yet: null). */
  iterationMs: number | null;
}

export interface RollbackCandidate {
  iteration: number;
  /** Until every shard is in its machine's memory: the slowest peer's link or persistent read. */
  retrievalMs: number;
  /** Redoing the iterations from it up to the last one the root saw complete. */
  recomputeMs: number;
}

export interface RollbackChoice {
  candidates: RollbackCandidate[];
  reason: string;
  /**
   * The newest iteration of which every shard has a copy in the surviving machines' memory (none: null):
   * whether memory alone could serve the recovery, the event GEMINI's recovery probability is about.
   */
  newestInMemory: number | null;
}

/**
 * The iteration to roll back to, up to `reached`, and where each machine can get its shard of it. Every
 * iteration of which every shard has a copy somewhere (memory, or the persistent store; iteration 0, the
 * initial state, always has one) is a candidate. GEMINI takes the newest; this takes the one that resumes
 * training soonest, estimated as retrieval plus recomputing the iterations lost: an older checkpoint that
 * every shard has in memory beats a newer one that must come from a slow store when the iterations it loses
 * take less time to redo than the store takes to read. Without the speeds to estimate with, the newest.
 *
 * `reached` is the last iteration the root saw complete: every machine may have checkpointed the one after it
 * before a failure cut its all-gather short, but its loss was never reported, so the run goes back to where
 * the record is whole.
 */
export function planRecovery(
  machines: number,
  memories: StoredEntry[][],
  persistent: StoredEntry[],
  reached = Infinity,
  estimates?: CostEstimates,
): RecoveryPlan {
  const ranks = Array.from({ length: machines }, (_, rank) => rank);
  const inMemory = (owner: number, iteration: number) =>
    memories.flatMap((entries, holder) =>
      entries.some((entry) => entry.owner === owner && entry.iteration === iteration) ? [holder] : []
    );
  const persisted = (owner: number, iteration: number) =>
    persistent.find((entry) => entry.owner === owner && entry.iteration === iteration);
  const sourcesOf = (iteration: number) =>
    ranks.map((owner): RestoreSource[] => {
      const holders = inMemory(owner, iteration);
      return [
        ...(holders.includes(owner) ? [{ from: "local" as const }] : []),
        ...holders.filter((holder) => holder !== owner).map((peer) => ({ from: "peer" as const, peer })),
        ...(persisted(owner, iteration) ? [{ from: "persistent" as const }] : []),
        ...(iteration === 0 ? [{ from: "initial" as const }] : []),
      ];
    });
  const complete = [...new Set([...memories.flat(), ...persistent].map((entry) => entry.iteration))]
    .filter((iteration) => iteration <= reached && ranks.every((owner) => sourcesOf(iteration)[owner].length))
    .concat(0)
    .sort((a, b) => b - a)
    .filter((iteration, i, all) => all.indexOf(iteration) === i);
  const newest = complete[0];
  const newestInMemory = complete.find((iteration) => ranks.every((owner) => inMemory(owner, iteration).length)) ??
    null;
  const bytesOf = (owner: number, iteration: number) =>
    [...memories.flat(), ...persistent].find((entry) => entry.owner === owner && entry.iteration === iteration)
      ?.bytes ?? 0;
  // With no iteration seen complete, what an older candidate loses counts from the newest.
  const upTo = Number.isFinite(reached) ? reached : newest;
  const candidates = estimates?.persistentBytesPerSecond && estimates.iterationMs !== null
    ? complete.map((iteration) => cost(iteration, sourcesOf(iteration), bytesOf, upTo, estimates))
    : [];
  if (!candidates.length) {
    const reason = `the newest iteration every shard has (${newest}): no speeds to estimate a rollback's cost with`;
    return { iteration: newest, sources: sourcesOf(newest), choice: { candidates, reason, newestInMemory } };
  }
  const total = (c: RollbackCandidate) => c.retrievalMs + c.recomputeMs;
  const best = candidates.reduce((a, b) => total(b) < total(a) ? b : a); // ties: the newer, listed first
  const ms = (value: number) => `${value.toFixed(0)} ms`;
  const describe = (c: RollbackCandidate) =>
    `iteration ${c.iteration}: ${ms(c.retrievalMs)} to retrieve + ${ms(c.recomputeMs)} to redo`;
  const reason = best.iteration === newest
    ? `the newest iteration every shard has (${describe(best)}) resumes soonest`
    : `${describe(best)} resumes sooner than the newest, ${describe(candidates[0])}`;
  return {
    iteration: best.iteration,
    sources: sourcesOf(best.iteration),
    choice: { candidates, reason, newestInMemory },
  };
}

/** The estimated cost of rolling back to `iteration`, each machine taking its shard from its first source. */
function cost(
  iteration: number,
  sources: RestoreSource[][],
  bytesOf: (owner: number, iteration: number) => number,
  reached: number,
  estimates: CostEstimates,
): RollbackCandidate {
  const served = new Map<number, number>();
  let persistentMs = 0;
  sources.forEach(([source], owner) => {
    const bytes = bytesOf(owner, iteration);
    if (source.from === "peer") served.set(source.peer, (served.get(source.peer) ?? 0) + bytes);
    if (source.from === "persistent") {
      persistentMs = Math.max(persistentMs, (bytes / estimates.persistentBytesPerSecond!) * 1000);
    }
  });
  const peerMs = Math.max(0, ...[...served.values()].map((bytes) => (bytes / estimates.networkBytesPerSecond) * 1000));
  const lost = reached - iteration;
  return { iteration, retrievalMs: Math.max(peerMs, persistentMs), recomputeMs: lost * estimates.iterationMs! };
}

/** Where a recovery attempt is, and what it has learnt so far. */
export interface Recovery {
  phase: RecoveryPhase;
  /** The last iteration the root saw complete before the first failure. */
  reached: number;
  /** When the current phase began. */
  phaseStartedAt: number;
  replacement: number;
  plan: RecoveryPlan | null;
  /** What every memory and the persistent store were found to hold, less the copies found unusable since. */
  survey: { memories: StoredEntry[][]; persistent: StoredEntry[] } | null;
  /** Sources passed over so far (a corrupt copy, say), with the reason. */
  skipped: string[];
  fetched: { results: RestoreResult[]; skipped: string[] } | null;
  loads: number[] | null;
  /** Starts that failed in this recovery's attempts so far (a new attempt keeps them). */
  failedStarts: FailedStart[];
}

/** A copy of a shard that a recovery could not use: where it was (a machine's memory, or the persistent store). */
export interface UnusableCopy {
  owner: number;
  iteration: number;
  holder: number | "persistent";
}

export interface RootState {
  mode: "idle" | "stepping" | "recovering" | "closed";
  machines: number;
  /** Bumped by every recovery attempt: results of an older epoch are stale. */
  epoch: number;
  /** Iterations completed (after a recovery: the iteration rolled back to). */
  iteration: number;
  /** Ranks declared failed and not yet restarted. */
  down: number[];
  /** Failures not yet recovered from, in the order detected. */
  detections: Detection[];
  /** A command failed: the next advance rolls every machine back, whether or not a machine failed. */
  rollBack: boolean;
  checkpointing: { every: number; policy: ReplicationPolicy };
  /** The checkpoints of iterations that are multiples of this are replicated (see interleaving.ts). */
  replicateEvery: number | null;
  /** The newest iteration every machine has replicated: every machine keeps it. */
  keep: number;
  /** The step under way: what it was asked and when it began. */
  step: { plan: IterationPlan; startedAt: number } | null;
  /** The cluster's link and persistent store speeds, and the last few iterations' times: a rollback's costs. */
  speeds: Omit<CostEstimates, "iterationMs">;
  recentIterationMs: number[];
  recovery: Recovery | null;
}

export type RootInput =
  /** The driver asks for the next iteration, or the recovery that failures call for. */
  | { type: "advance"; at: number }
  /** A machine's lease ran out. */
  | { type: "detected"; rank: number; incarnation: number; at: number }
  | { type: "configure"; every: number; policy: ReplicationPolicy }
  | { type: "stepped"; epoch: number; results: StepResult[]; at: number }
  /** The surviving machines have stopped and moved to the epoch. */
  | { type: "stopped"; epoch: number; at: number }
  /** The failed machines run again (restarted or replaced), in the epoch. */
  | { type: "replaced"; epoch: number; at: number }
  /** Machine `rank`'s start, in the epoch, failed (its machine left while it was being launched, say). */
  | { type: "startFailed"; epoch: number; rank: number; error: string; at: number }
  /** What every machine's memory and the persistent store hold. */
  | { type: "surveyed"; epoch: number; memories: StoredEntry[][]; persistent: StoredEntry[]; at: number }
  | { type: "fetched"; epoch: number; results: RestoreResult[]; skipped: string[]; at: number }
  /** Some machine's every source failed (corrupt copies): the plan is made again without them. */
  | { type: "unusable"; epoch: number; copies: UnusableCopy[]; skipped: string[]; at: number }
  | { type: "loaded"; epoch: number; milliseconds: number[]; at: number }
  | { type: "synchronized"; epoch: number; at: number }
  /** A command of `epoch` failed for a reason other than a machine failing. */
  | { type: "failed"; epoch: number; error: string }
  | { type: "close" };

export type RootCommand =
  | { do: "step"; epoch: number; plan: IterationPlan }
  /** Stop machine `rank`, declared failed, should it still be running (a slow machine wrongly suspected). */
  | { do: "fence"; rank: number }
  | { do: "stop"; epoch: number; ranks: number[] }
  | { do: "replace"; epoch: number; ranks: number[] }
  | { do: "survey"; epoch: number }
  | { do: "fetch"; epoch: number; plan: RecoveryPlan }
  /** Load each machine's shard of `iteration` from its memory (or the initial state, where `initial`). */
  | { do: "load"; epoch: number; iteration: number; initial: boolean[] }
  | { do: "synchronize"; epoch: number }
  | { do: "emit"; event: RootEvent }
  /** The advance under way is over: with its report, or its error. */
  | { do: "settle"; report: IterationReport | RecoveryReport }
  | { do: "reject"; error: string };

export interface Transition {
  state: RootState;
  commands: RootCommand[];
}

export function initialRootState(
  machines: number,
  checkpointing: { every: number; policy: ReplicationPolicy },
  speeds: Omit<CostEstimates, "iterationMs"> = { networkBytesPerSecond: Infinity, persistentBytesPerSecond: null },
): RootState {
  return {
    mode: "idle",
    machines,
    epoch: 0,
    iteration: 0,
    down: [],
    detections: [],
    rollBack: false,
    checkpointing,
    replicateEvery: null,
    keep: 0,
    step: null,
    recovery: null,
    speeds,
    recentIterationMs: [],
  };
}

/** What a root keeps in the health store for the one that may take over from it. */
export interface SavedRootState {
  epoch: number;
  iteration: number;
}

/**
 * The state of a root taking over from a lost one that saved `saved`: its machines may be anywhere in an
 * iteration or a recovery, so its first advance rolls every machine back to the newest checkpoint complete
 * for every shard, in an epoch past any the lost root may have begun without saving it.
 */
export function resumedRootState(initial: RootState, saved: SavedRootState): RootState {
  return { ...initial, epoch: saved.epoch + 1, iteration: saved.iteration, rollBack: true };
}

/** What to save for a successor, if `next` changed it (null: nothing changed). */
export function changedSavedState(previous: RootState, next: RootState): SavedRootState | null {
  return previous.epoch === next.epoch && previous.iteration === next.iteration
    ? null
    : { epoch: next.epoch, iteration: next.iteration };
}

/** Iterations whose times estimate the next one's. */
const RECENT_ITERATIONS = 5;

/**
 * A rank whose start fails this many times in one advance ends it: a fault that is not the machines' (a
 * bug, a bad setting) would otherwise restart the recovery for ever.
 */
const MAX_FAILED_STARTS = 3;

/** The ranks not down. */
const survivors = (state: RootState) =>
  Array.from({ length: state.machines }, (_, rank) => rank).filter((rank) => !state.down.includes(rank));

/** The root's one transition. */
export function transition(state: RootState, input: RootInput): Transition {
  if (state.mode === "closed") return { state, commands: [] };
  switch (input.type) {
    case "close":
      return {
        state: { ...state, mode: "closed", step: null, recovery: null },
        commands: state.mode === "idle" ? [] : [{ do: "reject", error: "the root agent has been closed" }],
      };
    case "configure":
      return { state: { ...state, checkpointing: { every: input.every, policy: input.policy } }, commands: [] };
    case "advance":
      if (state.mode !== "idle") {
        return { state, commands: [{ do: "reject", error: `an advance is already under way (${state.mode})` }] };
      }
      return state.detections.length || state.rollBack
        ? beginRecovery(state, input.at, state.iteration)
        : beginStep(state, input.at);
    case "detected":
      return detected(state, input);
    case "failed":
      if (input.epoch !== state.epoch || state.mode === "idle") return { state, commands: [] };
      return abandon(state, input.error);
  }
  if (input.epoch !== state.epoch) return { state, commands: [] }; // superseded by a newer failure
  if (input.type === "stepped") return stepped(state, input);
  return recovering(state, input);
}

/**
 * The advance is abandoned with `error`, and the next one recovers: the failures stay pending, and a step
 * cut short left the machines part-way through an iteration, so they roll back to the last one complete.
 */
function abandon(state: RootState, error: string): Transition {
  return {
    state: { ...state, mode: "idle", step: null, recovery: null, rollBack: true },
    commands: [{ do: "reject", error }],
  };
}

function beginStep(state: RootState, at: number): Transition {
  const { every, policy } = state.checkpointing;
  const plan: IterationPlan = {
    checkpoint: (state.iteration + 1) % every === 0,
    policy,
    replicateEvery: state.replicateEvery,
    keep: state.keep,
  };
  return {
    state: { ...state, mode: "stepping", step: { plan, startedAt: at } },
    commands: [{ do: "step", epoch: state.epoch, plan }],
  };
}

function stepped(state: RootState, input: Extract<RootInput, { type: "stepped" }>): Transition {
  if (state.mode !== "stepping" || !state.step) return { state, commands: [] };
  const { results } = input, plan = state.step.plan;
  const report: IterationReport = {
    type: "iteration",
    iteration: results[0].iteration,
    loss: results.reduce((sum, result) => sum + result.loss, 0) / results.length,
    milliseconds: input.at - state.step.startedAt,
    plan,
    machines: results,
  };
  const next: RootState = {
    ...state,
    mode: "idle",
    step: null,
    iteration: report.iteration,
    replicateEvery: clusterInterval(results.map((result) => result.neededInterval)) ?? plan.replicateEvery,
    keep: Math.max(state.keep, Math.min(...results.map((result) => result.replicatedIteration))),
    recentIterationMs: [...state.recentIterationMs, report.milliseconds].slice(-RECENT_ITERATIONS),
  };
  return { state: next, commands: [{ do: "emit", event: report }, { do: "settle", report }] };
}

function detected(state: RootState, input: Extract<RootInput, { type: "detected" }>): Transition {
  const { rank, incarnation } = input;
  if (state.detections.some((d) => d.rank === rank && d.incarnation === incarnation)) return { state, commands: [] };
  const detection = { rank, incarnation, detectedAt: input.at };
  const next: RootState = {
    ...state,
    // A rank restarted in this recovery may fail again before the recovery has seen it run: it is down still.
    down: state.down.includes(rank) ? state.down : [...state.down, rank].sort((a, b) => a - b),
    detections: [...state.detections, detection],
  };
  const commands: RootCommand[] = [{ do: "fence", rank: input.rank }, {
    do: "emit",
    event: { type: "failure", detection },
  }];
  if (state.mode === "idle") return { state: next, commands }; // the next advance recovers
  // A step or a recovery under way is abandoned: a new recovery epoch begins.
  const reached = state.mode === "recovering" ? state.recovery!.reached : state.iteration;
  const begun = beginRecovery({ ...next, step: null }, input.at, reached, state.recovery?.failedStarts);
  return { state: begun.state, commands: [...commands, ...begun.commands] };
}

function beginRecovery(state: RootState, at: number, reached: number, failedStarts: FailedStart[] = []): Transition {
  const epoch = state.epoch + 1;
  const recovery: Recovery = {
    phase: "stop",
    reached,
    phaseStartedAt: at,
    replacement: 0,
    plan: null,
    survey: null,
    skipped: [],
    fetched: null,
    loads: null,
    failedStarts,
  };
  return {
    state: { ...state, mode: "recovering", epoch, recovery },
    commands: [
      { do: "emit", event: { type: "recovering", epoch, phase: "stop" } },
      { do: "stop", epoch, ranks: survivors(state) },
    ],
  };
}

/** The steps of a recovery: each result moves it to its next phase. */
function recovering(state: RootState, input: RootInput & { epoch: number; at: number }): Transition {
  const recovery = state.recovery;
  if (state.mode !== "recovering" || !recovery) return { state, commands: [] };
  const epoch = state.epoch;
  const enter = (phase: RecoveryPhase, change: Partial<Recovery>, command: RootCommand, down = state.down) => ({
    state: { ...state, down, recovery: { ...recovery, ...change, phase, phaseStartedAt: input.at } },
    commands: [{ do: "emit", event: { type: "recovering", epoch, phase } }, command],
  } as Transition);
  switch (input.type) {
    case "stopped":
      if (recovery.phase !== "stop") break;
      return enter("replace", {}, { do: "replace", epoch, ranks: state.down });
    case "replaced":
      if (recovery.phase !== "replace") break;
      return enter("retrieve", { replacement: input.at - recovery.phaseStartedAt }, { do: "survey", epoch }, []);
    case "startFailed": {
      if (recovery.phase !== "replace") break;
      const failedStarts = [...recovery.failedStarts, { rank: input.rank, error: input.error, at: input.at }];
      const tries = failedStarts.filter((failed) => failed.rank === input.rank).length;
      if (tries >= MAX_FAILED_STARTS) {
        return abandon(state, `machine ${input.rank} could not be started (${tries} tries): ${input.error}`);
      }
      // The rank is still down, and a start that failed registered no lease, so no detection would ever
      // restart the recovery: a new attempt starts the rank again (on another machine, if its own has left).
      return beginRecovery(state, input.at, recovery.reached, failedStarts);
    }
    case "surveyed": {
      if (recovery.phase !== "retrieve" || recovery.plan) break;
      return replan(state, recovery, { memories: input.memories, persistent: input.persistent });
    }
    case "unusable": {
      if (recovery.phase !== "retrieve" || !recovery.survey) break;
      // Without the copies that failed: the next plan takes other sources, or an older iteration.
      const unusable = (entry: StoredEntry, holder: number | "persistent") =>
        input.copies.some((c) => c.owner === entry.owner && c.iteration === entry.iteration && c.holder === holder);
      const { memories, persistent } = recovery.survey;
      return replan(state, { ...recovery, skipped: [...recovery.skipped, ...input.skipped] }, {
        memories: memories.map((entries, holder) => entries.filter((entry) => !unusable(entry, holder))),
        persistent: persistent.filter((entry) => !unusable(entry, "persistent")),
      });
    }
    case "fetched": {
      if (recovery.phase !== "retrieve" || !recovery.plan) break;
      const initial = input.results.map((result) => result.source.from === "initial");
      return enter("load", { fetched: { results: input.results, skipped: input.skipped } }, {
        do: "load",
        epoch,
        iteration: recovery.plan.iteration,
        initial,
      });
    }
    case "loaded":
      if (recovery.phase !== "load") break;
      return enter("synchronize", { loads: input.milliseconds }, { do: "synchronize", epoch });
    case "synchronized":
      if (recovery.phase !== "synchronize") break;
      return finishRecovery(state, recovery, input.at);
  }
  return { state, commands: [] }; // a result out of order: ignored
}

/** Plans the recovery from what `survey` says every memory and the persistent store hold, and fetches it. */
function replan(state: RootState, recovery: Recovery, survey: NonNullable<Recovery["survey"]>): Transition {
  // The median: a replacement's first step (its shaders compiling) says little of the next ones.
  const recent = [...state.recentIterationMs].sort((a, b) => a - b);
  const iterationMs = recent.length ? recent[recent.length >> 1] : null;
  const estimates = { ...state.speeds, iterationMs };
  const plan = planRecovery(state.machines, survey.memories, survey.persistent, recovery.reached, estimates);
  return {
    state: { ...state, recovery: { ...recovery, plan, survey } },
    commands: [{ do: "fetch", epoch: state.epoch, plan }],
  };
}

function finishRecovery(state: RootState, recovery: Recovery, at: number): Transition {
  const plan = recovery.plan!, fetched = recovery.fetched!, loads = recovery.loads!;
  const machines = fetched.results.map((result, i) => ({ ...result, loadMilliseconds: loads[i] }));
  const report: RecoveryReport = {
    type: "recovery",
    epoch: state.epoch,
    detections: state.detections,
    iteration: plan.iteration,
    lostIterations: recovery.reached - plan.iteration,
    machines,
    replacement: recovery.replacement,
    retrieval: Math.max(...machines.map((result) => result.retrieveMilliseconds)),
    load: Math.max(...loads),
    synchronize: at - recovery.phaseStartedAt,
    resumedAt: at,
    fromPersistent: machines.filter((result) => result.source.from === "persistent").length,
    skipped: [...recovery.skipped, ...fetched.skipped],
    failedStarts: recovery.failedStarts,
    choice: plan.choice,
  };
  const next: RootState = {
    ...state,
    mode: "idle",
    iteration: plan.iteration,
    detections: [],
    rollBack: false,
    recovery: null,
    // A rollback behind the kept iteration keeps where it went back to instead (a later one is no use now).
    keep: Math.min(state.keep, plan.iteration),
  };
  return { state: next, commands: [{ do: "emit", event: report }, { do: "settle", report }] };
}
