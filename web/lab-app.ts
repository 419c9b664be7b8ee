// <gemini-lab>: the lab. It reads the scenario from the URL (settings and a classroom preset, so a link
// reproduces a lesson), runs a `LabSession` (the simulated cluster in this page), and lays out the views:
// controls, the cluster, the loss, the timeline, the recoveries and the recovery probability. A run that
// ended, a preset chosen or a setting changed gets a fresh session (the old cluster closed first). Keyboard,
// unless a control has the focus and wants the key: space start/pause, s single step, g fail machine 0's
// group, c compare with a failure-free run, p presentation mode, 0-7 a machine's hardware failure,
// shift+0-7 its software failure. The URL holds the valid settings, the preset, presentation mode (one
// screen for a projector) and `hide`: the sections and controls a lesson leaves out (hide=compare,timeline).

import { css, html, LitElement } from "lit";
import type { ReplicationPolicy } from "../agents/replication/interleaving.ts";
import { describeSource } from "../agents/protocol/spec.ts";
import { placementGroup } from "../agents/replication/placement.ts";
import "./cluster-view.ts";
import type { FailRequest } from "./cluster-view.ts";
import "./control-panel.ts";
import type { LabActions } from "./control-panel.ts";
import "./loss-chart.ts";
import "./machine-timeline.ts";
import "./paper-scale-panel.ts";
import "./probability-panel.ts";
import "./recovery-chart.ts";
import { isPresetName, type PresetName, PRESETS, readyToStrike } from "./presets.ts";
import { LabSession, type LabSettings, type LabState, settingsFromQuery, settingsToQuery } from "./session.ts";

/** Controls whose own keys a shortcut must leave alone: all of them for text and menus. */
const TEXT_CONTROLS = "input:not([type=checkbox], [type=radio], [type=button]), select, textarea, [contenteditable]";
/** Controls that Space and Enter press. */
const PRESSABLE = "button, a[href], summary, input, [role=button]";

export class GeminiLab extends LitElement {
  static override properties = {
    softwareAdapter: { type: Boolean },
    state: { state: true },
    presentation: { type: Boolean, reflect: true },
    hide: { attribute: false },
  };

  static override styles = css`
    :host {
      display: block;
      --gap: 1rem;
    }
    .layout {
      display: grid;
      grid-template-columns: repeat(auto-fit, minmax(26rem, 1fr));
      gap: 0 var(--gap);
    }
    section {
      margin-bottom: var(--gap);
      grid-column: 1 / -1;
      min-width: 0;
    }
    section.half {
      grid-column: auto;
    }
    h2 {
      font-size: 1.15em;
      margin: 0.8rem 0 0.4rem;
    }
    .status {
      padding: 0.4rem 0.6rem;
      border-radius: 0.3rem;
      background: #f6f8fa;
    }
    .status[data-status="recovering"] {
      background: #fff8c5;
    }
    .status[data-status="error"] {
      background: #ffebe9;
    }
    .notice {
      color: #6e4b00;
    }
    /* One screen, read from the back of the room: the type grows with the screen, the charts share what
      height is left, the panels that explain at a desk are left out and the settings go in a drawer. */
    :host([presentation]) {
      font-size: clamp(13px, 1.75vh, 24px);
      --gap: 0.5rem;
      --chart-max-height: 16vh;
    }
    :host([presentation]) .layout {
      grid-template-columns: 1fr 1fr;
    }
    :host([presentation]) section {
      margin-bottom: 0.3rem;
    }
    :host([presentation]) h2 {
      margin: 0.2rem 0;
      font-size: 1em;
    }
    :host([presentation]) .status {
      margin: 0.3rem 0 0;
      padding: 0.2rem 0.6rem;
    }
    :host([presentation]) [data-area="probability"],
    :host([presentation]) [data-area="paper-scale"],
    :host([presentation]) .notice,
    :host([presentation]) p[data-field="recovery"]:not(:last-of-type) {
      display: none;
    }
    :host([presentation]) p[data-field="recovery"] {
      margin: 0.2rem 0 0;
    }
  `;

