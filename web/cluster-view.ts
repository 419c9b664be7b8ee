// <cluster-view>: one card a machine (its iteration, heartbeat, state, and a bar of its host memory split
// into its own checkpoints and the replicas it holds, coloured by owner; its group), and above them the
// network with every transfer in flight drawn as a dot moving from sender to receiver.
// Data in as properties; "fail" out as an event ({ ranks, kind }).

import { css, html, LitElement, svg } from "lit";
import type { TransferRecord } from "../agents/sim/network.ts";
import { placementGroup, type PlacementPlan } from "../agents/replication/placement.ts";
import { ownerColor, TRAFFIC_COLORS } from "./colors.ts";
import type { MachineView } from "./session.ts";

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
    canFail: { type: Boolean },
  };

  static override styles = css`
    :host {
      display: block;
    }
    .cards {
      display: grid;
      gap: 0.75rem;
    }
    article {
      border: 2px solid #d0d7de;
      border-radius: 0.5rem;
      padding: 0.6rem 0.75rem;
      background: #fff;
    }
    article[data-phase="failed"] {
      border-color: #a40e26;
      background: #fff5f5;
    }
    article[data-phase="recovering"] {
      border-color: #e69f00;
    }
    h3 {
      margin: 0 0 0.3rem;
      font-size: 1em;
      display: flex;
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
    dd {
      margin: 0;
    }
    .buttons {
      display: flex;
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
  declare canFail: boolean;

  constructor() {
    super();
    this.machines = [];
    this.plan = null;
    this.transfers = [];
    this.now = 0;
    this.canFail = false;
  }

  override render() {
    return html`
      <svg viewBox="0 0 1000 70" role="img" aria-label="transfers in flight between machines">
        ${this.#network()}
      </svg>
      <div class="cards" style="grid-template-columns: repeat(${Math.max(this.machines.length, 1)}, minmax(0, 1fr))">
        ${this.machines.map((machine) => this.#card(machine))}
      </div>
    `;
  }

  #x(rank: number): number {
    return ((rank + 0.5) / Math.max(this.machines.length, 1)) * 1000;
  }

  #network() {
    const inFlight = this.transfers.filter((t) => !t.dropped && t.start <= this.now && this.now <= t.end + 1);
    return svg`
      ${this.machines.map((m) =>
        svg`
          <circle cx=${this.#x(m.rank)} cy="55" r="9" fill=${m.phase === "failed"
            ? "#a40e26"
            : ownerColor(m.rank)}></circle>
          <text x=${this.#x(m.rank)} y="59" text-anchor="middle" font-size="11" fill="#fff">${m.rank}</text>
        `
      )}
      ${inFlight.map((t) => {
        const progress = Math.min(1, (this.now - t.start) / Math.max(t.end - t.start, 1e-3));
        const x1 = this.#x(t.from), x2 = this.#x(t.to), arc = 40 - Math.min(35, Math.abs(x2 - x1) / 20);
        const x = x1 + (x2 - x1) * progress, y = 55 - (1 - (2 * progress - 1) ** 2) * (55 - arc);
        return svg`
          <circle class="chunk" data-kind=${t.kind} cx=${x} cy=${y} r=${t.kind === "training" ? 3 : 5}
            fill=${TRAFFIC_COLORS[t.kind]}></circle>
        `;
      })}
    `;
  }

  #card(machine: MachineView) {
    const own = machine.memory.filter((entry) => entry.kind === "own");
    const replicas = machine.memory.filter((entry) => entry.kind === "replica");
    const width = (bytes: number) => `${(100 * bytes) / Math.max(machine.arenaBytes, 1)}%`;
    const group = this.plan ? placementGroup(this.plan, machine.rank) : [machine.rank];
    const heartbeat = machine.phase === "failed"
      ? `none for ${(machine.heartbeatAge / 1000).toFixed(1)} s`
      : `${Math.round(machine.heartbeatAge)} ms ago`;
    return html`
      <article data-rank=${machine.rank} data-phase=${machine.phase} aria-label="machine ${machine.rank}">
        <h3><span>machine ${machine.rank}</span><span data-field="phase">${machine.phase}</span></h3>
        <div class="memory" title="host memory: own checkpoints (solid) and replicas held for peers (striped)">
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
          <dt>heartbeat</dt>
          <dd>${heartbeat}</dd>
          <dt>GPU</dt>
          <dd title=${machine.adapter}>${machine.phase === "failed" ? "gone" : `device ${machine.incarnation + 1}`}</dd>
          <dt>persisted</dt>
          <dd>${machine.persisted}${machine.persistSkipped
            ? ` (${machine.persistSkipped} skipped: the store was busy)`
            : ""}</dd>
          <dt>in memory</dt>
          <dd data-field="memory">${this.#describeMemory(own.length, replicas)}</dd>
          <dt>${this.plan?.strategy === "ring" ? "replicas on" : "group"}</dt>
          <dd>${group.join(", ")}</dd>
        </dl>
        <div class="buttons">
          <button ?disabled=${!this.canFail || machine.phase !== "running"} data-action="hardware"
            @click=${() => this.#fail([machine.rank], "hardware")}>hardware failure</button>
          <button ?disabled=${!this.canFail || machine.phase !== "running"} data-action="software"
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
