// <paper-scale-panel>: GEMINI at the paper's scale, which no page can train: 16 machines of 8 GPUs, a
// 100B-parameter GPT-2, a 400 Gbps network and a 20 Gbps remote store, in the discrete-event simulation
// (the same scheduler and placement code the machines above run) with the paper's published numbers beside
// ours. It simulates when asked (about a second of this page's time) and shows the result; nothing goes out.

import { css, html, LitElement } from "lit";
import { describePaperScale, PAPER, paperScaleReport } from "../agents/sim/paper-scale.ts";
import { tableStyles } from "./legend.ts";

export class PaperScalePanel extends LitElement {
  static override properties = {
    rows: { state: true },
    error: { state: true },
  };

  static override styles = [
    tableStyles,
    css`
      button {
        font: inherit;
      }
      td,
      th {
        border-bottom: 1px solid #eaeef2;
      }
      td {
        font-variant-numeric: tabular-nums;
      }
    `,
  ];

  declare rows: [string, string, string][] | null;
  declare error: string;

  constructor() {
    super();
    this.rows = null;
    this.error = "";
  }

  override render() {
    return html`
      <p>${PAPER.machines} machines of ${PAPER.gpusPerMachine} GPUs, a ${PAPER.parameters / 1e9}B-parameter GPT-2,
        a ${PAPER.networkBytesPerSecond * 8 / 1e9} Gbps network, ${PAPER.storageBytesPerSecond * 8 / 1e9} Gbps remote
        storage, replicas m = ${PAPER
          .replicas}: the paper's cluster, simulated with this lab's scheduler and placement.</p>
      <button data-action="simulate-paper" @click=${this.#simulate}>${this.rows
        ? "Simulate again"
        : "Simulate the paper's cluster"}</button>
      ${this.error ? html`<p role="alert">${this.error}</p>` : ""}
      ${this.rows
        ? html`
          <table data-field="paper-scale">
            <thead>
              <tr>
                <th scope="col"></th>
                <th scope="col">simulated here</th>
                <th scope="col">the paper</th>
              </tr>
            </thead>
            <tbody>${this.rows.map(([what, ours, paper]) =>
              html`
                <tr>
                  <th scope="row">${what}</th>
                  <td>${ours}</td>
                  <td>${paper}</td>
                </tr>
              `
            )}</tbody>
          </table>
        `
        : ""}
    `;
  }

  #simulate() {
    try {
      this.rows = describePaperScale(paperScaleReport());
      this.error = "";
    } catch (error) {
      this.error = `The simulation failed: ${(error as Error).message}`;
    }
  }
}

customElements.define("paper-scale-panel", PaperScalePanel);

declare global {
  interface HTMLElementTagNameMap {
    "paper-scale-panel": PaperScalePanel;
  }
}
