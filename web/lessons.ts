// Each classroom preset as a guided lesson: steps of narration, each held at the moment that matters (the
// stage pauses there until the presenter steps on), naming the machines and the kind of transfer to look at
// and what to notice. A step's moment is read from the state the stage shows, so a rewound or slowed stage
// holds at the same moment as a live one.

import type { TrafficKind } from "../agents/protocol/transport.ts";
import { replicaPeers } from "../agents/replication/placement.ts";
import { type PresetName, PRESETS } from "./presets.ts";
import { describeShard } from "./recovery-why.ts";
import type { LabState } from "./session.ts";

export interface LessonStep {
  title: string;
  /** What the stage waits for before this step, while it runs. */
  cue: string;
  /** Whether the stage has reached this step's moment (it then holds there). */
  reached: (state: LabState) => boolean;
  /** What to say, once reached. */
  say: (state: LabState) => string;
  notice: (state: LabState) => string;
  /** The machines to highlight, and the transfers to pick out among the others. */
  highlight: (state: LabState) => number[];
  transfer: TrafficKind | null;
}

const list = (ranks: number[]) => ranks.length === 1 ? `machine ${ranks[0]}` : `machines ${ranks.join(" and ")}`;
const failed = (state: LabState) => state.machines.filter((m) => m.phase === "failed").map((m) => m.rank);

/** The machines down now, or (once they are back) those the preset failed. */
function struck(name: PresetName, state: LabState): number[] {
  const down = failed(state);
  return down.length ? down : PRESETS[name].ranks(state);
}

/** The machines a preset fails and those that hold copies of their checkpoints. */
function withHolders(name: PresetName, state: LabState): number[] {
  const ranks = PRESETS[name].ranks(state);
  const peers = state.plan ? ranks.flatMap((rank) => replicaPeers(state.plan!, rank)) : [];
  return [...new Set([...ranks, ...peers])].sort((a, b) => a - b);
}

/** What to notice about the copies before the failure, by lesson. */
const BEFORE: Record<PresetName, (state: LabState) => string> = {
  "software-crash": () =>
    "Machine 1's own checkpoint (its solid bar) lives in its host memory, outside its Worker: a crash of the " +
    "Worker does not touch it.",
  "machine-lost": (state) =>
    `Machine 1's checkpoint is also in ${list(state.plan ? replicaPeers(state.plan, 1) : [])}'s memory ` +
    "(striped, in machine 1's colour): that copy outlives machine 1's hardware.",
  "group-lost": (state) =>
    `${list(withHolders("group-lost", state))} hold each other's copies and nobody else does: if they all ` +
    `fail, no copy is left in memory; ${
      state.settings.persistEvery
        ? `the persistent store has every ${state.settings.persistEvery}th iteration`
        : "and nothing is persisted (persist every 0): training starts again from the beginning"
    }.`,
  "two-failures": (state) =>
    `${list(PRESETS["two-failures"].ranks(state))} are in different groups: each one's copy is held by a ` +
    "machine that will survive.",
};

export function lessonSteps(name: PresetName): LessonStep[] {
  const preset = PRESETS[name];
  return [
    {
      title: preset.title,
      cue: "",
      reached: (state) => state.status === "idle",
      say: (state) => `${state.settings.machines} machines train GPT-2 together. In this lesson ${preset.promise}.`,
      notice: () => "Press space, the right arrow or . to start, and again at each pause.",
      highlight: (state) => preset.ranks(state),
      transfer: null,
    },
    {
      title: "Checkpoints in memory",
      cue: "the first checkpoints reach memory",
      reached: (state) =>
        state.iteration >= 3 && state.machines.length > 0 && state.machines.every((m) => m.memory.length > 0),
      say: () =>
        "Every iteration, each machine copies its shard of the model into its own host memory (solid) and sends a " +
        "copy to its peers (striped; the blue dots are those copies on the network, between the training traffic).",
      notice: BEFORE[name],
      highlight: (state) => withHolders(name, state),
      transfer: "checkpoint",
    },
    {
      title: "The failure",
      cue: "the moment the failure shows the lesson's point",
      reached: (state) => failed(state).length > 0,
      say: (state) =>
        `${list(struck(name, state))}: a ${preset.kind} failure. ` +
        (preset.kind === "software"
          ? "The Worker is gone but its host memory is kept: the bar stays."
          : "The Worker and the host memory are both gone: the bar is empty."),
      notice: (state) =>
        `Nobody tells the root agent: it notices when the heartbeats stop, ${state.settings.heartbeatTimeoutMs} ms ` +
        "after the last one.",
      highlight: (state) => struck(name, state),
      transfer: null,
    },
    {
      title: "The recovery",
      cue: "the recovery",
      reached: (state) => state.recoveries.length > 0,
      say: (state) => {
        const recovery = state.recoveries[0], why = state.explanations[0];
        const shards = why.shards.filter((shard) => recovery.failures.some((f) => f.rank === shard.owner));
        return `Every machine rolled back to iteration ${recovery.iteration}. ` +
          shards.map(describeShard).join("; ") + ".";
      },
      notice: (state) => `Why this iteration: ${state.explanations[0].rollback}.`,
      // The machines that failed and the peers that served them.
      highlight: (state) => {
        const { failures, machines } = state.recoveries[0];
        const peers = machines.flatMap((m) => m.source.from === "peer" ? [m.source.peer] : []);
        return [...new Set([...failures.map((f) => f.rank), ...peers])];
      },
      transfer: "retrieval",
    },
    {
      title: "Training resumes",
      cue: "training to go on",
      reached: (state) =>
        state.status === "done" ||
        (state.recoveries.length > 0 && state.iteration >= state.recoveries[0].iteration + 3),
      say: (state) =>
        `Training went on from iteration ${state.recoveries[0]?.iteration ?? 0}, doing the lost iterations again ` +
        "(ringed on the loss chart).",
      notice: () =>
        "Press c to train the same run without failures: every loss equals it, bit for bit; and text generated " +
        "from both runs' parameters (the text section, outside presentation mode) is the same.",
      highlight: () => [],
      transfer: null,
    },
  ];
}
