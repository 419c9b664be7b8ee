// What the lab's browser tests share: the lab built, served and open in a headless Chromium page that
// records its errors, the lab's state read from the page, accessibility checks and screenshots.

import AxeBuilder from "@axe-core/playwright";
import type { Browser, BrowserContextOptions, Page } from "playwright-core";
import { buildLab } from "../web/build.ts";
import type { GeminiLab } from "../web/lab-app.ts";
import type { LabState } from "../web/session.ts";
import { serveLab } from "../web/server.ts";
import { launchChromium } from "./chromium.ts";

const ARTIFACTS = new URL("./artifacts/", import.meta.url);

/** Long enough for machines to start and recover on a software WebGPU adapter. */
export const LONG = { timeout: 240_000 };

export interface LabPage {
  page: Page;
  url: string;
  /** Console errors and uncaught exceptions of the page. */
  errors: string[];
}

/** Runs `body` with the lab open in a fresh context (axe-core needs one of our own, not the default). */
export async function withLab(options: BrowserContextOptions, body: (lab: LabPage) => Promise<void>) {
  const server = serveLab({ root: await buildLab(), port: 0 });
  let browser: Browser | null = null;
  try {
    browser = await launchChromium();
    const page = await (await browser.newContext(options)).newPage();
    const errors: string[] = [];
    page.on("console", (message) => message.type() === "error" && errors.push(message.text()));
    page.on("pageerror", (error) => errors.push(error.message));
    await body({ page, url: server.url, errors });
  } finally {
    await browser?.close();
    await server.close();
  }
}

/** The lab's state as the page has it now. */
export function labState(page: Page): Promise<LabState> {
  return page.evaluate(() => (document.querySelector("gemini-lab") as GeminiLab).state);
}

/** Waits for the run's status to be one of `statuses`. */
export async function waitForStatus(page: Page, ...statuses: string[]) {
  await page.waitForFunction(
    (wanted) => wanted.includes((document.querySelector("gemini-lab") as GeminiLab).state.status),
    statuses,
    LONG,
  );
}

/** Every accessibility violation axe-core finds on the page as it is now, whatever its impact. */
export async function accessibilityViolations(page: Page): Promise<string[]> {
  const { violations } = await new AxeBuilder({ page }).analyze();
  return violations.map((violation) =>
    `${violation.id} (${violation.impact}): ${violation.help}: ${
      violation.nodes.map((node) => node.target.join(" ")).join("; ")
    }`
  );
}

export async function screenshot(page: Page, name: string) {
  await Deno.mkdir(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: new URL(`${name}.png`, ARTIFACTS).pathname, fullPage: true });
}
