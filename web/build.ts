// Bundles browser entry points with Deno's own bundler into a web root beside a copy of their page:
// the lab (web/ into web/dist/, the whole root the server sees, so it never exposes sources or config),
// and the pages the browser tests build for themselves.

import { fileURLToPath } from "node:url";

const WEB = fileURLToPath(new URL(".", import.meta.url));
export const DIST = `${WEB}dist`;

/** Bundles `entryPoints` (paths) into `outdir` and copies `page` there as index.html; returns `outdir`. */
export async function bundlePage(entryPoints: string[], page: string, outdir: string): Promise<string> {
  await Deno.mkdir(outdir, { recursive: true });
  const { success, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["bundle", "--quiet", "--platform=browser", "--sourcemap=linked", `--outdir=${outdir}`, ...entryPoints],
    stdout: "inherit",
    stderr: "piped",
  }).output();
  if (!success) throw new Error(`bundling ${entryPoints.join(", ")} failed:\n${new TextDecoder().decode(stderr)}`);
  await Deno.copyFile(page, `${outdir}/index.html`);
  return outdir;
}

/** Builds the lab into web/dist/: the page and every Worker it starts. */
export function buildLab(): Promise<string> {
  return bundlePage([`${WEB}main.ts`, `${WEB}selfcheck-worker.ts`, `${WEB}machine.ts`], `${WEB}index.html`, DIST);
}
