// `deno task bench`: measures this machine and adapter and writes a Markdown table and the raw JSON
// to bench/results/<date>-<adapter>.{md,json}. Later issues add sections (kernels, checkpoints,
// interleaving, recovery); each reports against a limit measured in the same run.

import { parseArgs } from "node:util";
import { acquireGpu, type AdapterReport, formatAdapter } from "../core/gpu.ts";
import { benchMemory, MEMORY_STEPS } from "./memory.ts";
import { formatBandwidth, formatBytes, type Measurement, Progress } from "./measure.ts";

const USAGE = "usage: deno task bench [--quick] [--out bench/results]";

interface Options {
  quick: boolean;
  out: string;
}

function parseOptions(args: string[]): Options {
  const { values } = parseArgs({
    args,
    options: { quick: { type: "boolean", default: false }, out: { type: "string", default: "bench/results" } },
  });
  return { quick: values.quick, out: values.out };
}

function toMarkdown(adapter: AdapterReport, date: string, results: Measurement[]): string {
  const memcpy = results.find((r) => r.name === "host memcpy")!.bandwidth;
  const rows = results.map((r) =>
    `| ${r.section} | ${r.name} | ${formatBytes(r.bytes)} | ${(r.seconds * 1000).toFixed(2)} | ` +
    `${formatBandwidth(r.bandwidth)} | ${(r.bandwidth / memcpy).toFixed(2)} |`
  );
  return [
    `# gemini-lab bench, ${date}`,
    "",
    `Adapter: ${formatAdapter(adapter)}. Times are medians; "x memcpy" is the bandwidth over this run's host memcpy.`,
    "",
    "| section | what | bytes | ms | bandwidth | x memcpy |",
    "| --- | --- | ---: | ---: | ---: | ---: |",
    ...rows,
    "",
  ].join("\n");
}

async function main(): Promise<number> {
  let options: Options;
  try {
    options = parseOptions(Deno.args);
  } catch (error) {
    console.error(`bench: ${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const gpu = await acquireGpu();
  console.error(`bench on ${formatAdapter(gpu.adapter)}`);
  const progress = new Progress(MEMORY_STEPS);
  const results = await benchMemory(gpu.device, options.quick ? 16 << 20 : 128 << 20, options.quick ? 3 : 7, progress);
  gpu.device.destroy();

  const date = new Date().toISOString().slice(0, 10);
  const slug = gpu.adapter.description.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  const markdown = toMarkdown(gpu.adapter, date, results);
  await Deno.mkdir(options.out, { recursive: true });
  const base = `${options.out}/${date}-${slug}`;
  await Deno.writeTextFile(`${base}.md`, markdown);
  await Deno.writeTextFile(`${base}.json`, JSON.stringify({ date, adapter: gpu.adapter, results }, null, 2));
  console.log(markdown);
  console.log(`written: ${base}.md, ${base}.json`);
  return 0;
}

try {
  Deno.exit(await main());
} catch (error) {
  console.error(`bench: ${error instanceof Error ? error.message : error}`);
  Deno.exit(1);
}
