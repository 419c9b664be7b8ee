// <gemini-lab>: the lab. It reads the scenario from the URL (settings and a classroom preset, so a link
// reproduces a lesson), runs a `LabSession` (the simulated cluster in this page), and lays out the views:
// controls, the cluster, the loss, the timeline, the recoveries and the recovery probability. Keyboard:
// space start/pause, s single step, g fail machine 0's group, c compare with a failure-free run,
// p presentation mode, 0-7 a machine's
// hardware failure, shift+0-7 its software failure.

import { css, html, LitElement } from "lit";
import type { FailureKind } from "../agents/sim/cluster.ts";
import type { ReplicationPolicy } from "../agents/replication/interleaving.ts";
import { placementGroup } from "../agents/replication/placement.ts";
import "./cluster-view.ts";
import type { FailRequest } from "./cluster-view.ts";
import "./control-panel.ts";
import { type PresetName, PRESETS } from "./control-panel.ts";
import "./loss-chart.ts";
import "./machine-timeline.ts";
import "./paper-scale-panel.ts";
import "./probability-panel.ts";
import "./recovery-chart.ts";
import { LabSession, type LabSettings, type LabState, settingsFromQuery, settingsToQuery } from "./session.ts";

/** When a preset strikes, and whom. */
const PRESET_PLANS: Record<PresetName, { at: number; kind: FailureKind; ranks: (session: LabState) => number[] }> = {
  "software-crash": { at: 5, kind: "software", ranks: () => [1] },
  "machine-lost": { at: 5, kind: "hardware", ranks: () => [1] },
  "group-lost": { at: 8, kind: "hardware", ranks: (state) => state.plan ? placementGroup(state.plan, 0) : [0] },
  "two-failures": {
    at: 5,
    kind: "hardware",
    // Machine 0 and the first machine outside its group, so that both recover from memory.
    ranks: (state) => {
      const group = state.plan ? placementGroup(state.plan, 0) : [0];
      return [0, state.settings.machines > group.length ? group.length : 1];
    },
  },
};

export class GeminiLab extends LitElement {
  static override properties = {
    softwareAdapter: { type: Boolean },
    state: { state: true },
    presentation: { type: Boolean, reflect: true },
  };

  static override styles = css`
    :host {
      display: block;
      --gap: 1rem;
    }
    :host([presentation]) {
      font-size: 1.45rem;
    }
    section {
      margin-bottom: var(--gap);
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
    .two {
      display: grid;
      grid-template-columns: repeat(auto-fit, minmax(26rem, 1fr));
      gap: var(--gap);
    }
  `;

  declare softwareAdapter: boolean;
  declare state: LabState;
  declare presentation: boolean;
  #session: LabSession;
  #preset: PresetName | null = null;
  #presetDone = false;

  constructor() {
    super();
    this.softwareAdapter = false;
    this.presentation = false;
    const params = new URLSearchParams(location.search);
    const preset = params.get("preset");
    this.#preset = preset && preset in PRESETS ? preset as PresetName : null;
    this.#session = this.#newSession(settingsFromQuery(location.search));
    this.state = this.#session.state;
  }

