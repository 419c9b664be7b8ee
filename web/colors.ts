// The lab's colours: one per machine (a checkpoint's owner) and one per kind of traffic and recovery phase,
// chosen to stay apart for common colour-vision deficiencies (Okabe-Ito) and on a projector.

const OWNER_COLORS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];

export function ownerColor(rank: number): string {
  return OWNER_COLORS[rank % OWNER_COLORS.length];
}

export const TRAFFIC_COLORS = { training: "#7a7a7a", checkpoint: "#0072b2", retrieval: "#d55e00" } as const;

export const PHASE_COLORS = {
  compute: "#c8d6e5",
  detection: "#a40e26",
  replacement: "#e69f00",
  retrieval: "#d55e00",
  load: "#009e73",
  synchronize: "#56b4e9",
  lost: "#b0b0b0",
} as const;
