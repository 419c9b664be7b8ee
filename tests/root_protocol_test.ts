// The root agent's protocol as a pure transition: the interesting orders of events, each checked for the
// state it leads to and the commands it issues. No machines, no clock: every input carries its time.

import assert from "node:assert/strict";
import {
  initialRootState,
  planRecovery,
  type RecoveryReport,
  type RootCommand,
  type RootInput,
  type RootState,
  transition,
} from "../agents/protocol/root.ts";
import type { StepResult } from "../agents/protocol/spec.ts";
import type { StoredEntry } from "../core/store.ts";

const MACHINES = 4;

/** Feeds `inputs` in order from `state`; returns the state and every command issued on the way. */
function feed(state: RootState, ...inputs: RootInput[]): { state: RootState; commands: RootCommand[] } {
  const commands: RootCommand[] = [];
  for (const input of inputs) {
    const next = transition(state, input);
    state = next.state;
    commands.push(...next.commands);
  }
  return { state, commands };
}

const start = () => initialRootState(MACHINES, { every: 1, policy: "interleaved" });
const did = (commands: RootCommand[]) => commands.map((command) => command.do);

function stepResults(iteration: number, overrides: Partial<StepResult> = {}): StepResult[] {
  return Array.from({ length: MACHINES }, (_, rank) => ({
    iteration,
    loss: 1 + rank,
    compute: 1,
    reduceScatter: 1,
    update: 1,
    allGather: 1,
    checkpointBlocked: 0,
    replicatedIteration: iteration - 1,
    idleSpans: [],
    neededInterval: null,
    ...overrides,
  }));
}

/** Trains `iterations` iterations without failures. */
function trained(iterations: number): RootState {
  let state = start();
  for (let t = 1; t <= iterations; t++) {
    state = feed(state, { type: "advance", at: t * 10 }, {
      type: "stepped",
      epoch: state.epoch,
      results: stepResults(t),
      at: t * 10 + 5,
    }).state;
  }
  return state;
}

const entry = (owner: number, iteration: number): StoredEntry => ({
  owner,
  iteration,
  bytes: 100,
  savedAt: 0,
  kind: "own",
  replicatedTo: [],
});

/** Every machine's memory holding its own checkpoints of `iterations` (machine `lost` holding none). */
const memories = (iterations: number[], lost: number[] = []) =>
  Array.from({ length: MACHINES }, (_, rank) => lost.includes(rank) ? [] : iterations.map((t) => entry(rank, t)));

const fetchedFrom = (iteration: number) =>
  Array.from({ length: MACHINES }, () => ({
    source: { from: "local" as const },
    iteration,
    bytes: 100,
    retrieveMilliseconds: 0,
    loadMilliseconds: 0,
  }));

/** Drives a recovery of `epoch` from its stop phase to its end, with each result `step` ms after the last. */
function recover(state: RootState, at: number, stored: StoredEntry[][], step = 10) {
  const epoch = state.epoch;
  return feed(
    state,
    { type: "stopped", epoch, at: at + step },
    { type: "replaced", epoch, at: at + 2 * step },
    { type: "surveyed", epoch, memories: stored, persistent: [], at: at + 3 * step },
    { type: "fetched", epoch, results: fetchedFrom(4), skipped: [], at: at + 4 * step },
    { type: "loaded", epoch, milliseconds: [1, 2, 3, 4], at: at + 5 * step },
    { type: "synchronized", epoch, at: at + 6 * step },
  );
}

Deno.test("an iteration: advance issues a step; its results report it and settle the advance", () => {
  let { state, commands } = feed(start(), { type: "advance", at: 100 });
  assert.equal(state.mode, "stepping");
  assert.deepEqual(commands, [{
    do: "step",
    epoch: 0,
    plan: { checkpoint: true, policy: "interleaved", replicateEvery: null, keep: 0 },
  }]);
  ({ state, commands } = feed(state, {
    type: "stepped",
    epoch: 0,
    results: stepResults(1, { neededInterval: 2, replicatedIteration: 1 }),
    at: 130,
  }));
  assert.deepEqual([state.mode, state.iteration, state.replicateEvery, state.keep], ["idle", 1, 2, 1]);
  assert.deepEqual(did(commands), ["emit", "settle"]);
  const report = (commands[1] as { report: { loss: number; milliseconds: number } }).report;
  assert.deepEqual([report.loss, report.milliseconds], [2.5, 30], "the mean loss; the time from advance to results");
});