  override connectedCallback() {
    super.connectedCallback();
    addEventListener("keydown", this.#onKey);
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
    const s = this.state, started = s.status !== "idle";
    return html`
      ${this.softwareAdapter
        ? html`<p class="notice" data-field="software-adapter">This page runs on a software WebGPU adapter: the tiny
            model is used, and everything runs slower than on a GPU.</p>`
        : ""}
      <section>
        <control-panel .settings=${s.settings} status=${s.status} ?softwareAdapter=${this.softwareAdapter}
          ?presentation=${this.presentation}
          @start=${() => this.#start()} @pause=${() => this.#session.pause()} @step=${() => this.#session.step()}
          @fail-group=${() => this.#failGroup()} @compare=${() => this.#session.compare()} @presentation=${() =>
            this.presentation = !this.presentation}
          @settings-change=${(e: CustomEvent<{ settings: LabSettings }>) => this.#changeSettings(e.detail.settings)}
          @replication-change=${(e: CustomEvent<{ policy: ReplicationPolicy }>) =>
            this.#changeReplication(e.detail.policy)}
          @preset=${(e: CustomEvent<{ name: PresetName }>) => this.#choosePreset(e.detail.name)}></control-panel>
        <p class="status" role="status" data-field="status" data-status=${s.status}>
          ${this.#statusText(s)}</p>
      </section>
      <section>
        <h2>Machines and network</h2>
        <cluster-view .machines=${s.machines} .plan=${s.plan} .transfers=${s.transfers} now=${s.now}
          ?canFail=${started && s.status !== "done"}
          @fail=${(e: CustomEvent<FailRequest>) => this.#session.fail(e.detail.ranks, e.detail.kind)}></cluster-view>
      </section>
      <div class="two">
        <section>
          <h2>Loss, with the failure-free run</h2>
          <loss-chart .reference=${s.reference} referenceStatus=${s.referenceStatus} .losses=${s.losses}
            .failures=${s.failures}
            .recoveries=${s.recoveries} .mismatches=${s.mismatches}></loss-chart>
        </section>
        <section>
          <h2>Recoveries: from memory and from persistent storage</h2>
          <recovery-chart .recoveries=${s.recoveries} iterationMs=${s.iterationMs}></recovery-chart>
          ${s.recoveries.map((r, i) =>
            html`<p data-field="recovery" data-index=${i}>Recovery ${i + 1}: rolled back to iteration ${r.iteration}
              (${r.lostIterations} lost); shards from ${
              r.machines.map((m, rank) =>
                `${rank}: ${m.source.from === "peer" ? `peer ${m.source.peer}` : m.source.from}`
              ).join(", ")
            }; detected in ${r.detection.toFixed(0)} ms, resumed ${r.total.toFixed(0)} ms after the failure.</p>`
          )}
        </section>
      </div>
      <section>
        <h2>Timeline, last 4 seconds</h2>
        <machine-timeline machines=${s.settings.machines} now=${s.now} .transfers=${s.transfers}
          .iterations=${s.iterations} .failures=${s.failures} .recoveries=${s.recoveries}></machine-timeline>
      </section>
      <section>
        <h2>Chance of recovering from CPU memory</h2>
        <probability-panel machines=${s.settings.machines} replicas=${s.settings.replicas}
          failures="2"></probability-panel>
      </section>
      <section>
        <h2>At the paper's scale</h2>
        <paper-scale-panel></paper-scale-panel>
      </section>
    `;
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

  #newSession(settings: LabSettings): LabSession {
    const session = new LabSession(settings);
    session.addEventListener("change", () => {
      this.state = session.state;
      this.#maybeStrike();
    });
    return session;
  }

  #changeSettings(settings: LabSettings) {
    if (this.state.status !== "idle") return;
    this.#session = this.#newSession(settings);
    this.state = this.#session.state;
    this.#showInUrl(settings);
  }

  /** The replication policy changes live: in a running cluster from its next iteration. */
  #changeReplication(policy: ReplicationPolicy) {
    this.#session.setReplication(policy);
    this.#showInUrl(this.#session.state.settings);
  }

  #showInUrl(settings: LabSettings) {
    const query = settingsToQuery(settings) + (this.#preset ? `&preset=${this.#preset}` : "");
    history.replaceState(null, "", query ? `?${query.replace(/^&/, "")}` : location.pathname);
  }

  #choosePreset(name: PresetName) {
    this.#preset = name;
    this.#presetDone = false;
    this.#changeSettings(this.state.settings);
    if (this.state.status === "idle") this.#start();
  }

  /** A preset's failure, once its iteration is reached. */
  #maybeStrike() {
    if (!this.#preset || this.#presetDone || this.state.status !== "running") return;
    const plan = PRESET_PLANS[this.#preset];
    if (this.state.iteration < plan.at) return;
    this.#presetDone = true;
    this.#session.fail(plan.ranks(this.state), plan.kind);
  }

  #start() {
    this.#session.start().catch(() => {}); // errors show in the status line
  }

  #failGroup() {
    if (this.state.plan) this.#session.fail(placementGroup(this.state.plan, 0), "hardware");
  }

  #onKey = (event: KeyboardEvent) => {
    if ((event.target as HTMLElement)?.closest?.("input, select, textarea")) return;
    const running = ["running", "starting", "recovering"].includes(this.state.status);
    if (event.key === " ") {
      event.preventDefault();
      if (running) this.#session.pause();
      else this.#start();
    } else if (event.key === "s") this.#session.step();
    else if (event.key === "g") this.#failGroup();
    else if (event.key === "c") this.#session.compare();
    else if (event.key === "p") this.presentation = !this.presentation;
    else if (/^Digit[0-7]$/.test(event.code)) {
      this.#session.fail([Number(event.code.slice(5))], event.shiftKey ? "software" : "hardware");
    }
  };
}

customElements.define("gemini-lab", GeminiLab);

declare global {
  interface HTMLElementTagNameMap {
    "gemini-lab": GeminiLab;
  }
}
