// The browser harness: find a Chromium (installing Debian's package when that is possible and none
// is present), then start it headless with WebGPU on and every background connection off.
// Playwright drives it from npm; its own browser download is never used.

import { type Browser, chromium } from "playwright-core";
import { ensureProgram, findProgram, type SystemProgram } from "../core/system-package.ts";

const CHROMIUM: SystemProgram = {
  name: "Chromium",
  envVar: "CHROME_PATH",
  envHint: "a Chromium or Chrome executable",
  candidates: [
    "/usr/bin/chromium",
    "/usr/bin/chromium-browser",
    "/usr/bin/google-chrome",
    "/usr/bin/google-chrome-stable",
    "/snap/bin/chromium",
    "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
    "/Applications/Chromium.app/Contents/MacOS/Chromium",
  ],
  installCommand: "apt-get update && apt-get install -y --no-install-recommends chromium",
};

/** WebGPU on (SwiftShader where there is no GPU); nothing that reaches for the network. */
export const CHROMIUM_FLAGS = [
  "--enable-unsafe-webgpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

/** CHROME_PATH if set, else the first Chromium or Chrome in the usual places. */
export function findChromium(): string | null {
  return findProgram(CHROMIUM);
}

/** The Chromium to use; on Debian or Ubuntu as root it installs Debian's package when none is found. */
export function ensureChromium(): Promise<string> {
  return ensureProgram(CHROMIUM);
}

/** A headless Chromium with WebGPU enabled, driven by Playwright. */
export async function launchChromium(): Promise<Browser> {
  return await chromium.launch({ executablePath: await ensureChromium(), headless: true, args: CHROMIUM_FLAGS });
}
