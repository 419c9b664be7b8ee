// The page in a real headless Chromium: it loads without console errors, is cross-origin isolated,
// gets a WebGPU adapter, and the GPU's results equal the CPU's on the page and in a Worker.

import assert from "node:assert/strict";
import { buildLab } from "../web/build.ts";
import { serveLab } from "../web/server.ts";
import { launchChromium } from "./chromium.ts";

const ARTIFACTS = new URL("./artifacts/", import.meta.url);

Deno.test("the lab page runs the GPU self-check in headless Chromium, on the page and in a Worker", async () => {
  const server = serveLab({ root: await buildLab(), port: 0 });
  const browser = await launchChromium();
  try {
    const page = await browser.newPage();
    const consoleErrors: string[] = [];
    page.on("console", (message) => message.type() === "error" && consoleErrors.push(message.text()));
    page.on("pageerror", (error) => consoleErrors.push(error.message));
    page.on(
      "response",
      (response) => response.status() >= 400 && consoleErrors.push(`${response.status()} ${response.url()}`),
    );
    await page.goto(server.url);
    await page.locator("details summary").click(); // the checks sit in a collapsed panel above the lab

    const field = (name: string) => page.locator(`gpu-status [data-field="${name}"]`);
    await field("worker-check").and(page.locator(":not([data-state=running])")).waitFor({ timeout: 120_000 });

    assert.equal(await page.evaluate(() => crossOriginIsolated), true);
    assert.equal(await page.evaluate(() => typeof SharedArrayBuffer), "function");
    assert.match(await field("adapter").innerText(), /\S/);
    assert.equal(await field("page-check").getAttribute("data-state"), "passed", await field("page-check").innerText());
    assert.equal(
      await field("worker-check").getAttribute("data-state"),
      "passed",
      await field("worker-check").innerText(),
    );
    assert.deepEqual(consoleErrors, []);

    await Deno.mkdir(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: new URL("selfcheck.png", ARTIFACTS).pathname, fullPage: true });
  } finally {
    await browser.close();
    await server.close();
  }
});
