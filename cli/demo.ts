// `deno task demo`: the main job, headless. GEMINI on a simulated cluster: four machines (Workers, each
// with its own GPU device and host memory) train GPT-2 together, sharded data-parallel, with a checkpoint
// in CPU memory every iteration replicated by group placement (m = 2) and a persistent one every few.
// Midway a machine's hardware fails: the root agent detects it by its missed heartbeats and a replacement
// fetches the lost shard from its group peer. Later a whole group fails, and the only way back is the
// persistent store: the two recoveries are printed side by side. Last, the same seeded run without
// failures is trained, and the demo checks that training continued exactly as it did. It trains on a
// synthetic corpus, or with --text on a user's file, tokenized once here and given to every machine.

import { PLACEMENT_STRATEGIES, type PlacementStrategy } from "../agents/replication/placement.ts";
import type { ObservedEvent, ObservedRecovery } from "../agents/sim/observer.ts";
import type { IterationReport } from "../agents/root-agent.ts";
import { runCluster, type RunContext } from "../agents/sim/run.ts";
import {
  type CheckpointSpec,
  type ClusterSettings,
  defaultClusterSettings,
  describeSource,
  memoryPlanSettings,
} from "../agents/protocol/spec.ts";
import { numberOption, parseOptions, runCommand, UserError } from "./args.ts";
import { textCorpus, type TokenizerName, TOKENIZERS } from "./tokenizers.ts";
import type { Corpus } from "../core/data.ts";
import { acquireGpu, formatAdapter } from "../core/gpu.ts";
import { bindingLimit, MODEL_PRESETS, parameterCount } from "../core/model.ts";
import { fitMemory, type MemoryPlan, stateDigest } from "../core/trainer.ts";
import { describeSelfCheck, runSelfCheck } from "../core/selfcheck.ts";

const USAGE = `usage: deno task demo [--model ${Object.keys(MODEL_PRESETS).join("|")}] [--machines N] [--replicas M] ` +
  `[--placement ${PLACEMENT_STRATEGIES.join("|")}] [--iterations I] [--batch B] [--seq T] [--lr LR] [--seed S] ` +
  "[--persist-every P] [--network MB/s] [--storage MB/s] [--heartbeat-timeout MS] [--text FILE] " +
  `[--tokenizer ${Object.keys(TOKENIZERS).join("|")}]`;