Deno.test("checkpointing follows the configured interval and policy from the next iteration", () => {
  const { commands } = feed(
    trained(2),
    { type: "configure", every: 2, policy: "naive" },
    { type: "advance", at: 0 },
    { type: "stepped", epoch: 0, results: stepResults(3), at: 1 },
    { type: "advance", at: 2 },
  );
  const plans = commands.flatMap((command) => command.do === "step" ? [command.plan] : []);
  assert.deepEqual(plans.map((plan) => [plan.checkpoint, plan.policy]), [[false, "naive"], [true, "naive"]]);
});

Deno.test("a failure while idle is fenced and reported; the next advance recovers instead of stepping", () => {
  let { state, commands } = feed(trained(3), { type: "detected", rank: 2, incarnation: 0, at: 50 });
  assert.deepEqual(commands, [
    { do: "fence", rank: 2 },
    { do: "emit", event: { type: "failure", detection: { rank: 2, incarnation: 0, detectedAt: 50 } } },
  ]);
  assert.equal(state.mode, "idle");
  ({ state, commands } = feed(state, { type: "advance", at: 60 }));
  assert.deepEqual([state.mode, state.epoch, state.recovery?.phase], ["recovering", 1, "stop"]);
  assert.deepEqual(commands.at(-1), { do: "stop", epoch: 1, ranks: [0, 1, 3] });
});

Deno.test("a whole recovery: stop, replace, survey, fetch, load, synchronize, then a report and the rollback", () => {
  let { state } = feed(trained(5), { type: "advance", at: 100 }, {
    type: "detected",
    rank: 1,
    incarnation: 0,
    at: 120,
  });
  assert.equal(state.recovery?.reached, 5, "the step under way was abandoned: 5 is the last iteration seen whole");
  const epoch = state.epoch;
  const withReplicas = memories([6, 5, 4], [1]);
  withReplicas[0].push(entry(1, 6), entry(1, 5));
  const steps: [RootInput, string[]][] = [
    [{ type: "stopped", epoch, at: 130 }, ["emit", "replace"]],
    [{ type: "replaced", epoch, at: 180 }, ["emit", "survey"]],
    // Machine 1's memory is gone; machine 0 holds its replicas of 6 and 5. Iteration 6 is complete in
    // memory, but the root never saw it complete (its loss was never reported): the plan stops at 5.
    [{ type: "surveyed", epoch, memories: withReplicas, persistent: [], at: 181 }, ["fetch"]],
    [{ type: "fetched", epoch, results: fetchedFrom(4), skipped: ["x"], at: 200 }, ["emit", "load"]],
    [{ type: "loaded", epoch, milliseconds: [5, 7, 6, 5], at: 210 }, ["emit", "synchronize"]],
    [{ type: "synchronized", epoch, at: 222 }, ["emit", "settle"]],
  ];
  const issued: RootCommand[] = [];
  for (const [input, expected] of steps) {
    const next = transition(state, input);
    state = next.state;
    assert.deepEqual(did(next.commands), expected, `after ${input.type}`);
    issued.push(...next.commands);
  }
  const replace = issued.find((command) => command.do === "replace");
  assert.deepEqual(replace, { do: "replace", epoch, ranks: [1] });
  const fetch = issued.find((command) => command.do === "fetch");
  assert.ok(fetch?.do === "fetch");
  assert.equal(fetch.plan.iteration, 5);
  assert.deepEqual(fetch.plan.sources[1], [{ from: "peer", peer: 0 }]);
  const report = (issued.at(-1) as { report: RecoveryReport }).report;
  assert.deepEqual(
    [report.iteration, report.lostIterations, report.replacement, report.load, report.synchronize, report.resumedAt],
    [5, 0, 50, 7, 12, 222],
  );
  assert.deepEqual(report.detections, [{ rank: 1, incarnation: 0, detectedAt: 120 }]);
  assert.deepEqual([state.mode, state.iteration, state.detections, state.down], ["idle", 5, [], []]);
});

