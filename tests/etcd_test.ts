// The etcd layer against a real etcd that this test starts (Debian's etcd-server, installed as root on
// Debian when missing; elsewhere the test fails with the command to run): the health store's leases and
// watches, fenced writes of the cluster state, root election and failover, and an etcd stopped and
// started again. Waits are on events, each bounded; nothing sleeps in the hope that something happened.

import assert from "node:assert/strict";
import { Etcd, EtcdUnavailableError } from "../agents/etcd/client.ts";
import { RootElection } from "../agents/etcd/election.ts";
import { EtcdHealthStore, leaseSeconds } from "../agents/etcd/health.ts";
import { ensureEtcd, LocalEtcd } from "../agents/etcd/local.ts";
import { ClusterStateStore, FencedError, type StateChange } from "../agents/etcd/state.ts";
import type { HealthEvent } from "../agents/protocol/health.ts";

/** Generous bounds: etcd and this test share two busy cores with others. */
const BOUND_MS = 60_000;

/** `work`, or a clear failure if it has not settled within `ms`. */
async function within<T>(work: Promise<T>, what: string, ms = BOUND_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const bound = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, bound]);
  } finally {
    clearTimeout(timer);
  }
}

/** Events seen by a watch, and a way to wait for the one that matches. */
function recorder() {
  const events: string[] = [], waiters: { match: string; resolve: () => void }[] = [];
  return {
    events,
    listener: (event: HealthEvent) => {
      events.push(`${event.type} ${event.key}${event.value === undefined ? "" : ` ${JSON.stringify(event.value)}`}`);
      for (const waiter of waiters.splice(0)) {
        if (events.includes(waiter.match)) waiter.resolve();
        else waiters.push(waiter);
      }
    },
    seen: (match: string) =>
      within(
        new Promise<void>((resolve) => events.includes(match) ? resolve() : waiters.push({ match, resolve })),
        `the watch seeing "${match}" (seen: ${events.join(", ")})`,
      ),
  };
}

const pause = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

/** The candidates' keys in `cluster`'s root election, with their values and leases. */
async function candidates(admin: Etcd, cluster: string) {
  return await admin.get(`gemini/${cluster}/election/root/`, { prefix: true });
}

type Candidates = Awaited<ReturnType<typeof candidates>>;

/** Waits (a bounded number of looks) until `cluster`'s candidates are as `wanted` says. */
async function candidatesUntil(admin: Etcd, cluster: string, wanted: (kvs: Candidates) => boolean, what: string) {
  for (let look = 0; !wanted(await candidates(admin, cluster)); look++) {
    assert.ok(look < 600, what);
    await pause(50);
  }
}

