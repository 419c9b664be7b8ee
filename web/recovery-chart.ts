// <recovery-chart>: each recovery as a bar of its phases (detection, replacement, retrieval, load, the
// parameters' all-gather) plus the work lost (iterations done again, at the mean iteration time), labelled
// with where the shards came from: recovery from CPU memory beside recovery from the persistent store. Under
// each, the same recovery at the paper's scale (agents/sim/paper-scale.ts: a 100B-parameter model on 16
// machines), where detection takes seconds and retrieval from remote storage minutes; each bar has its own
// scale, and each phase is named with its time, so that a 10 ms retrieval is read, not guessed.

import { html, LitElement, svg } from "lit";
import { chartStyles, legend } from "./legend.ts";
import type { ObservedRecovery } from "../agents/sim/observer.ts";
import { describeSource } from "../agents/protocol/spec.ts";
import { PHASE_COLORS, textColorOn } from "./colors.ts";
import { paperScaleRecovery } from "../agents/sim/paper-scale.ts";

const PHASES = ["detection", "replacement", "retrieval", "load", "synchronize"] as const;

export class RecoveryChart extends LitElement {
  static override properties = {
    recoveries: { attribute: false },
    iterationMs: { type: Number },
  };

  static override styles = chartStyles;

  declare recoveries: ObservedRecovery[];
  declare iterationMs: number;

  constructor() {
    super();
    this.recoveries = [];
    this.iterationMs = 0;
  }

  override render() {
    if (!this.recoveries.length) return html`<p>No recovery yet: fail a machine.</p>`;
    const rowHeight = 84, labelWidth = 200, width = 600, barWidth = width - labelWidth - 4;
    return html`
      <svg viewBox="0 0 ${width} ${this.recoveries.length * rowHeight}" role="img"
        aria-label="recovery time by phase, here and at the paper's scale">
        ${this.recoveries.map((r, i) => {
          const here = [
            ...PHASES.map((phase) => [phase, r[phase]] as const),
            [
              "lost",
              r.lostIterations * this.iterationMs,
            ] as const,
          ];
          const paper = paperScaleRecovery(r.fromPersistent ? "persistent" : "memory");
          const there = (["detection", "retrieval", "load"] as const).map((phase) =>
            [phase, paper[phase] * 1000] as const
          );
          const top = i * rowHeight;
          return svg`
            <g class="recovery" data-from=${this.#from(r)}>
              <text x="0" y=${top + 16} font-weight="600">${i + 1}: from ${this.#from(r)}</text>
              <text x="0" y=${top + 36}>here: ${this.#time(r.total)}</text>
              <text x="0" y=${top + 62} fill="#57606a">paper's scale: ${this.#time(paper.total * 1000)}</text>
              ${this.#bar(here, labelWidth, top + 22, barWidth, "here")}
              ${this.#bar(there, labelWidth, top + 48, barWidth, "paper")}
            </g>
          `;
        })}
      </svg>
      ${legend(
        [...PHASES, "lost" as const].map((phase) => [phase === "lost" ? "work lost" : phase, PHASE_COLORS[phase]]),
      )}
    `;
  }

  /** Phases end to end across `width`, each labelled with its time where it has room. */
  #bar(parts: (readonly [keyof typeof PHASE_COLORS, number])[], x0: number, y: number, width: number, scale: string) {
    const total = Math.max(parts.reduce((sum, [, ms]) => sum + ms, 0), 1e-9);
    let at = x0;
    return parts.map(([phase, ms]) => {
      const w = (ms / total) * width, x = at;
      at += w;
      return svg`
        <rect data-scale=${scale} data-phase=${phase} x=${x} y=${y} width=${Math.max(w, 0)} height="20"
          fill=${PHASE_COLORS[phase]}>
          <title>${phase}: ${this.#time(ms)}</title>
        </rect>
        ${w > 60
          ? svg`<text x=${x + 3} y=${y + 15} font-size="0.85em" fill=${textColorOn(PHASE_COLORS[phase])}>${
            this.#time(ms)
          }</text>`
          : ""}
      `;
    });
  }

  #time(ms: number): string {
    return ms >= 60_000
      ? `${(ms / 60_000).toFixed(1)} min`
      : ms >= 1000
      ? `${(ms / 1000).toFixed(1)} s`
      : `${ms.toFixed(0)} ms`;
  }

  /** "memory" when no shard came from the persistent store, else "persistent storage". */
  #from(report: ObservedRecovery): string {
    if (report.fromPersistent) return "persistent storage";
    const sources = new Set(report.machines.map((m) => describeSource(m.source).split(" ")[0]));
    return sources.has("peer") ? "a peer's memory" : "local memory";
  }
}

customElements.define("recovery-chart", RecoveryChart);

declare global {
  interface HTMLElementTagNameMap {
    "recovery-chart": RecoveryChart;
  }
}