function readOptions(args: string[]) {
  const values = parseOptions(args, {
    model: { type: "string", default: "tiny" },
    machines: { type: "string", default: "4" },
    replicas: { type: "string", default: "2" },
    placement: { type: "string", default: "group" },
    iterations: { type: "string", default: "30" },
    batch: { type: "string", default: "2" },
    seq: { type: "string", default: "32" },
    lr: { type: "string", default: "1e-2" },
    seed: { type: "string", default: "1337" },
    "persist-every": { type: "string", default: "5" },
    network: { type: "string", default: "400" },
    storage: { type: "string", default: "20" },
    "heartbeat-timeout": { type: "string" },
    text: { type: "string" },
    tokenizer: { type: "string" },
  }, USAGE);
  const config = MODEL_PRESETS[values.model];
  if (!config) {
    throw new UserError(`--model must be one of ${Object.keys(MODEL_PRESETS).join(", ")}, got "${values.model}"`);
  }
  if (!PLACEMENT_STRATEGIES.includes(values.placement as PlacementStrategy)) {
    throw new UserError(`--placement must be one of ${PLACEMENT_STRATEGIES.join(", ")}, got "${values.placement}"`);
  }
  const time = numberOption("seq", values.seq, { integer: true, positive: true });
  if (time > config.n_ctx) {
    throw new UserError(`--seq ${time} exceeds the ${values.model} model's n_ctx of ${config.n_ctx}`);
  }
  const machines = numberOption("machines", values.machines, { integer: true, positive: true });
  const replicas = numberOption("replicas", values.replicas, { integer: true, positive: true });
  if (machines < 2 || replicas < 2 || replicas > machines) {
    throw new UserError(`the story needs at least 2 machines and 2 to ${machines} replicas, got ${replicas}`);
  }
  const iterations = numberOption("iterations", values.iterations, { integer: true, positive: true });
  if (iterations < 12) throw new UserError(`--iterations must be at least 12 for the story, got ${iterations}`);
  if (values.tokenizer !== undefined && !(values.tokenizer in TOKENIZERS)) {
    throw new UserError(`--tokenizer must be one of ${Object.keys(TOKENIZERS).join(", ")}, got "${values.tokenizer}"`);
  }
  if (values.tokenizer !== undefined && values.text === undefined) {
    throw new UserError("--tokenizer names how to tokenize the --text FILE: give the file too");
  }
  return {
    model: values.model,
    config,
    machines,
    replicas,
    placement: values.placement as PlacementStrategy,
    iterations,
    batch: numberOption("batch", values.batch, { integer: true, positive: true }),
    time,
    lr: numberOption("lr", values.lr, { positive: true }),
    seed: numberOption("seed", values.seed, { integer: true }),
    persistEvery: numberOption("persist-every", values["persist-every"], { integer: true, positive: true }),
    network: numberOption("network", values.network, { positive: true }) * 1e6,
    storage: numberOption("storage", values.storage, { positive: true }) * 1e6,
    /** Given, or chosen from the memory plan once there is one (`defaultHeartbeatTimeout`). */
    heartbeatTimeout: values["heartbeat-timeout"] === undefined
      ? undefined
      : numberOption("heartbeat-timeout", values["heartbeat-timeout"], { positive: true }),
    text: values.text,
    // A byte-level model reads bytes, any other GPT-2's BPE.
    tokenizer: (values.tokenizer ?? (config.vocab_size === TOKENIZERS.bytes.vocab ? "bytes" : "gpt2")) as TokenizerName,
  };
}

/** What a run takes: the options, the --text corpus, and the heartbeat timeout once chosen. */
type Options = Omit<ReturnType<typeof readOptions>, "heartbeatTimeout"> & {
  corpus?: Corpus;
  heartbeatTimeout: number;
  /** How each machine holds its checkpoints where the default's way does not fit (see `planCluster`). */
  leaner?: LeanerCheckpoints;
};
type LeanerCheckpoints = Pick<CheckpointSpec, "slotsPerOwner" | "captureBuffers">;
type Planned = Omit<Options, "heartbeatTimeout">;

/**
 * 600 ms, or 30 s for a machine that plans more than a GiB: committing gigabytes stalls every thread of a
 * process (the Workers share one address space) for longer than 600 ms, and GPT-2 124M's machines were all
 * fenced in their first step while they still ran.
 */
function defaultHeartbeatTimeout(plan: MemoryPlan): number {
  return plan.gpuBytes + plan.hostBytes > 2 ** 30 ? 30_000 : 600;
}

/**
 * The --text file tokenized once, checked against the model and the batch: one UserError for a file that
 * cannot be read, a tokenizer whose vocabulary the model does not have, or too little text.
 */
export async function readTextCorpus(
  path: string,
  tokenizer: TokenizerName,
  { model, config, machines, batch, time }: Pick<Options, "model" | "config" | "machines" | "batch" | "time">,
): Promise<Corpus> {
  const { vocab } = TOKENIZERS[tokenizer];
  if (vocab > config.vocab_size) {
    throw new UserError(
      `the ${tokenizer} tokenizer has ${vocab} tokens, the ${model} model only ${config.vocab_size}: ` +
        (tokenizer === "gpt2" ? "use --model gpt2, or --tokenizer bytes" : "use a model with a larger vocabulary"),
    );
  }
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    throw new UserError(`cannot read the --text file "${path}": ${(error as Error).message}`);
  }
  const corpus = textCorpus(path, new TextDecoder().decode(bytes), tokenizer);
  const needed = machines * batch * (time + 1);
  if (corpus.tokens.length < needed) {
    throw new UserError(
      `the --text file "${path}" has ${corpus.tokens.length} ${tokenizer} tokens; one global batch of ${machines} ` +
        `machines x ${batch} rows x (${time} + 1) tokens needs ${needed}: give a longer text or a smaller --batch or --seq`,
    );
  }
  return corpus;
}

