// `deno task root --etcd URL [--id NAME] [--machines N] [--iterations I] [--seed S] [--persist-dir DIR]
// [--out FILE] [--heartbeat-timeout MS] [--election-ttl S] [--cluster NAME] [--secret-file F]`: a root of a
// cluster of processes (agents/process/root.ts). It writes the job's settings to etcd if no root has, then
// campaigns: elected, it trains the machine processes to I iterations (taking over from a lost root if one
// led before) and writes the final state to FILE; otherwise it stands by until it leads or the run is done.

import { COMMON_FLAGS, etcdOf, processClusterSettings, secretOf } from "../agents/process/options.ts";
import { runRootProcess } from "../agents/process/root.ts";
import { numberOption, parseOptions, runCommand, UserError } from "./args.ts";

const USAGE = "usage: deno task root --etcd URL [--id NAME] [--machines N] [--iterations I] [--seed S] " +
  "[--persist-dir DIR] [--out FILE] [--heartbeat-timeout MS] [--election-ttl S] [--cluster NAME] [--secret-file F]";

runCommand("root", async () => {
  const values = parseOptions(Deno.args, {
    ...COMMON_FLAGS,
    id: { type: "string", default: `root-${Deno.pid}` },
    machines: { type: "string", default: "4" },
    iterations: { type: "string", default: "10" },
    seed: { type: "string", default: "1" },
    "persist-dir": { type: "string", default: "gemini-persistent" },
    out: { type: "string", default: "final.safetensors" },
    "heartbeat-timeout": { type: "string", default: "2000" },
    "election-ttl": { type: "string", default: "2" },
  }, USAGE);
  const fail = (message: string) => new UserError(`${message}; ${USAGE}`);
  const machines = numberOption("machines", values.machines, { integer: true, positive: true });
  const iterations = numberOption("iterations", values.iterations, { integer: true, positive: true });
  const seed = numberOption("seed", values.seed, { integer: true });
  const heartbeatTimeoutMs = numberOption("heartbeat-timeout", values["heartbeat-timeout"], { positive: true });
  const electionTtlSeconds = numberOption("election-ttl", values["election-ttl"], { integer: true, positive: true });
  const settings = processClusterSettings(machines, seed, values["persist-dir"]);
  if (!(heartbeatTimeoutMs > settings.heartbeatMs)) {
    throw fail(`--heartbeat-timeout must exceed the heartbeat interval, ${settings.heartbeatMs} ms`);
  }
  const secret = secretOf(values, fail);
  const etcd = etcdOf(values, fail);
  await Deno.mkdir(values["persist-dir"], { recursive: true });
  const ended = await runRootProcess({
    etcd,
    cluster: values.cluster,
    secret,
    id: values.id,
    settings,
    iterations,
    heartbeatTimeoutMs,
    electionTtlSeconds,
    out: values.out,
  });
  console.error(
    ended === "led"
      ? `root ${values.id}: done, the final state is in ${values.out}`
      : `root ${values.id}: the run is done`,
  );
  etcd.close();
  return 0;
});
