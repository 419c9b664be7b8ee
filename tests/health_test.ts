// The in-memory health store: leases expire unless kept alive, and their keys' deletion is what the
// root agent watches for.

import assert from "node:assert/strict";
import { type HealthEvent, InMemoryHealthStore } from "../agents/health.ts";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

Deno.test("a lease kept alive keeps its key; one left alone expires and deletes it, which watchers see", async () => {
  const store = new InMemoryHealthStore();
  try {
    const events: HealthEvent[] = [];
    store.watch("machines/", (event) => events.push(event));
    const kept = await store.grant(60), left = await store.grant(60);
    await store.put("machines/0", { incarnation: 0 }, kept);
    await store.put("machines/1", { incarnation: 0 }, left);
    await store.put("other/x", 1);
    for (let i = 0; i < 6; i++) {
      await sleep(20);
      assert.equal(await store.keepAlive(kept), true);
    }
    assert.deepEqual([...(await store.get("machines/")).keys()], ["machines/0"]);
    assert.deepEqual(events.map((event) => `${event.type} ${event.key}`), [
      "put machines/0",
      "put machines/1",
      "delete machines/1",
    ]);
    assert.equal(await store.keepAlive(left), false, "an expired lease cannot be renewed");
    await store.revoke(kept);
    assert.equal((await store.get("machines/")).size, 0);
    await assert.rejects(() => store.put("machines/2", 0, left), /expired/);
  } finally {
    store.close();
  }
});
