// The real root and worker agents in one thread, on a virtual clock, with a deterministic stand-in for the
// GPU's arithmetic (agents/sim/in-process.ts, run by agents/sim/chaos.ts's `trainInProcess`): every byte
// still crosses the real switch into real stores. Failures of every kind are recovered, and training
// continues bit for bit as the failure-free run; the same run twice is the same run, event for event.

import assert from "node:assert/strict";
import { type ClusterSettings, defaultClusterSettings } from "../agents/protocol/spec.ts";
import { type Fault, type InProcessRun, trainInProcess } from "../agents/sim/chaos.ts";

const ITERATIONS = 16;

function settings(): ClusterSettings {
  const cluster = defaultClusterSettings({ kind: "memory", bandwidth: 20e6 });
  cluster.training = {
    ...cluster.training,
    config: { vocab_size: 32, n_ctx: 16, n_embd: 16, n_head: 2, n_layer: 1 },
    time: 8,
    corpus: { tokens: 4096, seed: 3 },
  };
  cluster.network = { bandwidth: 10e6, latencyMs: 0.05 };
  cluster.checkpoint.chunkBytes = 4096; // a shard of this model is a few chunks, so a failure can strike mid-replica
  return cluster;
}

const train = (faults: Fault[] = []) => trainInProcess(settings(), ITERATIONS, faults);
const recoveries = (run: InProcessRun) => run.history.filter((line) => line.includes(" recovered to "));
const detections = (run: InProcessRun) => run.history.filter((line) => line.includes(" detected machine ")).length;

function assertExactResume(run: InProcessRun, failureFree: InProcessRun) {
  assert.equal(run.stopped, null);
  assert.deepEqual(run.losses, failureFree.losses);
  for (const name of ["params", "m", "v"] as const) {
    const [actual, expected] = [run.state![name], failureFree.state![name]];
    assert.ok(actual.every((value, i) => Object.is(value, expected[i])), `the final ${name} differ`);
  }
}

Deno.test("in one thread on a virtual clock, the real agents recover every kind of failure and resume bit for bit", async () => {
  const failureFree = await train();
  assert.equal(failureFree.losses.size, ITERATIONS);
  const failed = await train([
    { iteration: 4, ranks: [1], kind: "hardware", point: { phase: "step", iteration: 4 } },
    { iteration: 7, ranks: [2], kind: "software", point: { phase: "checkpoint", iteration: 7 } },
    { iteration: 10, ranks: [3], kind: "hardware", point: { phase: "replication", iteration: 10 } },
    { iteration: 13, ranks: [0, 1], kind: "hardware" }, // a whole group, between iterations
  ]);
  const recovered = recoveries(failed);
  assert.equal(recovered.length, 4, recovered.join("\n"));
  assert.match(recovered[0], / recovered to 3 \(0 lost\) from local, peer 0, local, local$/, "from its group peer");
  assert.match(recovered[3], / from persistent, persistent, local, local$/, "the lost group from the persistent store");
  assert.equal(detections(failed), 5, "one failure each, then the group's two");
  assertExactResume(failed, failureFree);
});

Deno.test("in one thread on a virtual clock, the same run twice is the same run, event for event", async () => {
  const schedule: Fault[] = [{ iteration: 5, ranks: [2], kind: "hardware", point: { phase: "step", iteration: 5 } }];
  const first = await train(schedule), second = await train(schedule);
  assert.ok(first.history.length > ITERATIONS);
  assert.deepEqual(second.history, first.history);
});

Deno.test("in one thread on a virtual clock, a failure during a recovery restarts it, and training still resumes bit for bit", async () => {
  const failureFree = await train();
  const failed = await train([
    { iteration: 6, ranks: [1], kind: "hardware", point: { phase: "step", iteration: 6 } },
    // Machine 0, which holds machine 1's replica, fails while fetching in the recovery: group 0 is lost.
    { iteration: 6, ranks: [0], kind: "hardware", point: { phase: "recovery" } },
  ]);
  const stops = failed.history.filter((line) => line.endsWith(" stop"));
  assert.ok(stops.length >= 2, `the first attempt was abandoned: ${stops.join("; ")}`);
  const recovered = recoveries(failed);
  assert.equal(recovered.length, 1);
  assert.match(recovered[0], / recovered to 4 \(\d+ lost\) from persistent, persistent, local, local$/);
  assert.equal(detections(failed), 2, "one recovery from both failures");
  assertExactResume(failed, failureFree);
});

Deno.test("in one thread on a virtual clock, a replica corrupted in its peer's memory is passed over for an older copy", async () => {
  const failureFree = await train();
  // Machine 0 holds machine 1's replicas (group placement): its newest is corrupted, then machine 1 fails.
  const failed = await train([{ iteration: 8, ranks: [0], kind: "corrupt" }]);
  const recovered = recoveries(failed);
  assert.equal(recovered.length, 1);
  assert.equal(detections(failed), 1);
  assert.match(
    recovered[0],
    / from local, peer 0, local, local; passed over: machine 1 from peer 0: machine 0 holds no valid checkpoint \d+/,
  );
  assertExactResume(failed, failureFree);
});

Deno.test("in one thread on a virtual clock, the root agent lost, between iterations or mid-step: a new root takes over from the health store, bit for bit", async () => {
  const failureFree = await train();
  const failed = await train([
    { iteration: 5, ranks: [], kind: "root" },
    { iteration: 9, ranks: [], kind: "root", point: { phase: "step", iteration: 9 } },
    // The new root still detects and recovers a machine's failure.
    { iteration: 12, ranks: [2], kind: "hardware", point: { phase: "step", iteration: 12 } },
  ]);
  const takeovers = failed.history.filter((line) => line.includes("a new root takes over"));
  assert.equal(takeovers.length, 2, failed.history.join("\n"));
  const recovered = recoveries(failed);
  assert.equal(recovered.length, 3, recovered.join("\n"));
  // Between iterations nothing is lost; mid-step, the step the lost root began is done again.
  assert.match(recovered[0], / recovered to 4 \(0 lost\) from local, local, local, local$/);
  assert.match(recovered[1], / recovered to 8 \(0 lost\) from local, local, local, local$/);
  assert.match(recovered[2], / recovered to 11 \(0 lost\) from local, local, peer 3, local$/);
  assertExactResume(failed, failureFree);
});
