// <gpu-status>: which WebGPU adapter the page got, whether the page is cross-origin isolated
// (SharedArrayBuffer exists), and whether the GPU self-check passed on the page and in a Worker.
// State comes in as properties; "rerun" goes out as an event.

import { css, html, LitElement } from "lit";
import type { AdapterReport } from "../core/gpu.ts";
import { describeSelfCheck, type SelfCheckResult } from "../core/selfcheck.ts";

/** A check that is running, has passed or failed, or could not run. */
export type CheckState =
  | { state: "running" }
  | { state: "done"; result: SelfCheckResult }
  | { state: "error"; message: string };

export class GpuStatus extends LitElement {
  static override properties = {
    adapter: { attribute: false },
    isolated: { type: Boolean },
    pageCheck: { attribute: false },
    workerCheck: { attribute: false },
  };

  static override styles = css`
    :host {
      display: block;
      max-width: 48rem;
    }
    dl {
      display: grid;
      grid-template-columns: max-content 1fr;
      gap: 0.4rem 1rem;
    }
    dt {
      font-weight: 600;
    }
    .passed {
      color: #116329;
    }
    .failed {
      color: #a40e26;
    }
  `;

  declare adapter: AdapterReport | null;
  declare isolated: boolean;
  declare pageCheck: CheckState;
  declare workerCheck: CheckState;

  constructor() {
    super();
    this.adapter = null;
    this.isolated = false;
    this.pageCheck = { state: "running" };
    this.workerCheck = { state: "running" };
  }

  override render() {
    return html`
      <dl>
        <dt>WebGPU adapter</dt>
        <dd data-field="adapter">${this.adapter ? this.#adapterText(this.adapter) : "looking for one..."}</dd>
        <dt>Cross-origin isolated</dt>
        <dd data-field="isolated" class=${this.isolated ? "passed" : "failed"}>
          ${this.isolated ? "yes: SharedArrayBuffer is available" : "no: SharedArrayBuffer is missing"}
        </dd>
        <dt>Self-check on the page</dt>
        <dd data-field="page-check" data-state=${this.#stateOf(this.pageCheck)} class=${this.#stateOf(this.pageCheck)}>
          ${this.#checkText(this.pageCheck)}
        </dd>
        <dt>Self-check in a Worker</dt>
        <dd data-field="worker-check" data-state=${this.#stateOf(this.workerCheck)} class=${this.#stateOf(
          this.workerCheck,
        )}>
          ${this.#checkText(this.workerCheck)}
        </dd>
      </dl>
      <button @click=${() => this.dispatchEvent(new CustomEvent("rerun", { bubbles: true, composed: true }))}>
        Run the self-check again
      </button>
    `;
  }

  #adapterText(adapter: AdapterReport): string {
    return adapter.isFallback
      ? `${adapter.description} (a software adapter: only tiny models stay responsive)`
      : adapter.description;
  }

  #stateOf(check: CheckState): string {
    if (check.state === "running") return "running";
    if (check.state === "error") return "failed";
    return check.result.mismatches === 0 ? "passed" : "failed";
  }

  #checkText(check: CheckState): string {
    if (check.state === "running") return "running...";
    if (check.state === "error") return check.message;
    return describeSelfCheck(check.result);
  }
}

customElements.define("gpu-status", GpuStatus);

declare global {
  interface HTMLElementTagNameMap {
    "gpu-status": GpuStatus;
  }
}
