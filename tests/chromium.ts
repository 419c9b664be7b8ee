// The browser harness: find a Chromium (installing Debian's package when that is possible and none
// is present), then start it headless with WebGPU on and every background connection off.
// Playwright drives it from npm; its own browser download is never used.

import { type Browser, chromium } from "playwright-core";

const CANDIDATES = [
  "/usr/bin/chromium",
  "/usr/bin/chromium-browser",
  "/usr/bin/google-chrome",
  "/usr/bin/google-chrome-stable",
  "/snap/bin/chromium",
  "/Applications/Google Chrome.app/Contents/MacOS/Google Chrome",
  "/Applications/Chromium.app/Contents/MacOS/Chromium",
];

const INSTALL_COMMAND = "apt-get update && apt-get install -y --no-install-recommends chromium";

/** WebGPU on (SwiftShader where there is no GPU); nothing that reaches for the network. */
export const CHROMIUM_FLAGS = [
  "--enable-unsafe-webgpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
  "--disable-quic",
];

function isFile(path: string): boolean {
  try {
    return Deno.statSync(path).isFile;
  } catch {
    return false;
  }
}

/** CHROME_PATH if set, else the first Chromium or Chrome in the usual places. */
export function findChromium(): string | null {
  const fromEnv = Deno.env.get("CHROME_PATH");
  if (fromEnv) {
    if (!isFile(fromEnv)) throw new Error(`CHROME_PATH is set to "${fromEnv}", which is not a file`);
    return fromEnv;
  }
  return CANDIDATES.find(isFile) ?? null;
}

function canInstallDebianPackage(): boolean {
  return Deno.build.os === "linux" && Deno.uid() === 0 && isFile("/etc/debian_version") && isFile("/usr/bin/apt-get");
}

/** The Chromium to use; on Debian or Ubuntu as root it installs Debian's package when none is found. */
export async function ensureChromium(): Promise<string> {
  const found = findChromium();
  if (found) return found;
  if (!canInstallDebianPackage()) {
    throw new Error(
      `no Chromium found: install one (on Debian/Ubuntu: sudo sh -c "${INSTALL_COMMAND}") ` +
        `or set CHROME_PATH to a Chromium or Chrome executable`,
    );
  }
  console.error(`no Chromium found; installing Debian's package: ${INSTALL_COMMAND}`);
  const { success } = await new Deno.Command("sh", {
    args: ["-c", INSTALL_COMMAND],
    env: { DEBIAN_FRONTEND: "noninteractive" },
    stdout: "inherit",
    stderr: "inherit",
  }).output();
  const installed = findChromium();
  if (!success || !installed) throw new Error(`installing Chromium failed; run it by hand: ${INSTALL_COMMAND}`);
  return installed;
}

/** A headless Chromium with WebGPU enabled, driven by Playwright. */
export async function launchChromium(): Promise<Browser> {
  return await chromium.launch({ executablePath: await ensureChromium(), headless: true, args: CHROMIUM_FLAGS });
}
