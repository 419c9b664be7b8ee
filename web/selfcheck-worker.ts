// A browser Worker that obtains its own GPUDevice and runs the GPU self-check: the simulated machines
// of the cluster are Workers like this one, each with a device of its own.

import { acquireGpu } from "../core/gpu.ts";
import { runSelfCheck } from "../core/selfcheck.ts";

/** What the Worker posts back: the result, or why it could not run. */
export type WorkerSelfCheckReply =
  | { ok: true; adapter: string; mismatches: number; elements: number }
  | { ok: false; error: string };

onmessage = async () => {
  let reply: WorkerSelfCheckReply;
  try {
    const gpu = await acquireGpu();
    const result = await runSelfCheck(gpu.device);
    gpu.device.destroy();
    reply = { ok: true, adapter: gpu.adapter.description, ...result };
  } catch (error) {
    reply = { ok: false, error: error instanceof Error ? error.message : String(error) };
  }
  postMessage(reply);
};