Deno.test("a second failure at any phase of a recovery cancels it: a new epoch, both failures, results of the old one dropped", () => {
  const phases = ["stop", "replace", "retrieve", "load", "synchronize"] as const;
  for (const [index, phase] of phases.entries()) {
    let { state } = feed(trained(6), { type: "detected", rank: 1, incarnation: 0, at: 10 }, {
      type: "advance",
      at: 11,
    });
    const first = state.epoch;
    // Bring the first attempt to `phase`.
    const toPhase: RootInput[] = [
      { type: "stopped", epoch: first, at: 12 },
      { type: "replaced", epoch: first, at: 13 },
      { type: "surveyed", epoch: first, memories: memories([6, 5]), persistent: [], at: 14 },
      { type: "fetched", epoch: first, results: fetchedFrom(6), skipped: [], at: 15 },
      { type: "loaded", epoch: first, milliseconds: [1, 1, 1, 1], at: 16 },
    ].slice(0, [0, 1, 2, 4, 5][index]) as RootInput[];
    state = feed(state, ...toPhase).state;
    assert.equal(state.recovery?.phase, phase);
    const second = feed(state, { type: "detected", rank: 3, incarnation: 0, at: 20 });
    state = second.state;
    assert.equal(state.epoch, first + 1, `${phase}: a new epoch`);
    assert.deepEqual(did(second.commands), ["fence", "emit", "emit", "stop"]);
    assert.deepEqual(second.commands.at(-1), { do: "stop", epoch: first + 1, ranks: index >= 2 ? [0, 1, 2] : [0, 2] });
    // Whatever the abandoned attempt still answers changes nothing.
    const stale = feed(
      state,
      { type: "stopped", epoch: first, at: 21 },
      { type: "synchronized", epoch: first, at: 22 },
      { type: "fetched", epoch: first, results: fetchedFrom(6), skipped: [], at: 23 },
    );
    assert.deepEqual(stale.state, state, `${phase}: stale results are dropped`);
    assert.deepEqual(stale.commands, []);
    const done = recover(state, 30, memories([6, 5]));
    const report = (done.commands.at(-1) as { report: RecoveryReport }).report;
    assert.deepEqual(report.detections.map((d) => d.rank), [1, 3], `${phase}: one recovery from both failures`);
    assert.equal(report.epoch, first + 1);
    assert.equal(report.lostIterations, 0, `${phase}: reached is still the iteration before the first failure`);
    const replace = done.commands.find((command) => command.do === "replace");
    assert.deepEqual(
      replace,
      { do: "replace", epoch: first + 1, ranks: index >= 2 ? [3] : [1, 3] },
      `${phase}: a machine already restarted is not restarted again`,
    );
  }
});

Deno.test("a failure during a step abandons it: its late results are dropped", () => {
  const { state, commands } = feed(
    trained(2),
    { type: "advance", at: 0 },
    { type: "detected", rank: 0, incarnation: 0, at: 5 },
    { type: "stepped", epoch: 0, results: stepResults(3), at: 6 },
  );
  assert.deepEqual([state.mode, state.iteration, state.epoch], ["recovering", 2, 1]);
  assert.ok(!commands.some((command) => command.do === "settle"));
});

Deno.test("a failure reported twice is one failure", () => {
  const once = feed(trained(1), { type: "advance", at: 0 }, { type: "detected", rank: 2, incarnation: 0, at: 1 });
  const twice = feed(once.state, { type: "detected", rank: 2, incarnation: 0, at: 2 });
  assert.deepEqual(twice.state, once.state);
  assert.deepEqual(twice.commands, []);
});

