// `deno task cluster --machines N --spares S [--etcd URL] [--iterations I] [--seed S]`: a cluster of
// processes on this computer (agents/process/launcher.ts): without --etcd a local etcd in a temporary
// folder, N + S machine processes, and two root processes (one leads, one stands by). It trains the tiny
// GPT-2 to I iterations, prints the losses, then trains the in-process cluster (Workers in this process)
// with the same settings and seed and says whether the losses and the final state are the same, bit for
// bit (exit code 1 if not). Every process it started is stopped, by its PID, before it returns.

import { ProcessCluster } from "../agents/process/launcher.ts";
import { processClusterSettings } from "../agents/process/options.ts";
import { sameState } from "../core/trainer.ts";
import { runCluster } from "../agents/sim/run.ts";
import { numberOption, parseOptions, runCommand } from "./args.ts";

const USAGE = "usage: deno task cluster --machines N --spares S [--etcd URL] [--iterations I] [--seed S]";

runCommand("cluster", async () => {
  const values = parseOptions(Deno.args, {
    machines: { type: "string", default: "4" },
    spares: { type: "string", default: "1" },
    etcd: { type: "string" },
    iterations: { type: "string", default: "6" },
    seed: { type: "string", default: "1" },
  }, USAGE);
  const machines = numberOption("machines", values.machines, { integer: true, positive: true });
  const spares = numberOption("spares", values.spares, { integer: true });
  const iterations = numberOption("iterations", values.iterations, { integer: true, positive: true });
  const seed = numberOption("seed", values.seed, { integer: true });
  const heartbeatTimeoutMs = 2000;

  const cluster = await ProcessCluster.start({
    machines,
    spares,
    iterations,
    seed,
    etcd: values.etcd,
    heartbeatTimeoutMs,
  });
  // Interrupted, it still stops every process it started.
  const interrupted = () => cluster.close().finally(() => Deno.exit(130));
  for (const signal of ["SIGINT", "SIGTERM"] as const) Deno.addSignalListener(signal, interrupted);
  let run;
  try {
    console.error(`cluster: etcd at ${cluster.endpoint}; ${machines} machines, ${spares} spares and 2 roots started`);
    run = await cluster.finished();
  } finally {
    await cluster.close();
  }
  for (let i = 1; i <= iterations; i++) console.log(`iteration ${i}: loss ${run.losses[i]}`);

  console.error("cluster: training the in-process cluster with the same settings and seed");
  const reference = await runCluster({
    adjust: (settings) =>
      Object.assign(settings, { ...processClusterSettings(machines, seed, ""), persistent: settings.persistent }),
    heartbeatTimeoutMs,
    keepState: true,
  }, ({ root }) => root.runUntil(iterations));
  const sameLosses = reference.iterations.slice(1).every((report, i) => Object.is(report.loss, run.losses[i + 1]));
  const same = sameLosses && sameState(run.state, reference.state!);
  console.log(
    `the same as the in-process cluster, bit for bit: ${same ? "yes" : "no"} (losses ${
      sameLosses ? "equal" : "differ"
    })`,
  );
  return same ? 0 : 1;
});
