// <time-control>: the stage's time. A speed menu (the recorded run played slower, network and compute
// together), a scrubber over the whole recorded run (on the network's clock), and a "live" button that
// returns to the present. In: the run's span and the moment shown (null: live). Out: "scrub" ({ at }),
// "speed" ({ speed }) and "live".

import { css, html, LitElement } from "lit";

export const SPEEDS = [1, 0.5, 0.25, 0.1] as const;

export class TimeControl extends LitElement {
  static override properties = {
    start: { type: Number },
    end: { type: Number },
    at: { attribute: false },
    speed: { type: Number },
  };

  static override styles = css`
    :host {
      display: flex;
      flex-wrap: wrap;
      gap: 0.3rem 0.8rem;
      align-items: center;
    }
    label {
      display: flex;
      gap: 0.4rem;
      align-items: center;
    }
    label.scrub {
      flex: 1 1 16rem;
    }
    input[type="range"] {
      flex: 1;
    }
    button,
    select {
      font: inherit;
    }
    [data-field="behind"] {
      font-variant-numeric: tabular-nums;
    }
  `;

  /** The recorded run's first and last moment (ms on the network's clock). */
  declare start: number;
  declare end: number;
  /** The moment shown; null while live. */
  declare at: number | null;
  declare speed: number;

  constructor() {
    super();
    this.start = 0;
    this.end = 0;
    this.at = null;
    this.speed = 1;
  }

  override render() {
    const shown = this.at ?? this.end, behind = (this.end - shown) / 1000;
    return html`
      <label>speed <select data-field="speed" @change=${this.#speed}>
        ${SPEEDS.map((s) =>
          html`<option value=${s} ?selected=${s === this.speed}>${s === 1 ? "1×" : `${s}×`}</option>`
        )}
      </select></label>
      <label
        class="scrub">time <input type="range" data-field="scrubber" min=${this.start} max=${Math.max(
          this.end,
          this.start + 1,
        )} step="100" .value=${String(shown)} aria-valuetext="${(shown / 1000).toFixed(1)} s"
        @input=${this.#scrub}></label>
      <span data-field="behind">${this.at === null ? "live" : `${behind.toFixed(1)} s behind`}</span>
      <button data-action="live" ?disabled=${this.at === null} @click=${() => this.#emit("live", {})}>Live</button>
    `;
  }

  #scrub(event: Event) {
    this.#emit("scrub", { at: Number((event.target as HTMLInputElement).value) });
  }

  #speed(event: Event) {
    this.#emit("speed", { speed: Number((event.target as HTMLSelectElement).value) });
  }

  #emit(name: string, detail: object) {
    this.dispatchEvent(new CustomEvent(name, { detail, bubbles: true, composed: true }));
  }
}

customElements.define("time-control", TimeControl);

declare global {
  interface HTMLElementTagNameMap {
    "time-control": TimeControl;
  }
}