Deno.test("the replacement itself fails after it started: another recovery begins with it", () => {
  let { state } = feed(trained(3), { type: "detected", rank: 2, incarnation: 0, at: 1 }, { type: "advance", at: 2 });
  const epoch = state.epoch;
  state = feed(state, { type: "stopped", epoch, at: 3 }, { type: "replaced", epoch, at: 4 }).state;
  assert.deepEqual(state.down, []);
  const again = feed(state, { type: "detected", rank: 2, incarnation: 1, at: 5 });
  assert.equal(again.state.epoch, epoch + 1);
  assert.deepEqual(again.state.down, [2]);
  assert.deepEqual(again.state.detections.map((d) => d.detectedAt), [1, 5]);
});

Deno.test("the replacement fails as it starts: a new attempt starts it again; the third failure ends the advance", () => {
  let { state } = feed(trained(3), { type: "detected", rank: 2, incarnation: 0, at: 1 }, { type: "advance", at: 2 });
  const first = state.epoch;
  // Its machine left as it was being launched (a machine process whose own lease ran out, say).
  const failedStart = (at: number): RootInput => ({
    type: "startFailed",
    epoch: state.epoch,
    rank: 2,
    error: "control link closed",
    at,
  });
  let commands: RootCommand[];
  ({ state, commands } = feed(state, { type: "stopped", epoch: first, at: 3 }, failedStart(4)));
  // No lease covers a start that failed, so no detection would ever come: a new attempt starts it again.
  assert.deepEqual([state.mode, state.epoch, state.down, state.recovery?.phase], [
    "recovering",
    first + 1,
    [2],
    "stop",
  ]);
  assert.deepEqual(commands.at(-1), { do: "stop", epoch: first + 1, ranks: [0, 1, 3] });
  const late: RootInput = { type: "startFailed", epoch: first, rank: 2, error: "late", at: 5 };
  assert.deepEqual(feed(state, late).commands, [], "one from the superseded attempt changes nothing");
  // Started at the second try: the recovery ends, and its report lists the start that failed.
  const report = (recover(state, 6, memories([3])).commands.at(-1) as { report: RecoveryReport }).report;
  assert.deepEqual(report.failedStarts, [{ rank: 2, error: "control link closed", at: 4 }]);
  // Failing to start again and again, the rank ends the advance; the next advance counts its own.
  for (const at of [6, 7]) {
    ({ state, commands } = feed(state, { type: "stopped", epoch: state.epoch, at }, failedStart(at)));
  }
  assert.deepEqual(commands.at(-1), {
    do: "reject",
    error: "machine 2 could not be started (3 tries): control link closed",
  });
  assert.deepEqual([state.mode, state.down, state.rollBack], ["idle", [2], true]);
  ({ state } = feed(state, { type: "advance", at: 8 }));
  assert.deepEqual([state.mode, state.recovery?.failedStarts], ["recovering", []]);
});

Deno.test("a command that fails ends the advance with its error; the failures stay, so the next advance recovers", () => {
  let { state, commands } = feed(trained(3), { type: "detected", rank: 1, incarnation: 0, at: 1 }, {
    type: "advance",
    at: 2,
  });
  const epoch = state.epoch;
  ({ state, commands } = feed(state, { type: "failed", epoch, error: "no source for machine 1" }));
  assert.deepEqual(commands, [{ do: "reject", error: "no source for machine 1" }]);
  assert.equal(state.mode, "idle");
  assert.equal(state.detections.length, 1);
  ({ state, commands } = feed(state, { type: "advance", at: 3 }));
  assert.deepEqual([state.mode, state.epoch], ["recovering", epoch + 1]);
  // A failure from a superseded epoch is no failure of the current attempt.
  assert.deepEqual(feed(state, { type: "failed", epoch, error: "late" }).commands, []);
});

