// The recovery section: GEMINI's claims measured on the simulated cluster, per model size, in one run.
// - The cost of a checkpoint every iteration: iteration time with in-memory checkpoints replicated every
//   iteration against the same cluster without checkpoints.
// - Recovery from CPU memory against recovery from the persistent store: a machine's hardware fails and
//   its replacement fetches the shard from a peer; then a whole group fails and every machine rolls back
//   to the persistent store. Retrieval, the whole recovery (failure to resumed training) and the wasted
//   time (the recovery plus the iterations lost) are compared as ratios.

import type { ObservedRecovery } from "../agents/sim/observer.ts";
import { runCluster, type RunContext } from "../agents/sim/run.ts";
import { MODEL_PRESETS, parameterCount } from "../core/model.ts";
import {
  type BenchContext,
  CLUSTER_MODELS,
  type ClusterModel,
  formatBytes,
  median,
  type Section,
  trainModel,
} from "./measure.ts";

const recoveryModels = (quick: boolean) => quick ? CLUSTER_MODELS.slice(0, 1) : CLUSTER_MODELS;

const WARMUP_ITERATIONS = 3;
const MEASURED_ITERATIONS = 8;
const PERSIST_EVERY = 5;
// The paper's network and persistent storage (400 and 20 Gbps), scaled to these models: the same 20x.
const NETWORK_BYTES_PER_SECOND = 400e6;
const STORAGE_BYTES_PER_SECOND = 20e6;
// Generous: on a software adapter a Worker's thread can be busy in the GPU for hundreds of ms.
const HEARTBEAT_MS = 100, HEARTBEAT_TIMEOUT_MS = 3000;

interface ModelRun {
  model: string;
  stateBytes: number;
  withCheckpoints: number[];
  withoutCheckpoints: number[];
  peer: ObservedRecovery;
  persistent: ObservedRecovery;
}

/** Trains a cluster through `story`; returns its measured iteration times and its recovery reports. */
async function clusterRun(
  model: ClusterModel,
  checkpoints: boolean,
  story: (run: RunContext) => Promise<void>,
) {
  const run = await runCluster({
    storageBandwidth: STORAGE_BYTES_PER_SECOND,
    heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
    adjust: (settings) => {
      trainModel(settings, model);
      settings.checkpoint.every = checkpoints ? 1 : Number.MAX_SAFE_INTEGER;
      settings.checkpoint.persistEvery = checkpoints ? PERSIST_EVERY : 0;
      settings.network.bandwidth = NETWORK_BYTES_PER_SECOND;
      settings.heartbeatMs = HEARTBEAT_MS;
    },
  }, story);
  const measured = run.iterations.slice(WARMUP_ITERATIONS + 1, WARMUP_ITERATIONS + 1 + MEASURED_ITERATIONS);
  return { iterationMs: measured.map((report) => report.milliseconds), recoveries: run.recoveries };
}

async function measureModel(model: ClusterModel): Promise<ModelRun> {
  const measuredEnd = WARMUP_ITERATIONS + MEASURED_ITERATIONS;
  const without = await clusterRun(model, false, ({ root }) => root.runUntil(measuredEnd).then(() => {}));
  // A machine fails in the middle of an iteration (its replacement fetches from a peer), then a whole
  // group fails halfway between two persistent checkpoints (the expected loss for a failure at random).
  const peerAt = measuredEnd + 2;
  const groupAt = Math.ceil((peerAt + 2) / PERSIST_EVERY) * PERSIST_EVERY + Math.ceil(PERSIST_EVERY / 2);
  const withCheckpoints = await clusterRun(model, true, async ({ root, cluster }) => {
    await root.runUntil(measuredEnd);
    await cluster.inject([1], "hardware", { phase: "step", iteration: peerAt });
    await root.runUntil(groupAt - 1);
    await cluster.inject(root.plan.holders[0], "hardware", { phase: "step", iteration: groupAt });
    await root.runUntil(groupAt);
  });
  const [peer, persistent] = withCheckpoints.recoveries;
  if (!peer || !persistent || persistent.fromPersistent === 0) {
    throw new Error(`${model.name}: expected a recovery from a peer, then one from the persistent store`);
  }
  return {
    model: model.name,
    stateBytes: parameterCount(MODEL_PRESETS[model.name]) * 12,
    withCheckpoints: withCheckpoints.iterationMs,
    withoutCheckpoints: without.iterationMs,
    peer,
    persistent,
  };
}

