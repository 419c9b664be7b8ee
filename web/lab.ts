// `deno task lab`: bundles web/ and serves it, cross-origin isolated, on http://127.0.0.1:8000.

import { numberOption, parseOptions, runCommand, UserError } from "../cli/args.ts";
import { buildLab } from "./build.ts";
import { serveLab } from "./server.ts";

const USAGE = "usage: deno task lab [--host 127.0.0.1] [--port 8000]";

async function main(args: string[]): Promise<number> {
  const values = parseOptions(args, {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "8000" },
  }, USAGE);
  const port = numberOption("port", values.port, { integer: true });
  if (port > 65535) throw new UserError(`--port must be at most 65535, got ${port}`);
  const server = serveLab({ root: await buildLab(), hostname: values.host, port });
  console.log(`gemini-lab is served at ${server.url} (Ctrl-C stops it)`);
  await server.finished;
  return 0;
}

await runCommand("lab", () => main(Deno.args));
