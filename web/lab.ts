// `deno task lab`: bundles web/ and serves it, cross-origin isolated, on http://127.0.0.1:8000.

import { parseArgs } from "node:util";
import { buildLab } from "./build.ts";
import { serveLab } from "./server.ts";

const USAGE = "usage: deno task lab [--host 127.0.0.1] [--port 8000]";

function parsePort(text: string): number {
  const port = Number(text);
  if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be 0..65535, got "${text}"`);
  return port;
}

try {
  const { values } = parseArgs({
    args: Deno.args,
    options: { host: { type: "string", default: "127.0.0.1" }, port: { type: "string", default: "8000" } },
  });
  const port = parsePort(values.port);
  const root = await buildLab();
  const server = serveLab({ root, hostname: values.host, port });
  console.log(`gemini-lab is served at ${server.url} (Ctrl-C stops it)`);
} catch (error) {
  console.error(`lab: ${error instanceof Error ? error.message : error}\n${USAGE}`);
  Deno.exit(2);
}
