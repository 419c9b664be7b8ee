// The lab's static file server: cross-origin isolated (COOP/COEP, so the page has SharedArrayBuffer),
// bound to 127.0.0.1 unless told otherwise, and serving nothing outside its web root.

import { extname, join, normalize, sep } from "node:path";

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".map": "application/json; charset=utf-8",
  ".json": "application/json; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".svg": "image/svg+xml",
  ".png": "image/png",
  ".wgsl": "text/plain; charset=utf-8",
};

// Every response carries these: together they make the page cross-origin isolated.
const ISOLATION_HEADERS = {
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Embedder-Policy": "require-corp",
  "Cross-Origin-Resource-Policy": "same-origin",
  "X-Content-Type-Options": "nosniff",
  "Cache-Control": "no-store",
};

export interface LabServerOptions {
  /** The folder to serve (an absolute path). */
  root: string;
  hostname?: string;
  /** 0 picks a free port. */
  port?: number;
}

export interface LabServer {
  url: string;
  /** Settles when the server has stopped. */
  finished: Promise<void>;
  close(): Promise<void>;
}

export function serveLab(options: LabServerOptions): LabServer {
  const root = Deno.realPathSync(options.root);
  const server = Deno.serve(
    { hostname: options.hostname ?? "127.0.0.1", port: options.port ?? 8000, onListen: () => {} },
    (request) => respond(root, request),
  );
  const address = server.addr as Deno.NetAddr;
  const host = address.hostname.includes(":") ? `[${address.hostname}]` : address.hostname;
  return { url: `http://${host}:${address.port}/`, finished: server.finished, close: () => server.shutdown() };
}

async function respond(root: string, request: Request): Promise<Response> {
  if (request.method !== "GET" && request.method !== "HEAD") return reply(405, "method not allowed");
  const path = await resolveInsideRoot(root, new URL(request.url).pathname);
  if (!path) return reply(404, "not found");
  const body = request.method === "HEAD" ? null : await Deno.readFile(path);
  return new Response(body, {
    headers: { ...ISOLATION_HEADERS, "Content-Type": CONTENT_TYPES[extname(path)] ?? "application/octet-stream" },
  });
}

/** The real path of a regular file under `root` that `urlPath` names, or null (missing, outside, not a file). */
async function resolveInsideRoot(root: string, urlPath: string): Promise<string | null> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null; // malformed percent-encoding
  }
  if (decoded.includes("\0") || decoded.split(/[\\/]/).includes("..")) return null;
  const relative = normalize(decoded.endsWith("/") ? `${decoded}index.html` : decoded);
  try {
    // realPath follows links, so a link that points out of the root is caught by the prefix test too.
    const real = await Deno.realPath(join(root, relative));
    if (real !== root && !real.startsWith(root + sep)) return null;
    return (await Deno.stat(real)).isFile ? real : null;
  } catch {
    return null;
  }
}

function reply(status: number, text: string): Response {
  return new Response(`${text}\n`, { status, headers: { ...ISOLATION_HEADERS, "Content-Type": "text/plain" } });
}