  declare softwareAdapter: boolean;
  declare state: LabState;
  declare presentation: boolean;
  /** What the URL's `hide` names: sections of the page and controls of the panel to leave out. */
  declare hide: string[];
  #session: LabSession;
  #preset: PresetName | null = null;
  #presetDone = false;
  /** Settles once every session this page has left has closed its cluster. */
  #closing: Promise<void> = Promise.resolve();

  constructor() {
    super();
    this.softwareAdapter = false;
    const params = new URLSearchParams(location.search), preset = params.get("preset");
    this.#preset = isPresetName(preset) ? preset : null;
    this.presentation = params.has("presentation");
    this.hide = params.get("hide")?.split(",").filter(Boolean) ?? [];
    this.#session = this.#newSession(settingsFromQuery(location.search));
    this.state = this.#session.state;
  }

  override connectedCallback() {
    super.connectedCallback();
    addEventListener("keydown", this.#onKey);
    // The URL says only what the page runs: no invalid or ignored settings.
    this.#showInUrl();
  }

  override disconnectedCallback() {
    super.disconnectedCallback();
    removeEventListener("keydown", this.#onKey);
    this.#session.close();
  }

  override willUpdate(changed: Map<string, unknown>) {
    // A software adapter keeps the tiny model, the one that stays responsive there.
    if (changed.has("softwareAdapter") && this.softwareAdapter && this.state.settings.model !== "tiny") {
      this.#changeSettings({ ...this.state.settings, model: "tiny" });
    }
  }

  override render() {
    const s = this.state, actions = this.#actions();
    return html`
      ${this.softwareAdapter
        ? html`<p class="notice" data-field="software-adapter">This page runs on a software WebGPU adapter: the tiny
            model is used, and everything runs slower than on a GPU.</p>`
        : ""}
      <div class="layout">
        <section data-area="controls">
          <control-panel .settings=${s.settings} .actions=${actions} preset=${this.#preset ?? ""} .hide=${this.hide}
            ?softwareAdapter=${this.softwareAdapter} ?presentation=${this.presentation}
            @start=${() => this.#primary()} @pause=${() => this.#primary()} @step=${() => this.#step()}
            @fail-group=${() => this.#failGroup()} @compare=${() => this.#compare()} @presentation=${() =>
              this.#present(!this.presentation)}
            @settings-change=${(e: CustomEvent<{ settings: LabSettings }>) => this.#changeSettings(e.detail.settings)}
            @replication-change=${(e: CustomEvent<{ policy: ReplicationPolicy }>) =>
              this.#changeReplication(e.detail.policy)}
            @preset=${(e: CustomEvent<{ name: PresetName | null }>) => this.#choosePreset(e.detail.name)}>
          </control-panel>
          <p class="status" role="status" data-field="status" data-status=${s.status}>
            ${this.#statusText(s)}</p>
        </section>
        ${this.#section(
          "cluster",
          "Machines and network",
          html`
            <cluster-view .machines=${s.machines} .plan=${s.plan} .transfers=${s.transfers} now=${s.now}
              status=${s.status} ?canFail=${this.#live()} ?compact=${this.presentation}
              @fail=${(e: CustomEvent<FailRequest>) =>
                this.#session.fail(e.detail.ranks, e.detail.kind)}></cluster-view>
          `,
        )}
        ${this.#section(
          "loss",
          "Loss, with the failure-free run",
          html`
            <loss-chart .reference=${s.reference} referenceStatus=${s.referenceStatus} .losses=${s.losses}
              .failures=${s.failures} .recoveries=${s.recoveries} .mismatches=${s.mismatches}></loss-chart>
          `,
        )}
        ${this.#section(
          "recoveries",
          "Recoveries: from memory and from persistent storage",
          html`<recovery-chart .recoveries=${s.recoveries} iterationMs=${s.iterationMs}></recovery-chart>
          ${
            s.recoveries.map((r, i) =>
              html`<p data-field="recovery" data-index=${i}>Recovery ${i + 1}: rolled back to iteration ${r.iteration}
              (${r.lostIterations} lost); shards from ${
                r.machines.map((m, rank) => `${rank}: ${describeSource(m.source)}`).join(", ")
              }; detected in ${r.detection.toFixed(0)} ms, resumed ${r.total.toFixed(0)} ms after the failure.</p>`
            )
          }`,
        )}
        ${this.#section(
          "timeline",
          "Timeline, last 4 seconds",
          html`
            <machine-timeline machines=${s.settings.machines} now=${s.now} .transfers=${s.transfers}
              .iterations=${s.iterations} .failures=${s.failures} .recoveries=${s.recoveries}></machine-timeline>
          `,
        )}
        ${this.#section(
          "probability",
          "Chance of recovering from CPU memory",
          html`
            <probability-panel machines=${s.settings.machines} replicas=${s.settings.replicas}
              failures="2"></probability-panel>
          `,
        )}
        ${this.#section("paper-scale", "At the paper's scale", html`<paper-scale-panel></paper-scale-panel>`)}
      </div>
    `;
  }

  /** A section of the page, unless the URL's `hide` names it; the loss and the recoveries share a row. */
  #section(area: string, title: string, content: unknown) {
    if (this.hide.includes(area)) return "";
    const half = area === "loss" || area === "recoveries";
    return html`<section data-area=${area} class=${half ? "half" : ""}><h2>${title}</h2>${content}</section>`;
  }

  #statusText(s: LabState): string {
    const base = {
      idle: "Ready: press Start, or choose a classroom preset.",
      starting: "Starting the machines (a Worker and a GPU device each)...",
      running: `Training: iteration ${s.iteration} of ${s.settings.iterations}.`,
      paused: s.referenceStatus === "running" ? `Paused: ${s.message}.` : `Paused at iteration ${s.iteration}.`,
      recovering: `Recovering: ${s.message}.`,
      done: `Done: ${s.iteration} iterations.`,
      error: `Error: ${s.message}`,
    }[s.status];
    const failed = s.machines.filter((m) => m.phase === "failed").map((m) => m.rank);
    return failed.length && s.status !== "recovering"
      ? `${base} Machine ${failed.join(", ")} failed; the root agent notices when its heartbeats stop.`
      : base;
  }

  /** Running, recovering or paused: machines that can fail. */
  #live(s: LabState = this.state): boolean {
    return s.status === "running" || s.status === "recovering" || s.status === "paused";
  }

  /** What can be done now: the buttons show it and the keyboard obeys it. */
  #actions(s: LabState = this.state): LabActions {
    const busy = s.status === "running" || s.status === "recovering";
    const group = s.plan ? placementGroup(s.plan, 0) : [];
    return {
      primary: busy || s.status === "starting"
        ? "pause"
        : s.status === "paused"
        ? "resume"
        : s.status === "idle"
        ? "start"
        : "again",
      // Pausing a cluster that is still starting would not hold: its first iteration follows the start.
      primaryEnabled: s.status !== "starting",
      step: s.status === "idle" || s.status === "paused",
      failGroup: this.#live(s) && group.some((rank) => s.machines[rank]?.phase !== "failed"),
      compare: s.losses.length > 0 && s.referenceStatus !== "running" && s.status !== "starting",
      settings: s.status !== "running" && s.status !== "recovering" && s.status !== "starting",
    };
  }

