// What every bench section shares: timing repeats, a progress bar on stderr, and the shape of a
// section's result (a Markdown table, plots, a line for the summary, and the raw numbers).

import type { ClusterSettings } from "../agents/protocol/spec.ts";
import { MODEL_PRESETS } from "../core/model.ts";
import type { Figure } from "./svg.ts";

/** What a section hands back: a titled Markdown table, its plots, and its raw numbers for the JSON. */
export interface SectionResult {
  title: string;
  /** Its main finding in one line, numbers included: a row of the summary printed at the end. */
  summary: string;
  /** A sentence or two above the table: what was measured, against what. */
  intro: string;
  header: string[];
  rows: string[][];
  figures?: Figure[];
  raw: unknown;
}

export interface BenchContext {
  device: GPUDevice;
  quick: boolean;
  progress: Progress;
}

/** A bench section: how many progress steps it takes, and the measurement itself. */
export interface Section {
  name: string;
  steps(quick: boolean): number;
  run(context: BenchContext): Promise<SectionResult>;
}

/** Runs `body` `warmups` times untimed, then `repeats` times, and returns the seconds of each timed run. */
export async function time(repeats: number, body: () => Promise<unknown> | unknown, warmups = 1): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < warmups + repeats; i++) {
    const start = performance.now();
    await body();
    if (i >= warmups) samples.push((performance.now() - start) / 1000);
  }
  return samples;
}

export function mean(values: number[]): number {
  return values.reduce((sum, value) => sum + value, 0) / values.length;
}

export function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
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

export function markdownTable(header: string[], rows: string[][]): string {
  const line = (cells: string[]) => `| ${cells.join(" | ")} |`;
  return [line(header), line(header.map((_, i) => (i === 0 ? "---" : "---:"))), ...rows.map(line)].join("\n");
}

/** The models the cluster sections train, with per-machine batches: four machines share two cores here. */
export const CLUSTER_MODELS = [
  { name: "tiny", batchPerMachine: 2, time: 32 },
  { name: "small", batchPerMachine: 2, time: 64 },
  { name: "medium", batchPerMachine: 1, time: 64 },
] as const;

export type ClusterModel = (typeof CLUSTER_MODELS)[number];

/** Makes `settings` train `model`. */
export function trainModel(settings: ClusterSettings, model: ClusterModel) {
  settings.training = {
    ...settings.training,
    config: MODEL_PRESETS[model.name],
    batchPerMachine: model.batchPerMachine,
    time: model.time,
  };
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
