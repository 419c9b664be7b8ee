// The cluster as OS processes on a real etcd that the test starts (agents/process/): four machine processes
// and a spare, two root processes, the tiny model. Each test strikes the cluster when the root has saved a
// given iteration in etcd (a watch, not a sleep), lets the run finish, and compares every loss and the final
// state, bit for bit, with the in-process cluster trained without failures. Every process is ours, stopped
// by its PID at the end.

import assert from "node:assert/strict";
import { type ClusterState, ClusterStateStore } from "../agents/etcd/state.ts";
import { ControlConnection, controlCredentials } from "../agents/process/control.ts";
import { ProcessCluster } from "../agents/process/launcher.ts";
import type { LaunchRequest } from "../agents/process/machine.ts";
import { processClusterSettings } from "../agents/process/options.ts";
import { sameState } from "../core/trainer.ts";
import {
  parseAddress,
  PROCESSES,
  type ProcessRecord,
  RECOVERIES,
  type RecoveryRecord,
  waitFor,
} from "../agents/process/registry.ts";
import { clusterPrefix } from "../agents/etcd/client.ts";
import type { TrainingState } from "../agents/process/root.ts";
import { runCluster } from "../agents/sim/run.ts";

const VERBOSE = Deno.env.get("GEMINI_TEST_VERBOSE") === "1";
const MACHINES = 4, SPARES = 1, ITERATIONS = 7, SEED = 3, STRIKE_AT = 3, HEARTBEAT_TIMEOUT_MS = 2000;

/** The failure-free in-process run (Workers in this process), trained once for every test. */
let reference: Promise<{ losses: number[]; state: TrainingState }> | null = null;
function failureFree() {
  reference ??= runCluster({
    adjust: (settings) =>
      Object.assign(settings, {
        ...processClusterSettings(MACHINES, SEED, ""),
        persistent: settings.persistent,
      }),
    heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
    keepState: true,
  }, ({ root }) => root.runUntil(ITERATIONS)).then((run) => ({
    losses: run.iterations.map((report) => report.loss),
    state: run.state!,
  }));
  return reference;
}

/** Which process runs each rank, as the cluster's state in etcd has it. */
const ranksOf = (state: ClusterState) =>
  Object.fromEntries([...state.members].map(([id, member]) => [member.rank, id]));

/** Every shard's newest complete iteration is the last one. */
const allShardsAtEnd = (state: ClusterState) =>
  assert.deepEqual([...state.shards].sort(([a], [b]) => a - b), [0, 1, 2, 3].map((rank) => [rank, ITERATIONS]));

/** A test not ended in this long has hung (a watch lost, say): it fails with the processes' lines instead. */
const HUNG_MS = 240_000;

