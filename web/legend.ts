// What the lab's charts and panels share: SVG that scales to its box, a legend of coloured swatches, and
// the panels' tables.

import { css, html } from "lit";

export const chartStyles = css`
  :host {
    display: block;
  }
  /* A page that must fit one screen caps the charts' height (they keep their shape). */
  svg {
    width: 100%;
    height: auto;
    max-height: var(--chart-max-height, none);
    /* Presentation mode enlarges the charts' text (the stage sets the factor). */
    font-size: calc(var(--chart-font, 11px) * var(--chart-text, 1));
  }
  ul.legend {
    display: flex;
    flex-wrap: wrap;
    gap: 0.8rem;
    list-style: none;
    padding: 0;
    margin: 0.3rem 0 0;
    font-size: 0.85em;
  }
  ul.legend li::before {
    content: "";
    display: inline-block;
    width: 0.8em;
    height: 0.8em;
    margin-right: 0.3em;
    background: var(--swatch);
  }
`;

/** A panel's table: full width, compact cells. */
export const tableStyles = css`
  :host {
    display: block;
  }
  table {
    border-collapse: collapse;
    margin-top: 0.5rem;
    width: 100%;
  }
  td,
  th {
    padding: 0.2rem 0.5rem;
    text-align: left;
  }
`;

/** A legend: one swatch and label per [label, colour]. */
export function legend(items: [string, string][]) {
  return html`<ul class="legend">${
    items.map(([label, color]) => html`<li style="--swatch:${color}">${label}</li>`)
  }</ul>`;
}