/** The default cluster's settings, changed as the options say. */
function adjustSettings(options: Planned, settings: ClusterSettings) {
  Object.assign(settings, { machines: options.machines, replicas: options.replicas, placement: options.placement });
  settings.training = {
    ...settings.training,
    config: options.config,
    batchPerMachine: options.batch,
    time: options.time,
    optimizer: { ...settings.training.optimizer, lr: options.lr, seed: options.seed },
    corpus: options.corpus ?? settings.training.corpus,
  };
  settings.checkpoint.persistEvery = options.persistEvery;
  Object.assign(settings.checkpoint, options.leaner);
  settings.network.bandwidth = options.network;
}

const LEANER_CHECKPOINTS: LeanerCheckpoints[] = [
  { slotsPerOwner: 2, captureBuffers: 2 },
  { slotsPerOwner: 2, captureBuffers: 1 },
];

/**
 * Every machine's memory, planned before anything is allocated; one clear error (naming the largest batch
 * and sequence that would fit) where the cluster does not fit this computer and adapter. Where the default's
 * three checkpoints per owner do not fit, two (the fewest a store keeps: the newest complete one is never
 * written over) may: a failure then rolls back as far, or to the persistent store, a little more often.
 * Where those do not fit either, captures through one staging buffer instead of two may: it is allocated for
 * each capture, which blocks training longer (GPT-2 124M on llvmpipe: 0.7 to 11 s an iteration, was 0.1 s).
 */
function planCluster(
  options: Planned,
  device: GPUDevice,
  gpuInHostMemory: boolean,
): { plan: MemoryPlan; leaner?: LeanerCheckpoints } {
  const budget = {
    bindingBytes: bindingLimit(device),
    availableBytes: Deno.systemMemoryInfo().available,
    gpuInHostMemory,
  };
  const fit = (leaner?: LeanerCheckpoints) => {
    const settings = defaultClusterSettings({ kind: "memory" });
    adjustSettings({ ...options, leaner }, settings);
    return { plan: fitMemory(memoryPlanSettings(settings), budget), leaner };
  };
  let firstError: Error | undefined;
  for (const leaner of [undefined, ...LEANER_CHECKPOINTS]) {
    try {
      return fit(leaner);
    } catch (error) {
      firstError ??= error as Error;
    }
  }
  throw new UserError(`the ${options.model} model: ${firstError!.message}`);
}

function describePlan(plan: MemoryPlan, machines: number, gpuInHostMemory: boolean): string {
  const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1).padStart(9)} MiB`;
  const rows = (rows: [string, number][]) => rows.map(([what, bytes]) => `    ${mib(bytes)}  ${what}`);
  const total = machines * (plan.hostBytes + (gpuInHostMemory ? plan.gpuBytes : 0));
  return [
    "memory plan, per machine:",
    `  GPU ${mib(plan.gpuBytes).trim()}:`,
    ...rows(plan.gpu),
    `  host ${mib(plan.hostBytes).trim()}:`,
    ...rows(plan.host),
    `  largest buffer: ${plan.largestBinding.label}, ${plan.largestBinding.bytes} bytes`,
    `  ${machines} machines: ${mib(total).trim()} of this computer's memory` +
    (gpuInHostMemory ? " (a software adapter's GPU memory is host memory)" : " besides the GPUs' own"),
  ].join("\n");
}

