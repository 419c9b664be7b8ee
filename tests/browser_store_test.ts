// The browser's persistent checkpoint store in headless Chromium, on both of its backends.

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { bundlePage } from "../web/build.ts";
import { serveLab } from "../web/server.ts";
import { launchChromium } from "./chromium.ts";

const HERE = fileURLToPath(new URL("./browser/", import.meta.url));

Deno.test("the browser store keeps the newest K, loads them intact and falls back past corruption: OPFS and IndexedDB", async () => {
  const root = await bundlePage([`${HERE}store_page.ts`], `${HERE}store_page.html`, await Deno.makeTempDir());
  const server = serveLab({ root, port: 0 });
  const browser = await launchChromium();
  try {
    for (const backend of ["opfs", "indexeddb"]) {
      const page = await browser.newPage();
      await page.goto(`${server.url}?backend=${backend}`);
      const resultOf = () => (globalThis as { storeResult?: Record<string, unknown> }).storeResult;
      await page.waitForFunction(resultOf, null, { timeout: 60_000 });
      const result = (await page.evaluate(resultOf))!;
      assert.equal(result.error, undefined, String(result.error));
      assert.equal(result.backend, backend === "opfs" ? "OPFS" : "IndexedDB");
      assert.deepEqual(result.kept, [3, 2]);
      assert.deepEqual([result.loaded, result.loadedIntact], [3, true]);
      assert.deepEqual([result.fallback, result.fallbackIntact], [3, true]);
      assert.match(
        (result.skipped as string[])[0],
        /checkpoint 4 of machine 0: chunk \d+ .* does not match its checksum/,
      );
      await page.close();
    }
  } finally {
    await browser.close();
    await server.close();
    await Deno.remove(root, { recursive: true });
  }
});
