// The lab as a classroom stage (issue #15), in headless Chromium with reduced motion asked for: settings
// checked as they are typed and only valid ones in the URL; keys left to the focused control; runs on
// demand (a preset after a run starts a fresh cluster, no reload); a software failure's card keeps its
// memory and a hardware failure's loses it; every preset, run again and again in one page, restores from
// where its label promises; no accessibility violation of any impact. And presentation mode: one screen
// at 1366x768 and 1920x1080 with 8 machines, the settings in a drawer, the URL holding it and `hide`.

import assert from "node:assert/strict";
import type { Page } from "playwright-core";
import type { GeminiLab } from "../web/lab-app.ts";
import { type PresetName, PRESETS } from "../web/presets.ts";
import { accessibilityViolations, labState, LONG, screenshot, waitForStatus, withLab } from "./lab_page.ts";

/**
 * Runs preset `name` from its button, with `meanwhile` before its recovery; returns where the first
 * recovery's shards came from.
 */
async function runPreset(page: Page, name: PresetName, meanwhile = () => Promise.resolve()): Promise<string> {
  const button = page.locator(`control-panel button[data-preset="${name}"]`);
  await button.click();
  assert.equal(await button.getAttribute("aria-pressed"), "true");
  await meanwhile();
  await page.waitForFunction(
    () => (document.querySelector("gemini-lab") as GeminiLab).state.recoveries.length > 0,
    undefined,
    LONG,
  );
  return (await page.locator("recovery-chart g.recovery").first().getAttribute("data-from"))!;
}

Deno.test("the lab as a classroom stage", async (t) => {
  await withLab({ viewport: { width: 1366, height: 768 }, reducedMotion: "reduce" }, async ({ page, url, errors }) => {
    // m = 3 of 4 machines in groups cannot run: the URL's m is ignored. The lessons' narration is hidden, so
    // that a preset runs through without holding for a presenter (tests/lab_lessons_test.ts steps a lesson).
    await page.goto(`${url}?replicas=3&heartbeatTimeoutMs=1500&iterations=14&hide=narration`);
    await page.locator('[data-field="status"]').waitFor();

    await t.step(
      "settings are checked as they are typed, the reason beside the field, and the URL holds only valid ones",
      async () => {
        assert.equal((await labState(page)).settings.replicas, 2);
        const replicas = page.locator('control-panel input[name="replicas"]');
        await replicas.fill("3");
        const problem = page.locator('control-panel [data-problem="replicas"]');
        assert.match(await problem.innerText(), /group placement needs replicas m to divide the 4 machines/);
        assert.equal(await replicas.getAttribute("aria-invalid"), "true");
        assert.ok(await page.locator('control-panel button[data-action="start"]').isDisabled());
        await replicas.press("Enter");
        const machines = page.locator('control-panel input[name="machines"]');
        await machines.fill("9");
        assert.match(await page.locator('control-panel [data-problem="machines"]').innerText(), /from 2 to 8/);
        await machines.press("Enter");
        assert.equal((await labState(page)).settings.replicas, 2);
        assert.ok(!new URL(page.url()).search.includes("replicas"), page.url());
        assert.ok(!new URL(page.url()).search.includes("machines"), page.url());
        // Valid again: 4 machines, m = 2; no problem left.
        await machines.fill("4");
        await replicas.fill("2");
        await replicas.press("Enter");
        assert.equal(await page.locator("control-panel .problem").count(), 0);
        assert.ok(await page.locator('control-panel button[data-action="start"]').isEnabled());
      },
    );

    await t.step("nothing that cannot act is enabled before a run", async () => {
      for (const action of ["fail-group", "compare"]) {
        assert.ok(await page.locator(`control-panel button[data-action="${action}"]`).isDisabled(), action);
      }
      assert.deepEqual(await accessibilityViolations(page), [], "accessibility before a run");
    });

    await t.step(
      "keys go to the focused control: Space presses a focused button, arrows on the presets start nothing",
      async () => {
        // Space on "Single step" steps once (page-wide it would start the run).
        await page.locator('control-panel button[data-action="step"]').focus();
        await page.keyboard.press(" ");
        await page.waitForFunction(
          () => {
            const { state } = document.querySelector("gemini-lab") as GeminiLab;
            return state.status === "paused" && state.iteration === 1;
          },
          undefined,
          LONG,
        );
        await page.locator('control-panel button[data-preset="machine-lost"]').focus();
        await page.keyboard.press("ArrowDown");
        await page.keyboard.press("ArrowRight");
        const state = await labState(page);
        assert.equal(state.status, "paused");
        assert.equal(state.iteration, 1);
        assert.ok(!page.url().includes("preset"), page.url());
      },
    );

    await t.step("a software failure keeps its memory bar; after the run the cards say done", async () => {
      const memoryOfFailed = () =>
        page.waitForFunction(
          () => {
            const cluster = document.querySelector("gemini-lab")!.shadowRoot!.querySelector("cluster-view")!;
            const card = cluster.shadowRoot!.querySelector('article[data-rank="1"][data-failure="software"]');
            const bar = card?.querySelectorAll('[data-field="memory-bar"] span.own').length ?? 0;
            return bar > 0 && [bar, card!.querySelector('[data-field="memory"]')!.textContent!.trim()];
          },
          undefined,
          LONG,
        );
      let seen: [number, string] | null = null;
      const from = await runPreset(page, "software-crash", async () => {
        seen = await (await memoryOfFailed()).jsonValue() as [number, string];
      });
      assert.equal(from, PRESETS["software-crash"].from);
      assert.match(seen![1], /^kept: \d+ own/);
      await waitForStatus(page, "done");
      const cards = page.locator("cluster-view article");
      assert.equal(await cards.count(), 4);
      assert.equal(await page.locator('cluster-view article[data-phase="done"]').count(), 4);
    });

    await t.step("choosing a second preset after a run starts a new run", async () => {
      await page.locator('control-panel button[data-preset="machine-lost"]').click();
      await page.waitForFunction(
        () => {
          const { state } = document.querySelector("gemini-lab") as GeminiLab;
          return state.status === "running" && state.recoveries.length === 0;
        },
        undefined,
        LONG,
      );
      assert.match(page.url(), /preset=machine-lost/);
      // The hardware failure takes the Worker and the memory: the card shows both gone.
      const failed = page.locator('cluster-view article[data-rank="1"][data-failure="hardware"]');
      await failed.waitFor(LONG);
      assert.equal(await failed.locator('[data-field="memory-bar"]').getAttribute("data-entries"), "0");
      assert.match(await failed.locator('[data-field="memory"]').innerText(), /gone/);
      assert.match(await failed.locator('[data-field="worker"]').innerText(), /gone/);
      await page.waitForFunction(
        () => (document.querySelector("gemini-lab") as GeminiLab).state.recoveries.length > 0,
        undefined,
        LONG,
      );
      assert.equal(
        await page.locator("recovery-chart g.recovery").first().getAttribute("data-from"),
        "a peer's memory",
      );
      // Reduced motion: transfers are still lines, never moving dots.
      assert.equal(await page.locator("cluster-view circle.chunk").count(), 0);
      await screenshot(page, "lab-stage-machine-lost");
    });

    await t.step("a preset run three times in a row restores from where its label promises every time", async () => {
      for (let run = 0; run < 3; run++) {
        assert.equal(await runPreset(page, "machine-lost"), PRESETS["machine-lost"].from, `run ${run + 1}`);
      }
    });

    await t.step("every preset restores from where its label promises", async () => {
      for (const name of Object.keys(PRESETS) as PresetName[]) {
        assert.equal(await runPreset(page, name), PRESETS[name].from, name);
      }
      assert.deepEqual(await accessibilityViolations(page), [], "accessibility after the runs");
    });

    assert.deepEqual(errors, []);
  });
});

