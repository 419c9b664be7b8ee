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
// Once the run has returned, nothing but a leak holds the cluster: one collection frees it.
gc();
console.log(JSON.stringify({ cluster: cluster.deref() !== undefined, root: root.deref() !== undefined }));
