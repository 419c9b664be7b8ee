// <control-panel>: start, pause and single-step; the cluster's settings (checked as they are typed, each
// problem shown beside its field; a valid change starts a new session, except the replication policy,
// which can be switched live); the classroom presets (buttons, so that arrow keys start nothing; the
// active one pressed); failing a whole group; presentation mode. Each model size is planned against the
// page's memory budget: one that does not fit is disabled, the plan's reason beside it. Settings, the
// budget, what can be done now and the active preset come in as properties; every action goes out as an event: "start", "pause", "step",
// "fail-group", "compare", "presentation", "settings-change" ({ settings }), "replication-change"
// ({ policy }) and "preset" ({ name }, null for none).

import { css, html, LitElement } from "lit";
import { REPLICATION_POLICIES, type ReplicationPolicy } from "../agents/replication/interleaving.ts";
import { PLACEMENT_STRATEGIES } from "../agents/replication/placement.ts";
import { isPresetName, PRESETS } from "./presets.ts";
import { labFit, type PageBudget } from "./memory-fit.ts";
import { LAB_MODELS, type LabSettings, type NumberSetting, SETTING_LIMITS, settingsProblems } from "./session.ts";

/** What can be done now: the main button's action, and whether each other action can act. */
export interface LabActions {
  primary: "start" | "resume" | "again" | "pause";
  primaryEnabled: boolean;
  step: boolean;
  failGroup: boolean;
  compare: boolean;
  /** Whether the cluster's settings can change (not while it runs). */
  settings: boolean;
}

const PRIMARY_LABELS: Record<LabActions["primary"], string> = {
  start: "Start",
  resume: "Resume",
  again: "Run again",
  pause: "Pause",
};

const REPLICATION_NAMES: Record<ReplicationPolicy, string> = {
  none: "none (local memory only)",
  naive: "naive (as soon as ready)",
  interleaved: "interleaved (idle network only)",
};

const NUMBER_LABELS: Record<NumberSetting, string> = {
  machines: "machines",
  replicas: "replicas m",
  checkpointEvery: "checkpoint every (iterations)",
  persistEvery: "persist every (iterations, 0: never)",
  networkMBps: "network (MB/s a link)",
  storageMBps: "persistent store (MB/s)",
  heartbeatTimeoutMs: "heartbeat timeout (ms)",
  iterations: "iterations",
};

export class ControlPanel extends LitElement {
  static override properties = {
    settings: { attribute: false },
    actions: { attribute: false },
    preset: { type: String },
    budget: { attribute: false },
    presentation: { type: Boolean, reflect: true },
    hide: { attribute: false },
    draft: { state: true },
  };

  static override styles = css`
    :host {
      display: block;
    }
    .actions,
    .presets {
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
    .presets button[aria-pressed="true"] {
      background: #0550ae;
      color: #fff;
      border: 1px solid #0550ae;
      border-radius: 0.2rem;
    }
    .promise {
      margin: 0 0 0.6rem;
    }
    :host([presentation]) .actions,
    :host([presentation]) .presets,
    :host([presentation]) .promise {
      margin-bottom: 0.3rem;
    }
    /* In presentation mode the settings open over the stage, not above it. */
    .drawer[open] fieldset {
      position: fixed;
      z-index: 2;
      top: 3rem;
      left: 5vw;
      width: 90vw;
      background: #fff;
      box-shadow: 0 0.3rem 1rem rgba(0, 0, 0, 0.3);
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
    input[type="number"] {
      width: 6rem;
    }
    input[aria-invalid="true"] {
      outline: 2px solid #a40e26;
    }
    #model-plan {
      grid-column: 1 / -1;
    }
    .problem,
    .plan {
      display: block;
      font-size: 0.9em;
    }
    .problem {
      color: #a40e26;
    }
    kbd {
      font-size: 0.8em;
      border: 1px solid currentColor;
      border-radius: 0.2rem;
      padding: 0 0.2rem;
    }
  `;

  declare settings: LabSettings;
  declare actions: LabActions;
  /** The active preset ("" for none). */
  declare preset: string;
  /** Where a run must fit (null: the adapter is not known yet). */
  declare budget: PageBudget | null;
  declare presentation: boolean;
  /** Controls to leave out, by name: start, step, fail-group, compare, replication, presentation, presets, settings. */
  declare hide: string[];
  /** The settings as typed, until they are valid and committed. */
  declare draft: LabSettings | null;

  constructor() {
    super();
    this.actions = {
      primary: "start",
      primaryEnabled: true,
      step: true,
      failGroup: false,
      compare: false,
      settings: true,
    };
    this.preset = "";
    this.budget = null;
    this.presentation = false;
    this.hide = [];
    this.draft = null;
  }

  override willUpdate(changed: Map<string, unknown>) {
    if (changed.has("settings")) this.draft = null;
  }