  #newSession(settings: LabSettings): LabSession {
    const session = new LabSession(settings);
    session.addEventListener("change", () => {
      // A session left behind may still report while its cluster closes.
      if (session !== this.#session) return;
      this.state = session.state;
      this.#maybeStrike();
    });
    return session;
  }

  /** A fresh session with `settings` (its cluster starts on Start), once the current one's has closed. */
  #renew(settings: LabSettings) {
    const old = this.#session;
    this.#closing = this.#closing.then(() => old.close()).catch(() => {});
    this.#presetDone = false;
    this.#session = this.#newSession(settings);
    this.state = this.#session.state;
    this.#showInUrl();
  }

  /** Runs `act` on the current session once the sessions left behind have closed their clusters. */
  async #whenClosed(act: (session: LabSession) => Promise<void>) {
    const session = this.#session;
    await this.#closing;
    if (session === this.#session) await act(session).catch(() => {}); // errors show in the status line
  }

  #changeSettings(settings: LabSettings) {
    if (this.#actions().settings) this.#renew(settings);
  }

  /** The replication policy changes live: in a running cluster from its next iteration. */
  #changeReplication(policy: ReplicationPolicy) {
    this.#session.setReplication(policy);
    this.#showInUrl();
  }

  #showInUrl() {
    const params = new URLSearchParams(settingsToQuery(this.#session.state.settings));
    if (this.#preset) params.set("preset", this.#preset);
    if (this.presentation) params.set("presentation", "");
    if (this.hide.length) params.set("hide", this.hide.join(","));
    const query = params.toString();
    history.replaceState(null, "", query ? `?${query}` : location.pathname);
  }

  #present(on: boolean) {
    this.presentation = on;
    this.#showInUrl();
  }

  /** A preset runs at once, on a fresh cluster; none leaves the run as it is, with no failure to come. */
  #choosePreset(name: PresetName | null) {
    this.#preset = name;
    if (name) {
      this.#renew(this.state.settings);
      this.#start();
    } else {
      this.#presetDone = true;
      this.#showInUrl();
      this.requestUpdate();
    }
  }

  /** A preset's failure, once the run has reached the moment that shows its point. */
  #maybeStrike() {
    const name = this.#preset;
    if (!name || this.#presetDone || !readyToStrike(name, this.state)) return;
    this.#presetDone = true;
    this.#session.fail(PRESETS[name].ranks(this.state), PRESETS[name].kind);
  }

  /** Start, resume, run again (a fresh cluster, after a run ended) or pause. */
  #primary() {
    const { primary, primaryEnabled } = this.#actions();
    if (!primaryEnabled) return;
    if (primary === "pause") this.#session.pause();
    else this.#start();
  }

  #start() {
    if (this.state.status === "done" || this.state.status === "error") this.#renew(this.state.settings);
    this.#whenClosed((session) => session.start());
  }

  #step() {
    if (this.#actions().step) this.#whenClosed((session) => session.step());
  }

  #compare() {
    if (this.#actions().compare) this.#session.compare().catch(() => {});
  }

  #failGroup() {
    if (this.#actions().failGroup && this.state.plan) {
      this.#session.fail(placementGroup(this.state.plan, 0), "hardware");
    }
  }

  #onKey = (event: KeyboardEvent) => {
    if (event.defaultPrevented || event.ctrlKey || event.metaKey || event.altKey) return;
    // The element that has the key (the event is retargeted to this page's component otherwise).
    const origin = event.composedPath()[0];
    if (origin instanceof Element) {
      if (origin.closest(TEXT_CONTROLS)) return;
      if ((event.key === " " || event.key === "Enter") && origin.closest(PRESSABLE)) return;
    }
    if (event.key === " ") {
      event.preventDefault();
      this.#primary();
    } else if (event.key === "s") this.#step();
    else if (event.key === "g") this.#failGroup();
    else if (event.key === "c") this.#compare();
    else if (event.key === "p") this.#present(!this.presentation);
    else if (/^Digit[0-7]$/.test(event.code) && this.#live()) {
      const rank = Number(event.code.slice(5));
      if (rank < this.state.machines.length) this.#session.fail([rank], event.shiftKey ? "software" : "hardware");
    }
  };
}

customElements.define("gemini-lab", GeminiLab);

declare global {
  interface HTMLElementTagNameMap {
    "gemini-lab": GeminiLab;
  }
}
