// `deno task demo`: the main job, headless. It reports the adapter, checks that the GPU computes what
// the CPU does, and trains a small GPT-2 on one node, printing the loss and tokens/s as it falls, with a
// checkpoint in host memory every iteration. Before the last steps it simulates a software failure:
// the run restarts from the checkpoint in memory and must repeat those steps bit for bit.
// The cluster issue grows it into the full Gemini run.

import { numberOption, parseOptions, runCommand, UserError } from "../core/cli.ts";
import { type Corpus, syntheticCorpus, textFileCorpus } from "../core/data.ts";
import { acquireGpu, formatAdapter } from "../core/gpu.ts";
import { MODEL_PRESETS, parameterCount } from "../core/model.ts";
import { describeSelfCheck, runSelfCheck } from "../core/selfcheck.ts";
import { DEFAULT_TRAINER_SETTINGS, Trainer } from "../core/trainer.ts";
import { Checkpointer } from "../core/checkpointing.ts";
import { shardLayout } from "../core/checkpoint.ts";
import { InMemoryCheckpointStore } from "../core/memory-store.ts";

const USAGE = `usage: deno task demo [--model ${Object.keys(MODEL_PRESETS).join("|")}] [--steps N] [--batch B] ` +
  "[--seq T] [--lr LR] [--corpus FILE.txt] [--seed S]";

// Steps run again after the simulated software failure at the end of the demo.
const RESUME_STEPS = 5;

function readOptions(args: string[]) {
  const values = parseOptions(args, {
    model: { type: "string", default: "tiny" },
    steps: { type: "string", default: "60" },
    batch: { type: "string", default: "8" },
    seq: { type: "string", default: "32" },
    lr: { type: "string", default: "1e-2" },
    seed: { type: "string", default: String(DEFAULT_TRAINER_SETTINGS.seed) },
    corpus: { type: "string" },
  }, USAGE);
  const config = MODEL_PRESETS[values.model];
  if (!config) {
    throw new UserError(`--model must be one of ${Object.keys(MODEL_PRESETS).join(", ")}, got "${values.model}"`);
  }
  const time = numberOption("seq", values.seq, { integer: true, positive: true });
  if (time > config.n_ctx) {
    throw new UserError(`--seq ${time} exceeds the ${values.model} model's n_ctx of ${config.n_ctx}`);
  }
  return {
    model: values.model,
    config,
    steps: numberOption("steps", values.steps, { integer: true, positive: true }),
    batch: numberOption("batch", values.batch, { integer: true, positive: true }),
    time,
    lr: numberOption("lr", values.lr, { positive: true }),
    seed: numberOption("seed", values.seed, { integer: true }),
    corpus: values.corpus,
  };
}

async function main(args: string[]): Promise<number> {
  const options = readOptions(args);
  const corpus: Corpus = options.corpus ? await textFileCorpus(options.corpus) : syntheticCorpus(1 << 20, options.seed);
  const gpu = await acquireGpu();
  console.log(`adapter: ${formatAdapter(gpu.adapter)}`);
  const check = await runSelfCheck(gpu.device);
  console.log(describeSelfCheck(check));
  if (check.mismatches) return 1;

  const { config, batch, time } = options;
  console.log(
    `training GPT-2 "${options.model}" (${parameterCount(config).toLocaleString("en")} parameters: ` +
      `${config.n_layer} layers, ${config.n_head} heads, n_embd ${config.n_embd}) on ${corpus.name}, ` +
      `batch ${batch} x ${time} tokens, AdamW lr ${options.lr}`,
  );
  const settings = { ...DEFAULT_TRAINER_SETTINGS, batch, time, lr: options.lr, seed: options.seed };
  const trainer = new Trainer(gpu.device, config, settings, corpus);
  // Host memory for the checkpoints: room for 3 of them, taken every iteration as in Gemini.
  const store = InMemoryCheckpointStore.create(0, 3 * shardLayout(trainer.checkpointMeta(0)).totalBytes + (1 << 20), {
    maxOwners: 1,
  });
  const checksumsOnGpu = !gpu.adapter.isFallback;
  const checkpointer = new Checkpointer(trainer, store, { checksumsOnGpu });
  // The last RESUME_STEPS steps run once more after a simulated software failure, from the checkpoint in memory.
  const failAfter = Math.max(1, options.steps - RESUME_STEPS), resumeSteps = options.steps - failAfter;
  const every = Math.max(1, Math.round(options.steps / 12));
  let tokens = 0, seconds = 0, blocked = 0;
  const failureFree: number[] = [];
  for (let i = 0; i < options.steps; i++) {
    const report = await trainer.trainStep();
    tokens += batch * time;
    seconds += report.milliseconds / 1000;
    let checkpoint = "";
    if (report.step <= failAfter) {
      const capture = await checkpointer.afterStep();
      const published = await capture.published;
      blocked += capture.blockedMilliseconds;
      checkpoint = `  checkpoint: blocked ${capture.blockedMilliseconds.toFixed(2)} ms, in memory after ` +
        `${published.totalMilliseconds.toFixed(1)} ms`;
    } else {
      failureFree.push(report.loss);
    }
    if (report.step === 1 || report.step % every === 0 || report.step === options.steps) {
      console.log(
        `step ${String(report.step).padStart(4)}  loss ${report.loss.toFixed(4)}  ` +
          `grad norm ${report.gradNorm.toFixed(3)}  ${report.milliseconds.toFixed(1)} ms  ` +
          `${Math.round(report.tokensPerSecond)} tokens/s${checkpoint}`,
      );
    }
  }
  console.log(
    `trained ${options.steps} steps: ${
      Math.round(tokens / seconds)
    } tokens/s on average; a checkpoint in host memory ` +
      `every iteration blocked training for ${(blocked / failAfter).toFixed(2)} ms on average`,
  );
  checkpointer.destroy();
  trainer.destroy();
  if (resumeSteps === 0) return 0;

  // A software failure after step `failAfter`: the training process restarts and loads its checkpoint
  // from host memory, which survived, then runs the same steps again.
  const restarted = new Trainer(gpu.device, config, settings, corpus);
  const restorer = new Checkpointer(restarted, store, { checksumsOnGpu });
  const start = performance.now();
  const { entry } = await restorer.restore();
  const restoreMilliseconds = performance.now() - start;
  const resumed: number[] = [];
  for (let i = 0; i < resumeSteps; i++) resumed.push((await restarted.trainStep()).loss);
  const exact = resumed.every((loss, i) => loss === failureFree[i]);
  const outcome = exact
    ? "equal the failure-free run's bit for bit"
    : `DIFFER from the failure-free run: ${resumed} vs ${failureFree}`;
  console.log(
    `software failure after step ${failAfter}: restarted from the checkpoint of step ${entry.iteration} in host memory ` +
      `in ${restoreMilliseconds.toFixed(1)} ms; the ${resumeSteps} losses after it ${outcome}`,
  );
  restorer.destroy();
  restarted.destroy();
  gpu.device.destroy();
  return exact ? 0 : 1;
}

await runCommand("demo", () => main(Deno.args));
