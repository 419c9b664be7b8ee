// A cluster's memory plan against what the process really took: the in-process Worker cluster trains a
// few iterations while its peak RSS (VmHWM, reset first) is read, less the process's RSS before it started.
// On a software adapter GPU memory is host memory, so the plan's GPU and host bytes both count.

import { runCluster } from "../agents/sim/run.ts";
import { type ClusterSettings, memoryPlanSettings } from "../agents/protocol/spec.ts";
import { planMemory } from "../core/trainer.ts";
import { type GPT2Config, parameterLayout } from "../core/model.ts";

/** A model whose state dominates a machine's memory (10.6M parameters) yet trains in seconds here. */
const CLUSTER_MEMORY_MODEL: GPT2Config = { vocab_size: 256, n_ctx: 64, n_embd: 384, n_head: 4, n_layer: 6 };

export interface PeakMeasurement {
  machines: number;
  parameters: number;
  iterations: number;
  /** The plan for the whole cluster: machines x (GPU + host). */
  plannedBytes: number;
  /** The process's RSS before the cluster started. */
  baselineBytes: number;
  /** Peak RSS during the run, less the baseline. */
  measuredBytes: number;
}

function statusBytes(field: "VmRSS" | "VmHWM"): number {
  const line = Deno.readTextFileSync("/proc/self/status").split("\n").find((l) => l.startsWith(`${field}:`));
  if (!line) throw new Error(`/proc/self/status has no ${field}: peak RSS is read on Linux only`);
  return Number(line.split(/\s+/)[1]) * 1024;
}

/** Trains `iterations` on `machines` Worker machines without failures and reads the process's peak RSS. */
export async function measureClusterPeak(
  config: GPT2Config,
  machines: number,
  iterations: number,
  batch = 1,
  time = 16,
): Promise<PeakMeasurement> {
  const adjust = (settings: ClusterSettings) => {
    settings.machines = machines;
    settings.training = { ...settings.training, config, batchPerMachine: batch, time };
  };
  let plannedBytes = 0;
  // Resets VmHWM to the current RSS (Linux's clear_refs "5"), so the peak is this run's.
  Deno.writeTextFileSync("/proc/self/clear_refs", "5");
  const baselineBytes = statusBytes("VmRSS");
  await runCluster({
    adjust: (settings) => {
      adjust(settings);
      const plan = planMemory(memoryPlanSettings(settings));
      plannedBytes = machines * (plan.gpuBytes + plan.hostBytes);
    },
    heartbeatTimeoutMs: 60_000,
  }, ({ root }) => root.runUntil(iterations));
  const measuredBytes = statusBytes("VmHWM") - baselineBytes;
  const parameters = parameterLayout(config).totalFloats;
  return { machines, parameters, iterations, plannedBytes, baselineBytes, measuredBytes };
}

/**
 * `measureClusterPeak` of CLUSTER_MEMORY_MODEL in a process of its own: memory this process took before (GPT-2
 * 124M's, in the gpt2 section) and kept would otherwise sit in the baseline and be reused by the cluster,
 * which then seemed to take 27% less than its plan.
 */
export async function measureClusterPeakApart(machines: number, iterations: number): Promise<PeakMeasurement> {
  const args = [
    "run",
    "--v8-flags=--expose-gc",
    "--allow-all",
    new URL(import.meta.url).pathname,
    `${machines}`,
    `${iterations}`,
    "--json",
  ];
  const { success, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!success) throw new Error(`bench/memory-plan.ts failed: ${new TextDecoder().decode(stderr).slice(-600)}`);
  return JSON.parse(new TextDecoder().decode(stdout).trim().split("\n").at(-1)!);
}

if (import.meta.main) {
  // deno run --v8-flags=--expose-gc --allow-all bench/memory-plan.ts [machines] [iterations] [--json]: the bench's row on its own.
  const json = Deno.args.includes("--json");
  const [machines, iterations] = Deno.args.filter((arg) => arg !== "--json").map(Number);
  const m = await measureClusterPeak(CLUSTER_MEMORY_MODEL, machines || 4, iterations || 5);
  if (json) {
    console.log(JSON.stringify(m));
    Deno.exit(0);
  }
  const mib = (bytes: number) => (bytes / 2 ** 20).toFixed(1);
  console.log(
    `plan ${mib(m.plannedBytes)} MiB, measured ${mib(m.measuredBytes)} MiB over a baseline of ${
      mib(m.baselineBytes)
    } MiB: ${(100 * (m.measuredBytes / m.plannedBytes - 1)).toFixed(1)}% off the plan`,
  );
}
