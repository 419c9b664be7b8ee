// The interleaving section: what replicating a checkpoint every iteration costs training on the simulated
// network, for the three policies side by side in one run (no checkpoint traffic, naive replication,
// interleaved replication) and against no checkpoints at all, across model sizes and network bandwidths. Each live run is also replayed in
// the discrete-event simulation (its measured computation, the simulated network), and the simulated
// iteration time is printed beside the live one: where the two overlap in scale they must agree.

import { type ClusterSettings, largestCheckpointBytes } from "../agents/protocol/spec.ts";
import { runCluster } from "../agents/sim/run.ts";
import { replayOfLiveRun, simulateTraining } from "../agents/sim/simulation.ts";
import { type BenchContext, CLUSTER_MODELS, formatBytes, mean, median, type Section, trainModel } from "./measure.ts";
import { barChart } from "./svg.ts";

/** What each run of a case does: no checkpoints at all, or one every iteration replicated by a policy. */
const VARIANTS = [
  { name: "no checkpoints", policy: "none", checkpoints: false },
  { name: "no checkpoint traffic", policy: "none", checkpoints: true },
  { name: "naive", policy: "naive", checkpoints: true },
  { name: "interleaved", policy: "interleaved", checkpoints: true },
] as const;
type Variant = (typeof VARIANTS)[number];

function cases(quick: boolean) {
  const models = CLUSTER_MODELS.slice(0, 2);
  // Slow enough that the collectives are a good part of an iteration, fast enough for one checkpoint an iteration.
  const bandwidths = [10e6, 40e6];
  return (quick ? models.slice(0, 1) : models).flatMap((model) =>
    (quick ? bandwidths.slice(0, 1) : bandwidths).map((bandwidth) => ({ model, bandwidth }))
  );
}

type Case = ReturnType<typeof cases>[number];

// Profiling (3 iterations) and the first aligned replication are over after 8 iterations; then the
// variants take turns in blocks, so that each sees the same cluster in the same state (on a software
// adapter one cluster's iterations can run 10% faster or slower than the next's); the first iteration of
// each block is left out of the measure (it carries the change-over).
const WARMUP_ITERATIONS = 8;
const BLOCK = 4;
const rounds = (quick: boolean) => quick ? 3 : 5;

interface VariantRun {
  variant: Variant["name"];
  liveMs: number[];
  simulatedMs: number[];
  /** The same iterations simulated without their checkpoint traffic: the computation alone. */
  withoutTrafficMs: number[];
  /** At the end of each, how many iterations the newest checkpoint every machine has replicated lags behind. */
  replicaLag: number[];
}

interface CaseRun {
  checkpointBytes: number;
  /** The interval the interleaved policy replicated at (null: it never replicated). */
  replicateEvery: number | null;
  variants: VariantRun[];
}

async function runCase({ model, bandwidth }: Case, quick: boolean): Promise<CaseRun> {
  const adjust = (settings: ClusterSettings) => {
    trainModel(settings, model);
    settings.network.bandwidth = bandwidth;
    settings.checkpoint.persistEvery = 0;
    settings.heartbeatMs = 100;
  };
  const blocks: { variant: Variant["name"]; iterations: number[] }[] = [];
  const run = await runCluster({ adjust, heartbeatTimeoutMs: 5000 }, async ({ root }) => {
    await root.runUntil(WARMUP_ITERATIONS);
    for (let round = 0; round < rounds(quick); round++) {
      for (const { name, policy, checkpoints } of VARIANTS) {
        root.setCheckpointing({ every: checkpoints ? 1 : Number.MAX_SAFE_INTEGER, policy });
        const first = root.iteration + 1;
        await root.runUntil(root.iteration + BLOCK);
        blocks.push({ variant: name, iterations: Array.from({ length: BLOCK - 1 }, (_, i) => first + 1 + i) });
      }
    }
  });
  const replay = replayOfLiveRun(run.settings, run.iterations, run.timeline);
  const simulated = simulateTraining(replay);
  // The same run, the same computation, no checkpoint traffic: what is left of a policy's cost is its traffic's.
  const withoutTraffic = simulateTraining({ ...replay, plan: (t) => ({ ...run.iterations[t].plan, policy: "none" }) });
  const interleaved = run.iterations.filter((report) => report?.plan.policy === "interleaved");
  return {
    checkpointBytes: largestCheckpointBytes(run.settings),
    replicateEvery: interleaved[interleaved.length - 1].plan.replicateEvery,
    variants: VARIANTS.map(({ name }) => {
      const measured = blocks.filter((block) => block.variant === name).flatMap((block) => block.iterations);
      return {
        variant: name,
        liveMs: measured.map((t) => run.iterations[t].milliseconds),
        simulatedMs: measured.map((t) => simulated.iterationMs[t - 1]),
        withoutTrafficMs: measured.map((t) => withoutTraffic.iterationMs[t - 1]),
        replicaLag: measured.map((t) => t - Math.min(...run.iterations[t].machines.map((m) => m.replicatedIteration))),
      };
    }),
  };
}

