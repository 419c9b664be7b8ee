// The in-memory health store, on a virtual clock: leases expire unless kept alive, and their keys'
// deletion is what the root agent watches for.

import assert from "node:assert/strict";
import { VirtualClock } from "../agents/protocol/clock.ts";
import { type HealthEvent, InMemoryHealthStore } from "../agents/protocol/health.ts";

Deno.test("a lease kept alive keeps its key; one left alone expires at its time to live, which watchers see", async () => {
  const clock = new VirtualClock(), store = new InMemoryHealthStore(clock);
  try {
    const events: string[] = [];
    store.watch("machines/", (event: HealthEvent) => events.push(`${clock.now()} ${event.type} ${event.key}`));
    const kept = await store.grant(60), left = await store.grant(60);
    await store.put("machines/0", { incarnation: 0 }, kept);
    await store.put("machines/1", { incarnation: 0 }, left);
    await store.put("other/x", 1);
    clock.advance(59);
    assert.equal((await store.get("machines/")).size, 2, "a lease lives for its whole time to live");
    for (let i = 0; i < 6; i++) {
      assert.equal(await store.keepAlive(kept), true);
      clock.advance(59);
    }
    assert.deepEqual([...(await store.get("machines/")).keys()], ["machines/0"]);
    assert.deepEqual(events, ["0 put machines/0", "0 put machines/1", "60 delete machines/1"]);
    assert.equal(await store.keepAlive(left), false, "an expired lease cannot be renewed");
    await store.revoke(kept);
    assert.equal((await store.get("machines/")).size, 0);
    assert.equal(events.at(-1), `${clock.now()} delete machines/0`, "a revoked lease deletes its keys at once");
    await assert.rejects(() => store.put("machines/2", 0, left), /expired/);
    assert.equal(clock.pending, 0, "no lease timer is left behind");
  } finally {
    store.close();
  }
});

Deno.test("a key put again under a new lease outlives the old lease", async () => {
  const clock = new VirtualClock(), store = new InMemoryHealthStore(clock);
  const old = await store.grant(50);
  await store.put("machines/3", { incarnation: 0 }, old);
  clock.advance(20);
  const renewed = await store.grant(50);
  await store.put("machines/3", { incarnation: 1 }, renewed);
  clock.advance(40); // the old lease ends here; its key belongs to the new lease now
  assert.deepEqual(await store.get("machines/"), new Map([["machines/3", { incarnation: 1 }]]));
  clock.advance(30);
  assert.equal((await store.get("machines/")).size, 0);
  store.close();
});

Deno.test("a lease needs a positive time to live", async () => {
  const store = new InMemoryHealthStore(new VirtualClock());
  await assert.rejects(() => store.grant(0), /positive/);
});

Deno.test("the virtual clock runs timers in time order, ties in the order set, each at its due time", () => {
  const clock = new VirtualClock(), ran: string[] = [];
  clock.setTimer(10, () => ran.push(`b@${clock.now()}`));
  clock.setTimer(5, () => {
    ran.push(`a@${clock.now()}`);
    clock.setTimer(5, () => ran.push(`c@${clock.now()}`)); // due at 10, set after b
  });
  const cancel = clock.setTimer(7, () => ran.push("never"));
  cancel();
  clock.advance(9);
  assert.deepEqual(ran, ["a@5"]);
  clock.advance(100);
  assert.deepEqual(ran, ["a@5", "b@10", "c@10"]);
  assert.equal(clock.now(), 109);
  assert.throws(() => clock.advance(-1), /forward/);
});
