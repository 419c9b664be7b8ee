// GEMINI's replica placement: where each machine's checkpoint is kept in CPU memory, and the chance that
// every checkpoint survives k machine failures.
//
// N machines, m copies of each checkpoint (the owner's own copy included):
//   group  (m divides N): N/m groups of m consecutive machines; each machine replicates to the rest of its
//          group. A checkpoint is lost only when a whole group fails.
//   ring:  machine i replicates to i+1 .. i+m-1 (mod N). Any m consecutive failures lose a checkpoint.
//   mixed: group placement where m divides N; otherwise floor(N/m) - 1 groups of m and ring placement over
//          the last m + N mod m machines (as the paper's mixed strategy does, so the ring has room for m).
//
// P(recover from CPU memory | k random failures) = 1 - P(some holder set fails entirely). It is computed
// exactly by counting failure sets (closed form for groups, a transfer count for rings, their convolution
// for mixed), and by Monte Carlo over the plan itself, which the tests hold against each other.

import { Rng } from "../../core/random.ts";

export type PlacementStrategy = "group" | "ring" | "mixed";
export const PLACEMENT_STRATEGIES: readonly PlacementStrategy[] = ["group", "ring", "mixed"];

export interface PlacementPlan {
  strategy: PlacementStrategy;
  machines: number;
  replicas: number;
  /** holders[i]: the machines that keep machine i's checkpoint, i itself first. */
  holders: number[][];
  /** The machines placed together: each group, and the ring (if any) as one set. */
  sets: { members: number[]; ring: boolean }[];
}

/** The plan for `machines` machines and `replicas` copies of each checkpoint. */
export function placementPlan(strategy: PlacementStrategy, machines: number, replicas: number): PlacementPlan {
  if (!Number.isInteger(machines) || machines < 1) {
    throw new Error(`machines must be a positive integer, got ${machines}`);
  }
  if (!Number.isInteger(replicas) || replicas < 1 || replicas > machines) {
    throw new Error(`replicas must be an integer from 1 to the ${machines} machines, got ${replicas}`);
  }
  const all = Array.from({ length: machines }, (_, i) => i);
  let sets: { members: number[]; ring: boolean }[];
  if (strategy === "group") {
    if (machines % replicas) {
      throw new Error(`group placement needs the replicas (${replicas}) to divide the machines (${machines})`);
    }
    sets = chunk(all, replicas).map((members) => ({ members, ring: false }));
  } else if (strategy === "ring") {
    sets = [{ members: all, ring: true }];
  } else if (strategy === "mixed") {
    const groups = machines % replicas === 0 ? machines / replicas : Math.floor(machines / replicas) - 1;
    sets = chunk(all.slice(0, groups * replicas), replicas).map((members) => ({ members, ring: false }));
    if (groups * replicas < machines) sets.push({ members: all.slice(groups * replicas), ring: true });
  } else {
    throw new Error(`placement must be one of ${PLACEMENT_STRATEGIES.join(", ")}, got "${strategy}"`);
  }
  const holders: number[][] = all.map(() => []);
  for (const { members, ring } of sets) {
    members.forEach((owner, position) => {
      holders[owner] = ring
        ? Array.from({ length: replicas }, (_, j) => members[(position + j) % members.length])
        : [owner, ...members.filter((member) => member !== owner)];
    });
  }
  return { strategy, machines, replicas, holders, sets };
}

/** The peers a machine sends its checkpoint to. */
export function replicaPeers(plan: PlacementPlan, machine: number): number[] {
  return plan.holders[machine].slice(1);
}

/** The machines whose checkpoints `machine` holds replicas of. */
export function replicasHeldBy(plan: PlacementPlan, machine: number): number[] {
  return plan.holders.flatMap((holders, owner) => owner !== machine && holders.includes(machine) ? [owner] : []);
}

/** The machines placed with `machine`: its group, or (in a ring) the holders of its checkpoint. */
export function placementGroup(plan: PlacementPlan, machine: number): number[] {
  return plan.sets.find((set) => !set.ring && set.members.includes(machine))?.members ?? plan.holders[machine];
}

function chunk(items: number[], size: number): number[][] {
  return Array.from({ length: items.length / size }, (_, i) => items.slice(i * size, (i + 1) * size));
}

// --- the probability of recovering from CPU memory ------------------------------------------------

/** C(n, k) as a float (exact for the sizes here: N up to a few hundred). */
export function binomial(n: number, k: number): number {
  if (k < 0 || k > n) return 0;
  let result = 1;
  for (let i = 1; i <= Math.min(k, n - k); i++) result = (result * (n - i + 1)) / i;
  return Math.round(result);
}

