// The lab in a real headless Chromium (SwiftShader's WebGPU): the simulated cluster runs in the page's
// Workers. A run is started from the UI, a machine's hardware failure is injected by a click, and the page
// shows the detection, the retrieval from a peer and the resume, with the loss after recovery on the
// failure-free line; then a whole group fails and the page falls back to the persistent store (OPFS or
// IndexedDB in the page). No console errors, no accessibility violations of any impact (axe-core), and
// screenshots of the key states as artifacts.

import assert from "node:assert/strict";
import type { GeminiLab } from "../web/lab-app.ts";
import { accessibilityViolations, LONG, screenshot, withLab } from "./lab_page.ts";

Deno.test("the lab: start, a machine lost and recovered from a peer, a group lost and recovered from persistent storage", async () => {
  await withLab({ viewport: { width: 1280, height: 900 } }, async ({ page, url, errors }) => {
    // A short heartbeat timeout and a persistent checkpoint every 3 iterations keep the test quick.
    await page.goto(`${url}?heartbeatTimeoutMs=1500&persistEvery=3&iterations=200`);
    const status = page.locator('[data-field="status"]');
    await status.waitFor();
    assert.deepEqual(await accessibilityViolations(page), [], "accessibility before the run");

    await page.locator('button[data-action="start"]').click();
    await page.waitForFunction(
      () => (document.querySelector("gemini-lab") as GeminiLab).state.iteration >= 4,
      undefined,
      LONG,
    );
    await screenshot(page, "lab-training");

    // The failure comes two iterations after a persistent checkpoint: one that came right after it could find
    // that checkpoint newer than the replica still on its way to the peer, and recover from the store instead.
    await page.waitForFunction(
      () => (document.querySelector("gemini-lab") as GeminiLab).state.iteration % 3 === 1,
      undefined,
      LONG,
    );
    // Machine 1's hardware fails: detected by its heartbeats, its replacement fetches from its group peer.
    await page.locator('cluster-view article[data-rank="1"] button[data-action="hardware"]').click();
    await page.locator('cluster-view article[data-rank="1"][data-phase="failed"]').waitFor(LONG);
    const first = page.locator('[data-field="recovery"][data-index="0"]');
    await first.waitFor(LONG);
    const firstText = await first.innerText();
    assert.match(firstText, /shards from 0: local, 1: peer 0, 2: local, 3: local/);
    assert.match(firstText, /detected in \d+ ms/);
    const rolledBack = Number(firstText.match(/rolled back to iteration (\d+)/)![1]);
    await page.waitForFunction(
      (after) => (document.querySelector("gemini-lab") as GeminiLab).state.iteration >= after,
      rolledBack + 3,
      LONG,
    );
    await screenshot(page, "lab-after-recovery");

    // The whole group of machine 0 fails: no copy of its shards is left in memory.
    await page.locator('button[data-action="fail-group"]').click();
    const second = page.locator('[data-field="recovery"][data-index="1"]');
    await second.waitFor(LONG);
    const secondText = await second.innerText();
    assert.match(secondText, /shards from 0: persistent, 1: persistent, /);
    const lost = Number(secondText.match(/\((\d+) lost\)/)![1]);
    assert.equal(await page.locator('recovery-chart g.recovery[data-from="persistent storage"]').count(), 1);
    await screenshot(page, "lab-after-group-failure");

    assert.deepEqual(await accessibilityViolations(page), [], "accessibility after the recoveries");

    // The same seeded run without failures, trained in the page: every loss of this run, the ones
    // computed again after the rollbacks included, equals it bit for bit.
    await page.locator('button[data-action="compare"]').click();
    const resume = page.locator('loss-chart [data-field="resume"][data-exact]');
    await resume.waitFor(LONG);
    assert.equal(await resume.getAttribute("data-exact"), "true", await resume.innerText());
    const state = await page.evaluate(() => {
      const { reference, losses, mismatches } = (document.querySelector("gemini-lab") as GeminiLab).state;
      return { reference, losses, mismatches };
    });
    assert.equal(state.losses.some((point) => point.replay), lost > 0, "iterations lost are computed again");
    assert.deepEqual(state.mismatches, []);
    for (const point of state.losses) assert.equal(point.loss, state.reference[point.iteration]);
    await screenshot(page, "lab-compared");
    assert.deepEqual(errors, []);
  });
});

Deno.test("the lab reads its scenario from the URL, switches the replication policy, simulates the paper's scale and answers the keyboard", async () => {
  await withLab({}, async ({ page, url }) => {
    await page.goto(`${url}?machines=6&replicas=3&placement=ring&replication=naive`);
    await page.locator('[data-field="status"]').waitFor();
    const settings = await page.evaluate(() => (document.querySelector("gemini-lab") as GeminiLab).state.settings);
    assert.equal(settings.machines, 6);
    assert.equal(settings.replicas, 3);
    assert.equal(settings.placement, "ring");
    assert.equal(settings.replication, "naive");
    // The replication policy can be switched (live, once running), and the URL follows.
    await page.locator('control-panel select[data-field="replication"]').selectOption("interleaved");
    await page.waitForFunction(() => !location.search.includes("replication"));
    // The paper's cluster, simulated in the page, beside the paper's numbers.
    await page.locator('paper-scale-panel button[data-action="simulate-paper"]').click();
    const speedup = page.locator('paper-scale-panel tr:has-text("recovery speed-up") td');
    assert.match(await speedup.nth(1).innerText(), /more than 13x/);
    assert.ok(parseFloat(await speedup.nth(0).innerText()) > 13, "the simulated speed-up exceeds the paper's 13x");
    // The probability panel starts from the cluster's N and m.
    const ring = page.locator('probability-panel tr[data-strategy="ring"] td').nth(1);
    assert.match(await ring.innerText(), /^\d+\.\d+%$/);
    await page.keyboard.press("p");
    assert.equal(await page.locator("gemini-lab[presentation]").count(), 1);
  });
});
