// Replica placement and the probability of recovering from CPU memory: the plans the paper describes, the
// exact probabilities against a count of every failure set and against Monte Carlo, and group >= ring.

import assert from "node:assert/strict";
import {
  groupRecoveryProbability,
  type PlacementPlan,
  placementPlan,
  type PlacementStrategy,
  recoveryProbability,
  recoveryProbabilityMonteCarlo,
  replicaPeers,
  replicasHeldBy,
} from "../agents/replication/placement.ts";

function near(actual: number, expected: number, tolerance: number, what = "") {
  assert.ok(Math.abs(actual - expected) <= tolerance, `${what}: ${actual} vs ${expected}`);
}

/** The probability by brute force: every failure set of k machines, counted. */
function enumerated(plan: PlacementPlan, failures: number): number {
  let total = 0, recovered = 0;
  for (let mask = 0; mask < 1 << plan.machines; mask++) {
    let bits = 0;
    for (let i = 0; i < plan.machines; i++) bits += (mask >> i) & 1;
    if (bits !== failures) continue;
    total++;
    if (plan.holders.every((holders) => holders.some((holder) => !(mask & (1 << holder))))) recovered++;
  }
  return recovered / total;
}

Deno.test("group placement replicates within groups of m, ring to the next m-1 machines", () => {
  const group = placementPlan("group", 6, 2);
  assert.deepEqual(group.holders, [[0, 1], [1, 0], [2, 3], [3, 2], [4, 5], [5, 4]]);
  assert.deepEqual(replicaPeers(group, 2), [3]);
  assert.deepEqual(replicasHeldBy(group, 2), [3]);
  const ring = placementPlan("ring", 4, 3);
  assert.deepEqual(ring.holders, [[0, 1, 2], [1, 2, 3], [2, 3, 0], [3, 0, 1]]);
  assert.deepEqual(replicasHeldBy(ring, 0), [2, 3]);
});

Deno.test("mixed placement is group placement where m divides N, else groups and a ring of the rest", () => {
  assert.deepEqual(placementPlan("mixed", 8, 2).holders, placementPlan("group", 8, 2).holders);
  const mixed = placementPlan("mixed", 7, 2); // two groups of 2, a ring over the last 3 machines
  assert.deepEqual(mixed.sets.map((set) => [set.members, set.ring]), [[[0, 1], false], [[2, 3], false], [
    [4, 5, 6],
    true,
  ]]);
  assert.deepEqual(mixed.holders.slice(4), [[4, 5], [5, 6], [6, 4]]);
  for (const plan of [mixed, placementPlan("mixed", 10, 3)]) {
    // Every checkpoint has m distinct holders, and every machine holds the same number of replicas.
    for (const holders of plan.holders) assert.deepEqual(new Set(holders).size, plan.replicas);
    for (let i = 0; i < plan.machines; i++) assert.deepEqual(replicasHeldBy(plan, i).length, plan.replicas - 1);
  }
});

Deno.test("a plan that cannot be made is refused with the reason", () => {
  assert.throws(() => placementPlan("group", 6, 4), /divide/);
  assert.throws(() => placementPlan("ring", 4, 5), /replicas must be/);
  assert.throws(() => placementPlan("star" as PlacementStrategy, 4, 2), /placement must be/);
});

Deno.test("the exact recovery probabilities equal a count of every failure set", () => {
  for (
    const [strategy, machines, replicas] of [
      ["group", 8, 2],
      ["group", 12, 3],
      ["ring", 8, 2],
      ["ring", 9, 3],
      ["ring", 4, 4],
      ["mixed", 11, 3],
      ["mixed", 7, 2],
    ] as const
  ) {
    const plan = placementPlan(strategy, machines, replicas);
    for (let k = 0; k <= machines; k++) {
      near(recoveryProbability(plan, k), enumerated(plan, k), 1e-12, `${strategy} N=${machines} k=${k}`);
      if (strategy === "group") {
        near(groupRecoveryProbability(machines, replicas, k), enumerated(plan, k), 1e-12);
      }
    }
  }
});

Deno.test("Monte Carlo agrees with the exact probability", () => {
  for (const strategy of ["group", "ring", "mixed"] as const) {
    const plan = placementPlan(strategy, 16, 2);
    for (const k of [2, 3, 4, 6]) {
      const exact = recoveryProbability(plan, k);
      const sampled = recoveryProbabilityMonteCarlo(plan, k, 40_000, 7 + k);
      // Four standard errors of a binomial proportion over 40,000 trials.
      const tolerance = 4 * Math.sqrt(exact * (1 - exact) / 40_000) + 1e-9;
      assert.ok(Math.abs(sampled - exact) <= tolerance, `${strategy} k=${k}: ${sampled} vs ${exact}`);
    }
  }
});

Deno.test("group placement is never below ring placement (the paper's cases), and k < m always recovers", () => {
  for (const machines of [4, 8, 16, 32]) {
    for (const replicas of [2, 3, 4]) {
      if (machines % replicas) continue;
      const group = placementPlan("group", machines, replicas), ring = placementPlan("ring", machines, replicas);
      for (let k = 0; k <= machines; k++) {
        const g = recoveryProbability(group, k), r = recoveryProbability(ring, k);
        assert.ok(g >= r - 1e-12, `N=${machines} m=${replicas} k=${k}: group ${g} < ring ${r}`);
        if (k < replicas) assert.deepEqual(g, 1);
      }
    }
  }
  // The paper's example: 16 machines, m = 2, two failures.
  near(recoveryProbability(placementPlan("group", 16, 2), 2), 1 - 8 / 120, 1e-12);
  near(recoveryProbability(placementPlan("ring", 16, 2), 2), 1 - 16 / 120, 1e-12);
});
