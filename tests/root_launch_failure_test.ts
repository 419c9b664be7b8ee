// A failed rank's start that fails in its turn, in the rollback of a root that took over from a lost one
// (issue #16: once under heavy load, a machine process's own lease ran out while the new root was launching
// it; the launch failed, the new root gave the run up, and with the old root stopped nobody led). The real
// root and worker agents in one thread on a virtual clock (agents/sim/in-process.ts), with a health store
// that outlives the root, as etcd does; each run is checked bit for bit against the run without failures.

import assert from "node:assert/strict";
import { InMemoryHealthStore } from "../agents/protocol/health.ts";
import type { RecoveryReport } from "../agents/protocol/root.ts";
import { describeSource, type Heartbeat, type Machine, type Machines } from "../agents/protocol/spec.ts";
import { RootAgent, type RootSettings } from "../agents/root-agent.ts";
import { chaosSettings, trainInProcess } from "../agents/sim/chaos.ts";
import { InProcessCluster } from "../agents/sim/in-process.ts";
import { sameState } from "../core/trainer.ts";

const ITERATIONS = 8, LOST_AT = 4, LEASE_MS = 200;
const settings = () => chaosSettings({ seed: 5, machines: 4, failures: 0, placement: "group", replicas: 2 });

/**
 * The in-process cluster, where the next launches of a rank can be made to end as a machine process's does
 * when its own lease runs out while it is being launched: the process leaves (its memory with it), and the
 * root's launch request fails with the lost connection.
 */
class LeavingWhileLaunched implements Machines {
  readonly cluster: InProcessCluster;
  /** How many of each rank's next launches fail. */
  readonly leaving = new Map<number, number>();

  constructor(cluster: InProcessCluster) {
    this.cluster = cluster;
  }

  get settings() {
    return this.cluster.settings;
  }

  get clock() {
    return this.cluster.clock;
  }

  async launch(rank: number, epoch: number, peers: number[], onHeartbeat: (heartbeat: Heartbeat) => void) {
    const machine = await this.cluster.launch(rank, epoch, peers, onHeartbeat);
    const leaving = this.leaving.get(rank) ?? 0;
    if (!leaving) return machine;
    this.leaving.set(rank, leaving - 1);
    this.cluster.inject([rank], "hardware");
    throw new Error(`control link to machine ${rank}: closed`);
  }

  adopt(rank: number, incarnation: number, onHeartbeat: (heartbeat: Heartbeat) => void): Promise<Machine | null> {
    return this.cluster.adopt(rank, incarnation, onHeartbeat);
  }

  fence(rank: number) {
    this.cluster.fence(rank);
  }

  shutdown() {
    return this.cluster.shutdown();
  }
}

/**
 * Trains to LOST_AT, loses the root, and lets a new one take over once every machine's lease has run out (as
 * in the process cluster, where only the root renews them and the standby is elected a lease later). `story`
 * then drives the new root; the run must end as the failure-free one did.
 */
async function takenOver(story: (root: RootAgent, machines: LeavingWhileLaunched) => Promise<void>) {
  const failureFree = await trainInProcess(settings(), ITERATIONS, []);
  const machines = new LeavingWhileLaunched(new InProcessCluster(settings())), { clock } = machines;
  const health = new InMemoryHealthStore(clock);
  const rootSettings: RootSettings & { health: InMemoryHealthStore } = {
    heartbeatTimeoutMs: LEASE_MS,
    persistent: machines.cluster.persistent,
    health,
  };
  const losses = new Map<number, number>();
  const record = (root: RootAgent) =>
    root.onEvent((event) => event.type === "iteration" && losses.set(event.iteration, event.loss));
  const lost = await clock.until(RootAgent.start(machines, rootSettings));
  record(lost);
  await clock.until(lost.runUntil(LOST_AT));
  lost.lose();
  clock.advance(2 * LEASE_MS);
  assert.equal((await health.get("machines/")).size, 0, "every machine's lease has run out");
  const root = await clock.until(RootAgent.takeOver(machines, rootSettings));
  record(root);
  try {
    await story(root, machines);
    await clock.until(root.runUntil(ITERATIONS));
    assert.deepEqual(losses, failureFree.losses, "every loss as in the run without failures");
    assert.ok(sameState(await clock.until(root.state()), failureFree.state!), "the final state, bit for bit");
  } finally {
    await root.close();
  }
}

const sources = (report: RecoveryReport) => report.machines.map(({ source }) => describeSource(source));

Deno.test("a machine that leaves while a new root launches it in its rollback: started again on another, and the run goes on", async () => {
  await takenOver(async (root, machines) => {
    const { clock } = machines;
    machines.leaving.set(2, 1);
    const epoch = root.epoch;
    const report = await clock.until(root.advance());
    assert.equal(report.type, "recovery");
    if (report.type !== "recovery") return;
    assert.deepEqual(report.failedStarts.map((failed) => [failed.rank, failed.error]), [
      [2, "control link to machine 2: closed"],
    ]);
    assert.equal(report.epoch, epoch + 2, "the attempt whose start failed was followed by a new one");
    assert.deepEqual(report.detections.map((d) => d.rank), [0, 1, 2, 3], "every lease had run out");
    assert.deepEqual([report.iteration, report.lostIterations], [LOST_AT, 0]);
    // The machine that left took its memory: its shard comes from its group peer.
    assert.deepEqual(sources(report), ["local", "local", "peer 3", "local"]);
  });
});

Deno.test("a rank that cannot be started ends the advance with one clear error; the next advance, once it can, recovers", async () => {
  await takenOver(async (root, machines) => {
    const { clock } = machines;
    machines.leaving.set(2, 3);
    await assert.rejects(
      clock.until(root.advance()),
      /^Error: machine 2 could not be started \(3 tries\): control link to machine 2: closed$/,
    );
    const report = await clock.until(root.advance());
    assert.equal(report.type, "recovery");
    if (report.type !== "recovery") return;
    assert.deepEqual(report.failedStarts, [], "a new advance counts its own");
    assert.deepEqual(sources(report), ["local", "local", "peer 3", "local"]);
  });
});
