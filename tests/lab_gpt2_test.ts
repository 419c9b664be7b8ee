// GPT-2 124M in the lab (issue #17): every size is planned against the adapter's real binding limit and the
// memory the browser reports, with `fitMemory`'s own words. In headless Chromium (SwiftShader, where the
// GPU's memory is host memory) gpt2 on 4 machines does not fit: the option is disabled with the reason,
// a URL that asks for it gets the tiny model and the reason, and a size that fits runs.

import assert from "node:assert/strict";
import { memoryPlanSettings } from "../agents/protocol/spec.ts";
import { fitMemory } from "../core/trainer.ts";
import type { GeminiLab } from "../web/lab-app.ts";
import { labFit, labMemoryFit, type PageBudget } from "../web/memory-fit.ts";
import { clusterSettings, DEFAULT_LAB_SETTINGS, type LabSettings } from "../web/session.ts";
import { accessibilityViolations, labState, LONG, screenshot, waitForStatus, withLab } from "./lab_page.ts";

const GPT2: LabSettings = { ...DEFAULT_LAB_SETTINGS, model: "gpt2" };
const GIB = 2 ** 30;
/** What fitMemory says of `settings` against `budget`, with the half the lab leaves for its reference run. */
function fitMemoryMessage(settings: LabSettings, budget: PageBudget): string {
  try {
    fitMemory(memoryPlanSettings(clusterSettings(settings)), {
      bindingBytes: budget.bindingBytes,
      availableBytes: budget.reportedBytes! / 2,
      gpuInHostMemory: budget.gpuInHostMemory,
    });
  } catch (error) {
    return (error as Error).message;
  }
  throw new Error("expected the plan not to fit");
}

Deno.test("a plan fits, does not, or cannot be told, and says which", () => {
  const gpu = { bindingBytes: GIB, reportedBytes: 64 * GIB, gpuInHostMemory: false };
  const two = { ...GPT2, machines: 2 };
  const fits = labMemoryFit(two, gpu);
  assert.equal(fits.verdict, "fits", fits.text);
  assert.match(fits.text, /^The gpt2 model fits: 2 machines need [\d.]+ GiB .*within half of the 64\.00 GiB/);
  assert.match(fits.text, /cannot read the GPU's own memory/);

  const software = { ...gpu, reportedBytes: 16 * GIB, gpuInHostMemory: true };
  const refused = labMemoryFit(GPT2, software);
  assert.equal(refused.verdict, "does not fit");
  assert.ok(refused.text.includes(fitMemoryMessage(GPT2, software)), refused.text);
  assert.match(refused.text, /4 machines need [\d.]+ GiB .* 8\.00 GiB is available/);

  const unknown = labMemoryFit(two, { ...software, reportedBytes: null });
  assert.equal(unknown.verdict, "unknown");
  assert.match(unknown.text, /whether it fits is not known/);
  // A binding limit is known even where the memory is not.
  const narrow = labMemoryFit(two, { ...software, reportedBytes: null, bindingBytes: 1 << 20 });
  assert.equal(narrow.verdict, "does not fit");
  assert.match(narrow.text, /exceeds the adapter's largest storage binding \(1048576 bytes\)/);

  assert.equal(labFit(DEFAULT_LAB_SETTINGS, null).verdict, "unknown");
  assert.equal(labFit(GPT2, null).verdict, "does not fit", "nothing but the tiny model before the adapter is known");
});

Deno.test("the lab plans gpt2 against this browser's adapter and memory, refuses it with the reason, and runs what fits", async () => {
  await withLab({ viewport: { width: 1280, height: 900 } }, async ({ page, url, errors }) => {
    await page.goto(`${url}?model=gpt2&iterations=3`);
    const refused = page.locator('[data-field="model-refused"]');
    await refused.waitFor(LONG);

    // The budget is the adapter's own limits and what the browser reports.
    const { budget, limits } = await page.evaluate(async () => {
      const adapter = (await navigator.gpu.requestAdapter({ powerPreference: "high-performance" }))!;
      const deviceMemory = (navigator as Navigator & { deviceMemory?: number }).deviceMemory;
      return {
        budget: (document.querySelector("gemini-lab") as GeminiLab).budget!,
        limits: {
          binding: Math.min(adapter.limits.maxStorageBufferBindingSize, adapter.limits.maxBufferSize),
          memory: deviceMemory ? deviceMemory * 2 ** 30 : null,
        },
      };
    });
    assert.equal(budget.bindingBytes, limits.binding);
    assert.equal(budget.reportedBytes, limits.memory);
    assert.ok(budget.reportedBytes, "Chromium reports navigator.deviceMemory");
    assert.equal(budget.gpuInHostMemory, true, "SwiftShader is a software adapter");

    // Refused with fitMemory's words; the tiny model runs instead, and the URL no longer asks for gpt2.
    const reason = fitMemoryMessage(GPT2, budget);
    assert.ok((await refused.innerText()).includes(reason), await refused.innerText());
    assert.equal((await labState(page)).settings.model, "tiny");
    assert.ok(!page.url().includes("model="), page.url());
    const option = page.locator('control-panel select[name="model"] option', { hasText: "gpt2" });
    assert.ok(await option.isDisabled());
    const unavailable = page.locator('control-panel [data-unavailable="gpt2"]');
    assert.ok((await unavailable.innerText()).includes(reason), await unavailable.innerText());
    assert.equal(await page.locator('control-panel [data-field="memory-fit"]').getAttribute("data-verdict"), "fits");
    await screenshot(page, "lab-gpt2-refused");
    assert.deepEqual(await accessibilityViolations(page), []);

    // The small model fits here: it is offered, and it runs.
    const model = page.locator('control-panel select[name="model"]');
    await model.selectOption("small");
    assert.equal((await labState(page)).settings.model, "small");
    assert.match(await page.locator('control-panel [data-field="memory-fit"]').innerText(), /^The small model fits/);
    await page.locator('control-panel button[data-action="start"]').click();
    await waitForStatus(page, "done");
    const run = await labState(page);
    assert.equal(run.iteration, 3);
    assert.equal(run.losses.length, 3);
    assert.deepEqual(errors, []);
  });
});
