// The GPU layer in Deno: an adapter is found and reported, the kernels compute what the CPU does
// (on the main thread and in a Worker), large grids are covered, and the demo fails cleanly without a GPU.

import assert from "node:assert/strict";
import { acquireGpu, readBuffer, storageBuffer } from "../core/gpu.ts";
import { runSelfCheck } from "../core/selfcheck.ts";
import { gridFor, WORKGROUP_SIZE } from "../kernels/kernel.ts";
import type { WorkerSelfCheckReply } from "../web/selfcheck-worker.ts";

Deno.test("acquireGpu reports the adapter and the self-check's GPU results equal the CPU's", async () => {
  const gpu = await acquireGpu();
  try {
    assert.match(gpu.adapter.description, /\S/);
    assert.equal(typeof gpu.adapter.isFallback, "boolean");
    const result = await runSelfCheck(gpu.device, 1000);
    assert.deepEqual(result, { elements: 1000, mismatches: 0 });
  } finally {
    gpu.device.destroy();
  }
});

Deno.test("a kernel covers more elements than one grid dimension can hold", async () => {
  const elements = 65535 * WORKGROUP_SIZE + 301;
  const [x, y] = gridFor(elements);
  assert.ok(x <= 65535 && y > 1 && x * y * WORKGROUP_SIZE >= elements);
  const gpu = await acquireGpu();
  try {
    assert.equal((await runSelfCheck(gpu.device, elements)).mismatches, 0);
  } finally {
    gpu.device.destroy();
  }
});

Deno.test("writeBuffer takes a view on a SharedArrayBuffer (host memory of a simulated machine)", async () => {
  const gpu = await acquireGpu();
  try {
    const shared = new Float32Array(new SharedArrayBuffer(4096), 1024, 100).map((_, i) => i * 1.5);
    const buffer = storageBuffer(gpu.device, shared.byteLength, "from shared memory");
    gpu.device.queue.writeBuffer(buffer, 0, shared);
    assert.deepEqual(new Float32Array(await readBuffer(gpu.device, buffer)), shared.slice());
  } finally {
    gpu.device.destroy();
  }
});

Deno.test("a Deno Worker obtains its own GPU device and passes the self-check", async () => {
  const worker = new Worker(new URL("../web/selfcheck-worker.ts", import.meta.url), { type: "module" });
  try {
    const reply = await new Promise<WorkerSelfCheckReply>((resolve, reject) => {
      worker.onmessage = (event) => resolve(event.data);
      worker.onerror = (event) => reject(new Error(event.message));
      worker.postMessage("run");
    });
    assert.ok(reply.ok, JSON.stringify(reply));
    assert.match(reply.adapter, /\S/);
    assert.deepEqual([reply.elements, reply.mismatches], [100_003, 0]);
  } finally {
    worker.terminate();
  }
});
