// The page's entry: a thin view over the same code Deno runs. It acquires the page's GPU, runs the
// self-check here and in a Worker and hands the results to <gpu-status>, and tells <gemini-lab> (the
// simulated cluster) whether the adapter is a software one, and where a run must fit: the adapter's binding
// limit and the memory the browser reports.

import "./gpu-status.ts";
import "./lab-app.ts";
import type { CheckState } from "./gpu-status.ts";
import type { WorkerSelfCheckReply } from "./selfcheck-worker.ts";
import { acquireGpu } from "../core/gpu.ts";
import { bindingLimit } from "../core/model.ts";
import { runSelfCheck } from "../core/selfcheck.ts";

const status = document.querySelector("gpu-status")!;
const lab = document.querySelector("gemini-lab")!;

async function checkOnPage(): Promise<CheckState> {
  try {
    const gpu = await acquireGpu();
    status.adapter = gpu.adapter;
    lab.softwareAdapter = gpu.adapter.isFallback;
    // In GiB, rounded down; Chromium's alone (the device asks for the adapter's own binding limits).
    const deviceMemory = (navigator as Navigator & { deviceMemory?: number }).deviceMemory;
    lab.budget = {
      bindingBytes: bindingLimit(gpu.device),
      reportedBytes: deviceMemory ? deviceMemory * 2 ** 30 : null,
      gpuInHostMemory: gpu.adapter.isFallback,
    };
    const result = await runSelfCheck(gpu.device);
    gpu.device.destroy();
    return { state: "done", result };
  } catch (error) {
    return { state: "error", message: error instanceof Error ? error.message : String(error) };
  }
}

function checkInWorker(): Promise<CheckState> {
  return new Promise((resolve) => {
    const worker = new Worker(new URL("./selfcheck-worker.js", import.meta.url), { type: "module" });
    const finish = (check: CheckState) => {
      worker.terminate();
      resolve(check);
    };
    worker.onmessage = ({ data }: MessageEvent<WorkerSelfCheckReply>) =>
      finish(
        data.ok
          ? { state: "done", result: { elements: data.elements, mismatches: data.mismatches } }
          : { state: "error", message: data.error },
      );
    worker.onerror = (event) => finish({ state: "error", message: `the Worker failed: ${event.message}` });
    worker.postMessage("run");
  });
}

async function runChecks() {
  status.isolated = globalThis.crossOriginIsolated === true;
  status.pageCheck = status.workerCheck = { state: "running" };
  status.pageCheck = await checkOnPage();
  status.workerCheck = await checkInWorker();
}

status.addEventListener("rerun", runChecks);
runChecks();