/** One cluster run of `options.iterations`, with `failures` injected on the way; every report it made. */
function train(options: Options, failures: (run: RunContext) => Promise<void>, log: boolean) {
  const adjust = (settings: ClusterSettings) => adjustSettings(options, settings);
  const onEvent = (event: ObservedEvent) => {
    if (!log) return;
    if (event.type === "iteration" && (event.iteration % 5 === 0 || event.iteration === 1)) {
      console.log(describeIteration(event));
    } else if (event.type === "failure") {
      const { rank, kind, where, detectedAt, failedAt } = event.failure;
      // A machine fenced while it still ran has no time of failure to count from.
      const after = detectedAt > failedAt ? ` after ${(detectedAt - failedAt).toFixed(0)} ms` : "";
      console.log(`  ! machine ${rank}: ${kind} failure ${where}; detected by missed heartbeats${after}`);
    } else if (event.type === "recovery") {
      console.log(describeRecovery(event));
    }
  };
  const settings = { adjust, onEvent, storageBandwidth: options.storage, keepState: true };
  return runCluster({ ...settings, heartbeatTimeoutMs: options.heartbeatTimeout }, async (run) => {
    await failures(run);
    await run.root.runUntil(options.iterations);
  });
}

function describeIteration(report: IterationReport): string {
  const mean = (pick: (m: IterationReport["machines"][number]) => number) =>
    (report.machines.reduce((sum, m) => sum + pick(m), 0) / report.machines.length).toFixed(1);
  return `iteration ${String(report.iteration).padStart(3)}  loss ${report.loss.toFixed(4)}  ` +
    `${report.milliseconds.toFixed(0)} ms (compute ${mean((m) => m.compute)}, reduce-scatter ${
      mean((m) => m.reduceScatter)
    }, update ${mean((m) => m.update)}, all-gather ${mean((m) => m.allGather)})  ` +
    `checkpoint blocked ${mean((m) => m.checkpointBlocked)} ms, ${describeReplication(report.plan)}`;
}

function describeReplication({ policy, replicateEvery }: IterationReport["plan"]): string {
  if (policy === "none") return "not replicated";
  return `replicated ${policy}${replicateEvery === null ? " (profiling)" : ` every ${replicateEvery} iteration(s)`}`;
}

function describeRecovery(report: ObservedRecovery): string {
  const from = report.machines.map((m, rank) => `${rank}: ${describeSource(m.source)}`).join(", ");
  return `  recovered: every machine rolled back to iteration ${report.iteration} ` +
    `(${report.lostIterations} lost); shards from ${from}; resumed ${report.total.toFixed(0)} ms after the failure`;
}

const PHASES = [
  ["detection", (r: ObservedRecovery) => r.detection],
  ["replacement (new Worker, GPU device, kernels)", (r: ObservedRecovery) => r.replacement],
  ["retrieval of the shards", (r: ObservedRecovery) => r.retrieval],
  ["load onto the GPUs", (r: ObservedRecovery) => r.load],
  ["all-gather of the parameters", (r: ObservedRecovery) => r.synchronize],
  ["total, failure to resumed training", (r: ObservedRecovery) => r.total],
] as const;

function compareRecoveries(peer: ObservedRecovery, persistent: ObservedRecovery): string {
  const left = "from a peer's memory", right = "from the persistent store";
  const rows = [
    ...PHASES.map(([name, pick]) => [name, `${pick(peer).toFixed(1)} ms`, `${pick(persistent).toFixed(1)} ms`]),
    ["iterations lost", String(peer.lostIterations), String(persistent.lostIterations)],
  ];
  const width = Math.max(...rows.map((row) => row[0].length));
  return [
    `${"recovery".padEnd(width)}  ${left.padStart(22)}  ${right.padStart(26)}`,
    ...rows.map(([name, a, b]) => `${name.padEnd(width)}  ${a.padStart(22)}  ${b.padStart(26)}`),
    `retrieval from memory was ${(persistent.retrieval / Math.max(peer.retrieval, 1e-3)).toFixed(1)}x faster ` +
    `than from the persistent store`,
  ].join("\n");
}

