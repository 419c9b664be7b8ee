// The placement section: the probability that k simultaneous random machine failures still leave a copy
// of every checkpoint in CPU memory, for group, ring and mixed placement, at the paper's scale (16
// machines) and m = 2 and 3 (with m = 3 not dividing 16, group placement does not exist and mixed is its
// stand-in). Computed exactly, and checked in the same run against a seeded Monte Carlo count; the paper's
// closed form for groups is printed beside the exact count.

import {
  groupRecoveryProbability,
  type PlacementPlan,
  placementPlan,
  type PlacementStrategy,
  recoveryProbability,
  recoveryProbabilityMonteCarlo,
} from "../agents/replication/placement.ts";
import type { BenchContext, Section } from "./measure.ts";
import { lineChart } from "./svg.ts";

const MACHINES = 16, MAX_FAILURES = 8;

interface Case {
  replicas: number;
  strategy: PlacementStrategy;
  plan: PlacementPlan;
}

function cases(): Case[] {
  return [2, 3].flatMap((replicas) =>
    (["group", "ring", "mixed"] as const)
      // Where m divides N mixed placement is group placement; where it does not, there are no groups of m.
      .filter((strategy) => strategy === "ring" || (strategy === "group") === (MACHINES % replicas === 0))
      .map((strategy) => ({ replicas, strategy, plan: placementPlan(strategy, MACHINES, replicas) }))
  );
}

export const placementSection: Section = {
  name: "placement",
  steps: () => 1,
  run({ quick, progress }: BenchContext) {
    const trials = quick ? 20_000 : 200_000;
    const failures = Array.from({ length: MAX_FAILURES }, (_, i) => i + 1);
    const raw = cases().map(({ replicas, strategy, plan }) => ({
      replicas,
      strategy,
      exact: failures.map((k) => recoveryProbability(plan, k)),
      monteCarlo: failures.map((k) => recoveryProbabilityMonteCarlo(plan, k, trials, 1000 + k)),
      paperFormula: strategy === "group" ? failures.map((k) => groupRecoveryProbability(MACHINES, replicas, k)) : null,
    }));
    progress.step("placement probabilities");
    const largestMonteCarloError = Math.max(
      ...raw.flatMap((r) => r.exact.map((p, i) => Math.abs(p - r.monteCarlo[i]))),
    );
    const m2 = (strategy: PlacementStrategy) => raw.find((r) => r.replicas === 2 && r.strategy === strategy)!;
    return Promise.resolve({
      title: "Placement: the probability of recovering from CPU memory",
      summary: `${MACHINES} machines, m = 2, 2 failures: group ${(m2("group").exact[1] * 100).toFixed(1)}%, ring ${
        (m2("ring").exact[1] * 100).toFixed(1)
      }% (Monte Carlo within ${largestMonteCarloError.toFixed(4)} of exact)`,
      intro: `${MACHINES} machines (the paper's cluster), each checkpoint in CPU memory on m machines (its owner's ` +
        `included), k machines failing at random at once. Exact counts over every failure set; in brackets a ` +
        `seeded Monte Carlo estimate of ${trials.toLocaleString("en")} trials (largest difference here ` +
        `${largestMonteCarloError.toFixed(4)}); for group placement the paper's closed form gives the same as the ` +
        `exact count. With m = 2 mixed placement is group placement; with m = 3, which does not divide ${MACHINES}, ` +
        `there is no group placement, and mixed is ${describeSets(placementPlan("mixed", MACHINES, 3))}.`,
      header: ["m", "placement", ...failures.map((k) => `k = ${k}`)],
      rows: raw.flatMap((r) => [
        [
          String(r.replicas),
          r.strategy,
          ...r.exact.map((p, i) => `${(p * 100).toFixed(2)}% (${(r.monteCarlo[i] * 100).toFixed(2)}%)`),
        ],
        ...(r.paperFormula
          ? [[String(r.replicas), "group, paper's formula", ...r.paperFormula.map((p) => `${(p * 100).toFixed(2)}%`)]]
          : []),
      ]),
      figures: [{
        name: "placement",
        title: `P(recover from CPU memory), ${MACHINES} machines`,
        svg: lineChart(
          `P(recover from CPU memory), ${MACHINES} machines`,
          "machines failing at once (k)",
          "probability",
          failures,
          raw.map((r) => ({ name: `${r.strategy}, m = ${r.replicas}`, values: r.exact })),
        ),
      }],
      raw,
    });
  },
};

/** "4 groups of 3 and a ring of 4": how a plan splits the machines. */
function describeSets(plan: PlacementPlan): string {
  const groups = plan.sets.filter((set) => !set.ring), ring = plan.sets.find((set) => set.ring);
  return `${groups.length} groups of ${plan.replicas}` + (ring ? ` and a ring of ${ring.members.length}` : "");
}
