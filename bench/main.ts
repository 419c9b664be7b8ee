// `deno task bench`: measures this machine and adapter, section by section, and writes one report:
// bench/results/<date>-<adapter>.md (a summary, tables and SVG plots beside it) and .json (the raw
// numbers), and prints the summary. Each section measures against a limit or a peer in the same run:
// memcpy for memory traffic and checkpoints, TensorFlow.js for kernels and training, a file with fsync for
// in-memory checkpoints, training without checkpoints for replication under each policy (and the
// simulation's replay of each run), the persistent store for recovery from memory; placement's exact
// probabilities against a Monte Carlo count; GPT-2 124M's memory plan against what it allocated; the
// paper-scale simulation against the paper's numbers; the chaos soak's invariants against the failure-free
// run; the TCP transport against raw loopback TCP; a hot spare against a cold replacement.

import { parseOptions, runCommand, UserError } from "../cli/args.ts";
import { acquireGpu, formatAdapter } from "../core/gpu.ts";
import { chaosSection } from "./chaos.ts";
import { checkpointSection } from "./checkpoint.ts";
import { gpt2Section } from "./gpt2.ts";
import { interleavingSection } from "./interleaving.ts";
import { kernelsSection } from "./kernels.ts";
import { markdownTable, Progress, type Section, type SectionResult } from "./measure.ts";
import { memorySection } from "./memory.ts";
import { paperSection } from "./paper.ts";
import { placementSection } from "./placement.ts";
import { processSection } from "./process.ts";
import { recoverySection } from "./recovery.ts";
import { trainingSection } from "./training.ts";
import { transportSection } from "./transport.ts";

const SECTIONS: Section[] = [
  memorySection,
  kernelsSection,
  trainingSection,
  gpt2Section,
  checkpointSection,
  interleavingSection,
  recoverySection,
  placementSection,
  paperSection,
  chaosSection,
  transportSection,
  processSection,
];
const USAGE = `usage: deno task bench [--quick] [--sections ${
  SECTIONS.map((s) => s.name).join(",")
}] [--out bench/results]`;

function readOptions(args: string[]) {
  const values = parseOptions(args, {
    quick: { type: "boolean", default: false },
    sections: { type: "string", default: SECTIONS.map((s) => s.name).join(",") },
    out: { type: "string", default: "bench/results" },
  }, USAGE);
  const sections = values.sections.split(",").map((name) => {
    const section = SECTIONS.find((s) => s.name === name.trim());
    if (!section) throw new UserError(`unknown section "${name}"; ${USAGE}`);
    return section;
  });
  return { quick: values.quick, sections, out: values.out };
}

async function main(args: string[]): Promise<number> {
  const options = readOptions(args);
  const gpu = await acquireGpu();
  const adapter = formatAdapter(gpu.adapter);
  console.error(`bench on ${adapter}${options.quick ? " (quick)" : ""}`);
  const progress = new Progress(options.sections.reduce((sum, s) => sum + s.steps(options.quick), 0));
  const results: SectionResult[] = [];
  for (const section of options.sections) {
    results.push(await section.run({ device: gpu.device, quick: options.quick, progress }));
  }
  gpu.device.destroy();

  const date = new Date().toISOString().slice(0, 10);
  const slug = gpu.adapter.description.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-|-$/g, "");
  // A run of some sections only gets their names in its file name, so it never replaces a full report.
  const partial = options.sections.length < SECTIONS.length ? `-${options.sections.map((s) => s.name).join("-")}` : "";
  const name = `${date}-${slug}${partial}${options.quick ? "-quick" : ""}`, base = `${options.out}/${name}`;
  const summary = markdownTable(["section", "finding"], results.map((r, i) => [options.sections[i].name, r.summary]));
  const markdown = [
    `# gemini-lab bench, ${date}`,
    "",
    `Adapter: ${adapter}. Deno ${Deno.version.deno}${options.quick ? ", --quick" : ""}.`,
    "",
    summary,
    ...results.flatMap((r) => [
      "",
      `## ${r.title}`,
      "",
      r.intro,
      "",
      markdownTable(r.header, r.rows),
      ...(r.figures ?? []).flatMap((figure) => ["", `![${figure.title}](${name}-${figure.name}.svg)`]),
    ]),
    "",
  ].join("\n");
  await Deno.mkdir(options.out, { recursive: true });
  await Deno.writeTextFile(`${base}.md`, markdown);
  for (const figure of results.flatMap((r) => r.figures ?? [])) {
    await Deno.writeTextFile(`${base}-${figure.name}.svg`, figure.svg);
  }
  const raw = Object.fromEntries(options.sections.map((s, i) => [s.name, results[i].raw]));
  await Deno.writeTextFile(
    `${base}.json`,
    JSON.stringify({ date, adapter: gpu.adapter, quick: options.quick, sections: raw }, null, 2),
  );
  console.log(summary);
  console.log(`written: ${base}.md (the tables and plots), ${base}.json (the raw numbers)`);
  return 0;
}

await runCommand("bench", () => main(Deno.args));
