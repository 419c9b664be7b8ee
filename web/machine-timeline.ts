// <machine-timeline>: the last seconds of every machine on one clock (the network's): compute, the
// training traffic it sent (reduce-scatter, all-gather), its checkpoint traffic (replicas) and shards
// fetched in a recovery, and the failure, its detection and the recovery's phases.

import { css, html, LitElement, svg } from "lit";
import { chartStyles, legend } from "./legend.ts";
import type { TransferRecord } from "../agents/sim/network.ts";
import type { FailureReport, ObservedRecovery } from "../agents/sim/observer.ts";
import { PHASE_COLORS, TRAFFIC_COLORS } from "./colors.ts";
import type { IterationSpan } from "./session.ts";

const WINDOW_MS = 4000, WIDTH = 900, ROW = 22, LABEL = 80;

export class MachineTimeline extends LitElement {
  static override properties = {
    machines: { type: Number },
    now: { type: Number },
    transfers: { attribute: false },
    iterations: { attribute: false },
    failures: { attribute: false },
    recoveries: { attribute: false },
  };

  static override styles = [
    chartStyles,
    css`
      svg {
        font-size: 11px;
      }
    `,
  ];

  declare machines: number;
  declare now: number;
  declare transfers: TransferRecord[];
  declare iterations: IterationSpan[];
  declare failures: FailureReport[];
  declare recoveries: ObservedRecovery[];

  constructor() {
    super();
    this.machines = 0;
    this.now = 0;
    this.transfers = [];
    this.iterations = [];
    this.failures = [];
    this.recoveries = [];
  }

  override render() {
    const from = this.now - WINDOW_MS;
    const x = (t: number) => LABEL + (Math.max(t, from) - from) / WINDOW_MS * (WIDTH - LABEL);
    const w = (start: number, end: number) => Math.max(x(end) - x(start), 0.8);
    const rows = Array.from({ length: this.machines }, (_, rank) => rank);
    return html`
      <svg viewBox="0 0 ${WIDTH} ${this.machines * ROW + 22}" role="img"
        aria-label="per-machine timeline, last 4 seconds">
        ${[4, 3, 2, 1, 0].map((s) =>
          svg`
            <text x=${x(this.now - s * 1000)} y=${this.machines * ROW + 16} fill="#57606a"
              text-anchor=${s === 4 ? "start" : s ? "middle" : "end"}>${s ? `−${s} s` : "now"}</text>
          `
        )}
        ${rows.map((rank) => svg`<text x="0" y=${rank * ROW + 15}>machine ${rank}</text>`)}
        ${this.iterations.filter((it) => it.start > from - 5000).flatMap((it) =>
          it.compute.map((ms, rank) =>
            svg`
              <rect x=${x(it.start)} y=${rank * ROW + 3} width=${w(it.start, it.start + ms)} height="16"
                fill=${PHASE_COLORS.compute}>
                <title>iteration ${it.iteration}: compute ${ms.toFixed(0)} ms</title>
              </rect>
            `
          )
        )}
        ${this.transfers.filter((t) => t.end > from).map((t) =>
          svg`
            <rect x=${x(t.start)} y=${t.from * ROW + (t.kind === "training" ? 9 : 3)} width=${w(t.start, t.end)}
              height=${t.kind === "training" ? 6 : 16} fill=${TRAFFIC_COLORS[t.kind]} opacity=${t.dropped ? 0.3 : 0.85}>
              <title>${t.label} to machine ${t.to}: ${t.bytes} bytes${t.dropped ? ` (lost: ${t.dropped})` : ""}</title>
            </rect>
          `
        )}
        ${this.recoveries.flatMap((r) => this.#phases(r, x, w))}
        ${this.failures.map((f) =>
          svg`
            <line x1=${x(f.failedAt)} x2=${x(f.failedAt)} y1=${f.rank * ROW} y2=${f.rank * ROW + ROW}
              stroke="#a40e26" stroke-width="3">
              <title>machine ${f.rank}: ${f.kind} failure</title>
            </line>
          `
        )}
      </svg>
      ${legend([
        ["compute", PHASE_COLORS.compute],
        ["training traffic", TRAFFIC_COLORS.training],
        ["checkpoint traffic", TRAFFIC_COLORS.checkpoint],
        ["retrieval", TRAFFIC_COLORS.retrieval],
        ["failure, detection", PHASE_COLORS.detection],
        ["replacement", PHASE_COLORS.replacement],
        ["load", PHASE_COLORS.load],
        ["all-gather, resume", PHASE_COLORS.synchronize],
      ])}
    `;
  }

  /** A recovery's phases, one after another from the first failure, across every machine's row. */
  #phases(r: ObservedRecovery, x: (t: number) => number, w: (a: number, b: number) => number) {
    const first = Math.min(...r.failures.map((f) => f.failedAt));
    let at = first;
    return (["detection", "replacement", "retrieval", "load", "synchronize"] as const).map((phase) => {
      const start = at;
      at += r[phase];
      return svg`
        <rect x=${x(start)} y="0" width=${w(start, at)} height=${this.machines * ROW}
          fill=${PHASE_COLORS[phase]} opacity="0.25">
          <title>${phase}: ${r[phase].toFixed(0)} ms</title>
        </rect>
      `;
    });
  }
}

customElements.define("machine-timeline", MachineTimeline);

declare global {
  interface HTMLElementTagNameMap {
    "machine-timeline": MachineTimeline;
  }
}
