// deno task chaos: a seeded soak of failures against the real root and worker agents, in one thread on a
// virtual clock, checked against the same cluster trained without failures (see agents/sim/chaos.ts). It
// prints the history's hash (the same seed always gives the same), what was injected and how it was
// recovered, and any invariant that broke with the command that reproduces it; the history goes to --out.

import { type ChaosOptions, runChaos } from "../agents/sim/chaos.ts";
import { PLACEMENT_STRATEGIES, placementPlan, type PlacementStrategy } from "../agents/replication/placement.ts";
import { numberOption, parseOptions, runCommand, UserError } from "./args.ts";

const USAGE =
  "usage: deno task chaos [--seed S] [--machines N] [--failures F] [--placement group|ring|mixed] [--replicas M] [--live] [--out DIR]";

function readOptions(args: string[]): ChaosOptions & { live: boolean; out?: string } {
  const values = parseOptions(args, {
    seed: { type: "string", default: "1" },
    machines: { type: "string", default: "16" },
    failures: { type: "string", default: "100" },
    placement: { type: "string", default: "group" },
    replicas: { type: "string", default: "2" },
    live: { type: "boolean", default: false },
    out: { type: "string" },
  }, USAGE);
  const placement = values.placement as PlacementStrategy;
  if (!PLACEMENT_STRATEGIES.includes(placement)) {
    throw new UserError(`--placement must be one of ${PLACEMENT_STRATEGIES.join(", ")}, got "${values.placement}"`);
  }
  const options = {
    seed: numberOption("seed", values.seed, { integer: true }),
    machines: numberOption("machines", values.machines, { integer: true, positive: true }),
    failures: numberOption("failures", values.failures, { integer: true, positive: true }),
    placement,
    replicas: numberOption("replicas", values.replicas, { integer: true, positive: true }),
    live: values.live,
    out: values.out,
  };
  try {
    placementPlan(placement, options.machines, options.replicas); // throws a clear error for a shape it cannot place
  } catch (error) {
    throw new UserError((error as Error).message);
  }
  return options;
}

async function main(args: string[]): Promise<number> {
  const { out, live, ...options } = readOptions(args);
  const started = performance.now();
  // The live cluster's modules load only when asked for: they start Workers with GPU devices.
  const report = live
    ? await (await import("../agents/sim/live-chaos.ts")).runLiveChaos(options)
    : await runChaos(options);
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  const list = (counts: Record<string, number>) =>
    Object.entries(counts).sort().map(([name, count]) => `${name} ${count}`).join(", ");
  console.log(
    `seed ${options.seed}: ${options.machines} machines, ${options.placement} placement, m = ${options.replicas}; ` +
      `${report.iterations} iterations in ${(report.virtualMs / 1000).toFixed(1)} s of ${
        live ? "the live cluster's" : "virtual"
      } time (${seconds} s here)`,
  );
  console.log(`injected: ${list(report.injected)}`);
  console.log(
    `${report.recoveries} recoveries (mean ${report.meanRecoveryMs.toFixed(0)} ms from detection to resumed), ` +
      `${report.lostIterations} iterations lost; shards restored from ${list(report.restored)}; ` +
      `${report.passedOver} corrupt or missing copies passed over`,
  );
  const { pairs } = report;
  console.log(
    `pairs of hardware failures: ${pairs.fromMemory} of ${pairs.failures} recoverable from memory alone; the placement's ` +
      `exact probability ${pairs.exact.toFixed(3)}, the 99% interval of the share [${
        pairs.interval.map((x) => x.toFixed(3)).join(", ")
      }]`,
  );
  // A live run's history carries wall-clock times: its hash names this run only.
  console.log(`history hash ${report.hash} (${report.history.length} events${live ? ", wall-clock times" : ""})`);
  if (out) {
    await Deno.mkdir(out, { recursive: true });
    const path = `${out}/chaos-seed-${options.seed}.log`;
    await Deno.writeTextFile(path, report.history.join("\n") + "\n");
    console.log(`history: ${path}`);
  }
  if (!report.violations.length) {
    console.log("every invariant held: training continued bit for bit as the failure-free run");
    return 0;
  }
  for (const violation of report.violations) console.log(`VIOLATED: ${violation}`);
  console.log(
    `reproduce: deno task chaos --seed ${options.seed} --machines ${options.machines} --failures ${options.failures} ` +
      `--placement ${options.placement} --replicas ${options.replicas}${live ? " --live" : ""}`,
  );
  return 1;
}

await runCommand("chaos", () => main(Deno.args));
