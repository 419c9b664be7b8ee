// The root agent on etcd: the simulated cluster (Worker machines on the GPU) with its health store in a real
// etcd that this test starts. A machine's hardware fails; the root hears of it only because the machine's
// lease ran out in etcd and etcd's watch deleted its key; the replacement fetches the shard from its peer, and
// training goes on exactly as the same seeded run without failures, on the in-memory store.

import assert from "node:assert/strict";
import { Etcd } from "../agents/etcd/client.ts";
import { EtcdHealthStore } from "../agents/etcd/health.ts";
import { LocalEtcd } from "../agents/etcd/local.ts";
import { describeSource } from "../agents/protocol/spec.ts";
import { type ClusterRun, runCluster, type RunOptions } from "../agents/sim/run.ts";

const ITERATIONS = 6;

const train = (options: Partial<RunOptions>, failure: boolean): Promise<ClusterRun> =>
  runCluster({
    // Naive replication, so the checkpoint before the failed step has reached the peer however busy we are.
    adjust: (settings) => settings.checkpoint.replication.policy = "naive",
    heartbeatTimeoutMs: 1000,
    keepState: true,
    ...options,
  }, async ({ root, cluster }) => {
    if (failure) await cluster.inject([2], "hardware", { phase: "step", iteration: 4 });
    await root.runUntil(ITERATIONS);
  });

const losses = (run: ClusterRun) => run.iterations.map((report) => report.loss);

Deno.test({
  name:
    "the root agent on etcd's leases: a machine's lease runs out in etcd, it is replaced, and training resumes exactly",
  // A closed client's watches and keep-alives wind down after the test's end: the sanitizers would count them.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const etcd = await LocalEtcd.start({ name: "etcd-cluster" });
    const client = new Etcd({ endpoints: [etcd.clientUrl] });
    const health = new EtcdHealthStore(client, "cluster");
    const seen: string[] = [];
    const unwatch = health.watch("machines/", (event) => seen.push(`${event.type} ${event.key}`));
    try {
      await health.watching();
      const run = await train({ health }, true);
      assert.deepEqual(
        seen.filter((event) => event.endsWith("machines/2")),
        ["put machines/2", "delete machines/2", "put machines/2"],
        "machine 2 registered, its lease expired in etcd, and its replacement registered",
      );
      const [recovery] = run.recoveries;
      assert.equal(run.recoveries.length, 1);
      assert.deepEqual(recovery.failures.map((f) => [f.rank, f.kind]), [[2, "hardware"]]);
      assert.deepEqual(recovery.machines.map((m) => describeSource(m.source)), ["local", "local", "peer 3", "local"]);

      const reference = await train({}, false);
      assert.equal(run.iterations.length, ITERATIONS + 1);
      assert.deepEqual(losses(run), losses(reference), "every loss as in the run without failures");
      assert.deepEqual(run.state, reference.state, "the final parameters and AdamW moments, bit for bit");
    } finally {
      unwatch();
      await health.close();
      client.close();
      await etcd.close();
    }
  },
});