Deno.test("etcd options: bad endpoints and half-given credentials get one clear error each", () => {
  const bad: [object, RegExp][] = [
    [{ endpoints: [] }, /at least one endpoint/],
    [{ endpoints: ["127.0.0.1:2379"] }, /should be http:\/\/host:port/],
    [{ endpoints: ["ftp://127.0.0.1:2379"] }, /should be http:\/\/host:port/],
    [{ endpoints: ["http://127.0.0.1:2379"], certFile: "c.pem" }, /needs its key/],
    [{ endpoints: ["http://127.0.0.1:2379"], certFile: "c.pem", keyFile: "k.pem" }, /CA file/],
    [{ endpoints: ["http://127.0.0.1:2379"], user: "root" }, /needs a password/],
    [{ endpoints: ["https://localhost:2379"], caFile: "/nonexistent/ca.pem" }, /cannot read the etcd CA file/],
    [{ endpoints: ["http://127.0.0.1:2379", "https://localhost:2379"] }, /all http:\/\/ or all https:\/\//],
    [{ endpoints: ["http://127.0.0.1:2379"], unavailableMs: -1 }, /positive number/],
  ];
  for (const [options, error] of bad) assert.throws(() => new Etcd(options as never), error);
  assert.equal(leaseSeconds(1), 1);
  assert.equal(leaseSeconds(1000), 1);
  assert.equal(leaseSeconds(1001), 2);
});

Deno.test("an ETCD_PATH that names no file is one clear error, not a search elsewhere", async () => {
  const before = Deno.env.get("ETCD_PATH");
  Deno.env.set("ETCD_PATH", "/nonexistent/etcd");
  try {
    await assert.rejects(() => ensureEtcd(), /ETCD_PATH is set to "\/nonexistent\/etcd", which is not a file/);
  } finally {
    if (before === undefined) Deno.env.delete("ETCD_PATH");
    else Deno.env.set("ETCD_PATH", before);
  }
});

Deno.test({
  name: "etcd: health leases and watches, fenced state, root failover, and an etcd restart",
  // A closed client's watches and keep-alives wind down after the test's end: the sanitizers would count them.
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const etcd = await LocalEtcd.start({ name: "etcd-test" });
    const clients: Etcd[] = [];
    const connect = (unavailableMs?: number) => {
      const client = new Etcd({ endpoints: [etcd.clientUrl], unavailableMs });
      clients.push(client);
      return client;
    };
    try {
      await t.step(
        "a lease left alone expires and deletes its key, which a watch sees; one kept alive stays",
        async () => {
          const store = new EtcdHealthStore(connect(), "health");
          const seen = recorder();
          store.watch("machines/", seen.listener);
          await within(store.watching(), "the watch starting");
          const kept = await store.grant(1500), left = await store.grant(1500);
          const ttlMs = store.grantedTtlMs(left)!;
          assert.ok(ttlMs >= 2000 && ttlMs % 1000 === 0, `etcd grants whole seconds, at least 2: ${ttlMs} ms`);
          // The lease's number goes in a value and comes back exact, as the root agent keeps it.
          await store.put("machines/0", { incarnation: 0, lease: kept }, kept);
          await store.put("machines/1", { incarnation: 3 }, left);
          await store.put("other/x", 1);
          assert.deepEqual(
            await store.get("machines/"),
            new Map<string, unknown>([
              ["machines/0", { incarnation: 0, lease: kept }],
              ["machines/1", { incarnation: 3 }],
            ]),
          );
          // Heartbeats for `kept` until `left` has expired.
          let expired = false;
          const expiry = seen.seen("delete machines/1").then(() => expired = true);
          while (!expired) {
            assert.equal(await store.keepAlive(kept), true);
            await Promise.race([expiry, pause(250)]);
          }
          // Another process's store (a root taking over, say) keeps it alive by its number, for longer
          // than a lease lives, and then revokes it.
          const other = new EtcdHealthStore(connect(), "health");
          for (let beat = 0; beat < (2 * ttlMs) / 250; beat++) {
            assert.equal(await other.keepAlive(kept), true);
            await pause(250);
          }
          assert.deepEqual([...(await store.get("machines/")).keys()], ["machines/0"], "the kept lease's key stays");
          assert.equal(await store.keepAlive(left), false, "an expired lease cannot be renewed");
          await assert.rejects(() => store.put("machines/2", 0, left), /lease \d+ has expired/);
          await other.revoke(kept);
          await seen.seen("delete machines/0");
          assert.deepEqual(seen.events, [
            `put machines/0 {"incarnation":0,"lease":${kept}}`,
            'put machines/1 {"incarnation":3}',
            "delete machines/1",
            "delete machines/0",
          ]);
          assert.equal((await store.get("machines/")).size, 0);
          assert.deepEqual(await store.get("other/"), new Map([["other/x", 1]]));
          await other.revoke(kept); // revoking a lease already gone is no error
          await store.close();
        },
      );

      await t.step("a write from an older epoch is refused by etcd, and so is a second advance from it", async () => {
        const root = await ClusterStateStore.open(connect(), "fencing");
        const other = await ClusterStateStore.open(connect(), "fencing");
        assert.equal(await root.epoch(), 0, "a new cluster starts at epoch 0");
        await root.write(0, [
          { kind: "member", id: "m-a", member: { address: "127.0.0.1:7001", rank: 0, incarnation: 0 } },
          { kind: "shard", rank: 0, iteration: 4 },
        ]);
        assert.equal(await other.advanceEpoch(0), 1);
        const refused = await root.write(0, [{ kind: "shard", rank: 0, iteration: 5 }]).catch((error) => error);
        assert.ok(refused instanceof FencedError, `expected a FencedError, got ${refused}`);
        assert.equal(refused.writerEpoch, 0);
        assert.equal(refused.currentEpoch, 1);
        await assert.rejects(() => root.advanceEpoch(0), FencedError);
        const state = await other.read();
        assert.equal(state.epoch, 1);
        assert.deepEqual(state.shards, new Map([[0, 4]]), "the fenced write changed nothing");
        // Two roots that both think they lead at epoch 1: exactly one moves it on.
        const raced = await Promise.allSettled([root.advanceEpoch(1), other.advanceEpoch(1)]);
        assert.deepEqual(raced.map((r) => r.status).sort(), ["fulfilled", "rejected"]);
        assert.equal(await root.epoch(), 2);
        assert.equal(
          await ClusterStateStore.open(connect(), "fencing").then((again) => again.epoch()),
          2,
          "opening an existing cluster keeps its epoch",
        );
        // A machine's write of its rank, fenced the same way through the health store.
        const health = new EtcdHealthStore(connect(), "fencing");
        await health.putAtEpoch(2, "processes/m-a", { rank: 0 });
        const stale = await health.putAtEpoch(1, "processes/m-b", { rank: 1 }).catch((error) => error);
        assert.ok(stale instanceof FencedError && stale.currentEpoch === 2, `expected a FencedError, got ${stale}`);
        assert.deepEqual(await health.get("processes/"), new Map([["processes/m-a", { rank: 0 }]]));
        // A value that is not what its key should hold (written by hand, or by something else): one clear error.
        await connect().put("gemini/fencing/state/shards/3", '"three"');
        await assert.rejects(() => other.read(), /key shards\/3 holds "three": not a shards entry/);
      });

      await t.step(
        "the leader's lease revoked, or its process killed: a standby wins and reads the state back",
        async () => {
          const cluster = "failover", admin = connect();
          /** Waits until `count` candidates have their keys, so they queue in order. */
          const queued = (count: number) =>
            candidatesUntil(admin, cluster, (kvs) => kvs.length >= count, `${count} candidates did not queue`);
          const [a, c] = ["root-a", "root-c"].map((id) => ({ id, client: connect() }));
          const leaderA = await within(new RootElection(a.client, cluster, 2).campaign(a.id), "root-a's election");
          const stateA = await ClusterStateStore.open(a.client, cluster);
          const epochA = await stateA.advanceEpoch(await stateA.epoch());
          const written: StateChange[] = [
            { kind: "member", id: "m-0", member: { address: "127.0.0.1:7000", rank: 0, incarnation: 1 } },
            { kind: "member", id: "m-9", member: { address: "127.0.0.1:7009", rank: null, incarnation: 0 } },
            { kind: "shard", rank: 0, iteration: 7 },
            { kind: "shard", rank: 1, iteration: 7 },
            { kind: "replicas", rank: 0, replicas: [{ member: "m-1", iteration: 7 }] },
            { kind: "recovery", recovery: { epoch: epochA, phase: "retrieve", failed: [1], iteration: 7 } },
          ];
          await stateA.write(epochA, written);

          // root-b, a process of its own, queues behind root-a; root-c, here, behind root-b.
          const child = new URL("./etcd_root_child.ts", import.meta.url).pathname;
          const b = new Deno.Command(Deno.execPath(), {
            args: ["run", "--allow-all", child, etcd.clientUrl, cluster, "root-b", "2"],
            stdout: "piped",
            stderr: "inherit",
          }).spawn();
          try {
            await queued(2);
            const electionC = new RootElection(c.client, cluster, 2);
            const leaderC = electionC.campaign(c.id);
            await queued(3);
            assert.equal(await electionC.leader(), "root-a");

            // Someone ends root-a's lease (as etcd does when it stops hearing from it): root-b is elected,
            // reads the state root-a wrote, advances the epoch and writes under it.
            await admin.leaseRevoke(leaderA.lease);
            assert.match((await within(leaderA.lost, "root-a hearing that it lost")).message, /lease/i);
            const reader = b.stdout.pipeThrough(new TextDecoderStream()).getReader();
            let line = "";
            while (!line.includes("\n")) {
              const { value, done } = await within(reader.read(), "root-b's report after its election");
              assert.ok(!done, "root-b ended before it was elected");
              line += value;
            }
            const report = JSON.parse(line);
            assert.equal(report.elected, "root-b");
            assert.equal(report.read.epoch, epochA);
            assert.deepEqual(report.read.members, [
              ["m-0", { address: "127.0.0.1:7000", rank: 0, incarnation: 1 }],
              ["m-9", { address: "127.0.0.1:7009", rank: null, incarnation: 0 }],
            ]);
            assert.deepEqual(report.read.shards, [[0, 7], [1, 7]]);
            assert.deepEqual(report.read.replicas, [[0, [{ member: "m-1", iteration: 7 }]]]);
            assert.deepEqual(report.read.recovery, { epoch: epochA, phase: "retrieve", failed: [1], iteration: 7 });
            assert.equal(report.epoch, epochA + 1);
            assert.equal(await electionC.leader(), "root-b");
            await assert.rejects(
              () => stateA.write(epochA, [{ kind: "shard", rank: 1, iteration: 99 }]),
              FencedError,
              "the old root is fenced",
            );

            // root-b is killed: its lease runs out, and root-c is elected and reads what root-b wrote.
            b.kill("SIGKILL");
            await b.status;
            const leadershipC = await within(leaderC, "root-c's election after root-b's lease ran out");
            const final = await (await ClusterStateStore.open(c.client, cluster)).read();
            assert.equal(final.epoch, epochA + 1);
            assert.equal(final.recovery, null);
            assert.deepEqual([...final.shards], [[0, 7], [1, 8]]);
            await leadershipC.resign();
            assert.equal(await electionC.leader(), undefined, "a resigned leader leaves no leader");
          } finally {
            try {
              b.kill("SIGKILL");
            } catch {
              // it was killed above
            }
            await b.status;
          }
        },
      );

      await t.step(
        "a standby whose lease ends while it waits campaigns again and wins when the leader goes; one aborted leaves",
        async () => {
          const cluster = "requeue", admin = connect();
          const until = (wanted: (kvs: Candidates) => boolean, what: string) =>
            candidatesUntil(admin, cluster, wanted, what);
          const leaderA = await within(new RootElection(connect(), cluster, 2).campaign("root-a"), "root-a's election");
          const lines: string[] = [];
          const standby = new RootElection(connect(), cluster, 2).campaign("root-b", { log: (l) => lines.push(l) });
          await until((kvs) => kvs.length === 2, "root-b did not queue");
          const first = (await candidates(admin, cluster)).find((kv) => kv.value === "root-b")!.lease!;
          // Its lease ends, as etcd ends it for a process stalled past it: it queues again on a new one.
          await admin.leaseRevoke(first);
          await until(
            (kvs) => kvs.some((kv) => kv.value === "root-b" && kv.lease !== first),
            "root-b did not campaign again",
          );
          assert.match(lines.join("\n"), /root-b: its campaign failed \(lease \d+ has ended\)/);
          await leaderA.resign();
          const leaderB = await within(standby, "root-b's election once root-a resigned");
          assert.equal(await new RootElection(admin, cluster).leader(), "root-b");

          const stop = new AbortController();
          const standing = new RootElection(connect(), cluster, 2).campaign("root-c", { signal: stop.signal });
          await until((kvs) => kvs.length === 2, "root-c did not queue");
          stop.abort(new Error("the run is done"));
          await assert.rejects(standing, /the run is done/);
          await until((kvs) => kvs.length === 1, "root-c's key stayed after it stopped campaigning");
          await leaderB.resign();
        },
      );

      await t.step(
        "etcd away for longer than a lease: calls made meanwhile wait, the lease survives, the store goes on",
        async () => {
          const client = connect(BOUND_MS);
          const store = new EtcdHealthStore(client, "restart");
          const state = await ClusterStateStore.open(client, "restart");
          const seen = recorder();
          store.watch("machines/", seen.listener);
          await within(store.watching(), "the watch starting");
          const lease = await store.grant(2000);
          await store.put("machines/0", { incarnation: 0 }, lease);
          await seen.seen('put machines/0 {"incarnation":0}');

          await etcd.stop();
          // Made while etcd is down: each waits (retrying) instead of failing.
          const put = store.put("machines/1", { incarnation: 1 }, lease);
          const write = state.write(0, [{ kind: "shard", rank: 0, iteration: 3 }]);
          const keptAlive = store.keepAlive(lease);
          for (let look = 0; client.waiting < 3; look++) {
            assert.ok(look < 1200, `the three calls did not all find etcd away (${client.waiting} waiting)`);
            await pause(25);
          }
          // The outage outlasts the lease on purpose: etcd renews every lease when it comes back, so an etcd
          // outage alone takes no machine for dead.
          await pause(store.grantedTtlMs(lease)! + 1000);
          await etcd.restart();

          await within(Promise.all([put, write]), "the calls made during the outage");
          assert.equal(await within(keptAlive, "the keep-alive made during the outage"), true);
          await seen.seen('put machines/1 {"incarnation":1}');
          await store.put("machines/2", { incarnation: 2 }, lease);
          await seen.seen('put machines/2 {"incarnation":2}');
          assert.deepEqual([...(await store.get("machines/")).keys()], ["machines/0", "machines/1", "machines/2"]);
          assert.deepEqual((await state.read()).shards, new Map([[0, 3]]));
          assert.deepEqual(seen.events.filter((event) => event.startsWith("delete")), [], "no key expired");
          await store.revoke(lease);
          await seen.seen("delete machines/2");
          await store.close();
        },
      );

      await t.step("a frozen etcd: calls time out and are tried again until it answers", async () => {
        const client = new Etcd({ endpoints: [etcd.clientUrl], callTimeoutMs: 200, unavailableMs: BOUND_MS });
        clients.push(client);
        const store = new EtcdHealthStore(client, "frozen");
        const lease = await store.grant(5000);
        await store.put("machines/0", { incarnation: 0 }, lease);
        await etcd.pause();
        const get = store.get("machines/"), keptAlive = store.keepAlive(lease), settled: string[] = [];
        get.then(() => settled.push("the get was answered"), (e) => settled.push(`the get failed: ${e.message}`));
        keptAlive.then(
          () => settled.push("the keep-alive was answered"),
          (e) => settled.push(`it failed: ${e.message}`),
        );
        try {
          // Connected, and answered by no one: each call waits out its deadline, and then another.
          for (let look = 0; client.waiting < 2; look++) {
            assert.deepEqual(settled, [], "nothing settles while etcd is frozen");
            assert.ok(look < 2400, `the calls to a frozen etcd did not time out (${client.waiting} waiting)`);
            await pause(25);
          }
        } finally {
          etcd.resume();
        }
        assert.deepEqual(await within(get, "a get to a frozen etcd"), new Map([["machines/0", { incarnation: 0 }]]));
        assert.equal(await within(keptAlive, "a keep-alive to a frozen etcd"), true);
        await store.close();
      });

      await t.step("with etcd gone for longer than allowed, a call fails with one clear error", async () => {
        const store = new EtcdHealthStore(connect(300), "gone");
        await etcd.stop();
        try {
          const error = await store.get("machines/").catch((error) => error);
          assert.ok(error instanceof EtcdUnavailableError, `expected EtcdUnavailableError, got ${error}`);
          assert.match(error.message, /etcd at http:\/\/127\.0\.0\.1:\d+ did not answer a get for \d+ ms/);
        } finally {
          await etcd.restart();
        }
      });
    } finally {
      for (const client of clients) client.close();
      await etcd.close();
    }
  },
});
