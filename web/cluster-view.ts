// <cluster-view>: one card a machine (its iteration, heartbeat, state, its Worker, and a bar of its host
// memory split into its own checkpoints and the replicas it holds, coloured by owner; its group), and above
// them the network with every transfer in flight drawn as a dot moving from sender to receiver (a still
// line where the reader asks for reduced motion). A software failure ends the Worker and leaves the memory,
// so its card keeps the bar; a hardware failure takes both. Data in as properties; "fail" out as an event
// ({ ranks, kind }). A lesson highlights the machines it is about and the kind of transfer to look at (the
// others are dimmed).

import { css, html, LitElement, svg } from "lit";
import { ifDefined } from "lit/directives/if-defined.js";
import type { TransferRecord } from "../agents/sim/network.ts";
import { placementGroup, type PlacementPlan } from "../agents/replication/placement.ts";
import { ownerColor, textColorOn, TRAFFIC_COLORS } from "./colors.ts";
import type { LabState, MachineView } from "./session.ts";

export interface FailRequest {
  ranks: number[];
  kind: "hardware" | "software";
}

export class ClusterView extends LitElement {
  static override properties = {
    machines: { attribute: false },
    plan: { attribute: false },
    transfers: { attribute: false },
    now: { type: Number },
    status: { type: String },
    canFail: { type: Boolean },
    compact: { type: Boolean, reflect: true },
    highlight: { attribute: false },
    highlightTransfer: { type: String },
  };

  static override styles = css`
    :host {
      display: block;
    }
    /* Up to 8 machines: the cards wrap rather than squeeze their headers together. */
    .cards {
      display: grid;
      gap: 0.75rem;
      grid-template-columns: repeat(auto-fit, minmax(11rem, 1fr));
    }
    :host([compact]) .cards {
      gap: 0.4rem;
      grid-template-columns: repeat(auto-fit, minmax(10rem, 1fr));
    }
    :host([compact]) article {
      padding: 0.3rem 0.5rem;
    }
    :host([compact]) .detail {
      display: none;
    }
    :host([compact]) svg {
      height: 3rem;
    }

    article {
      border: 2px solid #d0d7de;
      border-radius: 0.5rem;
      padding: 0.6rem 0.75rem;
      background: #fff;
    }
    article[data-highlight] {
      outline: 0.25rem solid #0550ae;
      outline-offset: 0.1rem;
    }
    article[data-phase="failed"] {
      border-color: #a40e26;
      background: #fff5f5;
    }
    .memory.gone {
      border-style: dashed;
    }
    article[data-phase="recovering"] {
      border-color: #e69f00;
    }
    h3 {
      margin: 0 0 0.3rem;
      font-size: 1em;
      display: flex;
      flex-wrap: wrap;
      gap: 0 0.5rem;
      justify-content: space-between;
    }
    .memory {
      display: flex;
      height: 0.9rem;
      border: 1px solid #8c959f;
      border-radius: 0.2rem;
      overflow: hidden;
      background: #f6f8fa;
      margin: 0.3rem 0;
    }
    .memory span {
      height: 100%;
    }
    .memory span.replica {
      background-image: repeating-linear-gradient(45deg, transparent 0 3px, rgba(255, 255, 255, 0.55) 3px 6px);
    }
    dl {
      display: grid;
      grid-template-columns: max-content 1fr;
      gap: 0.1rem 0.6rem;
      margin: 0;
      font-size: 0.9em;
    }
    dt {
      color: #57606a;
    }
    .gone {
      color: #a40e26;
      font-weight: 600;
    }
    dd {
      margin: 0;
    }
    .buttons {
      display: flex;
      flex-wrap: wrap;
      gap: 0.4rem;
      margin-top: 0.4rem;
    }
    button {
      font: inherit;
      font-size: 0.85em;
    }
    svg {
      width: 100%;
      height: 4.5rem;
      display: block;
    }
  `;

  declare machines: MachineView[];
  declare plan: PlacementPlan | null;
  declare transfers: TransferRecord[];
  declare now: number;
  /** The run's status: after it, the machines are done, not running. */
  declare status: LabState["status"];
  declare canFail: boolean;
  /** Only what a class reads from afar: no heartbeat, persistence or group lines. */
  declare compact: boolean;
  declare highlight: number[];
  /** The kind of transfer to pick out ("": none). */
  declare highlightTransfer: string;

  constructor() {
    super();
    this.machines = [];
    this.plan = null;
    this.transfers = [];
    this.now = 0;
    this.status = "idle";
    this.canFail = false;
    this.compact = false;
    this.highlight = [];
    this.highlightTransfer = "";
  }

