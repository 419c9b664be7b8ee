// <control-panel>: start, pause and single-step; the cluster's settings (fixed once it has started, but
// for the replication policy, which can be switched live); the classroom presets; failing a whole group;
// presentation mode. Settings come in as a property; every action goes out as an event: "start", "pause",
// "step", "fail-group", "compare", "presentation", "settings-change" ({ settings }), "replication-change"
// ({ policy }) and "preset" ({ name }).

import { css, html, LitElement } from "lit";
import { REPLICATION_POLICIES, type ReplicationPolicy } from "../agents/replication/interleaving.ts";
import { PLACEMENT_STRATEGIES } from "../agents/replication/placement.ts";
import type { LabSettings, LabState } from "./session.ts";

export const PRESETS = {
  "software-crash": "A software crash (machine 1 restarts, restores from its own memory)",
  "machine-lost": "A machine lost (machine 1's hardware fails; a peer serves its shard)",
  "group-lost": "A whole group lost (every copy in memory is gone: persistent storage)",
  "two-failures": "Two failures at once (in different groups)",
} as const;

export type PresetName = keyof typeof PRESETS;

const REPLICATION_NAMES: Record<ReplicationPolicy, string> = {
  none: "none (local memory only)",
  naive: "naive (as soon as ready)",
  interleaved: "interleaved (idle network only)",
};

type NumberSetting = Exclude<keyof LabSettings, "placement" | "model" | "replication">;

const NUMBER_FIELDS: [NumberSetting, string, number, number][] = [
  ["machines", "machines", 2, 8],
  ["replicas", "replicas m", 1, 8],
  ["checkpointEvery", "checkpoint every (iterations)", 1, 100],
  ["persistEvery", "persist every (iterations, 0: never)", 0, 100],
  ["networkMBps", "network (MB/s a link)", 1, 100000],
  ["storageMBps", "persistent store (MB/s)", 1, 100000],
  ["heartbeatTimeoutMs", "heartbeat timeout (ms)", 200, 30000],
  ["iterations", "iterations", 1, 10000],
];

export class ControlPanel extends LitElement {
  static override properties = {
    settings: { attribute: false },
    status: { type: String },
    softwareAdapter: { type: Boolean },
    presentation: { type: Boolean },
  };

  static override styles = css`
    :host {
      display: block;
    }
    .actions {
      display: flex;
      flex-wrap: wrap;
      gap: 0.5rem;
      align-items: center;
      margin-bottom: 0.6rem;
    }
    button,
    select,
    input {
      font: inherit;
    }
    fieldset {
      display: grid;
      grid-template-columns: repeat(auto-fill, minmax(15rem, 1fr));
      gap: 0.4rem 1rem;
      border: 1px solid #d0d7de;
      border-radius: 0.4rem;
    }
    label {
      display: flex;
      justify-content: space-between;
      gap: 0.5rem;
      align-items: center;
    }
    input {
      width: 6rem;
    }
    kbd {
      font-size: 0.8em;
      border: 1px solid #8c959f;
      border-radius: 0.2rem;
      padding: 0 0.2rem;
    }
  `;

  declare settings: LabSettings;
  declare status: LabState["status"];
  declare softwareAdapter: boolean;
  declare presentation: boolean;

  constructor() {
    super();
    this.status = "idle";
    this.softwareAdapter = false;
    this.presentation = false;
  }

  override render() {
    const started = this.status !== "idle";
    const running = this.status === "running" || this.status === "recovering" || this.status === "starting";
    return html`
      <div class="actions">
        ${running
          ? html`<button data-action="pause" @click=${() => this.#emit("pause")}>Pause <kbd>space</kbd></button>`
          : html`<button data-action="start" ?disabled=${this.status === "done"} @click=${() => this.#emit("start")}>
              ${started ? "Resume" : "Start"} <kbd>space</kbd></button>`}
        <button data-action="step" ?disabled=${running || this.status === "done"} @click=${() => this.#emit("step")}>
          Single step <kbd>s</kbd></button>
        <button data-action="fail-group" ?disabled=${!started || this.status === "done"}
          @click=${() => this.#emit("fail-group")}>Fail machine 0's whole group <kbd>g</kbd></button>
        <button data-action="compare" ?disabled=${!started || this.status === "starting"}
          @click=${() => this.#emit("compare")}>Compare with a failure-free run <kbd>c</kbd></button>
        <label>Classroom preset
          <select data-field="preset" @change=${this.#preset}>
            <option value="">choose...</option>
            ${Object.entries(PRESETS).map(([name, text]) => html`<option value=${name}>${text}</option>`)}
          </select>
        </label>
        <label>replication
          <select data-field="replication" .value=${this.settings.replication} @change=${this.#replication}>
            ${REPLICATION_POLICIES.map((policy) =>
              html`<option value=${policy} ?selected=${policy === this.settings.replication}>${
                REPLICATION_NAMES[policy]
              }</option>`
            )}
          </select>
        </label>
        <label><input type="checkbox" .checked=${this.presentation} @change=${() => this.#emit("presentation")}>
          presentation mode <kbd>p</kbd></label>
      </div>
      <fieldset ?disabled=${started} @change=${this.#read}>
        <legend>Cluster${started ? " (fixed while it runs: reload to change)" : ""}</legend>
        ${NUMBER_FIELDS.map(([name, label, min, max]) =>
          html`<label>${label}<input name=${name} type="number" min=${min} max=${max}
            .value=${String(this.settings[name])}></label>`
        )}
        <label>placement<select name="placement" .value=${this.settings.placement}>
          ${PLACEMENT_STRATEGIES.map((s) => html`<option ?selected=${s === this.settings.placement}>${s}</option>`)}
        </select></label>
        <label>model<select name="model">
          <option ?selected=${this.settings.model === "tiny"}>tiny</option>
          <option ?disabled=${this.softwareAdapter} ?selected=${this.settings.model === "small"}>small</option>
        </select></label>
      </fieldset>
    `;
  }

  #read(event: Event) {
    const field = event.target as HTMLInputElement | HTMLSelectElement;
    const name = field.name as keyof LabSettings;
    const value = name === "placement" || name === "model" ? field.value : Number(field.value);
    if (typeof value === "number" && !(Number.isInteger(value) && value >= 0)) return;
    const settings = { ...this.settings, [name]: value };
    this.dispatchEvent(new CustomEvent("settings-change", { detail: { settings }, bubbles: true, composed: true }));
  }

  #replication(event: Event) {
    const policy = (event.target as HTMLSelectElement).value as ReplicationPolicy;
    this.dispatchEvent(new CustomEvent("replication-change", { detail: { policy }, bubbles: true, composed: true }));
  }

  #preset(event: Event) {
    const name = (event.target as HTMLSelectElement).value;
    if (name) this.dispatchEvent(new CustomEvent("preset", { detail: { name }, bubbles: true, composed: true }));
  }

  #emit(name: string) {
    this.dispatchEvent(new CustomEvent(name, { bubbles: true, composed: true }));
  }
}

customElements.define("control-panel", ControlPanel);

declare global {
  interface HTMLElementTagNameMap {
    "control-panel": ControlPanel;
  }
}
