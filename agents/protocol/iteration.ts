// One iteration of sharded data-parallel training, described once: the worker agent runs these phases in
// this order, and the discrete-event simulation replays the same list in simulated time, so the two cannot
// drift apart. Consecutive collectives form one burst of training traffic on the NIC; the idle spans
// between bursts are where the checkpoint scheduler puts checkpoint bytes.

export type IterationPhase =
  /** Work on this machine's GPU and CPU; the NIC is idle. */
  | { kind: "compute"; name: "gradients" | "update" }
  /** A ring collective over `bytes` of the training state (see `collectiveBytes`). */
  | { kind: "collective"; name: "reduce-scatter" | "gradient norm" | "all-gather"; bytes: "state" | "norm" }
  /** The iteration's checkpoint is captured (when the plan asks for one) and, soon after, ready in host memory. */
  | { kind: "checkpoint"; name: "checkpoint" };

export const TRAINING_ITERATION = [
  // forward and backward on this machine's rows of the global batch
  { kind: "compute", name: "gradients" },
  // the gradients summed in ring order; each machine keeps its shard's mean
  { kind: "collective", name: "reduce-scatter", bytes: "state" },
  // every machine's share of the squared gradient norm, summed in rank order
  { kind: "collective", name: "gradient norm", bytes: "norm" },
  // AdamW on this machine's shard of the parameters, m and v
  { kind: "compute", name: "update" },
  { kind: "checkpoint", name: "checkpoint" },
  // every machine's shard of the updated parameters
  { kind: "collective", name: "all-gather", bytes: "state" },
] as const satisfies readonly IterationPhase[];

export type PhaseName = (typeof TRAINING_ITERATION)[number]["name"];

/** Bytes a collective moves in all, for a state of `stateFloats` f32s over `machines` machines. */
export function collectiveBytes(phase: { bytes: "state" | "norm" }, stateFloats: number, machines: number): number {
  return phase.bytes === "state" ? stateFloats * 4 : 8 * machines; // the norm: one f64 from each machine
}

export const isCollective = (phase: IterationPhase) => phase.kind === "collective";

/**
 * Whether phase `index` of `phases` begins a burst of training traffic, and whether it ends one: a burst is
 * a run of consecutive collectives. The simulation asks it of its own phase lists too.
 */
export function trafficEdges<P>(
  phases: readonly P[],
  index: number,
  collective: (phase: P) => boolean,
): { opens: boolean; closes: boolean } {
  const at = (i: number) => i >= 0 && i < phases.length && collective(phases[i]);
  return { opens: at(index) && !at(index - 1), closes: at(index) && !at(index + 1) };
}
