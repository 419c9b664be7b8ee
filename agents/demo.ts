// `deno task demo`: the main job, headless. It reports the adapter, checks that the GPU computes what
// the CPU does, and trains a small GPT-2 on one node, printing the loss and tokens/s as it falls.
// The cluster issue grows it into the full Gemini run.

import { parseArgs } from "node:util";
import { type Corpus, syntheticCorpus, textFileCorpus } from "../core/data.ts";
import { acquireGpu, formatAdapter } from "../core/gpu.ts";
import { MODEL_PRESETS, parameterCount } from "../core/model.ts";
import { describeSelfCheck, runSelfCheck } from "../core/selfcheck.ts";
import { DEFAULT_TRAINER_SETTINGS, Trainer } from "../core/trainer.ts";

const USAGE = `usage: deno task demo [--model ${Object.keys(MODEL_PRESETS).join("|")}] [--steps N] [--batch B] ` +
  "[--seq T] [--lr LR] [--corpus FILE.txt] [--seed S]";

class UsageError extends Error {}

function positiveInteger(flag: string, text: string): number {
  const value = Number(text);
  if (!Number.isInteger(value) || value <= 0) {
    throw new UsageError(`--${flag} must be a positive integer, got "${text}"`);
  }
  return value;
}

function parseOptions(args: string[]) {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      options: {
        model: { type: "string", default: "tiny" },
        steps: { type: "string", default: "60" },
        batch: { type: "string", default: "8" },
        seq: { type: "string", default: "32" },
        lr: { type: "string", default: "1e-2" },
        seed: { type: "string", default: String(DEFAULT_TRAINER_SETTINGS.seed) },
        corpus: { type: "string" },
      },
    }));
  } catch (error) {
    throw new UsageError(`${(error as Error).message}; ${USAGE}`);
  }
  const config = MODEL_PRESETS[values.model];
  if (!config) {
    throw new UsageError(`--model must be one of ${Object.keys(MODEL_PRESETS).join(", ")}, got "${values.model}"`);
  }
  const lr = Number(values.lr);
  if (!(lr > 0)) throw new UsageError(`--lr must be a positive number, got "${values.lr}"`);
  const time = positiveInteger("seq", values.seq);
  if (time > config.n_ctx) {
    throw new UsageError(`--seq ${time} exceeds the ${values.model} model's n_ctx of ${config.n_ctx}`);
  }
  return {
    model: values.model,
    config,
    steps: positiveInteger("steps", values.steps),
    batch: positiveInteger("batch", values.batch),
    time,
    lr,
    seed: Number(values.seed),
    corpus: values.corpus,
  };
}

async function main(args: string[]): Promise<number> {
  const options = parseOptions(args);
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
  const trainer = new Trainer(gpu.device, config, {
    ...DEFAULT_TRAINER_SETTINGS,
    batch,
    time,
    lr: options.lr,
    seed: options.seed,
  }, corpus);
  const every = Math.max(1, Math.round(options.steps / 12));
  let tokens = 0, seconds = 0;
  for (let i = 0; i < options.steps; i++) {
    const report = await trainer.trainStep();
    tokens += batch * time;
    seconds += report.milliseconds / 1000;
    if (report.step === 1 || report.step % every === 0 || report.step === options.steps) {
      console.log(
        `step ${String(report.step).padStart(4)}  loss ${report.loss.toFixed(4)}  grad norm ${
          report.gradNorm.toFixed(3)
        }  ` +
          `${report.milliseconds.toFixed(1)} ms  ${Math.round(report.tokensPerSecond)} tokens/s`,
      );
    }
  }
  console.log(`trained ${options.steps} steps: ${Math.round(tokens / seconds)} tokens/s on average`);
  trainer.destroy();
  gpu.device.destroy();
  return 0;
}

try {
  Deno.exit(await main(Deno.args));
} catch (error) {
  console.error(`demo: ${error instanceof Error ? error.message : error}`);
  Deno.exit(error instanceof UsageError ? 2 : 1);
}