/** The wasted time of a failure: the recovery and the iterations done again, at the measured iteration time. */
function wasted(report: ObservedRecovery, iterationMs: number): number {
  return report.total + report.lostIterations * iterationMs;
}

export const recoverySection: Section = {
  name: "recovery",
  steps: (quick) => recoveryModels(quick).length,
  async run({ quick, progress }: BenchContext) {
    const runs: ModelRun[] = [];
    for (const model of recoveryModels(quick)) {
      runs.push(await measureModel(model));
      progress.step(`recovery ${model.name}`);
    }
    const ms = (value: number) => value.toFixed(1);
    const ratio = (slow: number, fast: number) => `${(slow / Math.max(fast, 1e-3)).toFixed(1)}x`;
    return {
      title: "Recovery: from CPU memory against the persistent store, and the cost of a checkpoint every iteration",
      summary: summarizeRecovery(runs),
      intro: `Four machines (Workers, one GPU device each), ZeRO-sharded data-parallel, group placement m = 2, on ` +
        `a network of ${NETWORK_BYTES_PER_SECOND / 1e6} MB/s a link and a persistent store of ` +
        `${STORAGE_BYTES_PER_SECOND / 1e6} MB/s (the paper's 400 and 20 Gbps, scaled to these models). ` +
        `Iteration times are medians of ${MEASURED_ITERATIONS} iterations after ${WARMUP_ITERATIONS}, with an ` +
        `in-memory checkpoint replicated every iteration and without checkpoints, in the same run. A hardware ` +
        `failure is recovered from a peer's memory; a whole group's failure, halfway between persistent ` +
        `checkpoints (every ${PERSIST_EVERY} iterations), from the persistent store. Retrieval is the slowest ` +
        `machine's fetch of its shard; recovery runs from the failure to resumed training (detection by a ` +
        `${HEARTBEAT_TIMEOUT_MS} ms heartbeat timeout and the replacement's start are in it and the same for ` +
        `both); wasted time adds the iterations lost at the measured iteration time.`,
      header: [
        "model",
        "state",
        "iteration ms, no checkpoints",
        "iteration ms, checkpoint every iteration",
        "overhead",
        "retrieval ms memory / persistent",
        "x",
        "recovery ms memory / persistent",
        "x",
        "iterations lost",
        "wasted ms memory / persistent",
        "x",
      ],
      rows: runs.map((run) => {
        const iteration = median(run.withCheckpoints), bare = median(run.withoutCheckpoints);
        const [wastedPeer, wastedPersistent] = [wasted(run.peer, iteration), wasted(run.persistent, iteration)];
        return [
          run.model,
          formatBytes(run.stateBytes),
          ms(bare),
          ms(iteration),
          `${((iteration / bare - 1) * 100).toFixed(1)}%`,
          `${ms(run.peer.retrieval)} / ${ms(run.persistent.retrieval)}`,
          ratio(run.persistent.retrieval, run.peer.retrieval),
          `${ms(run.peer.total)} / ${ms(run.persistent.total)}`,
          ratio(run.persistent.total, run.peer.total),
          `${run.peer.lostIterations} / ${run.persistent.lostIterations}`,
          `${ms(wastedPeer)} / ${ms(wastedPersistent)}`,
          ratio(wastedPersistent, wastedPeer),
        ];
      }),
      raw: runs,
    };
  },
};

/** The largest model: retrieval and wasted time, memory against the persistent store. */
function summarizeRecovery(runs: ModelRun[]): string {
  const run = runs[runs.length - 1], iteration = median(run.withCheckpoints);
  return `${run.model}: retrieval from memory ${(run.persistent.retrieval / run.peer.retrieval).toFixed(1)}x faster ` +
    `than from the persistent store; wasted time ${
      (wasted(run.persistent, iteration) / wasted(run.peer, iteration)).toFixed(1)
    }x less`;
}