Deno.test("a second advance while one is under way is refused; closing rejects the one under way and ends all", () => {
  let { state, commands } = feed(trained(1), { type: "advance", at: 0 }, { type: "advance", at: 1 });
  assert.equal(commands.at(-1)?.do, "reject");
  assert.equal(state.mode, "stepping");
  ({ state, commands } = feed(state, { type: "close" }));
  assert.deepEqual(commands, [{ do: "reject", error: "the root agent has been closed" }]);
  const after = feed(state, { type: "stepped", epoch: 0, results: stepResults(2), at: 2 }, {
    type: "detected",
    rank: 1,
    incarnation: 0,
    at: 3,
  }, { type: "advance", at: 4 });
  assert.deepEqual(after.commands, []);
  assert.equal(after.state, state);
});

Deno.test("a result out of order within its epoch is ignored", () => {
  const { state } = feed(trained(2), { type: "detected", rank: 1, incarnation: 0, at: 1 }, { type: "advance", at: 2 });
  const epoch = state.epoch;
  const early = feed(
    state,
    { type: "fetched", epoch, results: fetchedFrom(2), skipped: [], at: 3 },
    { type: "synchronized", epoch, at: 4 },
    { type: "stepped", epoch, results: stepResults(3), at: 5 },
  );
  assert.deepEqual(early.state, state);
  assert.deepEqual(early.commands, []);
});

Deno.test("a rank restarted by an abandoned attempt that fails before the recovery saw it run is a new failure", () => {
  let { state } = feed(trained(3), { type: "detected", rank: 1, incarnation: 0, at: 1 }, { type: "advance", at: 2 });
  const first = state.epoch;
  state = feed(state, { type: "stopped", epoch: first, at: 3 }).state; // replacing machine 1 (incarnation 1)
  state = feed(state, { type: "detected", rank: 2, incarnation: 0, at: 4 }).state; // a new epoch
  // Machine 1's replacement, started in the first attempt, fails before this attempt's replacement is done.
  const again = feed(state, { type: "detected", rank: 1, incarnation: 1, at: 5 });
  assert.deepEqual(did(again.commands), ["fence", "emit", "emit", "stop"]);
  assert.equal(again.state.epoch, first + 2);
  assert.deepEqual(again.state.down, [1, 2]);
  assert.deepEqual(again.state.detections.map((d) => `${d.rank}.${d.incarnation}`), ["1.0", "2.0", "1.1"]);
});

const shard = (owner: number, iteration: number, bytes = 1): StoredEntry => ({ ...entry(owner, iteration), bytes });

Deno.test("the recovery plan takes the newest iteration every shard has, nearest source first", () => {
  // Machine 1's memory is gone; machine 0 holds its replica of 5 only; 6 is complete everywhere else.
  const plan = planRecovery(3, [[shard(0, 6), shard(0, 5), shard(1, 5)], [], [shard(2, 6), shard(2, 5)]], [
    shard(1, 4),
  ]);
  assert.equal(plan.iteration, 5);
  assert.deepEqual(plan.sources, [[{ from: "local" }], [{ from: "peer", peer: 0 }], [{ from: "local" }]]);
  const fromPersistent = planRecovery(2, [[shard(0, 3)], []], [shard(0, 2), shard(1, 2)]);
  assert.deepEqual([fromPersistent.iteration, fromPersistent.sources], [2, [[{ from: "persistent" }], [{
    from: "persistent",
  }]]]);
  assert.match(fromPersistent.choice.reason, /newest.*no speeds/);
  // Whether memory alone could serve it: 5 for the first, and nothing for the second (shard 1 is only stored).
  assert.deepEqual([plan.choice.newestInMemory, fromPersistent.choice.newestInMemory], [5, null]);
  assert.deepEqual(planRecovery(2, [[], []], []).sources, [[{ from: "initial" }], [{ from: "initial" }]]);
  // Every shard of 6 exists, but the root saw only iteration 5 complete (6's all-gather was cut short).
  assert.equal(planRecovery(1, [[shard(0, 6), shard(0, 5)]], [], 5).iteration, 5);
});

