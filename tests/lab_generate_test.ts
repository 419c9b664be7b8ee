// Text generated in the lab (issue #17): the page's generation is `deno task generate`'s sampler, token for
// token; and in headless Chromium, after a preset's recovery, the recovered cluster's parameters and the
// failure-free run's give the same text (a seeded draw, not only greedy), their parameters equal bit for bit.

import assert from "node:assert/strict";
import { decodeBytes, encodeBytes } from "../core/data.ts";
import { initialParameters, MODEL_PRESETS } from "../core/model.ts";
import { parametersToSafetensors } from "../core/weights.ts";
import { generateFrom, showBytes } from "../web/generation.ts";
import { accessibilityViolations, labState, LONG, screenshot, waitForStatus, withLab } from "./lab_page.ts";

const CONFIG = MODEL_PRESETS.tiny;
// Scaled up from the initialisation, so that the logits have clear winners to draw between.
const PARAMS = initialParameters(CONFIG, 5).map((value) => value * 8);
const PROMPT = "GEMINI";

Deno.test("the lab's generation draws the tokens deno task generate draws", async () => {
  const settings = { tokens: 12, temperature: 1, topK: 40, seed: 3 };
  const [tokens, again] = await generateFrom(CONFIG, [PARAMS, PARAMS], [...encodeBytes(PROMPT)], settings);
  assert.deepEqual(again, tokens);
  assert.equal(tokens.length, settings.tokens);
  assert.ok(new Set(tokens).size > 1, `the test must not be trivial: ${tokens}`);
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/tiny.safetensors`;
    await Deno.writeFile(path, parametersToSafetensors(PARAMS, CONFIG));
    const args = ["--weights", path, "--prompt", PROMPT, "--tokens", "12", "--temperature", "1", "--seed", "3"];
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["task", "--quiet", "generate", ...args],
      cwd: new URL("..", import.meta.url).pathname,
    }).output();
    assert.equal(code, 0, new TextDecoder().decode(stderr));
    // The task prints each token as it is drawn, decoded on its own.
    assert.equal(new TextDecoder().decode(stdout), PROMPT + tokens.map((token) => decodeBytes([token])).join(""));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("bytes are shown as text a class can read", () => {
  assert.equal(showBytes([...encodeBytes("Hi \\ there")]), "Hi \\x5c there");
  assert.equal(showBytes([0, 10, 0x7f, 0xff, 65]), "\\x00\\x0a\\x7f\\xffA");
});

Deno.test("after a recovery, the lab generates the same text from the recovered and the failure-free parameters", async () => {
  await withLab({ viewport: { width: 1280, height: 900 } }, async ({ page, url, errors }) => {
    // The narration is hidden, so that the preset runs through without holding for a presenter.
    await page.goto(`${url}?hide=narration&heartbeatTimeoutMs=1500&iterations=12`);
    const panel = page.locator("generate-panel");
    await panel.locator('[data-field="generate-blocked"]').waitFor();
    assert.ok(await panel.locator('button[data-action="generate"]').isDisabled(), "nothing to compare before a run");

    await page.locator('control-panel button[data-preset="machine-lost"]').click();
    await waitForStatus(page, "done");
    const run = await labState(page);
    assert.equal(run.recoveries.length, 1);
    assert.ok(run.recoveries[0].machines.some((m) => m.source.from === "peer"), "machine 1 came back from a peer");

    await panel.locator('input[name="prompt"]').fill(PROMPT);
    await panel.locator('input[name="temperature"]').fill("1");
    await panel.locator('input[name="seed"]').fill("7");
    await panel.locator('button[data-action="generate"]').click();
    const verdict = panel.locator('[data-field="verdict"]');
    await verdict.waitFor(LONG);
    const { generation, iteration } = await labState(page);
    assert.ok(generation && generation.status === "done", JSON.stringify(generation));
    assert.equal(generation.iteration, iteration);
    assert.equal(generation.recovered.length, 24);
    assert.ok(new Set(generation.recovered).size > 1, `the test must not be trivial: ${generation.recovered}`);
    assert.deepEqual(generation.recovered, generation.reference);
    assert.equal(generation.sameParameters, true);
    assert.equal(generation.settings.seed, 7);

    const recovered = await panel.locator('[data-field="recovered-text"]').innerText();
    assert.equal(recovered, PROMPT + showBytes(generation.recovered));
    assert.equal(await panel.locator('[data-field="reference-text"]').innerText(), recovered);
    assert.equal(await verdict.getAttribute("data-identical"), "true");
    assert.match(await verdict.innerText(), /^Identical: the same 24 tokens .*seed 7.*equal bit for bit/);
    // The failure-free run trained for the text also shows on the loss chart: every loss equal.
    const compared = await labState(page);
    assert.equal(compared.referenceStatus, "done");
    assert.deepEqual(compared.mismatches, []);
    await screenshot(page, "lab-generated");
    assert.deepEqual(await accessibilityViolations(page), []);
    assert.deepEqual(errors, []);
  });
});
