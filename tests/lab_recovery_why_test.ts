// Why a recovery used each source (web/recovery-why.ts), without a browser: the copies that outlived the
// failure and what each would have cost at the lab's speeds; and a lesson's moments read from the state.

import assert from "node:assert/strict";
import type { ObservedRecovery } from "../agents/sim/observer.ts";
import type { StoredEntry } from "../core/store.ts";
import { placementPlan } from "../agents/replication/placement.ts";
import { lessonSteps } from "../web/lessons.ts";
import { PRESETS } from "../web/presets.ts";
import { describeShard, explainRecovery } from "../web/recovery-why.ts";
import { DEFAULT_LAB_SETTINGS, LabSession, type LabState, type MachineView } from "../web/session.ts";

const BYTES = 4e6;

function entry(owner: number, iteration: number, kind: StoredEntry["kind"]): StoredEntry {
  return { owner, iteration, bytes: BYTES, savedAt: 0, kind, replicatedTo: [] };
}

function machine(rank: number, memory: StoredEntry[]): MachineView {
  return {
    rank,
    phase: "running",
    incarnation: 0,
    failure: null,
    iteration: 7,
    heartbeatAge: 0,
    memory,
    arenaBytes: 4 * BYTES,
    persisted: 1,
    persistSkipped: 0,
    adapter: "",
  };
}

/** Machine 1 failed in hardware; the recovery took its shard of iteration 7 from `source`. */
function recovery(iteration: number, source: ObservedRecovery["machines"][number]["source"]): ObservedRecovery {
  const restored = (from: typeof source) => ({
    source: from,
    iteration,
    bytes: BYTES,
    retrieveMilliseconds: 0,
    loadMilliseconds: 0,
  });
  return {
    type: "recovery",
    epoch: 1,
    detections: [{ rank: 1, incarnation: 0, detectedAt: 100 }],
    failures: [{ rank: 1, incarnation: 0, detectedAt: 100, kind: "hardware", where: "at once", failedAt: 50 }],
    iteration,
    lostIterations: 1,
    machines: [restored({ from: "local" }), restored(source), restored({ from: "local" }), restored({ from: "local" })],
    replacement: 0,
    retrieval: 0,
    load: 0,
    synchronize: 0,
    resumedAt: 200,
    fromPersistent: source.from === "persistent" ? 1 : 0,
    skipped: [],
    failedStarts: [],
    choice: {
      candidates: [
        { iteration, retrievalMs: 10, recomputeMs: 700 },
        { iteration: iteration - 2, retrievalMs: 10, recomputeMs: 2100 },
      ],
      reason: "the newest iteration every shard has (7) resumes soonest",
      newestInMemory: source.from === "persistent" ? null : iteration,
    },
    detection: 50,
    total: 150,
  };
}

// Groups {0, 1} and {2, 3}; machine 1's memory is gone with its hardware (the page shows it empty, but a
// replacement may already hold the fetched shard: it must not count as a copy that survived).
const machines = [
  machine(0, [entry(0, 7, "own"), entry(1, 7, "replica")]),
  machine(1, [entry(1, 7, "own")]),
  machine(2, [entry(2, 7, "own"), entry(3, 7, "replica")]),
  machine(3, [entry(3, 7, "own"), entry(2, 7, "replica")]),
];

Deno.test("a shard served by a peer: the peer's copy and its cost at the link's speed; the failed machine's is gone", () => {
  const settings = { ...DEFAULT_LAB_SETTINGS, networkMBps: 400, storageMBps: 20, persistEvery: 5 };
  const why = explainRecovery(recovery(7, { from: "peer", peer: 0 }), machines, settings);
  assert.deepEqual(why.shards[1], {
    owner: 1,
    used: "peer 0",
    copies: [{ where: "machine 0's memory", ms: 10 }],
  });
  assert.deepEqual(why.shards[0].copies, [{ where: "local memory", ms: 0 }]);
  assert.equal(describeShard(why.shards[1]), "shard 1: from peer 0 (survived: machine 0's memory 10 ms)");
  assert.equal(why.rollback, "the newest iteration every shard has (7) resumes soonest");
  assert.deepEqual(why.candidates, [
    "iteration 7: 10 ms to retrieve + 700 ms to redo",
    "iteration 5: 10 ms to retrieve + 2100 ms to redo",
  ]);
});

Deno.test("on a persistence boundary the store's copy is listed with its cost, cheapest copy first", () => {
  const settings = { ...DEFAULT_LAB_SETTINGS, networkMBps: 400, storageMBps: 20, persistEvery: 7 };
  const why = explainRecovery(recovery(7, { from: "peer", peer: 0 }), machines, settings);
  assert.deepEqual(why.shards[1].copies, [
    { where: "machine 0's memory", ms: 10 },
    { where: "persistent storage", ms: 200 },
  ]);
});

Deno.test("a software failure keeps the machine's own copy: it is local and free", () => {
  const settings = { ...DEFAULT_LAB_SETTINGS, persistEvery: 5 };
  const software = recovery(7, { from: "local" });
  software.failures = [{ ...software.failures[0], kind: "software" }];
  const why = explainRecovery(software, machines, settings);
  assert.deepEqual(why.shards[1].copies[0], { where: "local memory", ms: 0 });
  assert.equal(why.shards[1].used, "local");
});

Deno.test("a lesson's steps: the first waits for the start, the moments are read from the state", () => {
  const steps = lessonSteps("machine-lost");
  const idle: LabState = new LabSession(DEFAULT_LAB_SETTINGS).state;
  assert.equal(steps.length, 5);
  assert.ok(steps[0].reached(idle));
  assert.ok(!steps[1].reached(idle));
  const training: LabState = { ...idle, status: "running", iteration: 3, machines };
  assert.ok(steps[1].reached(training));
  assert.ok(!steps[2].reached(training));
  const failed = { ...training, machines: machines.map((m) => m.rank === 1 ? { ...m, phase: "failed" as const } : m) };
  assert.ok(steps[2].reached(failed));
  assert.deepEqual(steps[2].highlight(failed), [1]);
  assert.match(steps[2].say(failed), /^machine 1: a hardware failure/);
});

Deno.test("every lesson's every step says something about its own machines, from start to resumed training", () => {
  const settings = { ...DEFAULT_LAB_SETTINGS, persistEvery: 5 };
  const recovered = recovery(7, { from: "peer", peer: 0 });
  const state: LabState = {
    ...new LabSession(settings).state,
    status: "running",
    plan: placementPlan("group", 4, 2),
    iteration: 10,
    machines,
    recoveries: [recovered],
    explanations: [explainRecovery(recovered, machines, settings)],
  };
  for (const name of Object.keys(PRESETS) as (keyof typeof PRESETS)[]) {
    const said = lessonSteps(name).map((step) => `${step.title}: ${step.say(state)} ${step.notice(state)}`);
    assert.equal(said.length, 5, name);
    assert.match(said[0], new RegExp(PRESETS[name].promise), name);
    assert.match(said[3], /rolled back to iteration 7\. shard 1: from peer 0/, name);
    assert.match(said[4], /press c/i, name);
  }
  assert.match(lessonSteps("machine-lost")[1].notice(state), /also in machine 0's memory/);
  assert.match(lessonSteps("group-lost")[1].notice(state), /machines 0 and 1 hold each other's copies.*every 5th/);
  assert.match(
    lessonSteps("group-lost")[1].notice({ ...state, settings: { ...settings, persistEvery: 0 } }),
    /nothing is persisted/,
  );
});
