// <loss-chart>: the loss by iteration. The dots are every computation of this run in order; iterations
// computed again after a rollback are ringed. The grey line is the same seeded run without failures, once
// it has been trained for comparison: after an exact resume every dot lies on it, bit for bit. Red lines
// mark failures, dashed ones the iteration each recovery rolled back to; the iterations each fault cost
// (from the one rolled back to, to the one it struck in) are shaded.

import { css, html, LitElement, svg } from "lit";
import { chartStyles } from "./legend.ts";
import type { ObservedRecovery } from "../agents/sim/observer.ts";
import type { FaultPeriod, LossPoint } from "./session.ts";

const WIDTH = 640, HEIGHT = 170, PAD = { left: 60, right: 12, top: 10, bottom: 26 };

export class LossChart extends LitElement {
  static override properties = {
    reference: { attribute: false },
    referenceStatus: { type: String },
    losses: { attribute: false },
    failures: { attribute: false },
    recoveries: { attribute: false },
    mismatches: { attribute: false },
    faults: { attribute: false },
  };

  static override styles = [
    chartStyles,
    css`
      p {
        margin: 0.2rem 0 0;
      }
      .exact {
        color: #116329;
      }
      .differs {
        color: #a40e26;
      }
    `,
  ];

  declare reference: number[];
  declare referenceStatus: "none" | "running" | "done";
  declare losses: LossPoint[];
  declare failures: { iteration: number; rank: number }[];
  declare recoveries: ObservedRecovery[];
  declare mismatches: number[];
  declare faults: FaultPeriod[];

  constructor() {
    super();
    this.reference = [];
    this.referenceStatus = "none";
    this.losses = [];
    this.failures = [];
    this.recoveries = [];
    this.mismatches = [];
    this.faults = [];
  }

  override render() {
    if (!this.losses.length) return html`<p>The loss appears here once training starts.</p>`;
    const points = this.reference.flatMap((loss, iteration) => (loss === undefined ? [] : [[iteration, loss]]));
    const all = [...this.losses.map((p) => [p.iteration, p.loss]), ...points];
    const last = Math.max(...all.map(([iteration]) => iteration), 2);
    const values = all.map(([, loss]) => loss);
    const low = Math.min(...values), high = Math.max(...values), span = Math.max(high - low, 1e-6);
    const x = (iteration: number) => PAD.left + ((iteration - 1) / (last - 1)) * (WIDTH - PAD.left - PAD.right);
    const y = (loss: number) => PAD.top + ((high - loss) / span) * (HEIGHT - PAD.top - PAD.bottom);
    const ticks = [low, (low + high) / 2, high];
    return html`
      <svg viewBox="0 0 ${WIDTH} ${HEIGHT}" role="img" aria-label="training loss by iteration">
        ${ticks.map((t) =>
          svg`
            <text x=${PAD.left - 4} y=${y(t) + 4} text-anchor="end" fill="#57606a">${t.toFixed(2)}</text>
            <line x1=${PAD.left} x2=${WIDTH - PAD.right} y1=${y(t)} y2=${y(t)} stroke="#eaeef2"></line>
          `
        )}
        <text x=${WIDTH / 2} y=${HEIGHT - 6} text-anchor="middle" fill="#57606a">iteration (1 to ${last})</text>
        <text transform="rotate(-90)" x=${-(PAD.top + HEIGHT - PAD.bottom) / 2} y="12" text-anchor="middle"
          fill="#57606a">loss (nats)</text>
        ${this.faults.map((f) => {
          const from = x(Math.max(1, f.rolledBackTo ?? f.iteration)), to = x(Math.min(last, f.iteration + 1));
          return svg`
            <rect data-field="fault" x=${from} width=${Math.max(to - from, 3)} y=${PAD.top}
              height=${HEIGHT - PAD.top - PAD.bottom} fill="#a40e26" opacity="0.12">
              <title>fault: iterations ${f.rolledBackTo ?? "?"} to ${f.iteration} done again</title>
            </rect>
          `;
        })}
        ${this.failures.map((f) =>
          svg`
            <line class="failure" x1=${x(f.iteration + 0.5)} x2=${x(f.iteration + 0.5)} y1=${PAD.top}
              y2=${HEIGHT - PAD.bottom} stroke="#a40e26" stroke-width="2">
              <title>machine ${f.rank} failed</title>
            </line>
          `
        )}
        ${this.recoveries.map((r) =>
          svg`
            <line x1=${x(r.iteration)} x2=${x(r.iteration)} y1=${PAD.top} y2=${HEIGHT - PAD.bottom}
              stroke="#a40e26" stroke-dasharray="4 3">
              <title>rolled back to iteration ${r.iteration}</title>
            </line>
          `
        )}
        <polyline data-line="failure-free" fill="none" stroke="#8c959f" stroke-width="3"
          points=${points.map(([i, l]) => `${x(i)},${y(l)}`).join(" ")}></polyline>
        <polyline data-line="run" fill="none" stroke="#0072b2" stroke-width="1.5"
          points=${this.#trajectory().map(([i, l]) => `${x(i)},${y(l)}`).join(" ")}></polyline>
        ${this.losses.map((p) =>
          svg`
            <circle cx=${x(p.iteration)} cy=${y(p.loss)} r=${p.replay ? 5 : 2.5}
              fill=${p.replay ? "none" : "#0072b2"} stroke=${p.replay ? "#d55e00" : "none"} stroke-width="2"></circle>
          `
        )}
      </svg>
      ${this.#verdict()}
    `;
  }

  /** The run as it stands: the last computation of each iteration. */
  #trajectory(): [number, number][] {
    const last = new Map<number, number>();
    for (const point of this.losses) last.set(point.iteration, point.loss);
    return [...last].sort(([a], [b]) => a - b);
  }

  #verdict() {
    const replays = this.losses.filter((point) => point.replay).length;
    if (this.referenceStatus === "none") {
      return html`<p data-field="resume">Dots: each iteration as computed (ringed: computed again after a rollback).
        Compare with a failure-free run to draw it in grey.</p>`;
    }
    if (this.referenceStatus === "running") return html`<p data-field="resume">Training the failure-free run...</p>`;
    if (this.mismatches.length) {
      return html`<p class="differs" data-field="resume" data-exact="false">
        Iterations ${this.mismatches.join(", ")} differ from the failure-free run.</p>`;
    }
    const compared = this.losses.filter((p) => this.reference[p.iteration] !== undefined).length;
    return html`<p class="exact" data-field="resume" data-exact="true">
      All ${compared} losses of this run (${replays} of them computed again after a rollback) equal the failure-free
      run's bit for bit.</p>`;
  }
}

customElements.define("loss-chart", LossChart);

declare global {
  interface HTMLElementTagNameMap {
    "loss-chart": LossChart;
  }
}