Deno.test("rollback by cost: an older checkpoint every shard has in memory beats a newer one only the slow store has", () => {
  // Machine 1's memory is gone. Iteration 8 of its shard is only in the persistent store (100 MB at 20 MB/s:
  // 5 s); its peer, machine 0, holds its replica of 7 (100 MB at 400 MB/s: 250 ms). Redoing one iteration
  // costs 1 s: 7 resumes in 1.25 s, 8 in 5 s.
  const MB = 1e6;
  const memories = [[shard(0, 8, 100 * MB), shard(0, 7, 100 * MB), shard(1, 7, 100 * MB)], []];
  const persistent = [shard(0, 8, 100 * MB), shard(1, 8, 100 * MB)];
  const speeds = { networkBytesPerSecond: 400 * MB, persistentBytesPerSecond: 20 * MB, iterationMs: 1000 };
  const plan = planRecovery(2, memories, persistent, 8, speeds);
  assert.equal(plan.iteration, 7);
  assert.deepEqual(plan.sources, [[{ from: "local" }], [{ from: "peer", peer: 0 }]]);
  const [newest, older] = plan.choice.candidates;
  assert.deepEqual([newest.iteration, newest.retrievalMs, newest.recomputeMs], [8, 5000, 0]);
  assert.deepEqual([older.iteration, older.retrievalMs, older.recomputeMs], [7, 250, 1000]);
  assert.match(plan.choice.reason, /iteration 7: 250 ms to retrieve \+ 1000 ms to redo resumes sooner than the newest/);
  // GEMINI's choice stands when redoing costs more than the store's read: iterations of 10 s.
  assert.equal(planRecovery(2, memories, persistent, 8, { ...speeds, iterationMs: 10_000 }).iteration, 8);
  // Without the store's speed, the newest, as GEMINI takes it.
  assert.equal(planRecovery(2, memories, persistent, 8, { ...speeds, persistentBytesPerSecond: null }).iteration, 8);
});

Deno.test("a recovery's plan is estimated from the recent iterations' times and the cluster's speeds", () => {
  const speeds = { networkBytesPerSecond: 400e6, persistentBytesPerSecond: 20e6 };
  let state = initialRootState(2, { every: 1, policy: "interleaved" }, speeds);
  for (let t = 1; t <= 3; t++) {
    state = feed(state, { type: "advance", at: 0 }, {
      type: "stepped",
      epoch: 0,
      results: stepResults(t).slice(0, 2),
      at: 2000, // 2 s an iteration
    }).state;
  }
  state = feed(state, { type: "detected", rank: 1, incarnation: 0, at: 1 }, { type: "advance", at: 2 }).state;
  const epoch = state.epoch;
  const MB = 1e6;
  const { commands } = feed(state, { type: "stopped", epoch, at: 3 }, { type: "replaced", epoch, at: 4 }, {
    type: "surveyed",
    epoch,
    memories: [[shard(0, 3, 100 * MB), shard(0, 2, 100 * MB), shard(1, 2, 100 * MB)], []],
    persistent: [shard(0, 3, 100 * MB), shard(1, 3, 100 * MB)],
    at: 5,
  });
  const fetch = commands.find((command) => command.do === "fetch");
  assert.ok(fetch?.do === "fetch");
  // 3 from the store: 5 s; 2 from the peer: 250 ms + one 2 s iteration.
  assert.equal(fetch.plan.iteration, 2);
  assert.deepEqual(fetch.plan.choice.candidates.map((c) => c.recomputeMs), [0, 2000, 6000]);
});

Deno.test("a step that fails part-way rolls every machine back at the next advance, though no machine failed", () => {
  let { state, commands } = feed(trained(4), { type: "advance", at: 0 });
  ({ state, commands } = feed(state, { type: "failed", epoch: 0, error: "a GPU error" }));
  assert.deepEqual(commands, [{ do: "reject", error: "a GPU error" }]);
  ({ state, commands } = feed(state, { type: "advance", at: 1 }));
  assert.deepEqual([state.mode, state.epoch, state.recovery?.reached], ["recovering", 1, 4]);
  assert.deepEqual(commands.at(-1), { do: "stop", epoch: 1, ranks: [0, 1, 2, 3] }, "every machine stops its step");
  const done = recover(state, 10, memories([4, 3]));
  const report = (done.commands.at(-1) as { report: RecoveryReport }).report;
  assert.deepEqual([report.iteration, report.detections, done.state.rollBack], [4, [], false]);
  assert.deepEqual(done.commands.find((command) => command.do === "replace"), { do: "replace", epoch: 1, ranks: [] });
});

