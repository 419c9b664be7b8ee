// The paper-scale section: GEMINI's setup (16 machines, 100B-parameter GPT-2 under ZeRO-3, 400 Gbps
// network, 20 Gbps remote storage) in the discrete-event simulation, with the paper's published numbers
// printed beside ours: iteration time under the three replication policies, recovery from CPU memory
// against remote storage, and the time a failure wastes against the paper's two baselines.

import { REPLICATION_POLICIES } from "../agents/replication/interleaving.ts";
import {
  ASSUMED,
  describePaperScale,
  PAPER,
  PAPER_SCALE_MEASURED_ITERATIONS,
  paperScaleReport,
  paperShardBytes,
} from "../agents/sim/paper-scale.ts";
import { type BenchContext, formatBytes, type Section } from "./measure.ts";
import { barChart } from "./svg.ts";

export const paperSection: Section = {
  name: "paper",
  steps: () => 1,
  run({ progress }: BenchContext) {
    const report = paperScaleReport();
    progress.step("paper-scale simulation");
    const { policies, wasted, speedup, reduction } = report;
    const percent = (fraction: number) => `${(fraction * 100).toFixed(1)}%`;
    const overhead = (policy: "naive" | "interleaved") =>
      policies[policy].iterationSeconds / policies.none.iterationSeconds - 1;

    const rows = describePaperScale(report);
    return Promise.resolve({
      title: "Paper scale: the discrete-event simulation against the paper's numbers",
      summary: `recovery ${speedup.toFixed(0)}x faster from memory (paper: >${PAPER.published.recoverySpeedup}x); ` +
        `wasted time -${percent(reduction.highFreq)} vs HighFreq (paper: >${
          percent(PAPER.published.wastedTimeReduction)
        }); interleaved replication ${percent(overhead("interleaved"))}, naive ${percent(overhead("naive"))}`,
      intro: `The paper's cluster: ${PAPER.machines} machines of ${PAPER.gpusPerMachine} GPUs, a ` +
        `${PAPER.parameters / 1e9}B-parameter GPT-2 under ZeRO-3, ${PAPER.networkBytesPerSecond * 8 / 1e9} Gbps ` +
        `network, ${PAPER.storageBytesPerSecond * 8 / 1e9} Gbps remote storage, m = ${PAPER.replicas}, group ` +
        `placement, the artifact's profiling (${PAPER.profileIterations} iterations, gaps under ${PAPER.minIdleMs} ms ` +
        `ignored, ${PAPER.usableFraction * 100}% of a gap used) and detection (${PAPER.detectionSeconds} s). Our ` +
        `estimates where the paper's summary gives none (agents/sim/paper-scale.ts): ${ASSUMED.stateBytesPerParameter} ` +
        `bytes of state a parameter (a ${formatBytes(paperShardBytes())} shard a machine), three fp16 collectives an ` +
        `iteration, ${ASSUMED.tokensPerIteration.toLocaleString("en")} tokens at ` +
        `${ASSUMED.flopsPerGpu / 1e12} TFLOP/s a GPU (idle spans profiled: ${
          policies.interleaved.idleSpansSeconds.map((span) => span.toFixed(2)).join(", ")
        } s), PCIe at ${ASSUMED.pcieBytesPerSecond / 1e9} GB/s a machine, ${formatBytes(ASSUMED.chunkBytes)} ` +
        `chunks. Iteration times are the means of the last ${PAPER_SCALE_MEASURED_ITERATIONS} of ` +
        `${PAPER.profileIterations + PAPER_SCALE_MEASURED_ITERATIONS} simulated ` +
        `iterations. Recovery is a hardware failure's, ` +
        `without the machine's replacement and restart (the same for both). Wasted time = t_ckpt + interval / 2 + ` +
        `recovery. Our speed-up is larger than the paper's: this model leaves out restarting the processes (the ` +
        `same for both) and runs every link at its nominal rate.`,
      header: ["", "simulated here", "the paper"],
      rows,
      figures: [{
        name: "paper-iteration",
        title: "Paper scale: iteration time under each replication policy",
        svg: barChart(
          "Paper scale: iteration time (s) under each replication policy",
          "seconds an iteration",
          ["no checkpoint traffic", "naive", "interleaved"],
          [{ name: "simulated", values: REPLICATION_POLICIES.map((policy) => policies[policy].iterationSeconds) }],
        ),
      }, {
        name: "paper-wasted",
        title: "Paper scale: time wasted by a failure",
        svg: barChart(
          "Paper scale: seconds wasted by a failure",
          "seconds",
          ["GEMINI", "HighFreq", "Strawman"],
          [{ name: "simulated", values: [wasted.gemini, wasted.highFreq, wasted.strawman] }],
        ),
      }],
      raw: { paper: PAPER, assumed: ASSUMED, ...report },
    });
  },
};
