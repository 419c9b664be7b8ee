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

/** Black or white, whichever reads better on `background` (#rrggbb): WCAG contrast of 4.5 or more here. */
export function textColorOn(background: string): "#000000" | "#ffffff" {
  const [r, g, b] = [1, 3, 5].map((at) => {
    const c = parseInt(background.slice(at, at + 2), 16) / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  const luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b;
  // Contrast with black (L + 0.05) / 0.05 against with white 1.05 / (L + 0.05).
  return (luminance + 0.05) ** 2 > 0.0525 ? "#000000" : "#ffffff";
}