  override render() {
    const { actions } = this, shown = this.draft ?? this.settings, problems = settingsProblems(shown);
    const fits = Object.fromEntries(LAB_MODELS.map((model) => [model, labFit({ ...shown, model }, this.budget)]));
    const chosen = fits[shown.model];
    if (!problems.model && chosen.verdict === "does not fit") problems.model = chosen.text;
    // Starting with the settings as they were, not as they are typed, would mislead.
    const invalid = Object.keys(problems).length > 0 && actions.primary !== "pause" && actions.primary !== "resume";
    const active = isPresetName(this.preset) ? PRESETS[this.preset] : null;
    const shows = (name: string) => !this.hide.includes(name);
    const settings = html`
      <fieldset ?disabled=${!actions.settings} @input=${this.#edit} @change=${this.#commit}>
        <legend>Cluster${actions.settings ? " (a change starts a new run)" : " (fixed while it runs: pause to change)"}
        </legend>
        ${(Object.keys(NUMBER_LABELS) as NumberSetting[]).map((name) => {
          const [min, max] = SETTING_LIMITS[name], problem = problems[name];
          return html`<div>
            <label>${NUMBER_LABELS[name]}<input name=${name} type="number" min=${min} max=${max} step="1"
              .value=${String(shown[name])} aria-invalid=${problem ? "true" : "false"}
              aria-describedby=${problem ? `problem-${name}` : ""}></label>
            ${problem ? html`<span class="problem" id="problem-${name}" data-problem=${name}>${problem}</span>` : ""}
          </div>`;
        })}
        <label>placement<select name="placement" .value=${shown.placement}>
          ${PLACEMENT_STRATEGIES.map((s) => html`<option ?selected=${s === shown.placement}>${s}</option>`)}
        </select></label>
        <label>model<select name="model" aria-describedby="model-plan">
          ${LAB_MODELS.map((model) =>
            html`
              <option ?disabled=${fits[model].verdict === "does not fit" && model !== shown.model}
                ?selected=${model === shown.model}>${model}</option>
            `
          )}
        </select></label>
        <div id="model-plan">
          ${problems.model
            ? html`<span class="problem" data-problem="model">${problems.model}</span>`
            : html`<span class="plan" data-field="memory-fit" data-verdict=${chosen.verdict}>${chosen.text}</span>`}
          ${LAB_MODELS.filter((model) => model !== shown.model && fits[model].verdict === "does not fit").map((model) =>
            html`<span class="plan" data-unavailable=${model}>${fits[model].text}</span>`
          )}
        </div>
      </fieldset>
    `;
    return html`
      <div class="actions">
        ${shows("start")
          ? html`
            <button data-action=${actions.primary} ?disabled=${!actions.primaryEnabled || invalid}
              @click=${() => this.#emit(actions.primary === "pause" ? "pause" : "start")}>
                        ${PRIMARY_LABELS[actions.primary]} <kbd>space</kbd></button>
          `
          : ""}
        ${shows("step")
          ? html`<button data-action="step" ?disabled=${!actions.step || invalid} @click=${() => this.#emit("step")}>
            Single step <kbd>s</kbd></button>`
          : ""}
        ${shows("fail-group")
          ? html`
            <button data-action="fail-group" ?disabled=${!actions.failGroup}
              @click=${() => this.#emit("fail-group")}>Fail machine 0's whole group <kbd>g</kbd></button>
          `
          : ""}
        ${shows("compare")
          ? html`<button data-action="compare" ?disabled=${!actions.compare} @click=${() => this.#emit("compare")}>
            Compare with a failure-free run <kbd>c</kbd></button>`
          : ""}
        ${shows("replication")
          ? html`<label>replication
            <select data-field="replication" .value=${this.settings.replication} @change=${this.#replication}>
              ${
            REPLICATION_POLICIES.map((policy) =>
              html`<option value=${policy} ?selected=${policy === this.settings.replication}>${
                REPLICATION_NAMES[policy]
              }</option>`
            )
          }
            </select>
          </label>`
          : ""}
        ${shows("presentation")
          ? html`<label><input type="checkbox" .checked=${this.presentation}
            @change=${() => this.#emit("presentation")}> presentation mode <kbd>p</kbd></label>`
          : ""}
        ${shows("settings") && this.presentation
          ? html`<details class="drawer" data-field="settings-drawer"><summary>Cluster settings</summary>${settings}
          </details>`
          : ""}
      </div>
      ${shows("presets")
        ? html`
          <div class="presets" role="group" aria-labelledby="presets-label" data-field="presets">
            <span id="presets-label">Classroom preset (runs at once):</span>
            ${Object.entries(PRESETS).map(([name, preset]) =>
              html`
                <button data-preset=${name} aria-pressed=${String(this.preset === name)} title=${preset.promise}
                  ?disabled=${invalid} @click=${() => this.#choose(name)}>${preset.title}</button>
              `
            )}
            <button data-preset="" aria-pressed=${String(!active)} @click=${() => this.#choose(null)}>none</button>
          </div>
          ${active ? html`<p class="promise" data-field="preset-promise">${active.title}: ${active.promise}.</p>` : ""}
        `
        : ""}
      ${shows("settings") && !this.presentation ? settings : ""}
    `;
  }

  /** As typed: the draft, checked at once. */
  #edit(event: Event) {
    const field = event.target as HTMLInputElement | HTMLSelectElement;
    const name = field.name as keyof LabSettings;
    const text = field.value.trim();
    const value = name === "placement" || name === "model" ? text : text === "" ? NaN : Number(text);
    this.draft = { ...(this.draft ?? this.settings), [name]: value };
  }

  /** Committed (Enter, leaving the field, a menu's choice): valid settings go out. */
  #commit(event: Event) {
    this.#edit(event);
    const settings = this.draft!;
    if (Object.keys(settingsProblems(settings)).length || labFit(settings, this.budget).verdict === "does not fit") {
      return;
    }
    this.dispatchEvent(new CustomEvent("settings-change", { detail: { settings }, bubbles: true, composed: true }));
  }

  #replication(event: Event) {
    const policy = (event.target as HTMLSelectElement).value as ReplicationPolicy;
    this.dispatchEvent(new CustomEvent("replication-change", { detail: { policy }, bubbles: true, composed: true }));
  }

  #choose(name: string | null) {
    this.dispatchEvent(new CustomEvent("preset", { detail: { name }, bubbles: true, composed: true }));
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
