// Traffic interleaving: the checkpoint scheduler in simulated time (where every span is exact, so the
// properties hold strictly), then on the live cluster: the staging bound and the multi-iteration
// checkpoints on the real network, an exact recovery from replicas that lag behind, and the simulation's
// prediction of a live run's iteration times.

import assert from "node:assert/strict";
import type { ClusterSettings } from "../agents/protocol/spec.ts";
import {
  CheckpointScheduler,
  clusterInterval,
  DEFAULT_INTERLEAVING,
  IdleProfile,
  type ReplicationPolicy,
} from "../agents/replication/interleaving.ts";
import type { TransferRecord } from "../agents/sim/network.ts";
import { runCluster } from "../agents/sim/run.ts";
import { collectiveBytes, isCollective, trafficEdges, TRAINING_ITERATION } from "../agents/protocol/iteration.ts";
import { simulateTraining, type SimulationResult, type SimulationSpec } from "../agents/sim/simulation.ts";

const KiB = 1024;

/** Four machines, 100 ms of compute, collectives of 480 KB, 360 KB checkpoints: the tiny model's shape. */
function tinyShape(policy: ReplicationPolicy, bandwidth = 10e6): SimulationSpec {
  return {
    machines: 4,
    replicas: 2,
    placement: "group",
    bandwidth,
    latencyMs: 0.05,
    iteration: [
      { compute: 100 },
      { collective: "reduce-scatter", bytes: 480e3 },
      { collective: "all-gather", bytes: 32 },
      { compute: 5 },
      { checkpointReady: 1 },
      { collective: "all-gather", bytes: 480e3 },
    ],
    betweenIterationsMs: 3,
    checkpointBytes: 360e3,
    chunkBytes: 64 * KiB,
    replication: { ...DEFAULT_INTERLEAVING, policy, stagingBytes: 128 * KiB },
    iterations: 24,
  };
}

const checkpointsFrom = (timeline: TransferRecord[], rank: number) =>
  timeline.filter((r) => r.kind === "checkpoint" && r.from === rank);

const mean = (values: number[]) => values.reduce((sum, v) => sum + v, 0) / values.length;

/** The mean number of iterations between successive replicated checkpoints (1: every iteration). */
const effectiveInterval = (replicated: number[]) => (replicated.at(-1)! - replicated[0]) / (replicated.length - 1);

/** Once profiling is over, no checkpoint byte of a machine is on the wire while its training traffic is. */
function assertOnlyInIdleSpans(spec: SimulationSpec, result: SimulationResult) {
  const profiled = result.busy[0][2 * (spec.replication.profileIterations + 1)][0];
  for (let rank = 0; rank < spec.machines; rank++) {
    for (const piece of checkpointsFrom(result.timeline, rank).filter((r) => r.queuedAt >= profiled)) {
      for (const [start, end] of result.busy[rank]) {
        assert.ok(
          piece.end <= start || piece.start >= end,
          `machine ${rank}: checkpoint bytes on the wire ${piece.start}-${piece.end} during training traffic ${start}-${end}`,
        );
      }
    }
  }
}

/** At no moment does a machine have more checkpoint bytes queued or on the wire than its staging buffer. */
function assertStagingBound(timeline: TransferRecord[], machines: number, stagingBytes: number) {
  for (let rank = 0; rank < machines; rank++) {
    const pieces = checkpointsFrom(timeline, rank);
    for (const { queuedAt } of pieces) {
      const staged = pieces.filter((p) => p.queuedAt <= queuedAt && queuedAt < p.end).reduce((s, p) => s + p.bytes, 0);
      assert.ok(staged <= stagingBytes, `machine ${rank} had ${staged} bytes staged at ${queuedAt}`);
    }
  }
}

/** Every replicated checkpoint reached each peer whole: every byte once, nothing more. */
function assertDelivered(timeline: TransferRecord[], replicated: number[][], checkpointBytes: number, peers: number) {
  replicated.forEach((iterations, rank) => {
    const sent = checkpointsFrom(timeline, rank).reduce((sum, r) => sum + r.bytes, 0);
    const inFlightAtEnd = sent - iterations.length * checkpointBytes * peers;
    assert.ok(inFlightAtEnd >= 0 && inFlightAtEnd < checkpointBytes * peers, `machine ${rank} sent ${sent} bytes`);
  });
}

Deno.test("idle profile: each span is its shortest over the profiled iterations, and an interrupted iteration is forgotten", () => {
  const profile = new IdleProfile(2);
  let now = 0;
  const iteration = (gaps: number[]) => {
    profile.beginIteration();
    for (const gap of gaps) {
      profile.busy(now);
      now += 10;
      profile.idle(now);
      now += gap;
    }
  };
  iteration([5, 50]);
  assert.equal(profile.spanMs(0), undefined, "not complete after one iteration");
  iteration([7, 40]);
  profile.interrupt();
  iteration([3, 60]);
  iteration([9, 90]);
  profile.busy(now); // closes the last span of the last iteration
  assert.deepEqual(profile.spans, [3, 50], "the interrupted iteration's 7 and 40 are not in it");
  const known = new IdleProfile(2, [12, 30]);
  assert.deepEqual(
    [known.complete, known.spanMs(1), known.spans],
    [true, 30, [12, 30]],
    "known spans need no profiling",
  );
});