  /**
   * The network drawing's width in its own units: its box's width at a height of 70, so that the machines
   * spread over the whole width (above a single row of cards) and their circles stay round.
   */
  #span = 1000;
  readonly #resize = new ResizeObserver(([entry]) => {
    const { width, height } = entry.contentRect;
    if (!height) return;
    this.#span = (70 * width) / height;
    this.requestUpdate();
  });

  override firstUpdated() {
    this.#resize.observe(this.renderRoot.querySelector("svg")!);
  }

  override render() {
    return html`
      <svg viewBox="0 0 ${this.#span} 70" role="img" aria-label="transfers in flight between machines">
        ${this.#network()}
      </svg>
      <div class="cards">
        ${this.machines.map((machine) => this.#card(machine))}
      </div>
    `;
  }

  #x(rank: number): number {
    return ((rank + 0.5) / Math.max(this.machines.length, 1)) * this.#span;
  }

  #network() {
    const inFlight = this.transfers.filter((t) => !t.dropped && t.start <= this.now && this.now <= t.end + 1);
    return svg`
      ${this.machines.map((m) =>
        svg`
          <circle cx=${this.#x(m.rank)} cy="56" r="13" fill=${this.#badge(m)}></circle>
          <text x=${this.#x(m.rank)} y="61" text-anchor="middle" font-size="15" fill=${textColorOn(this.#badge(m))}>${m
            .rank}</text>
        `
      )}
      ${inFlight.map((t) => {
        const opacity = this.highlightTransfer && t.kind !== this.highlightTransfer ? 0.25 : 1;
        if (this.#still.matches) {
          return svg`
            <line class="chunk" data-kind=${t.kind} x1=${this.#x(t.from)} x2=${this.#x(t.to)} y1="30" y2="30"
              stroke=${TRAFFIC_COLORS[t.kind]} stroke-width=${t.kind === "training" ? 2 : 4}
              opacity=${opacity}></line>
          `;
        }
        const progress = Math.min(1, (this.now - t.start) / Math.max(t.end - t.start, 1e-3));
        const x1 = this.#x(t.from), x2 = this.#x(t.to), arc = 40 - Math.min(35, Math.abs(x2 - x1) / 20);
        const x = x1 + (x2 - x1) * progress, y = 55 - (1 - (2 * progress - 1) ** 2) * (55 - arc);
        return svg`
          <circle class="chunk" data-kind=${t.kind} cx=${x} cy=${y} r=${t.kind === "training" ? 3 : 5}
            fill=${TRAFFIC_COLORS[t.kind]} opacity=${opacity}></circle>
        `;
      })}
    `;
  }

  /** Reduced motion: transfers as still lines, not moving dots. */
  readonly #still = matchMedia("(prefers-reduced-motion: reduce)");

  #badge(machine: MachineView): string {
    return machine.phase === "failed" ? "#a40e26" : ownerColor(machine.rank);
  }

  #card(machine: MachineView) {
    const own = machine.memory.filter((entry) => entry.kind === "own");
    const replicas = machine.memory.filter((entry) => entry.kind === "replica");
    const width = (bytes: number) => `${(100 * bytes) / Math.max(machine.arenaBytes, 1)}%`;
    const group = this.plan ? placementGroup(this.plan, machine.rank) : [machine.rank];
    const failed = machine.phase === "failed", memoryGone = machine.failure === "hardware";
    const phase = machine.phase === "running" && this.status === "done" ? "done" : machine.phase;
    const heartbeat = failed
      ? `none for ${(machine.heartbeatAge / 1000).toFixed(1)} s`
      : `${Math.round(machine.heartbeatAge)} ms ago`;
    return html`
      <article data-rank=${machine.rank} data-phase=${phase} data-failure=${machine.failure ?? ""}
        data-highlight=${ifDefined(this.highlight.includes(machine.rank) ? "" : undefined)}
        aria-label="machine ${machine.rank}">
        <h3><span>machine ${machine.rank}</span><span data-field="phase">${failed
          ? `${machine.failure} failure`
          : phase}</span></h3>
        <div class="memory ${memoryGone ? "gone" : ""}" data-field="memory-bar" data-entries=${machine.memory.length}
          title="host memory: own checkpoints (solid) and replicas held for peers (striped)">
          ${[...own, ...replicas].map((entry) =>
            html`
              <span class=${entry.kind} style="width:${width(entry.bytes)};background-color:${ownerColor(entry.owner)}"
                title="${entry.kind} checkpoint ${entry.iteration} of machine ${entry.owner}"></span>
            `
          )}
        </div>
        <dl>
          <dt>iteration</dt>
          <dd data-field="iteration">${machine.iteration}</dd>
          <dt class="detail">heartbeat</dt>
          <dd class="detail">${heartbeat}</dd>
          <dt>Worker, GPU</dt>
          <dd data-field="worker" class=${failed ? "gone" : ""} title=${machine.adapter}>${failed
            ? "gone"
            : machine.incarnation
            ? `restarted (${machine.incarnation} ${machine.incarnation === 1 ? "time" : "times"})`
            : "first start"}</dd>
          <dt class="detail">persisted</dt>
          <dd class="detail">${machine.persisted}${machine.persistSkipped
            ? ` (${machine.persistSkipped} skipped: the store was busy)`
            : ""}</dd>
          <dt>host memory</dt>
          <dd data-field="memory" class=${memoryGone ? "gone" : ""}>${memoryGone
            ? "gone with the hardware"
            : `${failed ? "kept: " : ""}${this.#describeMemory(own.length, replicas)}`}</dd>
          <dt class="detail">${this.plan?.strategy === "ring" ? "replicas on" : "group"}</dt>
          <dd class="detail">${group.join(", ")}</dd>
        </dl>
        <div class="buttons">
          <button ?disabled=${!this.canFail || failed} data-action="hardware"
            @click=${() => this.#fail([machine.rank], "hardware")}>hardware failure</button>
          <button ?disabled=${!this.canFail || failed} data-action="software"
            @click=${() => this.#fail([machine.rank], "software")}>software failure</button>
        </div>
      </article>
    `;
  }

  #describeMemory(own: number, replicas: { owner: number }[]): string {
    const owners = [...new Set(replicas.map((entry) => entry.owner))];
    return `${own} own` + (owners.length ? `, replicas of ${owners.join(", ")}` : "");
  }

  #fail(ranks: number[], kind: FailRequest["kind"]) {
    this.dispatchEvent(
      new CustomEvent<FailRequest>("fail", { detail: { ranks, kind }, bubbles: true, composed: true }),
    );
  }
}

customElements.define("cluster-view", ClusterView);

declare global {
  interface HTMLElementTagNameMap {
    "cluster-view": ClusterView;
  }
}