Deno.test("presentation mode fits one screen with 8 machines, and the URL holds it and what it hides", async () => {
  await withLab({ viewport: { width: 1366, height: 768 } }, async ({ page, url, errors }) => {
    await page.goto(`${url}?machines=8&presentation&hide=compare,paper-scale`);
    assert.equal(await page.locator("gemini-lab[presentation]").count(), 1);
    assert.equal(await page.locator('control-panel button[data-action="compare"]').count(), 0);
    assert.equal(await page.locator('[data-area="paper-scale"]').count(), 0);
    // The settings wait in a drawer.
    assert.ok(!(await page.locator('control-panel input[name="machines"]').isVisible()));
    await page.locator('control-panel [data-field="settings-drawer"] summary').click();
    assert.ok(await page.locator('control-panel input[name="machines"]').isVisible());
    await page.locator('control-panel [data-field="settings-drawer"] summary').click();
    // One step: the 8 machines' cards are up.
    await page.locator('control-panel button[data-action="step"]').click();
    await waitForStatus(page, "paused");
    assert.equal(await page.locator("cluster-view article").count(), 8);
    for (const viewport of [{ width: 1366, height: 768 }, { width: 1920, height: 1080 }]) {
      await page.setViewportSize(viewport);
      const fit = await page.evaluate(() => {
        const root = document.documentElement;
        const cards = document.querySelector("gemini-lab")!.shadowRoot!.querySelector("cluster-view")!.shadowRoot!
          .querySelectorAll("article h3");
        // A header's two parts side by side must not overlap (wrapped, one is under the other).
        const collide = [...cards].filter((h3) => {
          const [name, phase] = [...h3.children].map((child) => child.getBoundingClientRect());
          return name.right > phase.left && name.bottom > phase.top && phase.bottom > name.top;
        }).length;
        return { height: root.scrollHeight, width: root.scrollWidth, collide };
      });
      await screenshot(page, `lab-presentation-${viewport.width}`);
      assert.ok(fit.height <= viewport.height, `${JSON.stringify(fit)} in ${JSON.stringify(viewport)}`);
      assert.ok(fit.width <= viewport.width, `${JSON.stringify(fit)} in ${JSON.stringify(viewport)}`);
      assert.equal(fit.collide, 0);
    }
    // Leaving presentation mode: the URL follows, and keeps what is hidden.
    await page.keyboard.press("p");
    await page.waitForFunction(() => !new URLSearchParams(location.search).has("presentation"));
    assert.equal(new URL(page.url()).searchParams.get("hide"), "compare,paper-scale");
    assert.deepEqual(errors, []);
  });
});