Deno.test("scheduler: with no checkpoint traffic nothing is sent, and bad settings are refused with a clear error", () => {
  const scheduler = new CheckpointScheduler({ ...DEFAULT_INTERLEAVING, policy: "none" }, 1e6, 64 * KiB, [1]);
  assert.equal(scheduler.offer(1, 100_000), false);
  assert.equal(scheduler.next(0), null);
  assert.throws(
    () => new CheckpointScheduler({ ...DEFAULT_INTERLEAVING, stagingBytes: 1000 }, 1e6, 64 * KiB, [1]),
    /staging buffer \(1000 bytes\) must hold a chunk/,
  );
  assert.throws(
    () => new CheckpointScheduler({ ...DEFAULT_INTERLEAVING, policy: "eager" as ReplicationPolicy }, 1e6, 4096, [1]),
    /replication policy must be one of none, naive, interleaved/,
  );
});

Deno.test("scheduler: checkpoints that took longer than their profiled spans predict raise the interval to what they took, while given spans keep it", () => {
  /** One profiled iteration with a 1000 ms span: 800 KB usable at 1 MB/s, so a 100 KB checkpoint needs one. */
  const profiled = (idleSpansMs?: number[]) => {
    const settings = { ...DEFAULT_INTERLEAVING, profileIterations: 1, idleSpansMs };
    const scheduler = new CheckpointScheduler(settings, 1e6, 64 * KiB, [1]);
    scheduler.beginIteration();
    scheduler.trainingBusy(0);
    scheduler.trainingIdle(10);
    scheduler.beginIteration();
    scheduler.trainingBusy(1010);
    return scheduler;
  };
  /** `count` iterations begin while the checkpoint being sent has not left (its machine's thread was held). */
  const iterationsPass = (scheduler: CheckpointScheduler, count: number) => {
    for (let i = 0; i < count; i++) scheduler.beginIteration();
  };
  /** Releases the checkpoint being sent in an idle span at `now` and has every piece leave the NIC. */
  const sendWhole = (scheduler: CheckpointScheduler, now: number) => {
    scheduler.trainingIdle(now);
    const orders = [];
    for (let order; (order = scheduler.next(now));) orders.push(order);
    assert.deepEqual(orders.map((order) => scheduler.sent(order, now)).at(-1), true, "its last piece left");
    scheduler.trainingBusy(now + 1);
  };
  for (const given of [false, true]) {
    const scheduler = profiled(given ? [1000] : undefined);
    scheduler.offer(1, 100_000);
    assert.equal(scheduler.neededInterval(), 1, "predicted from the spans");
    iterationsPass(scheduler, 3);
    sendWhole(scheduler, 2000);
    assert.equal(scheduler.neededInterval(), given ? 1 : 3, given ? "the given spans decide" : "what it took");
  }
  // The median of the last three: one checkpoint that took longer or shorter than the others does not move it.
  const scheduler = profiled();
  let iteration = 0;
  const after = (took: number[]) => {
    for (const iterations of took) {
      scheduler.offer(++iteration, 100_000);
      iterationsPass(scheduler, iterations);
      sendWhole(scheduler, 1000 * (iteration + 1));
    }
    return scheduler.neededInterval();
  };
  assert.equal(after([1, 3]), 1, "took 1 and 3: one slow checkpoint among fast ones");
  assert.equal(after([3]), 3, "took 1, 3 and 3");
  assert.equal(after([3, 3, 1]), 3, "took 3, 3 and 1: one fast checkpoint among slow ones");
  assert.equal(after([1]), 1, "took 3, 1 and 1: only the last three count");
  assert.equal(clusterInterval([null, null]), null, "no machine knows yet");
  assert.equal(clusterInterval([2, null, 3, 1]), 3, "the slowest, with a replacement still profiling");
});

Deno.test("simulated: interleaved checkpoints cost training nothing, naive ones slow it; pieces stay in idle spans and the staging bound", () => {
  const runs = Object.fromEntries(
    (["none", "naive", "interleaved"] as const).map((policy) => [policy, simulateTraining(tinyShape(policy))]),
  );
  const late = (result: SimulationResult) => mean(result.iterationMs.slice(10));
  assert.ok(late(runs.naive) > 1.1 * late(runs.none), "naive replication contends with the all-gather");
  assert.ok(late(runs.interleaved) <= 1.001 * late(runs.none), "interleaved replication costs nothing");
  const spec = tinyShape("interleaved"), result = runs.interleaved;
  assertOnlyInIdleSpans(spec, result);
  assertStagingBound(result.timeline, spec.machines, spec.replication.stagingBytes);
  assertDelivered(result.timeline, result.replicated, spec.checkpointBytes, 1);
  assert.deepEqual(result.skipped, [0, 0, 0, 0]);
  assert.equal(effectiveInterval(result.replicated[0]), 1, "a checkpoint replicated every iteration");
});

