// <generate-panel>: after a recovery, text generated from the recovered cluster's parameters and from the
// failure-free run's at the same iteration, side by side, and whether they are identical: what "training
// continued exactly" means for the model a student would use. The run's settings, what it last generated
// and why it cannot generate now come in as properties; "generate" ({ prompt, temperature, seed }) goes out.

import { css, html, LitElement } from "lit";
import { showBytes } from "./generation.ts";
import {
  GENERATED_TOKENS,
  type GenerateRequest,
  generationProblem,
  type GenerationView,
  type LabSettings,
  PROMPT_LIMIT,
} from "./session.ts";

export class GeneratePanel extends LitElement {
  static override properties = {
    settings: { attribute: false },
    generation: { attribute: false },
    blocked: { type: String },
    request: { state: true },
  };

  static override styles = css`
    :host {
      display: block;
    }
    form {
      display: flex;
      flex-wrap: wrap;
      gap: 0.4rem 1rem;
      align-items: center;
    }
    input,
    button {
      font: inherit;
    }
    input[type="number"] {
      width: 5rem;
    }
    .problem {
      color: #a40e26;
    }
    dl {
      display: grid;
      grid-template-columns: max-content 1fr;
      gap: 0.3rem 1rem;
    }
    dt {
      font-weight: 600;
    }
    dd {
      margin: 0;
      font-family: ui-monospace, monospace;
      overflow-wrap: anywhere;
    }
    .prompt {
      color: #57606a;
    }
    [data-identical="true"] {
      color: #116329;
    }
    [data-identical="false"] {
      color: #a40e26;
    }
  `;

  declare settings: LabSettings;
  declare generation: GenerationView | null;
  /** Why nothing can be generated now ("": it can). */
  declare blocked: string;
  /** The prompt and sampler settings as typed. */
  declare request: GenerateRequest;

  constructor() {
    super();
    this.generation = null;
    this.blocked = "";
    this.request = { prompt: "GEMINI", temperature: 1, seed: 1 };
  }

  override render() {
    const problem = generationProblem(this.settings, this.request);
    return html`
      <p>The same sampler as <code>deno task generate</code>, run on this page's GPU from both sets of parameters: a
        continuation of ${GENERATED_TOKENS} byte tokens (bytes outside printable ASCII are shown as \\xNN).</p>
      <form @submit=${this.#submit} @input=${this.#edit}>
        <label>prompt <input name="prompt" .value=${this.request.prompt} maxlength=${PROMPT_LIMIT}
          aria-invalid=${problem ? "true" : "false"}></label>
        <label>temperature (0: greedy) <input name="temperature" type="number" min="0" step="0.1"
          .value=${String(this.request.temperature)}></label>
        <label>seed <input name="seed" type="number" step="1" .value=${String(this.request.seed)}></label>
        <button data-action="generate" ?disabled=${Boolean(this.blocked || problem)}>Generate from both</button>
      </form>
      ${problem ? html`<p class="problem" data-problem="generate">${problem}</p>` : ""}
      ${this.blocked && !problem ? html`<p data-field="generate-blocked">${this.blocked}</p>` : ""}
      ${this.#result()}
    `;
  }

  #result() {
    const g = this.generation;
    if (!g) return "";
    if (g.status === "running") {
      return html`<p data-field="generation" data-status="running">Generating at iteration ${g.iteration}...</p>`;
    }
    if (g.status === "error") {
      return html`<p class="problem" data-field="generation" data-status="error">Could not generate: ${g.message}</p>`;
    }
    const identical = g.recovered.length === g.reference.length && g.recovered.every((t, i) => t === g.reference[i]);
    const first = g.recovered.findIndex((t, i) => t !== g.reference[i]);
    const how = g.settings.temperature === 0
      ? "greedy"
      : `temperature ${g.settings.temperature}, top ${g.settings.topK}, seed ${g.settings.seed}`;
    return html`
      <dl data-field="generation" data-status="done">
        <dt>From the recovered cluster, iteration ${g.iteration}</dt>
        <dd data-field="recovered-text"><span class="prompt">${showBytes(g.prompt)}</span>${showBytes(g.recovered)}</dd>
        <dt>From the failure-free run, iteration ${g.iteration}</dt>
        <dd data-field="reference-text"><span class="prompt">${showBytes(g.prompt)}</span>${showBytes(g.reference)}</dd>
      </dl>
      <p data-field="verdict" data-identical=${String(identical)}>${identical
        ? `Identical: the same ${g.recovered.length} tokens (${how})`
        : `Different: the texts part at token ${first + 1} (${how})`}; the parameters are ${g.sameParameters
        ? "equal bit for bit"
        : "not equal"}.</p>
    `;
  }

  #edit(event: Event) {
    const field = event.target as HTMLInputElement, text = field.value.trim();
    const value = field.name === "prompt" ? field.value : text === "" ? NaN : Number(text);
    this.request = { ...this.request, [field.name]: value };
  }

  #submit(event: Event) {
    event.preventDefault();
    if (this.blocked || generationProblem(this.settings, this.request)) return;
    this.dispatchEvent(new CustomEvent("generate", { detail: { ...this.request }, bubbles: true, composed: true }));
  }
}

customElements.define("generate-panel", GeneratePanel);

declare global {
  interface HTMLElementTagNameMap {
    "generate-panel": GeneratePanel;
  }
}
