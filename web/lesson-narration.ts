// <lesson-narration>: the guided lesson's current step: its title, what to say and what to notice once the
// stage has reached its moment (before that, what the stage is waiting for), and buttons to step back and
// on. A clicker's keys reach the lab, which steps the lesson; these buttons are for the mouse and for
// keyboard focus (space on the focused "next" presses it). Out: "lesson-next" and "lesson-back".

import { css, html, LitElement } from "lit";

export class LessonNarration extends LitElement {
  static override properties = {
    lesson: { type: String },
    step: { type: Number },
    steps: { type: Number },
    heading: { type: String },
    text: { type: String },
    notice: { type: String },
    cue: { type: String },
    reached: { type: Boolean, reflect: true },
  };

  static override styles = css`
    :host {
      display: block;
      border-left: 0.35rem solid #0550ae;
      background: #ddf4ff;
      padding: 0.3rem 0.7rem;
      border-radius: 0.3rem;
    }
    h2 {
      font-size: 1.05em;
      margin: 0 0 0.2rem;
    }
    p {
      margin: 0.15rem 0;
    }
    .notice {
      font-weight: 600;
    }
    .buttons {
      display: flex;
      gap: 0.5rem;
      align-items: center;
      margin-top: 0.2rem;
    }
    button {
      font: inherit;
    }
    kbd {
      font-size: 0.8em;
      border: 1px solid currentColor;
      border-radius: 0.2rem;
      padding: 0 0.2rem;
    }
  `;

  declare lesson: string;
  /** The step shown, from 0, of `steps`. */
  declare step: number;
  declare steps: number;
  declare heading: string;
  declare text: string;
  declare notice: string;
  /** What the stage waits for before this step's moment. */
  declare cue: string;
  declare reached: boolean;

  constructor() {
    super();
    this.lesson = "";
    this.step = 0;
    this.steps = 0;
    this.heading = "";
    this.text = "";
    this.notice = "";
    this.cue = "";
    this.reached = false;
  }

  /** Focuses "next", so that space (and a clicker) steps the lesson from here. */
  focusNext() {
    this.renderRoot.querySelector<HTMLButtonElement>('button[data-action="lesson-next"]')?.focus();
  }

  override render() {
    const last = this.step >= this.steps - 1;
    return html`
      <h2>Lesson: ${this.lesson}, step ${this.step + 1} of ${this.steps}: ${this.heading}</h2>
      <div aria-live="polite" data-field="narration">
        ${this.reached
          ? html`
            <p data-field="say">${this.text}</p>
            <p class="notice" data-field="notice">${this.notice}</p>
          `
          : html`<p data-field="cue">Watch: ${this.cue}...</p>`}
      </div>
      <div class="buttons">
        <button data-action="lesson-back" ?disabled=${this.step === 0} @click=${() => this.#emit("lesson-back")}>
          Back <kbd>←</kbd></button>
        <button data-action="lesson-next" ?disabled=${last || !this.reached} @click=${() => this.#emit("lesson-next")}>
          Next <kbd>space</kbd> <kbd>→</kbd> <kbd>.</kbd></button>
      </div>
    `;
  }

  #emit(name: string) {
    this.dispatchEvent(new CustomEvent(name, { bubbles: true, composed: true }));
  }
}

customElements.define("lesson-narration", LessonNarration);

declare global {
  interface HTMLElementTagNameMap {
    "lesson-narration": LessonNarration;
  }
}
