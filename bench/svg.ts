// The bench report's plots, as standalone SVG files beside the Markdown: grouped bars (one group per case,
// one bar per series) and lines (one per series over a numeric x). Plain SVG 1.1 with text labels, so a
// Markdown viewer shows them as images and a reader can still read the numbers in the table beside them.

export interface Series {
  name: string;
  values: number[];
}

export interface Figure {
  /** The file's name part: `<report>-<name>.svg`. */
  name: string;
  title: string;
  svg: string;
}

const WIDTH = 720, HEIGHT = 360, MARGIN = { top: 40, right: 20, bottom: 70, left: 70 };
// Distinguishable in colour and in grey (the lab's palette).
const COLORS = ["#4c78a8", "#f58518", "#54a24b", "#e45756", "#72b7b2", "#b279a2"];

const escape = (text: string) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

/** A tidy upper bound for an axis: a round multiple of a power of ten. */
function niceMax(value: number): number {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  return [1, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10].map((f) => f * power).find((bound) => bound >= value * 1.0001)!;
}

function frame(title: string, yLabel: string, yMax: number, body: string[], legend: string[]): string {
  const plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom, ticks = 5;
  const grid = Array.from({ length: ticks + 1 }, (_, i) => {
    const value = (yMax * i) / ticks, y = MARGIN.top + plotHeight - (plotHeight * i) / ticks;
    const label = String(Number(value.toPrecision(3)));
    return `<line x1="${MARGIN.left}" x2="${WIDTH - MARGIN.right}" y1="${y}" y2="${y}" stroke="#ddd"/>` +
      `<text x="${MARGIN.left - 6}" y="${y + 4}" text-anchor="end">${label}</text>`;
  });
  const keyWidth = (WIDTH - MARGIN.left - MARGIN.right) / Math.max(legend.length, 1);
  const key = legend.map((name, i) =>
    `<rect x="${MARGIN.left + i * keyWidth}" y="${HEIGHT - 22}" width="12" height="12" fill="${
      COLORS[i % COLORS.length]
    }"/>` +
    `<text x="${MARGIN.left + i * keyWidth + 16}" y="${HEIGHT - 12}">${escape(name)}</text>`
  );
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${WIDTH}" height="${HEIGHT}" viewBox="0 0 ${WIDTH} ${HEIGHT}" ` +
    `font-family="sans-serif" font-size="12" role="img" aria-label="${escape(title)}">`,
    `<rect width="${WIDTH}" height="${HEIGHT}" fill="white"/>`,
    `<text x="${WIDTH / 2}" y="22" text-anchor="middle" font-size="15">${escape(title)}</text>`,
    `<text transform="translate(16 ${MARGIN.top + plotHeight / 2}) rotate(-90)" text-anchor="middle">${
      escape(yLabel)
    }</text>`,
    ...grid,
    ...body,
    ...key,
    "</svg>",
  ].join("\n");
}

/** Grouped bars: `groups` along x, one bar per series in each. */
export function barChart(title: string, yLabel: string, groups: string[], series: Series[]): string {
  const yMax = niceMax(Math.max(...series.flatMap((s) => s.values)));
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right, plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const groupWidth = plotWidth / groups.length, barWidth = (groupWidth * 0.8) / series.length;
  const body = groups.flatMap((group, g) => {
    const x0 = MARGIN.left + g * groupWidth + groupWidth * 0.1;
    const bars = series.map((s, i) => {
      const height = (plotHeight * s.values[g]) / yMax, x = x0 + i * barWidth;
      return `<rect x="${x}" y="${MARGIN.top + plotHeight - height}" width="${barWidth - 2}" height="${height}" ` +
        `fill="${COLORS[i % COLORS.length]}"><title>${escape(`${group}, ${s.name}: ${s.values[g]}`)}</title></rect>`;
    });
    const label = `<text x="${x0 + groupWidth * 0.4}" y="${HEIGHT - MARGIN.bottom + 16}" text-anchor="middle">${
      escape(group)
    }</text>`;
    return [...bars, label];
  });
  return frame(title, yLabel, yMax, body, series.map((s) => s.name));
}

/** Lines over a numeric x (`x` shared by every series). */
export function lineChart(title: string, xLabel: string, yLabel: string, x: number[], series: Series[]): string {
  const yMax = niceMax(Math.max(...series.flatMap((s) => s.values)));
  const plotWidth = WIDTH - MARGIN.left - MARGIN.right, plotHeight = HEIGHT - MARGIN.top - MARGIN.bottom;
  const [xMin, xMax] = [Math.min(...x), Math.max(...x)];
  const px = (value: number) => MARGIN.left + (plotWidth * (value - xMin)) / Math.max(xMax - xMin, 1e-9);
  const py = (value: number) => MARGIN.top + plotHeight - (plotHeight * value) / yMax;
  const body = series.map((s, i) =>
    // Every other line dashed, so that two that coincide both show.
    `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="2"${
      i % 2 ? ' stroke-dasharray="6 4"' : ""
    } points="${s.values.map((value, j) => `${px(x[j]).toFixed(1)},${py(value).toFixed(1)}`).join(" ")}"/>`
  );
  const xTicks = x.map((value) =>
    `<text x="${px(value)}" y="${HEIGHT - MARGIN.bottom + 16}" text-anchor="middle">${value}</text>`
  );
  const xTitle = `<text x="${MARGIN.left + plotWidth / 2}" y="${HEIGHT - MARGIN.bottom + 34}" text-anchor="middle">${
    escape(xLabel)
  }</text>`;
  return frame(title, yLabel, yMax, [...body, ...xTicks, xTitle], series.map((s) => s.name));
}
