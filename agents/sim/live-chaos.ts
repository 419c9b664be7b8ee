// Chaos against the live cluster (`deno task chaos --live`): the deterministic soak's fault schedule, drawn
// from the same seed, struck into the Worker cluster training the tiny GPT-2 on WebGPU, and checked with
// the same invariants against the same cluster trained without failures. Its network, heartbeats and
// persistent files run on the wall clock, so its history's times (and hash) differ from run to run; what
// must not differ is the training: every loss and the final state, bit for bit. Slow machines and
// persistent-store faults need the virtual clock's control: the deterministic mode strikes them, this one
// logs them as skipped.

import { placementPlan } from "../replication/placement.ts";
import type { ClusterSettings } from "../protocol/spec.ts";
import {
  type ChaosOptions,
  type ChaosReport,
  checkRun,
  drawFaults,
  drive,
  type Fault,
  type InProcessRun,
} from "./chaos.ts";
import { runCluster } from "./run.ts";

/** The live root's lease: long enough that two busy cores do not starve a heartbeat past it. */
const LIVE_LEASE_MS = 1000;

export async function runLiveChaos(options: ChaosOptions): Promise<ChaosReport> {
  const faults = drawFaults(options, placementPlan(options.placement, options.machines, options.replicas));
  const iterations = faults.at(-1)!.iteration + 3;
  const adjust = (settings: ClusterSettings) => {
    Object.assign(settings, { machines: options.machines, placement: options.placement, replicas: options.replicas });
    settings.training = { ...settings.training, corpus: { ...settings.training.corpus, seed: options.seed } };
  };
  const train = async (schedule: Fault[]) => {
    let run: InProcessRun | null = null;
    const { settings } = await runCluster({ adjust, heartbeatTimeoutMs: LIVE_LEASE_MS }, async ({ root, cluster }) => {
      run = await drive(root, cluster, iterations, schedule);
    });
    return { run: run!, settings };
  };
  const { run, settings } = await train(faults);
  const { run: reference } = await train([]);
  return checkRun(options, settings, iterations, run, reference);
}