/** Ways to fail j of G groups' G*m machines without failing any group entirely (inclusion-exclusion). */
function groupSurvivingSets(groups: number, size: number, failures: number): number {
  let count = 0;
  for (let i = 0; i * size <= failures && i <= groups; i++) {
    count += (i % 2 ? -1 : 1) * binomial(groups, i) * binomial(groups * size - i * size, failures - i * size);
  }
  return count;
}

/** Ways to fail j machines of a ring of n without m consecutive ones failing (m <= n). */
function ringSurvivingSets(n: number, m: number, failures: number): number {
  if (m >= n) return failures < n ? binomial(n, failures) : 0; // every machine holds every checkpoint
  // Cut the ring at a working machine: count linear arrangements whose runs of failures stay under m,
  // by the length `head` of the run that wraps around from the end to the start.
  let count = 0;
  for (let head = 0; head < m && head <= failures; head++) {
    // Positions 0..head-1 fail, position head works; the rest (n - head - 1 machines, a line) holds
    // failures - head failures, ending in a run of at most m - 1 - head failures.
    count += linearArrangements(n - head - 1, m, failures - head, m - 1 - head);
  }
  return count;
}

/** Lines of `length` machines with `failures` failures, runs under m, the last run at most `tail`. */
function linearArrangements(length: number, m: number, failures: number, tail: number): number {
  // ways[f][r]: prefixes with f failures ending in a run of r failures.
  let ways = Array.from({ length: failures + 1 }, () => new Array<number>(m).fill(0));
  ways[0][0] = 1;
  for (let position = 0; position < length; position++) {
    const next = Array.from({ length: failures + 1 }, () => new Array<number>(m).fill(0));
    for (let f = 0; f <= failures; f++) {
      for (let r = 0; r < m; r++) {
        if (!ways[f][r]) continue;
        next[f][0] += ways[f][r]; // this machine works
        if (f < failures && r + 1 < m) next[f + 1][r + 1] += ways[f][r];
      }
    }
    ways = next;
  }
  return ways[failures].slice(0, tail + 1).reduce((sum, value) => sum + value, 0);
}

/** Ways to fail `failures` machines so that every checkpoint keeps a copy, per set of the plan, convolved. */
function survivingSets(plan: PlacementPlan, failures: number): number {
  let ways = [1]; // ways[j]: failure sets of j machines over the sets so far with no checkpoint lost
  for (const { members, ring } of plan.sets) {
    const here = Array.from(
      { length: members.length + 1 },
      (_, j) => ring ? ringSurvivingSets(members.length, plan.replicas, j) : groupSurvivingSets(1, members.length, j),
    );
    const next = new Array<number>(ways.length + members.length).fill(0);
    ways.forEach((a, i) => here.forEach((b, j) => next[i + j] += a * b));
    ways = next;
  }
  return ways[failures] ?? 0;
}

/** The exact probability that k uniformly random machine failures leave a copy of every checkpoint in memory. */
export function recoveryProbability(plan: PlacementPlan, failures: number): number {
  if (!Number.isInteger(failures) || failures < 0 || failures > plan.machines) {
    throw new Error(`failures must be an integer from 0 to ${plan.machines}, got ${failures}`);
  }
  return survivingSets(plan, failures) / binomial(plan.machines, failures);
}

/**
 * The paper's closed form for group placement (m divides N, G = N/m groups):
 * P(lost) = sum_{j>=1} (-1)^(j+1) C(G, j) C(N - j m, k - j m) / C(N, k).
 */
export function groupRecoveryProbability(machines: number, replicas: number, failures: number): number {
  return groupSurvivingSets(machines / replicas, replicas, failures) / binomial(machines, failures);
}

/** The same probability estimated by sampling `trials` failure sets with a seeded generator. */
export function recoveryProbabilityMonteCarlo(
  plan: PlacementPlan,
  failures: number,
  trials: number,
  seed: number,
): number {
  const rng = new Rng(seed), machines = Array.from({ length: plan.machines }, (_, i) => i);
  let recovered = 0;
  for (let trial = 0; trial < trials; trial++) {
    // A partial Fisher-Yates shuffle picks the failed machines.
    for (let i = 0; i < failures; i++) {
      const j = i + rng.below(plan.machines - i);
      [machines[i], machines[j]] = [machines[j], machines[i]];
    }
    const failed = new Set(machines.slice(0, failures));
    if (plan.holders.every((holders) => holders.some((holder) => !failed.has(holder)))) recovered++;
  }
  return recovered / trials;
}