Deno.test("rollback by cost: a peer serving several shards sends them one after another; ties go to the newer", () => {
  const MB = 1e6;
  // Machines 1 and 2 lost their memory; machine 0 holds both their replicas of 5, and only the store has 6.
  const memories = [
    [shard(0, 6, 10 * MB), shard(0, 5, 10 * MB), shard(1, 5, 10 * MB), shard(2, 5, 10 * MB)],
    [],
    [],
  ];
  const persistent = [shard(0, 6, 10 * MB), shard(1, 6, 10 * MB), shard(2, 6, 10 * MB)];
  const speeds = { networkBytesPerSecond: 100 * MB, persistentBytesPerSecond: 20 * MB, iterationMs: 300 };
  const plan = planRecovery(3, memories, persistent, 6, speeds);
  const five = plan.choice.candidates.find((c) => c.iteration === 5)!;
  assert.equal(five.retrievalMs, 200, "machine 0 sends two 10 MB shards on one 100 MB/s link");
  assert.equal(plan.iteration, 6, "6 from the store: 500 ms; 5 from a peer: 200 + 300 ms, a tie: the newer");
  // With no iteration seen complete yet, an older candidate still counts what it loses from the newest.
  assert.equal(planRecovery(3, memories, persistent, Infinity, { ...speeds, iterationMs: 301 }).iteration, 6);
});

Deno.test("after rolling back behind the kept iteration, every machine keeps the one it went back to", () => {
  let state = trained(6);
  state = { ...state, keep: 6 };
  state = feed(state, { type: "detected", rank: 1, incarnation: 0, at: 1 }, { type: "advance", at: 2 }).state;
  const done = recover(state, 10, memories([4, 3]));
  assert.equal(done.state.iteration, 4);
  assert.equal(done.state.keep, 4);
});

Deno.test("copies a fetch found unusable (corrupt) are left out, and the recovery plans again, from an older iteration", () => {
  let { state } = feed(trained(6), { type: "detected", rank: 1, incarnation: 0, at: 1 }, { type: "advance", at: 2 });
  const epoch = state.epoch;
  // Machine 1's memory is gone; machine 0 holds its replicas of 6 and 5.
  const stored = memories([6, 5], [1]);
  stored[0].push(entry(1, 6), entry(1, 5));
  state = feed(state, { type: "stopped", epoch, at: 3 }, { type: "replaced", epoch, at: 4 }, {
    type: "surveyed",
    epoch,
    memories: stored,
    persistent: [],
    at: 5,
  }).state;
  assert.equal(state.recovery?.plan?.iteration, 6);
  const { state: next, commands } = feed(state, {
    type: "unusable",
    epoch,
    copies: [{ owner: 1, iteration: 6, holder: 0 }],
    skipped: ["machine 1 from peer 0: corrupt"],
    at: 6,
  });
  const fetch = commands.find((command) => command.do === "fetch");
  assert.ok(fetch?.do === "fetch");
  assert.equal(fetch.plan.iteration, 5, "6 of machine 1 is nowhere else: 5");
  assert.deepEqual(fetch.plan.sources[1], [{ from: "peer", peer: 0 }]);
  const done = feed(
    next,
    { type: "fetched", epoch, results: fetchedFrom(5), skipped: [], at: 7 },
    { type: "loaded", epoch, milliseconds: [1, 1, 1, 1], at: 8 },
    { type: "synchronized", epoch, at: 9 },
  );
  const report = (done.commands.at(-1) as { report: RecoveryReport }).report;
  assert.deepEqual([report.iteration, report.lostIterations, report.skipped], [5, 1, [
    "machine 1 from peer 0: corrupt",
  ]]);
});
