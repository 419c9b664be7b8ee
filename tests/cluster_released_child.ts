// A cluster that has run and shut down, and whether anything still holds it: prints one JSON line.
// Usage: deno run --v8-flags=--expose-gc --allow-all tests/cluster_released_child.ts

import { runCluster } from "../agents/sim/run.ts";

const gc = (globalThis as { gc?: () => void }).gc;
if (!gc) throw new Error("run with --v8-flags=--expose-gc");
let cluster!: WeakRef<object>, root!: WeakRef<object>;
await runCluster({ heartbeatTimeoutMs: 1000 }, async (context) => {
  cluster = new WeakRef(context.cluster);
  root = new WeakRef(context.root);
  await context.root.runUntil(2);
});
// Collections until nothing more is freed: a WeakRef is cleared only after the turn that made it unreachable.
for (let turn = 0; turn < 5; turn++) {
  gc();
  await new Promise((resolve) => setTimeout(resolve, 0));
}
console.log(JSON.stringify({ cluster: cluster.deref() !== undefined, root: root.deref() !== undefined }));
