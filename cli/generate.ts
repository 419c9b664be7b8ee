// `deno task generate`: text from a GPT-2 in a safetensors file (Hugging Face's published layout, or ours),
// sampled on the GPU and printed token by token as each is drawn: greedy with --temperature 0, else seeded
// top-k sampling. The GPT-2 BPE tokenizer (npm's gpt-tokenizer, r50k_base: GPT-2's own encoding) or bytes.

import { numberOption, parseOptions, runCommand, UserError } from "./args.ts";
import { END_OF_TEXT, TOKENIZERS } from "./tokenizers.ts";
import { BYTE_VOCAB_SIZE } from "../core/data.ts";
import { acquireGpu } from "../core/gpu.ts";
import { generate, GPT2 } from "../core/model.ts";
import { configFromSafetensors, parametersFromSafetensors } from "../core/weights.ts";

const USAGE = "usage: deno task generate --weights W.safetensors [--prompt TEXT] [--tokens N] [--temperature T] " +
  "[--top-k K] [--seed S] [--tokenizer gpt2|bytes]";

function readOptions(args: string[]) {
  const values = parseOptions(args, {
    weights: { type: "string" },
    prompt: { type: "string", default: "" },
    tokens: { type: "string", default: "32" },
    temperature: { type: "string", default: "1" },
    "top-k": { type: "string", default: "40" },
    seed: { type: "string", default: "1" },
    tokenizer: { type: "string" },
  }, USAGE);
  if (!values.weights) throw new UserError(`--weights is required; ${USAGE}`);
  if (values.tokenizer !== undefined && !(values.tokenizer in TOKENIZERS)) {
    throw new UserError(`--tokenizer must be gpt2 or bytes, got "${values.tokenizer}"`);
  }
  return {
    weights: values.weights,
    prompt: values.prompt,
    tokenizer: values.tokenizer as keyof typeof TOKENIZERS | undefined,
    tokens: numberOption("tokens", values.tokens, { integer: true, positive: true }),
    temperature: numberOption("temperature", values.temperature),
    topK: numberOption("top-k", values["top-k"], { integer: true }),
    seed: numberOption("seed", values.seed, { integer: true }),
  };
}

async function main(args: string[]): Promise<number> {
  const options = readOptions(args);
  let file: Uint8Array;
  try {
    file = await Deno.readFile(options.weights);
  } catch (error) {
    throw new UserError(`cannot read ${options.weights}: ${(error as Error).message}`);
  }
  let config, params;
  try {
    config = configFromSafetensors(file, options.weights);
    params = parametersFromSafetensors(file, config, options.weights);
  } catch (error) {
    throw new UserError((error as Error).message);
  }
  const name = options.tokenizer ?? (config.vocab_size === BYTE_VOCAB_SIZE ? "bytes" : "gpt2");
  const tokenizer = TOKENIZERS[name];
  if (tokenizer.vocab > config.vocab_size) {
    throw new UserError(`the ${name} tokenizer has ${tokenizer.vocab} tokens, the model only ${config.vocab_size}`);
  }
  const prompt = options.prompt ? tokenizer.encode(options.prompt) : name === "gpt2" ? [END_OF_TEXT] : [0];
  const time = prompt.length + options.tokens;
  if (time > config.n_ctx) {
    throw new UserError(`${prompt.length} prompt tokens and --tokens ${options.tokens} exceed n_ctx = ${config.n_ctx}`);
  }
  const { device } = await acquireGpu();
  const model = new GPT2(device, config, 1, time);
  await model.writeParameters(params);
  const out = (text: string) => Deno.stdout.writeSync(new TextEncoder().encode(text));
  out(options.prompt);
  const started = performance.now();
  for await (const token of generate(device, model, prompt, options)) out(tokenizer.decode([token]));
  const seconds = (performance.now() - started) / 1000;
  console.error(
    `\n${options.tokens} tokens in ${seconds.toFixed(1)} s (${(options.tokens / seconds).toFixed(2)} tokens/s)`,
  );
  model.destroy();
  return 0;
}

await runCommand("generate", () => main(Deno.args));
