// <probability-panel>: the chance that k random machine failures leave a copy of every checkpoint in CPU
// memory, for group, ring and mixed placement of N machines and replicas m (placement.ts computes it exactly).
// N and m start from the cluster's settings; the student changes N, m and k here.

import { css, html, LitElement } from "lit";
import { placementPlan, type PlacementStrategy, recoveryProbability } from "../agents/replication/placement.ts";
import { tableStyles } from "./legend.ts";

export class ProbabilityPanel extends LitElement {
  static override properties = {
    machines: { type: Number },
    replicas: { type: Number },
    failures: { type: Number },
  };

  static override styles = [
    tableStyles,
    css`
      form {
        display: flex;
        gap: 1rem;
        flex-wrap: wrap;
      }
      label {
        display: flex;
        gap: 0.3rem;
        align-items: center;
      }
      input {
        width: 4rem;
        font: inherit;
      }
      .bar {
        height: 0.9rem;
        background: #0072b2;
      }
    `,
  ];

  declare machines: number;
  declare replicas: number;
  declare failures: number;

  constructor() {
    super();
    this.machines = 16;
    this.replicas = 2;
    this.failures = 2;
  }

  override render() {
    return html`
      <form @input=${this.#read}>
        <label>N machines <input name="machines" type="number" min="1" max="256" .value=${String(
          this.machines,
        )}></label>
        <label>replicas m <input name="replicas" type="number" min="1" .max=${String(this.machines)}
          .value=${String(this.replicas)}></label>
        <label>k failures <input name="failures" type="number" min="0" .max=${String(this.machines)}
          .value=${String(this.failures)}></label>
      </form>
      <table>
        <thead>
          <tr>
            <th>placement</th>
            <th>P(recover from CPU memory)</th>
            <th>as a bar</th>
          </tr>
        </thead>
        <tbody>${(["group", "ring", "mixed"] as const).map((strategy) => this.#row(strategy))}</tbody>
      </table>
    `;
  }

  #row(strategy: PlacementStrategy) {
    let probability: number | null = null, why = "";
    try {
      probability = recoveryProbability(placementPlan(strategy, this.machines, this.replicas), this.failures);
    } catch (error) {
      why = (error as Error).message;
    }
    return html`
      <tr data-strategy=${strategy}>
        <td>${strategy}</td>
        <td>${probability === null ? why : `${(probability * 100).toFixed(2)}%`}</td>
        <td style="width:40%">${probability === null
          ? ""
          : html`<div class="bar" style="width:${probability * 100}%"></div>`}</td>
      </tr>
    `;
  }

  #read(event: Event) {
    const input = event.target as HTMLInputElement, value = Number(input.value);
    if (!Number.isInteger(value) || value < 0) return;
    const name = input.name as "machines" | "replicas" | "failures";
    this[name] = value;
  }
}

customElements.define("probability-panel", ProbabilityPanel);

declare global {
  interface HTMLElementTagNameMap {
    "probability-panel": ProbabilityPanel;
  }
}
