// What every bench section shares: timing repeats, a progress bar on stderr, and the result rows.

/** One measured quantity: the median over repeats, with the spread kept for the JSON. */
export interface Measurement {
  section: string;
  name: string;
  bytes: number;
  /** Median seconds per repeat. */
  seconds: number;
  /** Bytes per second at the median. */
  bandwidth: number;
  samples: number[];
}

/** Runs `body` `repeats` times after one warm-up and returns the seconds of each run. */
export async function time(repeats: number, body: () => Promise<void> | void): Promise<number[]> {
  await body();
  const samples: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    await body();
    samples.push((performance.now() - start) / 1000);
  }
  return samples;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

export function measurement(section: string, name: string, bytes: number, samples: number[]): Measurement {
  const seconds = median(samples);
  return { section, name, bytes, seconds, bandwidth: bytes / seconds, samples };
}

export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB"];
  let value = bytes, unit = 0;
  while (value >= 1024 && unit < units.length - 1) value /= 1024, unit++;
  return `${Number.isInteger(value) ? value : value.toFixed(1)} ${units[unit]}`;
}

export function formatBandwidth(bytesPerSecond: number): string {
  return `${(bytesPerSecond / 1e9).toFixed(2)} GB/s`;
}

/** A one-line progress bar on stderr (a terminal sees it redrawn in place; a log sees each step). */
export class Progress {
  #done = 0;
  readonly #total: number;
  readonly #encoder = new TextEncoder();

  constructor(total: number) {
    this.#total = total;
  }

  step(label: string) {
    this.#done++;
    const width = 30, filled = Math.round((this.#done / this.#total) * width);
    const line = `[${"#".repeat(filled)}${"-".repeat(width - filled)}] ${this.#done}/${this.#total} ${label}`;
    const terminal = Deno.stderr.isTerminal();
    Deno.stderr.writeSync(this.#encoder.encode(terminal ? `\r\x1b[2K${line}` : `${line}\n`));
    if (terminal && this.#done === this.#total) Deno.stderr.writeSync(this.#encoder.encode("\n"));
  }
}
