// Whether a lab run fits this browser before anything is allocated: the same plan and the same words as
// `deno task demo` (`fitMemory`), against the adapter's real binding limit and the memory the browser
// reports. A browser tells little: `navigator.deviceMemory` is a rough figure of the whole computer's
// memory (and is missing outside Chromium), and nothing at all of a GPU's own memory. So a plan is
// refused only on what is known, and a fit that could not be checked says so instead of claiming it.

import { memoryPlanSettings } from "../agents/protocol/spec.ts";
import { fitMemory, type MemoryPlan } from "../core/trainer.ts";
import { clusterSettings, type LabSettings } from "./session.ts";

/** What the page knows of where a run must fit. */
export interface PageBudget {
  /** The largest storage binding (and buffer) the adapter allows. */
  bindingBytes: number;
  /** The computer's memory as the browser reports it (`navigator.deviceMemory`), null where it does not. */
  reportedBytes: number | null;
  /** A software adapter's GPU memory is host memory. */
  gpuInHostMemory: boolean;
}

/** The verdict on a plan: fits, does not (in fitMemory's words), or cannot be told; said in a sentence or two. */
export interface MemoryFit {
  verdict: "fits" | "does not fit" | "unknown";
  text: string;
}

const size = (bytes: number) =>
  bytes < 2 ** 30 ? `${(bytes / 2 ** 20).toFixed(1)} MiB` : `${(bytes / 2 ** 30).toFixed(2)} GiB`;

/**
 * The run `settings` asks for, against `budget`. The lab trains the failure-free run it is compared with
 * beside the run itself, so each gets half of the memory the browser reports.
 */
export function labMemoryFit(settings: LabSettings, budget: PageBudget): MemoryFit {
  const plan = memoryPlanSettings(clusterSettings(settings)), reported = budget.reportedBytes;
  const where = reported === null
    ? "the browser does not say how much memory this computer has (no navigator.deviceMemory)"
    : `half of the ${size(reported)} the browser reports (navigator.deviceMemory); the failure-free run ` +
      "the lab compares with takes the other half";
  let fitted: MemoryPlan;
  try {
    fitted = fitMemory(plan, {
      bindingBytes: budget.bindingBytes,
      availableBytes: reported === null ? Number.POSITIVE_INFINITY : reported / 2,
      gpuInHostMemory: budget.gpuInHostMemory,
    });
  } catch (error) {
    return {
      verdict: "does not fit",
      text: `The ${settings.model} model: ${(error as Error).message}. Available: ${where}.`,
    };
  }
  const total = settings.machines * (fitted.hostBytes + (budget.gpuInHostMemory ? fitted.gpuBytes : 0));
  const needs = `${settings.machines} machines need ${size(total)} (${size(fitted.gpuBytes)} GPU and ` +
    `${size(fitted.hostBytes)} host memory each${budget.gpuInHostMemory ? ", all of it host memory here" : ""})`;
  const unchecked = budget.gpuInHostMemory ? "" : " A browser cannot read the GPU's own memory: that is not checked.";
  return reported === null
    ? {
      verdict: "unknown",
      text: `The ${settings.model} model: ${needs}; ${where}: whether it fits is not known.${unchecked}`,
    }
    : { verdict: "fits", text: `The ${settings.model} model fits: ${needs}, within ${where}.${unchecked}` };
}

/** `labMemoryFit` once the page knows its adapter; before that only the tiny model may run. */
export function labFit(settings: LabSettings, budget: PageBudget | null): MemoryFit {
  if (budget) return labMemoryFit(settings, budget);
  return settings.model === "tiny"
    ? { verdict: "unknown", text: "The tiny model: the adapter's limits are not known yet." }
    : { verdict: "does not fit", text: `The ${settings.model} model waits for the adapter's limits.` };
}