function unlessHung<T>(work: Promise<T>): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const hung = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no end after ${HUNG_MS / 1000} s: the test hung`)), HUNG_MS);
  });
  return Promise.race([work, hung]).finally(() => clearTimeout(timer));
}

/** Runs a cluster of processes, strikes it once the root has saved iteration STRIKE_AT, and checks the end. */
async function strike(
  story: (cluster: ProcessCluster, log: string[], line: (match: RegExp) => Promise<RegExpExecArray>) => Promise<void>,
  electionTtlSeconds = 2,
): Promise<{ recoveries: RecoveryRecord[]; log: string[]; done: Record<string, unknown>; state: ClusterState }> {
  const log: string[] = [];
  /** Lines awaited by the story: each resolves at the first line it matches, from the start of the run. */
  const awaited: { match: RegExp; seen: (found: RegExpExecArray) => void }[] = [];
  const line = (match: RegExp) =>
    new Promise<RegExpExecArray>((seen) => {
      const found = log.map((text) => match.exec(text)).find((found) => found);
      found ? seen(found) : awaited.push({ match, seen });
    });
  const cluster = await ProcessCluster.start({
    electionTtlSeconds,
    machines: MACHINES,
    spares: SPARES,
    iterations: ITERATIONS,
    seed: SEED,
    heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
    // GEMINI_TEST_VERBOSE=1 shows the processes' lines as they come, not only when a test fails.
    log: (text) => {
      log.push(text);
      if (VERBOSE) console.error(text);
      for (const waiter of [...awaited]) {
        const found = waiter.match.exec(text);
        if (!found) continue;
        awaited.splice(awaited.indexOf(waiter), 1);
        waiter.seen(found);
      }
    },
  });
  try {
    const run = await unlessHung((async () => {
      await waitFor(
        cluster.health,
        "root/state",
        (_, value) => (value as { iteration: number }).iteration >= STRIKE_AT,
      );
      await story(cluster, log, line);
      return await cluster.finished();
    })());
    const expected = await failureFree();
    assert.deepEqual(run.losses, expected.losses, "every loss as in the in-process run without failures");
    assert.ok(sameState(run.state, expected.state), "the final parameters and AdamW moments, bit for bit");
    const recoveries = [...await cluster.health.get(RECOVERIES)].map(([, value]) => value as RecoveryRecord);
    const done = (await cluster.health.get("done")).get("done") as Record<string, unknown>;
    const state = await (await ClusterStateStore.open(cluster.client, cluster.cluster)).read();
    return { recoveries, log, done, state };
  } catch (error) {
    console.error(log.join("\n"));
    throw error;
  } finally {
    await cluster.close();
  }
}

const test = (name: string, fn: () => Promise<void>) =>
  // A closed client's watches and keep-alives wind down after the test's end: the sanitizers would count them.
  Deno.test({ name, sanitizeOps: false, sanitizeResources: false, fn });

test("kill -9 of a machine process: the spare takes its rank and fetches the shard from the peer's memory", async () => {
  let killed = "", respared = "";
  const { recoveries, state, log } = await strike(async (cluster) => {
    // First the spare's lease is ended, as etcd ends one for a process stalled past it: a spare registers again.
    const processes = await cluster.client.get(`${clusterPrefix(cluster.cluster)}health/${PROCESSES}`, {
      prefix: true,
    });
    const spare = processes.find((kv) => JSON.parse(kv.value).rank === null)!;
    const { control } = JSON.parse(spare.value) as ProcessRecord;
    await cluster.client.leaseRevoke(spare.lease!);
    await waitFor(cluster.health, PROCESSES + control); // its key went with the lease: this is its new one
    respared = control;
    const holder = await cluster.holderOf(2);
    killed = holder.id!;
    Deno.kill(holder.pid, "SIGKILL");
    await holder.status;
    // The spare now runs rank 2.
    const [, record] = await waitFor(cluster.health, PROCESSES, (_, value) => {
      const process = value as { rank: number | null; control: string };
      return process.rank === 2 && process.control !== killed;
    });
    assert.notEqual((record as { control: string }).control, killed);
  });
  assert.ok(log.some((line) => line.includes(`${respared}: its lease as a spare ran out`)));
  assert.equal(recoveries.length, 1);
  assert.deepEqual(recoveries[0].ranks, [2]);
  assert.deepEqual(recoveries[0].sources, ["local", "local", "peer 3", "local"]);
  // The cluster's state in etcd, as its one root kept it: rank 2 is run by the spare, and no recovery is left.
  assert.equal(state.epoch, 1);
  assert.deepEqual(Object.keys(ranksOf(state)), ["0", "1", "2", "3"]);
  assert.ok(ranksOf(state)[2] === respared && !state.members.has(killed), "the spare that registered again");
  assert.equal(state.recovery, null);
  allShardsAtEnd(state);
});

test("a trainer Worker ended: its process restarts it, restoring from its own memory", async () => {
  let pid = 0;
  const { recoveries, log } = await strike(async (cluster) => {
    const holder = await cluster.holderOf(1);
    pid = holder.pid;
    Deno.kill(holder.pid, "SIGUSR1");
    await waitFor(cluster.health, RECOVERIES);
    assert.equal((await cluster.holderOf(1)).pid, pid, "the same process runs rank 1 again");
  });
  assert.equal(recoveries.length, 1);
  assert.deepEqual(recoveries[0].ranks, [1]);
  assert.deepEqual(recoveries[0].sources, ["local", "local", "local", "local"]);
  assert.ok(log.some((line) => line.includes(`${pid}]`) && line.includes("its trainer was ended")));
});

test("kill -9 of the root: the standby takes over from etcd and training continues", async () => {
  let killed = "";
  const { done, recoveries, state } = await strike(async (cluster) => {
    const leader = await cluster.leader();
    killed = leader.name;
    Deno.kill(leader.pid, "SIGKILL");
    await leader.status;
  });
  assert.notEqual(done.root, killed, "the standby finished the run");
  // Its first advance rolled every machine back to the newest checkpoint complete, each from its own memory.
  const rollBack = recoveries.find((recovery) => recovery.root === done.root);
  assert.deepEqual(rollBack?.sources, ["local", "local", "local", "local"]);
  // Each root moved the epoch on when it was elected, fencing the one before; the second kept the state.
  assert.equal(state.epoch, 2);
  assert.deepEqual(Object.keys(ranksOf(state)), ["0", "1", "2", "3"]);
  allShardsAtEnd(state);
});

test(
  "a machine stopped past its lease (SIGSTOP) is fenced; let go (SIGCONT), it leaves and nothing it sends is used",
  async () => {
    const { recoveries } = await strike(async (cluster, log) => {
      const holder = await cluster.holderOf(3);
      Deno.kill(holder.pid, "SIGSTOP");
      // The root gives the rank to the spare; only then does the stopped one go on.
      await waitFor(cluster.health, RECOVERIES);
      Deno.kill(holder.pid, "SIGCONT");
      assert.equal((await holder.status).code, 0);
      assert.ok(log.some((line) => line.includes(`${holder.pid}]`) && /leaves: .*fenced/.test(line)));
    });
    assert.equal(recoveries.length, 1);
    assert.deepEqual(recoveries[0].ranks, [3]);
    assert.deepEqual(recoveries[0].sources, ["local", "local", "local", "peer 2"]);
  },
);

test(
  "a control connection without the cluster's secret is refused, and so is a launch from an older epoch; the machine goes on",
  async () => {
    await strike(async (cluster) => {
      const holder = await cluster.holderOf(0), address = parseAddress(holder.id!, "its address");
      const wrong = await controlCredentials(cluster.cluster, "not the cluster's secret at all", 1);
      await assert.rejects(ControlConnection.dial(address, wrong), /secret/);
      // A root that knows the secret but was superseded: etcd refuses the machine's write of the rank, so the
      // machine starts nothing for it.
      const right = await controlCredentials(cluster.cluster, await Deno.readTextFile(cluster.secretFile), 1);
      const stale = await ControlConnection.dial(address, right);
      try {
        const launch: LaunchRequest = { rank: 0, incarnation: 9, epoch: 9, fencing: 0, replicaPeers: [], peers: [] };
        await assert.rejects(stale.request("launch", { ...launch }), /fenced: this write is from epoch 0/);
      } finally {
        stale.close();
      }
    });
  },
);

test("a root stopped past its lease (SIGSTOP) is superseded; let go (SIGCONT), it stops and the run goes on", async () => {
  let stopped = "";
  const { done } = await strike(async (cluster, log) => {
    const leader = await cluster.leader();
    stopped = leader.name;
    Deno.kill(leader.pid, "SIGSTOP");
    // The standby leads once it has rolled the machines back, in an epoch the stopped root knows nothing of.
    await waitFor(cluster.health, RECOVERIES, (_, value) => (value as RecoveryRecord).root !== stopped);
    Deno.kill(leader.pid, "SIGCONT");
    assert.equal((await leader.status).code, 1);
    // Its first step was refused by the machines, and etcd's epoch says why.
    assert.ok(log.some((line) => line.includes(`[${stopped} `) && /fenced: this write is from epoch 1/.test(line)));
  });
  assert.notEqual(done.root, stopped);
});

test(
  "a machine cut off by its lease while the new root starts it again, in the rollback after a takeover: a spare takes its rank",
  async () => {
    let stopped = "", cutOff = "", rank = -1;
    const { done, state } = await strike(async (cluster, _log, line) => {
      const leader = await cluster.leader();
      stopped = leader.name;
      // The standby, elected once the stopped root's election lease runs out, adopts each machine whose
      // registration (a lease the stopped root kept alive) it finds, and starts the others again. Rank 2's is
      // ended at once, long before the election, so that at least rank 2 is started again; the first machine
      // started again is cut off.
      const startedAgain = line(/machine (\S+) \(rank (\d+)\): rank \d+ is started again here/);
      Deno.kill(leader.pid, "SIGSTOP");
      const registration = (await cluster.health.get("machines/2")).get("machines/2") as { lease: number };
      await cluster.health.revoke(registration.lease);
      const found = await startedAgain;
      [cutOff, rank] = [found[1], Number(found[2])];
      // Its process lease ends then, as etcd ends one of a process stalled past it: the process leaves.
      const [record] = await cluster.client.get(`${clusterPrefix(cluster.cluster)}health/${PROCESSES}${cutOff}`);
      await cluster.client.leaseRevoke(record.lease!);
      const child = cluster.machines.find((machine) => machine.id === cutOff)!;
      assert.equal((await child.status).code, 0);
      await waitFor(cluster.health, RECOVERIES, (_, value) => (value as RecoveryRecord).root !== stopped);
      Deno.kill(leader.pid, "SIGCONT");
      await leader.status;
    });
    assert.notEqual(done.root, stopped, "the standby finished the run");
    assert.ok(ranksOf(state)[rank] !== cutOff && !state.members.has(cutOff), `rank ${rank} runs on the spare`);
    allShardsAtEnd(state);
  },
);

test("etcd stopped for a few seconds and restarted: the cluster waits and continues", async () => {
  let leader = "";
  const { done, recoveries } = await strike(async (cluster) => {
    leader = (await cluster.leader()).name;
    await cluster.local!.stop();
    // The outage's length is what is tested, not a wait for something to happen.
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await cluster.local!.restart();
  }, 5); // the leader's lease outlives the outage and etcd's restart (a leadership is given up after 2 TTLs without a keep-alive)
  assert.equal(done.root, leader, "the same root led throughout");
  assert.deepEqual(recoveries, [], "nothing was taken for a failure");
});
