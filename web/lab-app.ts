// <gemini-lab>: the lab. It reads the scenario from the URL (settings and a classroom preset, so a link
// reproduces a lesson), runs a `LabSession` (the simulated cluster in this page), and lays out the views:
// controls, the cluster, the loss, the timeline, the recoveries and the recovery probability. A run that
// ended, a preset chosen or a setting changed gets a fresh session (the old cluster closed first). Keyboard,
// unless a control has the focus and wants the key: space start/pause, s single step, g fail machine 0's
// group, c compare with a failure-free run, p presentation mode, 0-7 a machine's hardware failure,
// shift+0-7 its software failure. In a lesson (a preset), space, the arrows, page up and down and "."
// (what a presenter's clicker sends) step the narration instead, and the stage holds at each step's
// moment. The stage can be slowed and rewound: the views render the recorded state at the moment shown.
// The URL holds the valid settings, the preset, presentation mode (one screen for a projector) and `hide`:
// the sections and controls a lesson leaves out (hide=compare,timeline; narration and time too).

import { css, html, LitElement } from "lit";
import type { ReplicationPolicy } from "../agents/replication/interleaving.ts";
import { describeSource } from "../agents/protocol/spec.ts";
import { placementGroup } from "../agents/replication/placement.ts";
import "./cluster-view.ts";
import type { FailRequest } from "./cluster-view.ts";
import "./control-panel.ts";
import "./generate-panel.ts";
import type { LabActions } from "./control-panel.ts";
import "./loss-chart.ts";
import "./machine-timeline.ts";
import "./paper-scale-panel.ts";
import "./probability-panel.ts";
import "./recovery-chart.ts";
import "./lesson-narration.ts";
import type { LessonNarration } from "./lesson-narration.ts";
import "./time-control.ts";
import { lessonSteps } from "./lessons.ts";
import { isPresetName, type PresetName, PRESETS, readyToStrike } from "./presets.ts";
import { labFit, type PageBudget } from "./memory-fit.ts";
import { describeShard, type RecoveryWhy } from "./recovery-why.ts";
import type { ObservedRecovery } from "../agents/sim/observer.ts";
import {
  type GenerateRequest,
  LabSession,
  type LabSettings,
  type LabState,
  type PolicyStats,
  settingsFromQuery,
  settingsToQuery,
} from "./session.ts";

/** Controls whose own keys a shortcut must leave alone: all of them for text and menus. */
const TEXT_CONTROLS = "input:not([type=checkbox], [type=radio], [type=button]), select, textarea, [contenteditable]";
/** Controls that Space and Enter press. */
const PRESSABLE = "button, a[href], summary, input, [role=button]";
/** A presenter's keys: on (a clicker's "next", space, the arrows, ".") and back. */
const LESSON_NEXT = new Set([" ", "ArrowRight", "ArrowDown", "PageDown", "."]);
const LESSON_BACK = new Set(["ArrowLeft", "ArrowUp", "PageUp"]);
/** How often a slowed or rewound stage moves on (ms). */
const PLAYBACK_TICK_MS = 100;

