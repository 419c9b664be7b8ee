// <recovery-chart>: each recovery as a bar of its phases (detection, replacement, retrieval, load, the
// parameters' all-gather) plus the work lost (iterations done again, at the mean iteration time), labelled
// with where the shards came from: recovery from CPU memory beside recovery from the persistent store.

import { css, html, LitElement, svg } from "lit";
import { chartStyles, legend } from "./legend.ts";
import type { ObservedRecovery } from "../agents/sim/observer.ts";
import { describeSource } from "../agents/protocol/spec.ts";
import { PHASE_COLORS } from "./colors.ts";

const PHASES = ["detection", "replacement", "retrieval", "load", "synchronize"] as const;

export class RecoveryChart extends LitElement {
  static override properties = {
    recoveries: { attribute: false },
    iterationMs: { type: Number },
  };

  static override styles = [
    chartStyles,
    css`
      svg {
        font-size: 15px;
      }
    `,
  ];

  declare recoveries: ObservedRecovery[];
  declare iterationMs: number;

  constructor() {
    super();
    this.recoveries = [];
    this.iterationMs = 0;
  }

  override render() {
    if (!this.recoveries.length) return html`<p>No recovery yet: fail a machine.</p>`;
    const rows = this.recoveries.map((r) => {
      const parts = PHASES.map((phase) => [phase, r[phase]] as const);
      return { r, parts: [...parts, ["lost", r.lostIterations * this.iterationMs] as const] };
    });
    const longest = Math.max(...rows.map(({ parts }) => parts.reduce((sum, [, ms]) => sum + ms, 0)), 1);
    const rowHeight = 44, labelWidth = 230, width = 560, axis = rows.length * rowHeight + 8;
    const scale = (ms: number) => labelWidth + (ms / longest) * (width - labelWidth - 4);
    return html`
      <svg viewBox="0 0 ${width} ${axis + 36}" role="img" aria-label="recovery time by phase">
        <line x1=${labelWidth} x2=${width - 4} y1=${axis} y2=${axis} stroke="#57606a"></line>
        ${[0, longest / 2, longest].map((ms, i) =>
          svg`<text x=${scale(ms)} y=${axis + 16} text-anchor=${["start", "middle", "end"][i]} fill="#57606a">${
            ms.toFixed(0)
          }</text>`
        )}
        <text x=${labelWidth} y=${axis + 33} fill="#57606a">time after the failure (ms)</text>
        ${rows.map(({ r, parts }, i) => {
          let at = labelWidth;
          return svg`
            <g class="recovery" data-from=${this.#from(r)}>
              <text x="0" y=${i * rowHeight + 17}>${i + 1}: from ${this.#from(r)}</text>
              <text x="0" y=${i * rowHeight + 36} fill="#57606a">${r.total.toFixed(0)} ms, ${r
                .lostIterations} lost</text>
              ${parts.map(([phase, ms]) => {
                const w = scale(ms) - labelWidth, x = at;
                at += w;
                return svg`
                  <rect x=${x} y=${i * rowHeight + 6} width=${Math.max(w, 0)} height="30"
                    fill=${PHASE_COLORS[phase]}>
                    <title>${phase}: ${ms.toFixed(1)} ms</title>
                  </rect>
                `;
              })}
            </g>
          `;
        })}
      </svg>
      ${legend(
        [...PHASES, "lost" as const].map((phase) => [phase === "lost" ? "work lost" : phase, PHASE_COLORS[phase]]),
      )}
    `;
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
