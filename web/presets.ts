// The classroom presets: each a failure struck at the moment that shows its point, and the source of the
// restored shards its label promises. The moment is read from the run's state, not fixed: a failure just
// after a persistent checkpoint, before a newer copy has reached a peer's memory, would restore from the
// store (the newest copy) and show nothing of what the preset is about.

import type { FailureKind } from "../agents/sim/cluster.ts";
import { placementGroup } from "../agents/replication/placement.ts";
import type { LabState } from "./session.ts";

/** Where a recovery's shards came from, as the recovery chart names it. */
export type RecoveryFrom = "local memory" | "a peer's memory" | "persistent storage";

export interface Preset {
  title: string;
  /** What the student will see: the label's promise. */
  promise: string;
  kind: FailureKind;
  /** The machines to fail. */
  ranks: (state: LabState) => number[];
  from: RecoveryFrom;
}

/** Machine 0's group (the machines holding copies of each other's checkpoints). */
const group = (state: LabState) => state.plan ? placementGroup(state.plan, 0) : [0];

export const PRESETS = {
  "software-crash": {
    title: "Software crash",
    promise: "machine 1's Worker crashes and restarts; it restores from its own memory, which survived",
    kind: "software",
    ranks: () => [1],
    from: "local memory",
  },
  "machine-lost": {
    title: "Machine lost",
    promise: "machine 1's hardware fails; a peer serves its shard from memory",
    kind: "hardware",
    ranks: () => [1],
    from: "a peer's memory",
  },
  "group-lost": {
    title: "Group lost",
    promise: "machine 0's whole group fails: every copy in memory is gone, so persistent storage serves",
    kind: "hardware",
    ranks: group,
    from: "persistent storage",
  },
  "two-failures": {
    title: "Two failures",
    promise: "two machines in different groups fail at once; peers serve both shards from memory",
    kind: "hardware",
    // Machine 0 and the first machine outside its group.
    ranks: (state) => [0, state.settings.machines > group(state).length ? group(state).length : 1],
    from: "a peer's memory",
  },
} satisfies Record<string, Preset>;

export type PresetName = keyof typeof PRESETS;

export function isPresetName(name: string | null): name is PresetName {
  return name !== null && Object.hasOwn(PRESETS, name);
}

/** A preset strikes no earlier than this iteration, so that the loss has started to fall. */
const EARLIEST = 5;

/** Whether striking preset `name` now restores from where it promises. */
export function readyToStrike(name: PresetName, state: LabState): boolean {
  const preset: Preset = PRESETS[name], every = state.settings.persistEvery;
  if (state.status !== "running" || state.iteration < EARLIEST || state.machines.length === 0) return false;
  if (preset.from === "persistent storage") return every === 0 || state.machines.every((m) => m.persisted > 0);
  // Not on a persistence boundary; and the copies in memory that will serve are as new as the store's.
  if (every > 0 && state.iteration % every === 0) return false;
  const persisted = every > 0 ? state.iteration - (state.iteration % every) : 0;
  const ranks = preset.ranks(state);
  return ranks.every((owner) => {
    const copies = state.machines
      .filter((m) => preset.kind === "software" || !ranks.includes(m.rank))
      .flatMap((m) => m.memory.filter((entry) => entry.owner === owner).map((entry) => entry.iteration));
    const newest = Math.max(0, ...copies);
    return newest > 0 && newest >= persisted;
  });
}