async function main(args: string[]): Promise<number> {
  const read = readOptions(args);
  const planned: Planned = {
    ...read,
    corpus: read.text === undefined ? undefined : await readTextCorpus(read.text, read.tokenizer, read),
  };
  const gpu = await acquireGpu();
  console.log(`adapter: ${formatAdapter(gpu.adapter)}`);
  const check = await runSelfCheck(gpu.device);
  console.log(describeSelfCheck(check));
  const { plan, leaner } = planCluster(planned, gpu.device, gpu.adapter.isFallback);
  const options: Options = {
    ...planned,
    leaner,
    heartbeatTimeout: read.heartbeatTimeout ?? defaultHeartbeatTimeout(plan),
  };
  const { config, machines, replicas, iterations } = options;
  gpu.device.destroy();
  if (check.mismatches) return 1;
  if (options.model === "gpt2") console.log(describePlan(plan, machines, gpu.adapter.isFallback));
  if (leaner) {
    const { slotsPerOwner, captureBuffers } = defaultClusterSettings({ kind: "memory" }).checkpoint;
    console.log(
      `to fit, each machine keeps ${leaner.slotsPerOwner} checkpoints per owner in memory instead of ${slotsPerOwner}` +
        (leaner.captureBuffers < captureBuffers
          ? `, and captures them through ${leaner.captureBuffers} staging buffer instead of ${captureBuffers}`
          : ""),
    );
  }

  const lostMachine = 1, hardwareAt = Math.floor(iterations / 3), groupAt = Math.floor((2 * iterations) / 3);
  console.log(
    `${machines} machines train GPT-2 "${options.model}" (${parameterCount(config).toLocaleString("en")} ` +
      `parameters), sharded data-parallel, global batch ${machines} x ${options.batch} x ${options.time} tokens; ` +
      `a checkpoint in memory every iteration, ${options.placement} placement with m = ${replicas}, persistent every ` +
      `${options.persistEvery}; network ${options.network / 1e6} MB/s a link, persistent store ` +
      `${options.storage / 1e6} MB/s`,
  );
  if (options.corpus) {
    console.log(`text: ${options.corpus.name}, ${options.corpus.tokens.length.toLocaleString("en")} tokens`);
  }
  let lostGroup: number[] = [];
  const run = await train(options, async ({ root, cluster }) => {
    lostGroup = root.plan.holders[0];
    // A peer's memory holds something to recover from only once every machine has replicated a checkpoint:
    // where that takes longer than the first iterations (GPT-2 124M on a software adapter), the failure waits.
    await root.runUntil(hardwareAt - 1);
    while (root.protocol.keep === 0 && root.iteration < groupAt - 2) await root.runUntil(root.iteration + 1);
    await cluster.inject([lostMachine], "hardware", { phase: "step", iteration: root.iteration + 1 });
    await root.runUntil(groupAt - 1);
    console.log(
      `  ! the whole group of machine 0 (machines ${lostGroup.join(", ")}) will fail in iteration ${groupAt}`,
    );
    await cluster.inject(lostGroup, "hardware", { phase: "step", iteration: groupAt });
  }, true);
  const [peer, persistent] = run.recoveries;
  if (!peer || !persistent) throw new Error(`expected two recoveries, saw ${run.recoveries.length}`);
  console.log(`\n${compareRecoveries(peer, persistent)}\n`);
  // The run's final state is kept as its digest, so that the comparison run does not have both in memory
  // (GPT-2 124M's is 1.4 GiB).
  const losses = run.iterations.map((report) => report.loss), final = await stateDigest(run.state!);
  delete run.state;

  console.log("training the same seeded run without failures, to compare");
  const reference = await train(options, () => Promise.resolve(), false);
  const sameLosses = losses.every((loss, i) => loss === reference.iterations[i]?.loss);
  const sameFinal = final === await stateDigest(reference.state!);
  console.log(
    sameLosses && sameFinal
      ? `training continued exactly as the run without failures: all ${iterations} losses and the final ` +
        "parameters and AdamW moments are identical, bit for bit"
      : `training DIVERGED from the run without failures (losses ${sameLosses ? "equal" : "differ"}, ` +
        `final state ${sameFinal ? "equal" : "differs"})`,
  );
  return sameLosses && sameFinal ? 0 : 1;
}

if (import.meta.main) await runCommand("demo", () => main(Deno.args));
