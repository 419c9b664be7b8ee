// The real root and worker agents in one thread, on a virtual clock, with a deterministic stand-in for the
// GPU's arithmetic (agents/sim/in-process.ts): every byte still crosses the real switch into real stores.
// Failures of every kind are recovered, and training continues bit for bit as the failure-free run; the
// same run twice is the same run, event for event.

import assert from "node:assert/strict";
import { RootAgent } from "../agents/root-agent.ts";
import type { RootEvent } from "../agents/protocol/root.ts";
import { type ClusterSettings, defaultClusterSettings } from "../agents/protocol/spec.ts";
import { InProcessCluster } from "../agents/sim/in-process.ts";

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

interface Run {
  events: string[];
  losses: number[];
  state: { params: Float32Array; m: Float32Array; v: Float32Array };
}

/** Trains ITERATIONS iterations; `failures` strike on the way (by iteration, before it begins). */
async function train(failures: Map<number, (cluster: InProcessCluster) => void> = new Map()): Promise<Run> {
  const cluster = new InProcessCluster(settings());
  const { clock } = cluster;
  const root = await clock.until(RootAgent.start(cluster, { heartbeatTimeoutMs: 200, persistent: cluster.persistent }));
  const events: string[] = [], losses: number[] = [];
  root.onEvent((event: RootEvent) => {
    if (event.type === "iteration") losses[event.iteration] = event.loss;
    const { type } = event;
    const detail = event.type === "recovery"
      ? `${event.iteration} ${event.machines.map((m) => m.source.from).join(",")} ${event.detections.length}` +
        (event.skipped.length ? ` passed over ${event.skipped.length}` : "")
      : event.type === "iteration"
      ? `${event.iteration} ${event.loss}`
      : event.type === "failure"
      ? `${event.detection.rank}`
      : `${event.epoch} ${event.phase}`;
    events.push(`${clock.now()} ${type} ${detail}`);
  });
  try {
    while (root.iteration < ITERATIONS) {
      failures.get(root.iteration + 1)?.(cluster);
      failures.delete(root.iteration + 1);
      await clock.until(root.advance());
    }
    return { events, losses, state: await clock.until(root.state()) };
  } finally {
    await root.close();
  }
}

function assertSameState(actual: Run["state"], expected: Run["state"]) {
  for (const name of ["params", "m", "v"] as const) {
    assert.ok(actual[name].every((value, i) => Object.is(value, expected[name][i])), `the final ${name} differ`);
  }
}

Deno.test("in one thread on a virtual clock, the real agents recover every kind of failure and resume bit for bit", async () => {
  const failureFree = await train();
  assert.equal(failureFree.losses.length, ITERATIONS + 1);
  const failed = await train(
    new Map([
      [4, (cluster) => cluster.inject([1], "hardware", { phase: "step", iteration: 4 })],
      [7, (cluster) => cluster.inject([2], "software", { phase: "checkpoint", iteration: 7 })],
      [10, (cluster) => cluster.inject([3], "hardware", { phase: "replication", iteration: 10 })],
      [13, (cluster) => cluster.inject([0, 1], "hardware")], // a whole group, between iterations
    ]),
  );
  const recoveries = failed.events.filter((event) => event.includes(" recovery "));
  assert.equal(recoveries.length, 4, recoveries.join("\n"));
  assert.match(recoveries[0], / recovery 3 local,peer,local,local 1$/, "machine 1 from its group peer");
  assert.match(recoveries[3], /persistent,persistent,local,local 2$/, "the lost group from the persistent store");
  assert.deepEqual(failed.losses, failureFree.losses);
  assertSameState(failed.state, failureFree.state);
});

Deno.test("in one thread on a virtual clock, the same run twice is the same run, event for event", async () => {
  const schedule = () =>
    new Map([[5, (cluster: InProcessCluster) => cluster.inject([2], "hardware", { phase: "step", iteration: 5 })]]);
  const first = await train(schedule()), second = await train(schedule());
  assert.ok(first.events.length > ITERATIONS);
  assert.deepEqual(second.events, first.events);
});

Deno.test("in one thread on a virtual clock, a failure during a recovery restarts it, and training still resumes bit for bit", async () => {
  const failureFree = await train();
  const failed = await train(
    new Map([[6, (cluster) => {
      cluster.inject([1], "hardware", { phase: "step", iteration: 6 });
      // Machine 0, which holds machine 1's replica, fails while fetching in the recovery: group 0 is lost.
      cluster.inject([0], "hardware", { phase: "recovery" });
    }]]),
  );
  const stops = failed.events.filter((event) => event.endsWith(" stop"));
  assert.ok(stops.length >= 2, `the first attempt was abandoned: ${stops.join("; ")}`);
  const recoveries = failed.events.filter((event) => event.includes(" recovery "));
  assert.equal(recoveries.length, 1);
  assert.match(recoveries[0], / recovery 4 persistent,persistent,local,local 2$/);
  assert.deepEqual(failed.losses, failureFree.losses);
  assertSameState(failed.state, failureFree.state);
});

Deno.test("in one thread on a virtual clock, a replica corrupted in its peer's memory is passed over for an older copy", async () => {
  const failureFree = await train();
  let corrupted: number | null = null;
  const failed = await train(
    new Map([[8, (cluster) => {
      corrupted = cluster.corrupt(0); // machine 0 holds machine 1's replicas (group placement)
      cluster.inject([1], "hardware");
    }]]),
  );
  assert.equal(corrupted, 1);
  const recoveries = failed.events.filter((event) => event.includes(" recovery "));
  assert.equal(recoveries.length, 1);
  // Machine 1's newest replica is passed over: the recovery takes an older one its peer still holds.
  assert.match(recoveries[0], / recovery \d+ local,peer,local,local 1 passed over 1$/);
  assert.deepEqual(failed.losses, failureFree.losses);
  assertSameState(failed.state, failureFree.state);
});
