// Text generation: a GPT-2 in Hugging Face's published layout (the "transformer." prefix, the attn.bias
// mask buffers, a tied lm_head), generated here since no hub can be reached, loads with its shape read
// from the tensors; greedy decoding is the argmax of the model's logits at every step; a fixed seed gives
// fixed tokens; and `deno task generate` streams them, or fails on a broken file with one line.

import assert from "node:assert/strict";
import { readBuffer } from "../core/gpu.ts";
import { generate, type GenerateSettings, GPT2, type GPT2Config, initialParameters } from "../core/model.ts";
import { encodeSafetensors } from "../core/safetensors.ts";
import { configFromSafetensors, namedParameters, parametersFromSafetensors } from "../core/weights.ts";
import { testDevice } from "./helpers.ts";

const CONFIG: GPT2Config = { vocab_size: 256, n_ctx: 16, n_embd: 128, n_head: 2, n_layer: 2 };
const PROMPT = [72, 105, 33];

/** A published-layout file: what GPT2LMHeadModel's save_pretrained writes (in F32). */
function publishedFile(params: Float32Array): Uint8Array {
  const tensors = namedParameters(params, CONFIG, "transformer.");
  const mask = new Float32Array(CONFIG.n_ctx * CONFIG.n_ctx).map((_, i) =>
    Number(i % CONFIG.n_ctx <= i / CONFIG.n_ctx)
  );
  for (let l = 0; l < CONFIG.n_layer; l++) {
    tensors.push({ name: `transformer.h.${l}.attn.bias`, shape: [1, 1, CONFIG.n_ctx, CONFIG.n_ctx], data: mask });
  }
  tensors.push({ name: "lm_head.weight", shape: [CONFIG.vocab_size, CONFIG.n_embd], data: tensors[0].data });
  return encodeSafetensors(tensors, { format: "pt" });
}

// Weights scaled up from GPT-2's initialisation, so that the logits have clear winners to choose between.
const PARAMS = initialParameters(CONFIG, 11).map((value) => value * 8);

async function tokensOf(
  device: GPUDevice,
  settings: GenerateSettings,
  check?: (model: GPT2, token: number) => Promise<void>,
) {
  const model = new GPT2(device, CONFIG, 1, PROMPT.length + settings.tokens);
  try {
    await model.writeParameters(PARAMS);
    const tokens = [];
    for await (const token of generate(device, model, PROMPT, settings)) {
      await check?.(model, token);
      tokens.push(token);
    }
    return tokens;
  } finally {
    model.destroy();
  }
}

Deno.test("a file in the published layout loads, its shape read from the tensors", () => {
  const file = publishedFile(PARAMS);
  assert.deepEqual(configFromSafetensors(file), CONFIG);
  assert.deepEqual(parametersFromSafetensors(file, CONFIG), PARAMS);
});

Deno.test("greedy decoding is the argmax of the model's logits at every step", async () => {
  const device = await testDevice();
  let position = PROMPT.length - 1;
  const greedy = await tokensOf(device, { tokens: 8, temperature: 0, topK: 0, seed: 1 }, async (model, token) => {
    const V = CONFIG.vocab_size;
    const row = new Float32Array(await readBuffer(device, model.logits, V * 4, position * V * 4));
    const best = row.reduce((best, value, i) => value > row[best] ? i : best, 0);
    assert.equal(token, best, `position ${position}`);
    position++;
  });
  assert.ok(new Set(greedy).size > 1, `the test must not be trivial: ${greedy}`);
  // Sampling among the top 1 is greedy at any temperature and seed.
  assert.deepEqual(await tokensOf(device, { tokens: 8, temperature: 0.7, topK: 1, seed: 9 }), greedy);
});

Deno.test("a fixed seed gives fixed tokens, drawn from the top k", async () => {
  const device = await testDevice();
  const settings = { tokens: 8, temperature: 1, topK: 5, seed: 42 };
  let position = PROMPT.length - 1;
  const first = await tokensOf(device, settings, async (model, token) => {
    const V = CONFIG.vocab_size;
    const row = new Float32Array(await readBuffer(device, model.logits, V * 4, position * V * 4));
    const fifth = [...row].sort((a, b) => b - a)[4];
    assert.ok(row[token] >= fifth, `token ${token} at position ${position} is not among the top 5`);
    position++;
  });
  assert.deepEqual(await tokensOf(device, settings), first);
  const others = await Promise.all([1, 2, 3].map((seed) => tokensOf(device, { ...settings, seed })));
  assert.ok(others.some((tokens) => tokens.join() !== first.join()), "other seeds draw other tokens");
});

async function runGenerate(args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "generate", ...args],
    cwd: new URL("..", import.meta.url).pathname,
  }).output();
  return { code, stdout: new TextDecoder().decode(stdout), stderr: new TextDecoder().decode(stderr) };
}

Deno.test("deno task generate streams seeded text from a published-layout file, and a broken file is one line", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = `${dir}/model.safetensors`;
    await Deno.writeFile(path, publishedFile(PARAMS));
    const args = ["--weights", path, "--prompt", "Hi!", "--tokens", "6", "--seed", "3", "--tokenizer", "bytes"];
    const [a, b] = [await runGenerate(args), await runGenerate(args)];
    assert.equal(a.code, 0, a.stderr);
    assert.ok(a.stdout.startsWith("Hi!"), a.stdout);
    assert.equal(a.stdout, b.stdout);
    assert.match(a.stderr, /6 tokens in [\d.]+ s/);

    await Deno.writeFile(path, publishedFile(PARAMS).subarray(0, 1000));
    const broken = await runGenerate(["--weights", path]);
    assert.equal(broken.code, 2);
    assert.match(broken.stderr, /^generate: .*model\.safetensors.*\n$/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