Deno.test("simulated: when the idle spans of one iteration are too short, a checkpoint spans several and the interval says so", () => {
  // 1.2 MB/s: a 360 KB checkpoint needs 300 ms of wire, and an iteration leaves about 85 ms usable.
  const spec = tinyShape("interleaved", 1.2e6);
  const result = simulateTraining(spec);
  assertOnlyInIdleSpans(spec, result);
  assertStagingBound(result.timeline, spec.machines, spec.replication.stagingBytes);
  assertDelivered(result.timeline, result.replicated, spec.checkpointBytes, 1);
  const interval = result.replicationInterval!;
  assert.ok(interval >= 3, `a checkpoint every ${interval} iterations`);
  const profiled = spec.replication.profileIterations + 1;
  for (const replicated of result.replicated) {
    const aligned = replicated.filter((t) => t > profiled);
    assert.ok(aligned.length >= 3 && aligned.every((t) => t % interval === 0), `${replicated}`);
    assert.equal(effectiveInterval(aligned), interval);
  }
  const none = simulateTraining(tinyShape("none", 1.2e6));
  assert.ok(mean(result.iterationMs.slice(10)) <= 1.001 * mean(none.iterationMs.slice(10)), "still no cost");
});

/**
 * The tiny model's cluster on a 1 MB/s network (so the network matters), without persistent checkpoints.
 * Its idle spans are given (two of 40 ms an iteration, 64 ms usable: 64 KB of wire), not profiled: so a
 * 360 KB checkpoint spans 6 iterations however busy this computer's cores are (a loaded core makes the
 * measured spans longer, and the interval shorter).
 */
const slowNetwork = (settings: ClusterSettings) => {
  settings.network.bandwidth = 1e6;
  settings.checkpoint.replication = {
    ...settings.checkpoint.replication,
    policy: "interleaved",
    stagingBytes: 128 * KiB,
    idleSpansMs: [40, 40],
  };
  settings.checkpoint.persistEvery = 0;
};

Deno.test("live: checkpoints spanning several iterations go at one interval on every machine, within the staging bound; a peer's lagging replica still recovers exactly", async () => {
  const iterations = 30, adjust = slowNetwork;
  const run = (story: Parameters<typeof runCluster>[1]) =>
    runCluster({ adjust, heartbeatTimeoutMs: 1000, keepState: true }, async (context) => {
      await story(context);
      await context.root.runUntil(iterations);
    });
  const failureFree = await run(() => Promise.resolve());
  const { plan, machines: last } = failureFree.iterations[iterations];
  const interval = plan.replicateEvery ?? 0;
  assert.ok(interval > 1, `checkpoints spanned iterations (replicated every ${interval})`);
  assert.equal(interval, Math.max(...last.map((m) => m.neededInterval!)), "the interval the slowest needs");
  assert.ok(last.every((m) => m.replicatedIteration > 0 && m.replicatedIteration % interval === 0), "aligned");
  assertStagingBound(failureFree.timeline, 4, 128 * KiB);

  // Machine 2's hardware fails once every machine has replicated an aligned checkpoint, in an iteration that
  // does not follow a replicated one: its replacement must take an older replica, and iterations are lost.
  // (Before the interval is known every checkpoint is replicated, so only a replica taken since counts.)
  const failed = await run(async ({ root, cluster }) => {
    let report, knownSince = Infinity;
    do {
      report = await root.advance();
      if (report.type === "iteration" && report.plan.replicateEvery !== null) {
        knownSince = Math.min(knownSince, report.iteration);
      }
    } while (
      report.type !== "iteration" || report.plan.replicateEvery === null ||
      report.machines.some((m) => m.replicatedIteration < knownSince)
    );
    const every = report.plan.replicateEvery;
    let at = root.iteration + 2;
    while ((at - 1) % every === 0) at++;
    assert.ok(at < iterations, `the failure (iteration ${at}) comes before the end`);
    await cluster.inject([2], "hardware", { phase: "step", iteration: at });
  });
  const [recovery] = failed.recoveries;
  assert.equal(recovery.machines[2].source.from, "peer");
  assert.ok(recovery.lostIterations >= 1, "the replica lagged behind: iterations were lost");
  for (let t = 1; t <= iterations; t++) assert.equal(failed.iterations[t].loss, failureFree.iterations[t].loss);
  for (const name of ["params", "m", "v"] as const) {
    assert.ok(failed.state![name].every((value, i) => Object.is(value, failureFree.state![name][i])), name);
  }
});

Deno.test("one iteration, described once: two bursts of training traffic, which the live worker and the replay share", () => {
  const bursts = TRAINING_ITERATION.flatMap((phase, index) => {
    const { opens, closes } = trafficEdges(TRAINING_ITERATION, index, isCollective);
    return [...(opens ? [`open ${phase.name}`] : []), ...(closes ? [`close ${phase.name}`] : [])];
  });
  assert.deepEqual(bursts, ["open reduce-scatter", "close gradient norm", "open all-gather", "close all-gather"]);
  assert.equal(collectiveBytes({ bytes: "state" }, 1000, 4), 4000);
  assert.equal(collectiveBytes({ bytes: "norm" }, 1000, 4), 32, "one f64 from each machine");
});
