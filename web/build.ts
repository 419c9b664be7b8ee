// Bundles the lab page and its Workers with Deno's own bundler into web/dist/, beside a copy of
// index.html: web/dist/ is the whole web root, so the server never exposes sources or config.

import { fileURLToPath } from "node:url";

const WEB = fileURLToPath(new URL(".", import.meta.url));
export const DIST = `${WEB}dist`;

// Every script the page loads: the page itself and each Worker it starts.
const ENTRY_POINTS = ["main.ts", "selfcheck-worker.ts"];

/** Builds web/dist/; throws with the bundler's own message when bundling fails. */
export async function buildLab(): Promise<string> {
  await Deno.mkdir(DIST, { recursive: true });
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: [
      "bundle",
      "--quiet",
      "--platform=browser",
      "--sourcemap=linked",
      `--outdir=${DIST}`,
      ...ENTRY_POINTS.map((entry) => `${WEB}${entry}`),
    ],
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`bundling web/ failed:\n${new TextDecoder().decode(stderr)}`);
  await Deno.copyFile(`${WEB}index.html`, `${DIST}/index.html`);
  return DIST;
}