export class GeminiLab extends LitElement {
  static override properties = {
    softwareAdapter: { type: Boolean },
    budget: { attribute: false },
    state: { state: true },
    at: { state: true },
    speed: { state: true },
    lessonStep: { state: true },
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
    /* The status and the stage's time share a row where there is room. */
    .bar {
      display: flex;
      flex-wrap: wrap;
      gap: 0.3rem 1rem;
      align-items: center;
    }
    .bar .status {
      flex: 1 1 20rem;
      margin: 0;
    }
    .bar time-control {
      flex: 1 1 26rem;
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
      --chart-max-height: 14vh;
      --chart-text: 1.4;
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
      padding: 0.2rem 0.6rem;
    }
    :host([presentation]) .bar {
      margin-top: 0.3rem;
    }
    :host([presentation]) p[data-field="policies"],
    :host([presentation]) p[data-field="why"] {
      font-size: 0.85em;
      margin: 0.1rem 0 0;
    }
    :host([presentation]) [data-area="probability"],
    :host([presentation]) [data-area="generate"],
    :host([presentation]) [data-area="paper-scale"],
    :host([presentation]) .notice,
    :host([presentation]) .recovery-item:not(:last-of-type) {
      display: none;
    }
    :host([presentation]) p[data-field="recovery"] {
      margin: 0.2rem 0 0;
    }
  `;

  declare softwareAdapter: boolean;
  /** Where a run must fit, once the page knows its adapter (null: not yet). */
  declare budget: PageBudget | null;
  declare state: LabState;
  declare presentation: boolean;
  /** What the URL's `hide` names: sections of the page and controls of the panel to leave out. */
  declare hide: string[];
  /** The moment the stage shows, on the network's clock (null: live), and how fast it plays. */
  declare at: number | null;
  declare speed: number;
  /** The lesson's step shown (with a preset). */
  declare lessonStep: number;
  /** The stage stays at `at` (rewound, or held by the lesson) instead of playing on. */
  #still = false;
  /** The lesson steps whose moment the stage has held at already. */
  #heldSteps = new Set<number>();
  /** The lesson paused the run (to hold at a moment): stepping on resumes it. */
  #lessonPaused = false;
  #ticker: ReturnType<typeof setInterval> | undefined;
  #session: LabSession;
  #preset: PresetName | null = null;
  #presetDone = false;
  /** Settles once every session this page has left has closed its cluster. */
  #closing: Promise<void> = Promise.resolve();
  /** Why the model the URL asked for was refused ("": it was not). */
  #refused = "";

  constructor() {
    super();
    this.softwareAdapter = false;
    this.budget = null;
    const params = new URLSearchParams(location.search), preset = params.get("preset");
    this.#preset = isPresetName(preset) ? preset : null;
    this.presentation = params.has("presentation");
    this.hide = params.get("hide")?.split(",").filter(Boolean) ?? [];
    this.at = null;
    this.speed = 1;
    this.lessonStep = 0;
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
    clearInterval(this.#ticker);
    this.#session.close();
  }

  override willUpdate(changed: Map<string, unknown>) {
    // A model the URL asked for that does not fit is refused, with the plan's reason, for the tiny one.
    if (!changed.has("budget") || !this.budget) return;
    const fit = labFit(this.state.settings, this.budget);
    if (fit.verdict !== "does not fit" || !this.#actions().settings) return;
    this.#refused = fit.text;
    this.#changeSettings({ ...this.state.settings, model: "tiny" });
  }

  override render() {
    const s = this.#view(), live = this.state, actions = this.#actions();
    const lesson = this.#lesson(s);
    return html`
      ${this.softwareAdapter
        ? html`<p class="notice" data-field="software-adapter">This page runs on a software WebGPU adapter: everything
            runs slower than on a GPU, and only the tiny model stays responsive.</p>`
        : ""}
      ${this.#refused
        ? html`<p class="notice" data-field="model-refused">The tiny model runs instead. ${this.#refused}</p>`
        : ""}
      <div class="layout">
        <section data-area="controls">
          <control-panel .settings=${live.settings} .actions=${actions} preset=${this.#preset ?? ""} .hide=${this.hide}
            .budget=${this.budget} ?presentation=${this.presentation}
            @start=${() => this.#primary()} @pause=${() => this.#primary()} @step=${() => this.#step()}
            @fail-group=${() => this.#failGroup()} @compare=${() => this.#compare()} @presentation=${() =>
              this.#present(!this.presentation)}
            @settings-change=${(e: CustomEvent<{ settings: LabSettings }>) => this.#chooseSettings(e.detail.settings)}
            @replication-change=${(e: CustomEvent<{ policy: ReplicationPolicy }>) =>
              this.#changeReplication(e.detail.policy)}
            @preset=${(e: CustomEvent<{ name: PresetName | null }>) => this.#choosePreset(e.detail.name)}>
          </control-panel>
          <div class="bar">
            <p class="status" role="status" data-field="status" data-status=${live.status}>
              ${this.#statusText(live)}</p>
            ${this.hide.includes("time") ? "" : html`
              <time-control start="0" end=${live.now} .at=${this.at} speed=${this.speed}
                @scrub=${(e: CustomEvent<{ at: number }>) => this.#scrub(e.detail.at)}
                @speed=${(e: CustomEvent<{ speed: number }>) => this.#setSpeed(e.detail.speed)}
                @live=${() => this.#goLive()}></time-control>
            `}
          </div>
        </section>
        ${lesson
          ? html`
            <section data-area="narration">
              <lesson-narration lesson=${lesson.title} step=${this.lessonStep}
                steps=${lesson.steps.length} heading=${lesson.step.title} cue=${lesson.step.cue}
                ?reached=${lesson.reached} text=${lesson.reached ? lesson.step.say(s) : ""}
                notice=${lesson.reached ? lesson.step.notice(s) : ""} @lesson-next=${() => this.#lessonNext()}
                @lesson-back=${() => this.#lessonBack()}></lesson-narration>
            </section>
          `
          : ""}
        ${this.#section(
          "cluster",
          "Machines and network",
          html`
            <cluster-view .machines=${s.machines} .plan=${s.plan} .transfers=${s.transfers} now=${s.now}
              status=${s.status} ?canFail=${this.#live()} ?compact=${this.presentation}
              .highlight=${lesson?.reached ? lesson.step.highlight(s) : []}
              highlightTransfer=${lesson?.reached ? lesson.step.transfer ?? "" : ""}
              @fail=${(e: CustomEvent<FailRequest>) =>
                this.#session.fail(e.detail.ranks, e.detail.kind)}></cluster-view>
          `,
        )}
        ${this.#section(
          "loss",
          "Loss, with the failure-free run",
          html`
            <loss-chart .reference=${s.reference} referenceStatus=${s.referenceStatus} .losses=${s.losses}
              .failures=${s.failures} .recoveries=${s.recoveries} .mismatches=${s.mismatches}
              .faults=${s.faults}></loss-chart>
          `,
        )}
        ${this.#section(
          "recoveries",
          "Recoveries: from memory and from persistent storage",
          html`<recovery-chart .recoveries=${s.recoveries} iterationMs=${s.iterationMs}></recovery-chart>
          ${s.recoveries.map((r, i) => this.#recoveryItem(r, s.explanations[i], i))}`,
        )}
        ${this.#section(
          "generate",
          "Text from the recovered parameters, and from the failure-free run's",
          html`
            <generate-panel .settings=${live.settings} .generation=${live.generation}
              blocked=${this.#generateBlocked(live)}
              @generate=${(e: CustomEvent<GenerateRequest>) => this.#generate(e.detail)}></generate-panel>
          `,
        )}
        ${this.#section(
          "timeline",
          "Timeline, last 4 seconds, and the whole run",
          html`
            <machine-timeline machines=${s.settings.machines} now=${s.now} .transfers=${s.transfers}
              .iterations=${s.iterations} .failures=${s.failures} .recoveries=${s.recoveries}
              .faults=${s.faults}></machine-timeline>
            ${this.#policies(s)}
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

  /** A recovery in words: what it restored from where, how long it took, and why. */
  #recoveryItem(r: ObservedRecovery, why: RecoveryWhy, i: number) {
    const sources = r.machines.map((m, rank) => `${rank}: ${describeSource(m.source)}`).join(", ");
    const failed = why.shards.filter((shard) => r.failures.some((f) => f.rank === shard.owner));
    return html`
      <div class="recovery-item">
        <p data-field="recovery" data-index=${i}>Recovery ${i + 1}: rolled back to iteration ${r.iteration}
              (${r.lostIterations} lost); shards from ${sources}; detected in ${r.detection.toFixed(0)} ms, resumed
              ${r.total.toFixed(0)} ms after the failure.</p>
        <p data-field="why" data-index=${i}>Why: ${why.rollback}${why.candidates.length > 1
          ? ` (weighed: ${why.candidates.join("; ")})`
          : ""}. ${failed.map(describeShard).join("; ")}.</p>
      </div>
    `;
  }

  /** Each replication policy's mean iteration time and checkpoint traffic so far, with the overhead over none. */
  #policies(s: LabState) {
    const entries = Object.entries(s.policies) as [string, PolicyStats][];
    if (!entries.length) return "";
    const mean = (p: PolicyStats) => p.milliseconds / p.iterations;
    const none = s.policies.none;
    const describe = (policy: string, p: PolicyStats) => {
      const overhead = none && policy !== "none"
        ? ` (${((mean(p) / mean(none) - 1) * 100).toFixed(0)}% over none)`
        : "";
      const traffic = (p.checkpointBytes / p.iterations / 1e6).toFixed(2);
      const now = policy === s.settings.replication ? " (now)" : "";
      return `${mean(p).toFixed(0)} ms${overhead}, ${traffic} MB of checkpoints an iteration${now}`;
    };
    const parts = entries.map(([policy, p]) =>
      html`<span data-policy=${policy}><b>${policy}</b> ${describe(policy, p)}</span>`
    );
    return html`<p data-field="policies">Iteration time by replication: ${
      parts.map((part, i) => i ? html`; ${part}` : part)
    }.</p>`;
  }

  /** The state at the moment the stage shows: the recording's, or the live one. */
  #view(): LabState {
    const at = this.at;
    if (at === null) return this.state;
    const history = this.#session.history;
    // The last state recorded at or before `at` (the recording is in time order).
    let low = 0, high = history.length - 1;
    while (low < high) {
      const mid = Math.ceil((low + high) / 2);
      if (history[mid].now <= at) low = mid;
      else high = mid - 1;
    }
    return { ...history[low], now: at };
  }

  /** The lesson of the active preset, its step, and whether the stage has reached that step's moment. */
  #lesson(s: LabState) {
    if (!this.#preset || this.hide.includes("narration")) return null;
    const steps = lessonSteps(this.#preset), step = steps[this.lessonStep];
    // A moment once held stays reached live (the failed machine is soon replaced); rewound before it, it is not.
    const reached = step.reached(s) || (this.at === null && this.#heldSteps.has(this.lessonStep));
    return { title: PRESETS[this.#preset].title, steps, step, reached };
  }

  /** Holds the stage at the lesson step's moment, once: the run pauses and the recording stops playing. */
  #followLesson() {
    if (this.lessonStep === 0 && this.state.status !== "idle") this.lessonStep = 1;
    const lesson = this.#lesson(this.#view());
    if (!lesson?.reached || this.#heldSteps.has(this.lessonStep)) return;
    this.#heldSteps.add(this.lessonStep);
    if (this.lessonStep === 0 || this.lessonStep === lesson.steps.length - 1) return;
    if (this.state.status === "running" || this.state.status === "recovering") {
      this.#session.pause();
      this.#lessonPaused = true;
    }
    if (this.at !== null) this.#still = true;
  }

  #lessonNext() {
    const lesson = this.#lesson(this.#view());
    if (!lesson?.reached || this.lessonStep >= lesson.steps.length - 1) return;
    // The run goes on to a moment not yet shown; stepping back and on again only rereads.
    if (this.lessonStep === 0) this.#start();
    else if (this.#lessonPaused && !this.#heldSteps.has(this.lessonStep + 1)) {
      this.#lessonPaused = false;
      this.#whenClosed((session) => session.start());
    }
    this.lessonStep++;
    this.#still = false;
    this.#followLesson();
  }

  #lessonBack() {
    if (this.lessonStep > 0) this.lessonStep--;
  }

  /** Shows the run as it was at `at`, and stays there. */
  #scrub(at: number) {
    this.at = Math.min(at, this.state.now);
    this.#still = true;
    this.#play();
  }

  /** Plays the recording at `speed` from the moment shown (now, if live). */
  #setSpeed(speed: number) {
    this.speed = speed;
    if (speed < 1 && this.at === null) this.at = this.state.now;
    this.#still = false;
    this.#play();
  }

  /** Back to the present, at its own pace. */
  #goLive() {
    this.at = null;
    this.speed = 1;
    this.#still = false;
    this.#play();
  }

  /** Moves a playing recording on at its speed; it goes live once it catches up. */
  #play() {
    clearInterval(this.#ticker);
    if (this.at === null || this.#still) return;
    this.#ticker = setInterval(() => {
      if (this.at === null || this.#still) return clearInterval(this.#ticker);
      const at = this.at + PLAYBACK_TICK_MS * this.speed;
      if (at >= this.state.now && this.speed === 1) this.#goLive();
      else this.at = Math.min(at, this.state.now);
      this.#followLesson();
    }, PLAYBACK_TICK_MS);
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

  /** Running, recovering or paused, and the stage live (not showing the past): machines that can fail. */
  #live(s: LabState = this.state): boolean {
    return this.at === null && (s.status === "running" || s.status === "recovering" || s.status === "paused");
  }

  /** What can be done now: the buttons show it and the keyboard obeys it. */
  #actions(s: LabState = this.state): LabActions {
    const busy = s.status === "running" || s.status === "recovering";
    const group = s.plan ? placementGroup(s.plan, 0) : [];
    // A run not started yet whose model does not fit (the panel says why) cannot start.
    const refused = s.status === "idle" && labFit(s.settings, this.budget).verdict === "does not fit";
    return {
      primary: busy || s.status === "starting"
        ? "pause"
        : s.status === "paused"
        ? "resume"
        : s.status === "idle"
        ? "start"
        : "again",
      // Pausing a cluster that is still starting would not hold: its first iteration follows the start.
      primaryEnabled: s.status !== "starting" && !refused,
      step: (s.status === "idle" && !refused) || s.status === "paused",
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
      this.#followLesson();
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
    this.lessonStep = 0;
    this.#heldSteps = new Set();
    this.#lessonPaused = false;
    this.#goLive();
    this.#showInUrl();
  }

  /** Runs `act` on the current session once the sessions left behind have closed their clusters. */
  async #whenClosed(act: (session: LabSession) => Promise<void>) {
    const session = this.#session;
    await this.#closing;
    if (session === this.#session) await act(session).catch(() => {}); // errors show in the status line
  }

  /** Settings the user chose: whatever the URL asked for is past. */
  #chooseSettings(settings: LabSettings) {
    this.#refused = "";
    this.#changeSettings(settings);
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
      // Space (a clicker) steps the lesson from its "next" button.
      this.updateComplete.then(() => this.renderRoot.querySelector<LessonNarration>("lesson-narration")?.focusNext());
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
    if (labFit(this.state.settings, this.budget).verdict === "does not fit") return;
    if (this.state.status === "done" || this.state.status === "error") this.#renew(this.state.settings);
    this.#whenClosed((session) => session.start());
  }

  #step() {
    if (this.#actions().step) this.#whenClosed((session) => session.step());
  }

  #compare() {
    if (this.#actions().compare) this.#session.compare().catch(() => {});
  }

  /** Why text cannot be generated from the run now ("": it can). */
  #generateBlocked(s: LabState): string {
    if (!s.recoveries.length) {
      return "This compares a recovered run with the failure-free one: it is ready after a recovery (fail a " +
        "machine, or choose a preset).";
    }
    if (s.status !== "paused" && s.status !== "done") return "Pause the run, or let it finish, to generate from it.";
    if (s.referenceStatus === "running") return "Wait for the failure-free run to finish training.";
    return s.generation?.status === "running" ? "Generating..." : "";
  }

  #generate(request: GenerateRequest) {
    if (!this.#generateBlocked(this.state)) this.#session.generate(request);
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
    if (this.#lesson(this.#view()) && (LESSON_NEXT.has(event.key) || LESSON_BACK.has(event.key))) {
      event.preventDefault();
      if (LESSON_NEXT.has(event.key)) this.#lessonNext();
      else this.#lessonBack();
    } else if (event.key === " ") {
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