export const interleavingSection: Section = {
  name: "interleaving",
  steps: (quick) => cases(quick).length,
  async run({ quick, progress }: BenchContext) {
    const raw: (Case & CaseRun)[] = [];
    for (const item of cases(quick)) {
      raw.push({ ...item, ...await runCase(item, quick) });
      progress.step(`interleaving ${item.model.name} ${item.bandwidth / 1e6} MB/s`);
    }
    const label = (item: Case) => `${item.model.name}, ${item.bandwidth / 1e6} MB/s`;
    const liveMs = (runs: VariantRun[], variant: Variant["name"]) =>
      median(runs.find((r) => r.variant === variant)!.liveMs);
    /** How much slower `variant` trains than `baseline`. */
    const overhead = (runs: VariantRun[], variant: Variant["name"], baseline: Variant["name"]) =>
      liveMs(runs, variant) / liveMs(runs, baseline) - 1;
    const percent = (fraction: number) => `${fraction >= 0 ? "+" : ""}${(fraction * 100).toFixed(1)}%`;
    const worstAgreement = Math.max(
      ...raw.flatMap((item) => item.variants.map((r) => Math.abs(mean(r.simulatedMs) / mean(r.liveMs) - 1))),
    );
    /** The part of `variant`'s cost that is its traffic: simulated with and without it, the same computation. */
    const networkCost = (runs: VariantRun[], variant: Variant["name"]) => {
      const run = runs.find((r) => r.variant === variant)!;
      return mean(run.simulatedMs) / mean(run.withoutTrafficMs) - 1;
    };
    const lag = (runs: VariantRun[], variant: Variant["name"]) =>
      mean(runs.find((r) => r.variant === variant)!.replicaLag).toFixed(1);
    const first = raw[0];
    return {
      title: "Interleaving: the cost of replicating a checkpoint every iteration, live and simulated",
      summary: `${label(first)}: over no checkpoint traffic, interleaved ${
        percent(overhead(first.variants, "interleaved", "no checkpoint traffic"))
      } (its traffic ${percent(networkCost(first.variants, "interleaved"))}), naive ${
        percent(overhead(first.variants, "naive", "no checkpoint traffic"))
      } (its traffic ${percent(networkCost(first.variants, "naive"))}); the simulation within ${
        (worstAgreement * 100).toFixed(1)
      }% of every live run`,
      intro: `Four machines, group placement m = 2, a checkpoint in memory every iteration: kept in local memory ` +
        `only (no checkpoint traffic), or replicated to the group peer naively or interleaved (into the idle spans ` +
        `profiled over the first 3 iterations, through an 8 MiB staging buffer); and the same cluster taking no ` +
        `checkpoints at all. All four in one run per row: after ${WARMUP_ITERATIONS} iterations they take turns ` +
        `in blocks of ${BLOCK} iterations, ${rounds(quick)} rounds, and an iteration time is the median of each ` +
        `variant's iterations but the first of each block. The policies' overheads are over no checkpoint traffic ` +
        `(what the traffic costs) and, in brackets, over no checkpoints (what the whole checkpoint costs). The ` +
        `four machines share this machine's cores, so copying and checking replicas also slows their computation; ` +
        `"traffic" separates the network's part: the same iterations simulated with and without the checkpoint ` +
        `traffic, on the computation the run measured. "replicated every" is the interval the interleaved policy ` +
        `replicated at (1: every iteration); "replicas behind" is how many iterations the newest checkpoint every ` +
        `machine had replicated lagged at the end of an iteration (1: the previous iteration's, the best possible, ` +
        `since a checkpoint is sent after the all-gather), naive / interleaved. "simulated" replays the run in the ` +
        `discrete-event simulation: its measured computation and message overhead, the simulated network, the ` +
        `same scheduler; the difference is the mean's.`,
      header: [
        "model, link",
        "checkpoint",
        ...VARIANTS.map((v) => `${v.name} ms`),
        "naive overhead (over no checkpoints; its traffic)",
        "interleaved overhead (over no checkpoints; its traffic)",
        "replicated every",
        "replicas behind",
        ...VARIANTS.map((v) => `simulated ${v.name} ms (diff)`),
      ],
      rows: raw.map((item) => {
        const both = (variant: Variant["name"]) =>
          `${percent(overhead(item.variants, variant, "no checkpoint traffic"))} (${
            percent(overhead(item.variants, variant, "no checkpoints"))
          }; traffic ${percent(networkCost(item.variants, variant))})`;
        return [
          label(item),
          formatBytes(item.checkpointBytes),
          ...item.variants.map((r) => median(r.liveMs).toFixed(1)),
          both("naive"),
          both("interleaved"),
          item.replicateEvery === null ? "never" : String(item.replicateEvery),
          `${lag(item.variants, "naive")} / ${lag(item.variants, "interleaved")}`,
          ...item.variants.map((r) =>
            `${mean(r.simulatedMs).toFixed(1)} (${percent(mean(r.simulatedMs) / mean(r.liveMs) - 1)})`
          ),
        ];
      }),
      figures: [{
        name: "interleaving",
        title: "Iteration time under each replication policy",
        svg: barChart(
          "Iteration time (ms) under each replication policy, live",
          "ms an iteration (median)",
          raw.map(label),
          VARIANTS.map((variant) => ({
            name: variant.name,
            values: raw.map((item) => liveMs(item.variants, variant.name)),
          })),
        ),
      }],
      raw,
    };
  },
};
