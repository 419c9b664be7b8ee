// The lab server: isolation headers on every response, loopback by default, nothing outside its root.

import assert from "node:assert/strict";
import { serveLab } from "../web/server.ts";

async function withServer(test: (server: { url: string; root: string }) => Promise<void>) {
  const top = await Deno.makeTempDir();
  const root = `${top}/root`;
  await Deno.mkdir(`${root}/sub`, { recursive: true });
  await Deno.writeTextFile(`${root}/index.html`, "<p>index</p>");
  await Deno.writeTextFile(`${root}/sub/app.js`, "export {};");
  await Deno.writeTextFile(`${top}/secret.txt`, "outside the root");
  await Deno.symlink(`${top}/secret.txt`, `${root}/link-out.txt`);
  const server = serveLab({ root, port: 0 });
  try {
    await test({ url: server.url, root });
  } finally {
    await server.close();
    await Deno.remove(top, { recursive: true });
  }
}

/** Sends a request line as written (fetch would normalise "../" away) and returns the status code. */
async function rawStatus(url: string, path: string): Promise<number> {
  const { hostname, port } = new URL(url);
  const connection = await Deno.connect({ hostname, port: Number(port) });
  await connection.write(new TextEncoder().encode(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
  const response = new TextDecoder().decode(await new Response(connection.readable).bytes());
  return Number(response.split(" ")[1]);
}

Deno.test("the server sends the cross-origin isolation headers and the right content types", async () => {
  await withServer(async ({ url }) => {
    const index = await fetch(url);
    assert.equal(index.status, 200);
    assert.equal(await index.text(), "<p>index</p>");
    assert.equal(index.headers.get("cross-origin-opener-policy"), "same-origin");
    assert.equal(index.headers.get("cross-origin-embedder-policy"), "require-corp");
    assert.match(index.headers.get("content-type")!, /^text\/html/);
    const script = await fetch(`${url}sub/app.js`);
    assert.match(script.headers.get("content-type")!, /^text\/javascript/);
    assert.equal(script.headers.get("cross-origin-embedder-policy"), "require-corp");
    await script.body?.cancel();
  });
});

Deno.test("the server binds to 127.0.0.1 by default", async () => {
  await withServer(async ({ url }) => {
    assert.equal(new URL(url).hostname, "127.0.0.1");
    await (await fetch(url)).body?.cancel();
  });
});

Deno.test("the server serves nothing outside its root", async () => {
  await withServer(async ({ url }) => {
    for (const path of ["/../secret.txt", "/sub/../../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt"]) {
      assert.equal(await rawStatus(url, path), 404, path);
    }
    const linked = await fetch(`${url}link-out.txt`);
    assert.equal(linked.status, 404, "a link pointing out of the root is not followed");
    await linked.body?.cancel();
    const missing = await fetch(`${url}missing.js`);
    assert.equal(missing.status, 404);
    await missing.body?.cancel();
    const malformed = await rawStatus(url, "/%zz");
    assert.equal(malformed, 404);
  });
});

Deno.test("the server refuses methods other than GET and HEAD", async () => {
  await withServer(async ({ url }) => {
    const response = await fetch(url, { method: "POST", body: "x" });
    assert.equal(response.status, 405);
    await response.body?.cancel();
  });
});
