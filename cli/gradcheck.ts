// `deno task gradcheck`: runs GPT-2 on the WebGPU adapter for one fixed batch and writes what an
// independent implementation (PyTorch, say) can be compared against:
//   loss            the mean cross-entropy of the first forward (a scalar)
//   grad.<name>     every parameter's gradient from the first backward
//   with --steps K: losses [K], the losses of K successive AdamW steps on the same batch
//                   (betas 0.9/0.95, eps 1e-8, no clipping), and param.<name> after them.

import { numberOption, parseOptions, runCommand, UserError } from "./args.ts";
import { acquireGpu } from "../core/gpu.ts";
import { type GPT2Config, validateConfig } from "../core/model.ts";
import { encodeSafetensors, type TensorToWrite } from "../core/safetensors.ts";
import { Trainer } from "../core/trainer.ts";
import { namedParameters, parametersFromSafetensors } from "../core/weights.ts";

const USAGE =
  "usage: deno task gradcheck --weights W.safetensors --tokens T.json --out O.safetensors [--steps K] [--lr LR] [--weight-decay WD]";

interface Options {
  weights: string;
  tokens: string;
  out: string;
  steps: number;
  lr: number;
  weightDecay: number;
}

function readOptions(args: string[]): Options {
  const values = parseOptions(args, {
    weights: { type: "string" },
    tokens: { type: "string" },
    out: { type: "string" },
    steps: { type: "string", default: "0" },
    lr: { type: "string", default: "1e-3" },
    "weight-decay": { type: "string", default: "0" },
  }, USAGE);
  for (const required of ["weights", "tokens", "out"] as const) {
    if (!values[required]) throw new UserError(`--${required} is required; ${USAGE}`);
  }
  return {
    weights: values.weights!,
    tokens: values.tokens!,
    out: values.out!,
    steps: numberOption("steps", values.steps, { integer: true }),
    lr: numberOption("lr", values.lr),
    weightDecay: numberOption("weight-decay", values["weight-decay"]),
  };
}

interface TokensFile {
  config: GPT2Config;
  inputs: Uint32Array;
  targets: Uint32Array;
  batch: number;
  time: number;
}

/** Reads and checks T.json: rectangular [B][T] inputs and targets, ids in the vocabulary, T <= n_ctx. */
async function readTokens(path: string): Promise<TokensFile> {
  let json: { inputs?: unknown; targets?: unknown; config?: GPT2Config };
  try {
    json = JSON.parse(await Deno.readTextFile(path));
  } catch (error) {
    throw new UserError(`cannot read ${path}: ${(error as Error).message}`);
  }
  let config: GPT2Config;
  try {
    config = validateConfig(json.config as GPT2Config);
  } catch (error) {
    throw new UserError(`${path}: ${(error as Error).message}`);
  }
  const rows = (name: "inputs" | "targets") => {
    const value = json[name];
    if (!Array.isArray(value) || value.length === 0 || !value.every(Array.isArray)) {
      throw new UserError(`${path}: "${name}" must be a non-empty array of token arrays`);
    }
    return value as number[][];
  };
  const inputs = rows("inputs"), targets = rows("targets");
  const batch = inputs.length, time = inputs[0].length;
  if (time === 0) throw new UserError(`${path}: sequences must not be empty`);
  if (time > config.n_ctx) throw new UserError(`${path}: sequences of ${time} tokens exceed n_ctx = ${config.n_ctx}`);
  for (const [name, value] of [["inputs", inputs], ["targets", targets]] as const) {
    if (value.length !== batch || value.some((row) => row.length !== time)) {
      throw new UserError(`${path}: "${name}" must be ${batch} sequences of ${time} tokens, like "inputs"`);
    }
    value.forEach((row, b) =>
      row.forEach((id, t) => {
        if (!Number.isInteger(id) || id < 0 || id >= config.vocab_size) {
          throw new UserError(
            `${path}: ${name}[${b}][${t}] = ${id} is outside the vocabulary 0..${config.vocab_size - 1}`,
          );
        }
      })
    );
  }
  return { config, inputs: Uint32Array.from(inputs.flat()), targets: Uint32Array.from(targets.flat()), batch, time };
}

async function main(args: string[]): Promise<number> {
  const options = readOptions(args);
  const tokens = await readTokens(options.tokens);
  let weightsFile: Uint8Array;
  try {
    weightsFile = await Deno.readFile(options.weights);
  } catch (error) {
    throw new UserError(`cannot read ${options.weights}: ${(error as Error).message}`);
  }
  let weights: Float32Array;
  try {
    weights = parametersFromSafetensors(weightsFile, tokens.config, options.weights);
  } catch (error) {
    throw new UserError((error as Error).message);
  }

  const gpu = await acquireGpu();
  const trainer = new Trainer(gpu.device, tokens.config, {
    batch: tokens.batch,
    time: tokens.time,
    lr: options.lr,
    beta1: 0.9,
    beta2: 0.95,
    eps: 1e-8,
    weightDecay: options.weightDecay,
    maxGradNorm: 0,
    seed: 0,
  });
  await trainer.model.writeParameters(weights);
  const batch = { inputs: tokens.inputs, targets: tokens.targets };
  const loss = await trainer.computeGradients(batch);
  const out: TensorToWrite[] = [
    { name: "loss", shape: [], data: new Float32Array([loss]) },
    ...namedParameters(await trainer.model.readGradients(), tokens.config, "grad."),
  ];
  if (options.steps > 0) {
    const losses = new Float32Array(options.steps);
    for (let k = 0; k < options.steps; k++) losses[k] = (await trainer.trainOn(batch)).loss;
    out.push({ name: "losses", shape: [options.steps], data: losses });
    out.push(...namedParameters(await trainer.model.readParameters(), tokens.config, "param."));
  }
  trainer.destroy();
  gpu.device.destroy();
  await Deno.writeFile(options.out, encodeSafetensors(out, { adapter: gpu.adapter.description }));
  console.log(`gradcheck: loss ${loss} on ${gpu.adapter.description}; wrote ${out.length} tensors to ${options.out}`);
  return 0;
}

if (import.meta.main) await runCommand("gradcheck", () => main(Deno.args));
