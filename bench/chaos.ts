// The chaos section: the seeded soak of agents/sim/chaos.ts for each placement, on the paper's 16 machines
// (8 with --quick): faults injected by kind, shards restored by source, iterations lost, the time from a
// failure's detection to training resumed (virtual time, on the soak's 10 MB/s links and stand-in
// arithmetic), and whether every invariant held against the failure-free run. The share of uniformly
// drawn pairs of hardware failures that memory alone could recover from goes beside the placement's exact probability.

import type { ChaosReport } from "../agents/sim/chaos.ts";
import { runChaos } from "../agents/sim/chaos.ts";
import type { BenchContext, Section } from "./measure.ts";
import { barChart } from "./svg.ts";

const SOURCES = ["local", "peer", "persistent"] as const;
/** m for each placement: with m = 2 dividing the machines mixed placement is group placement, so it gets 3. */
const CASES = [["group", 2], ["ring", 2], ["mixed", 3]] as const;

const total = (counts: Record<string, number>) => Object.values(counts).reduce((a, b) => a + b, 0);

export const chaosSection: Section = {
  name: "chaos",
  steps: () => CASES.length,
  async run({ quick, progress }: BenchContext) {
    const machines = quick ? 8 : 16, failures = quick ? 100 : 1000, seed = 1;
    const reports: ChaosReport[] = [];
    for (const [placement, replicas] of CASES) {
      const started = performance.now();
      reports.push(await runChaos({ seed, machines, failures, placement, replicas }));
      progress.step(`chaos, ${placement} placement (${((performance.now() - started) / 1000).toFixed(0)} s)`);
    }
    const held = reports.filter((r) => !r.violations.length).length;
    return {
      title: "Chaos: a seeded soak of failures, checked bit for bit",
      summary: `${reports.map((r) => total(r.injected)).join(" / ")} faults on ${machines} machines ` +
        `(${
          CASES.map(([placement, m]) => `${placement}, m = ${m}`).join(" / ")
        }): every invariant held in ${held} of ${reports.length}`,
      intro:
        `\`deno task chaos --seed ${seed} --machines ${machines} --failures ${failures} --placement P --replicas M\`: ` +
        `the real root and worker agents, placement, scheduler and checkpoint stores on a virtual clock, with ` +
        `the GPU's arithmetic replaced by a deterministic stand-in. Faults: software and hardware failures (one ` +
        `machine, a uniform pair, a whole group; at once, in a step, a checkpoint, a replication or a recovery), ` +
        `slow machines fenced, corrupt replicas, failed and torn persistent writes. Time to recover runs from the ` +
        `first detection to training resumed. Pairs: uniformly drawn pairs of hardware failures that memory ` +
        `alone could recover from, beside the placement's exact probability.`,
      header: [
        "placement",
        "m",
        "faults",
        "recoveries",
        ...SOURCES.map((source) => `shards from ${source}`),
        "corrupt copies passed over",
        "iterations lost",
        "mean time to recover (ms)",
        "pairs from memory (exact P)",
        "invariants",
        "history hash",
      ],
      rows: reports.map((r) => [
        r.options.placement,
        String(r.options.replicas),
        String(total(r.injected)),
        String(r.recoveries),
        ...SOURCES.map((source) => String(r.restored[source] ?? 0)),
        String(r.passedOver),
        String(r.lostIterations),
        r.meanRecoveryMs.toFixed(0),
        `${r.pairs.fromMemory}/${r.pairs.failures} (${r.pairs.exact.toFixed(3)})`,
        r.violations.length ? `VIOLATED: ${r.violations[0]}` : "all held",
        r.hash.slice(0, 12),
      ]),
      figures: [{
        name: "chaos",
        title: `Shards restored, by source (${machines} machines, ${failures} failures)`,
        svg: barChart(
          `Shards restored, by source (${machines} machines, ${failures} failures)`,
          "shards restored",
          reports.map((r) => `${r.options.placement}, m = ${r.options.replicas}`),
          SOURCES.map((source) => ({ name: source, values: reports.map((r) => r.restored[source] ?? 0) })),
        ),
      }],
      raw: reports.map(({ history: _history, ...rest }) => rest),
    };
  },
};
