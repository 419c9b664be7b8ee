// The lab's guided lessons and time control (issue #15), in headless Chromium with reduced motion: a link
// with a preset, presentation mode and `hide` reproduces a lesson's screen with its narration; the presenter
// steps it with the keyboard (space, the arrows, "."), the stage holding at each step's moment with the
// machines involved highlighted; the recovery says why it used each source; scrubbing back to before the
// failure shows the cluster as it was, played on slowed it reaches the failure, and the live button returns.
// The README's screenshot comes from here.

import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import { accessibilityViolations, labState, LONG, screenshot, waitForStatus, withLab } from "./lab_page.ts";

/** Waits for the lesson to show step `step` (from 1) with its moment reached. */
async function waitForStep(page: Page, step: number, title: string) {
  const narration = page.locator(`lesson-narration[reached][step="${step - 1}"]`);
  await narration.waitFor(LONG).catch(async (error) => {
    const { status, message, iteration, recoveries } = await labState(page);
    throw new Error(`step ${step} never reached: ${JSON.stringify({ status, message, iteration, recoveries })}`, {
      cause: error,
    });
  });
  assert.match(await narration.locator("h2").innerText(), new RegExp(`step ${step} of 5: ${title}`));
  return narration;
}

/** The cards the stage shows: each machine's phase, and whether the lesson highlights it. */
function cards(page: Page) {
  return page.evaluate(() =>
    [...document.querySelector("gemini-lab")!.shadowRoot!.querySelector("cluster-view")!.shadowRoot!
      .querySelectorAll("article")].map((card) => ({
        rank: Number(card.dataset.rank),
        phase: card.dataset.phase,
        highlight: card.hasAttribute("data-highlight"),
        iteration: Number(card.querySelector('[data-field="iteration"]')!.textContent),
        worker: card.querySelector('[data-field="worker"]')!.textContent!.trim(),
      }))
  );
}

Deno.test("a lesson from a link, stepped with the keyboard; the recovery says why; the stage rewinds and returns", async (t) => {
  await withLab({ viewport: { width: 1366, height: 768 }, reducedMotion: "reduce" }, async ({ page, url, errors }) => {
    await page.goto(
      `${url}?preset=machine-lost&presentation&hide=probability,paper-scale,settings,compare&heartbeatTimeoutMs=1500` +
        "&iterations=30",
    );
    // The link reproduces the lesson's screen: presentation mode, the narration, what it hides left out.
    assert.equal(await page.locator("gemini-lab[presentation]").count(), 1);
    const first = await waitForStep(page, 1, "Machine lost");
    assert.match(await first.locator('[data-field="say"]').innerText(), /a peer serves its shard from memory/);
    assert.equal(await page.locator('control-panel button[data-action="compare"]').count(), 0);
    assert.equal(await page.locator('[data-area="probability"]').count(), 0);
    assert.equal(await page.locator('control-panel [data-field="settings-drawer"]').count(), 0);
    assert.equal((await labState(page)).status, "idle");

    await t.step("space starts the lesson; the stage holds once checkpoints are in memory", async () => {
      await page.keyboard.press(" ");
      const second = await waitForStep(page, 2, "Checkpoints in memory");
      await waitForStatus(page, "paused");
      assert.match(await second.locator('[data-field="notice"]').innerText(), /Machine 1's checkpoint is also in/);
      // Machine 1 and the peer holding its copy are highlighted.
      assert.deepEqual((await cards(page)).filter((c) => c.highlight).map((c) => c.rank), [0, 1]);
    });

    await t.step("the right arrow runs on to the failure, held with the failed machine highlighted", async () => {
      await page.keyboard.press("ArrowRight");
      await waitForStep(page, 3, "The failure");
      const failed = (await cards(page)).filter((c) => c.phase === "failed");
      assert.deepEqual(failed.map((c) => [c.rank, c.highlight]), [[1, true]]);
    });

    await t.step('"." runs on to the recovery, which says why it used each source', async () => {
      await page.keyboard.press(".");
      const recovery = await waitForStep(page, 4, "The recovery");
      const said = await recovery.locator('[data-field="say"]').innerText();
      assert.match(said, /shard 1: from peer 0 \(survived: machine 0's memory \d+ ms/);
      assert.match(await recovery.locator('[data-field="notice"]').innerText(), /Why this iteration: .*iteration \d+/);
      const why = await page.locator('[data-field="why"][data-index="0"]').innerText();
      assert.match(why, /shard 1: from peer 0/);
      // The recovery chart sets the recovery beside the same one at the paper's scale.
      assert.ok(await page.locator('recovery-chart rect[data-scale="paper"]').count() > 0);
      // The README's picture (docs/lab-stage.png is a copy of it): the page fits the screen, so it is the screen.
      await screenshot(page, "lab-stage");
      // Back shows the previous step again, without touching the run.
      await page.keyboard.press("ArrowLeft");
      await waitForStep(page, 3, "The failure");
      await page.keyboard.press("ArrowRight");
      await waitForStep(page, 4, "The recovery");
    });

    await t.step(
      "scrubbing back to before the failure shows the cluster as it was, played on slowed it fails again; live returns",
      async () => {
        const { failures } = await labState(page);
        const before = failures[0].failedAt - 300;
        await page.locator('time-control input[data-field="scrubber"]').evaluate((input: HTMLInputElement, at) => {
          input.value = String(at);
          input.dispatchEvent(new Event("input", { bubbles: true }));
        }, before);
        await page.locator('time-control [data-field="behind"]:not(:text("live"))').waitFor();
        const then = await cards(page);
        assert.equal(then.length, 4);
        assert.deepEqual(then.filter((c) => c.phase === "failed"), [], "nobody has failed yet");
        assert.ok(then.every((c) => c.iteration <= failures[0].iteration), JSON.stringify(then));
        assert.equal(then[1].worker, "first start");
        assert.equal(await page.locator("recovery-chart g.recovery").count(), 0, "no recovery yet");
        // Played on from there, slowed, the recording reaches the failure: the card fails as it did.
        await page.locator('time-control select[data-field="speed"]').selectOption("0.5");
        await page.waitForFunction(
          () =>
            document.querySelector("gemini-lab")!.shadowRoot!.querySelector("cluster-view")!.shadowRoot!
              .querySelector('article[data-rank="1"][data-phase="failed"]') !== null,
          undefined,
          LONG,
        );
        assert.match(await page.locator('time-control [data-field="behind"]').innerText(), /behind/);
        await page.locator('time-control button[data-action="live"]').click();
        await page.locator('time-control [data-field="behind"]:text("live")').waitFor();
        assert.equal(await page.locator("recovery-chart g.recovery").count(), 1);
        assert.match((await cards(page))[1].worker, /^restarted/);
      },
    );

    await t.step("the fault is shaded on the loss chart and on the whole run's timeline", async () => {
      assert.ok(await page.locator('loss-chart rect[data-field="fault"]').count() > 0);
      assert.ok(await page.locator('machine-timeline rect[data-field="run-fault"]').count() > 0);
      assert.match(await page.locator('[data-field="policies"]').innerText(), /interleaved \d+ ms/);
      assert.deepEqual(await accessibilityViolations(page), []);
    });
    assert.deepEqual(errors, []);
  });
});
