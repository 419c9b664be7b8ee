// <machine-timeline>: the last seconds of every machine on one clock (the network's): compute, the
// training traffic it sent (reduce-scatter, all-gather), its checkpoint traffic (replicas) and shards
// fetched in a recovery, and the failure, its detection and the recovery's phases; below it, the whole run
// with every fault period shaded (from the failure to training resumed) and the last seconds' window marked.
// What has left the window is drawn nowhere in it (an old failure is not pinned to its left edge).

import { html, LitElement, svg } from "lit";
import { chartStyles, legend } from "./legend.ts";
import type { TransferRecord } from "../agents/sim/network.ts";
import type { FailureReport, ObservedRecovery } from "../agents/sim/observer.ts";
import { PHASE_COLORS, TRAFFIC_COLORS } from "./colors.ts";
import type { FaultPeriod, IterationSpan } from "./session.ts";

const WINDOW_MS = 4000, WIDTH = 900, ROW = 22, LABEL = 80;

export class MachineTimeline extends LitElement {
  static override properties = {
    machines: { type: Number },
    now: { type: Number },
    transfers: { attribute: false },
    iterations: { attribute: false },
    failures: { attribute: false },
    recoveries: { attribute: false },
    faults: { attribute: false },
  };

  static override styles = chartStyles;

  declare machines: number;
  declare now: number;
  declare transfers: TransferRecord[];
  declare iterations: IterationSpan[];
  declare failures: FailureReport[];
  declare recoveries: ObservedRecovery[];
  declare faults: FaultPeriod[];

  constructor() {
    super();
    this.machines = 0;
    this.now = 0;
    this.transfers = [];
    this.iterations = [];
    this.failures = [];
    this.recoveries = [];
    this.faults = [];
  }

  override render() {
    const from = this.now - WINDOW_MS;
    const x = (t: number) => LABEL + (Math.max(t, from) - from) / WINDOW_MS * (WIDTH - LABEL);
    const w = (start: number, end: number) => Math.max(x(end) - x(start), 0.8);
    const rows = Array.from({ length: this.machines }, (_, rank) => rank);
    const run = this.machines * ROW + 24, whole = (t: number) => LABEL + (t / Math.max(this.now, 1)) * (WIDTH - LABEL);
    return html`
      <svg viewBox="0 0 ${WIDTH} ${run + 18}" role="img"
        aria-label="per-machine timeline, last 4 seconds, and the whole run with its faults">
        <text x="0" y=${run + 12}>whole run</text>
        <rect x=${LABEL} y=${run} width=${WIDTH - LABEL} height="14" fill="#f6f8fa" stroke="#8c959f"></rect>
        ${this.faults.map((f) =>
          svg`
            <rect data-field="run-fault" x=${whole(f.start)} y=${run} width=${Math.max(
              whole(f.end ?? this.now) - whole(f.start),
              2,
            )} height="14" fill="#a40e26" opacity="0.6">
              <title>fault: ${((f.start) / 1000).toFixed(1)} s to ${f.end === null
                ? "now"
                : `${(f.end / 1000).toFixed(1)} s`}</title>
            </rect>
          `
        )}
        <rect x=${whole(Math.max(from, 0))} y=${run - 1} width=${Math.max(
          whole(this.now) - whole(Math.max(from, 0)),
          2,
        )}
          height="16" fill="none" stroke="#0550ae" stroke-width="2"><title>the last 4 seconds, above</title></rect>
        ${[4, 3, 2, 1, 0].map((s) =>
          svg`
            <text x=${x(this.now - s * 1000)} y=${this.machines * ROW + 16} fill="#57606a"
              text-anchor=${s === 4 ? "start" : s ? "middle" : "end"}>${s ? `−${s} s` : "now"}</text>
          `
        )}
        ${rows.map((rank) => svg`<text x="0" y=${rank * ROW + 15}>machine ${rank}</text>`)}
        ${this.iterations.filter((it) => it.start + Math.max(...it.compute) > from).flatMap((it) =>
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
        ${this.faults.filter((f) => (f.end ?? this.now) > from).map((f) =>
          svg`
            <rect data-field="fault" x=${x(f.start)} y="0" width=${w(f.start, f.end ?? this.now)}
              height=${this.machines * ROW} fill="#a40e26" opacity="0.08"></rect>
          `
        )}
        ${this.recoveries.flatMap((r) => this.#phases(r, x, w, from))}
        ${this.failures.filter((f) => f.failedAt > from).map((f) =>
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
  #phases(r: ObservedRecovery, x: (t: number) => number, w: (a: number, b: number) => number, from: number) {
    const first = Math.min(...r.failures.map((f) => f.failedAt));
    let at = first;
    return (["detection", "replacement", "retrieval", "load", "synchronize"] as const).map((phase) => {
      const start = at;
      at += r[phase];
      if (at <= from) return "";
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
