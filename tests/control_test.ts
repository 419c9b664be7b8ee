// The control connection between a root and a machine process, on real sockets on 127.0.0.1: requests are
// answered with their attachments intact, a machine's failure comes back as a RemoteError, and a request
// the other end will never answer (it has left, before the request or while it waited) fails instead of
// waiting forever: a root that shut its machines down once they had left never ended.

import assert from "node:assert/strict";
import { ControlConnection, controlCredentials, ControlLost, RemoteError } from "../agents/process/control.ts";

const CLUSTER = "control-test", SECRET = "the control test's shared secret";

/** A root's connection dialed to a machine's, both ends handshaken. */
async function connected() {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  const accepted = listener.accept().then(async (conn) =>
    ControlConnection.accept(conn, await controlCredentials(CLUSTER, SECRET, 0))
  );
  const root = await ControlConnection.dial(
    { hostname: "127.0.0.1", port },
    await controlCredentials(CLUSTER, SECRET, 1),
  );
  const machine = await accepted;
  listener.close();
  return { root, machine };
}

Deno.test("requests are answered, typed arrays intact both ways; a failed request is a RemoteError", async () => {
  const { root, machine } = await connected();
  machine.onRequest = (op, args) => {
    if (op === "fail") return Promise.reject(new Error("no such iteration"));
    const values = args.values as Float32Array;
    return Promise.resolve({ sum: values.reduce((a, b) => a + b, 0), doubled: values.map((x) => 2 * x) });
  };
  const values = Float32Array.from({ length: 300_000 }, (_, i) => i / 7);
  const answer = await root.request("double", { values }) as { sum: number; doubled: Float32Array };
  assert.ok(answer.doubled instanceof Float32Array);
  assert.deepEqual(answer.doubled, values.map((x) => 2 * x));
  assert.equal(answer.sum, values.reduce((a, b) => a + b, 0));
  await assert.rejects(
    root.request("fail"),
    (error) => error instanceof RemoteError && /no such iteration/.test(error.message),
  );
  root.close();
  await Promise.all([root.ended, machine.ended]);
});

Deno.test("a request after the other end has left fails at once", async () => {
  const { root, machine } = await connected();
  machine.close();
  assert.equal(await root.ended, "closed");
  await assert.rejects(root.request("shutdown"), ControlLost);
});

Deno.test("a request waiting when the other end leaves fails", async () => {
  const { root, machine } = await connected();
  let asked!: () => void;
  const received = new Promise<void>((resolve) => asked = resolve);
  machine.onRequest = () => {
    asked();
    return new Promise(() => {}); // the machine leaves before it answers
  };
  const answer = root.request("step");
  await received;
  machine.close();
  await assert.rejects(answer, ControlLost);
  await root.ended;
});
