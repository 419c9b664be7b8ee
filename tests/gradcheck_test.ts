// `deno task gradcheck`: its output against the float64 reference; against an independent PyTorch GPT-2
// (Debian's python3-torch, installed when missing as root on Debian), on a small model and on one layer at
// GPT-2's vocabulary and width; and one clear line for every kind of bad input.

import assert from "node:assert/strict";
import { type GPT2Config, initialParameters, parameterLayout } from "../core/model.ts";
import { Rng } from "../core/random.ts";
import { parseSafetensors, tensorAsF32 } from "../core/safetensors.ts";
import { installDebianPackage } from "../core/system-package.ts";
import { parametersToSafetensors } from "../core/weights.ts";
import { gpt2LossAndGradients } from "./reference.ts";
import { assertClose } from "./helpers.ts";

/** A small model, where the float64 reference and PyTorch are quick, and 3 AdamW steps are compared too. */
const SMALL = { config: { vocab_size: 97, n_ctx: 16, n_embd: 48, n_head: 3, n_layer: 2 }, B: 3, T: 13 };
/** One layer at GPT-2's vocabulary and width: its wte is over the default 128 MiB binding, so it is in pieces. */
const GPT2_WIDTH = { config: { vocab_size: 50257, n_ctx: 8, n_embd: 768, n_head: 12, n_layer: 1 }, B: 1, T: 8 };
const ROOT = new URL("..", import.meta.url).pathname;
const TORCH_PYTHON = "/usr/bin/python3";

async function gradcheck(args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "gradcheck", ...args],
    cwd: ROOT,
  }).output();
  return { code, stdout: new TextDecoder().decode(stdout), stderr: new TextDecoder().decode(stderr) };
}

interface FixtureOptions {
  model?: { config: GPT2Config; B: number; T: number };
  /** Written into T.json over the model's own, to make it wrong. */
  config?: Partial<GPT2Config>;
  tokens?: Record<string, unknown>;
}

/** A temporary folder with W.safetensors (seeded weights) and T.json (a seeded batch). */
async function fixture({ model = SMALL, ...overrides }: FixtureOptions = {}) {
  const { config, B, T } = model;
  const dir = await Deno.makeTempDir();
  const params = initialParameters(config, 11);
  // Perturb biases and LayerNorm parameters so that no gradient is trivially zero.
  const rng = new Rng(5);
  for (let i = 0; i < params.length; i++) params[i] += 0.02 * (rng.uniform() - 0.5);
  await Deno.writeFile(`${dir}/W.safetensors`, parametersToSafetensors(params, config));
  const row = () => Array.from({ length: T }, () => rng.below(config.vocab_size));
  const batch = { inputs: Array.from({ length: B }, row), targets: Array.from({ length: B }, row) };
  await Deno.writeTextFile(
    `${dir}/T.json`,
    JSON.stringify({ ...batch, config: { ...config, ...overrides.config }, ...overrides.tokens }),
  );
  return {
    dir,
    params,
    batch,
    args: ["--weights", `${dir}/W.safetensors`, "--tokens", `${dir}/T.json`, "--out", `${dir}/O.safetensors`],
  };
}

function named(params: Float32Array) {
  const tensor = ({ name, offset, size }: { name: string; offset: number; size: number }) =>
    [name, Float64Array.from(params.subarray(offset, offset + size))] as const;
  return new Map(parameterLayout(SMALL.config).specs.map(tensor));
}

Deno.test("gradcheck writes the loss and every gradient, matching the float64 reference", async () => {
  const { config, B, T } = SMALL;
  const { dir, params, batch, args } = await fixture();
  try {
    const run = await gradcheck(args);
    assert.equal(run.code, 0, run.stderr);
    const out = parseSafetensors(await Deno.readFile(`${dir}/O.safetensors`));
    const expected = gpt2LossAndGradients(config, named(params), batch.inputs.flat(), batch.targets.flat(), B, T);
    assertClose(tensorAsF32(out, "loss", []), [expected.loss], 1e-5, "loss");
    for (const spec of parameterLayout(config).specs) {
      assertClose(
        tensorAsF32(out, `grad.${spec.name}`, spec.shape),
        expected.grads.get(spec.name)!,
        1e-3,
        `grad.${spec.name}`,
      );
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

async function hasTorch(): Promise<boolean> {
  try {
    return (await new Deno.Command(TORCH_PYTHON, { args: ["-c", "import torch"], stderr: "null" }).output()).success;
  } catch {
    return false;
  }
}

/** Debian's PyTorch, installed when missing (as root on Debian; elsewhere the error gives the command). */
async function ensureTorch() {
  if (await hasTorch()) return;
  await installDebianPackage("PyTorch", "apt-get update && apt-get install -y --no-install-recommends python3-torch");
  assert.ok(await hasTorch(), "python3-torch was installed, yet python3 cannot import torch");
}

/** gradcheck and PyTorch on the same weights and batch: the loss, every gradient and `steps` AdamW steps. */
async function againstTorch(model: FixtureOptions["model"] & object, steps: number) {
  await ensureTorch();
  const { dir, args } = await fixture({ model });
  try {
    const adamw = [`${steps}`, "1e-3", "0.1"];
    const run = await gradcheck([...args, "--steps", adamw[0], "--lr", adamw[1], "--weight-decay", adamw[2]]);
    assert.equal(run.code, 0, run.stderr);
    const torch = await new Deno.Command(TORCH_PYTHON, {
      args: [`${ROOT}tests/torch_gpt2.py`, `${dir}/W.safetensors`, `${dir}/T.json`, `${dir}/R.safetensors`, ...adamw],
    }).output();
    assert.ok(torch.success, new TextDecoder().decode(torch.stderr));
    const ours = parseSafetensors(await Deno.readFile(`${dir}/O.safetensors`));
    const theirs = parseSafetensors(await Deno.readFile(`${dir}/R.safetensors`));
    const compare = (name: string, shape: number[], tolerance: number) =>
      assertClose(tensorAsF32(ours, name, shape), tensorAsF32(theirs, name, shape), tolerance, name);
    compare("loss", [], 1e-5);
    if (steps > 0) compare("losses", [steps], 1e-5);
    const before = parseSafetensors(await Deno.readFile(`${dir}/W.safetensors`));
    for (const spec of parameterLayout(model.config).specs) {
      compare(`grad.${spec.name}`, spec.shape, 1e-3);
      if (steps === 0) continue;
      // Parameters are compared by their update, relative to the tensor's largest: Adam divides by
      // sqrt(v), so a gradient that is zero in exact arithmetic (the key bias: softmax ignores a
      // constant shift) moves its parameter by an amount that only rounding noise decides.
      const start = tensorAsF32(before, spec.name, spec.shape);
      const update = (file: typeof ours) =>
        tensorAsF32(file, `param.${spec.name}`, spec.shape).map((p, i) => p - start[i]);
      assertClose(update(ours), update(theirs), 1e-2, `update of ${spec.name}`);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("gradcheck agrees with PyTorch: loss, gradients, and 3 AdamW steps (losses and parameters)", async () => {
  await againstTorch(SMALL, 3);
});

Deno.test("gradcheck agrees with PyTorch at GPT-2's vocabulary and width, one layer: the loss and every gradient", async () => {
  await againstTorch(GPT2_WIDTH, 0);
});

Deno.test("gradcheck answers bad input with one clear line and a non-zero exit", async () => {
  const good = await fixture();
  const wrongShape = await fixture({ config: { n_embd: 24 } });
  const outOfRange = await fixture({ tokens: { inputs: [[1, 2, 3], [4, 5, 97]], targets: [[1, 2, 3], [4, 5, 6]] } });
  const tooLong = await fixture({ tokens: { inputs: [Array(17).fill(1)], targets: [Array(17).fill(1)] } });
  const ragged = await fixture({ tokens: { inputs: [[1, 2], [3]], targets: [[1, 2], [3]] } });
  const cases: [string[], RegExp][] = [
    [["--weights", "/nonexistent.safetensors", ...good.args.slice(2)], /cannot read \/nonexistent\.safetensors/],
    [wrongShape.args, /tensor "wte\.weight" has shape \[97,48\], the config needs \[97,24\]/],
    [outOfRange.args, /inputs\[1\]\[2\] = 97 is outside the vocabulary 0\.\.96/],
    [tooLong.args, /sequences of 17 tokens exceed n_ctx = 16/],
    [ragged.args, /"inputs" must be 2 sequences of 2 tokens/],
    [good.args.slice(0, 4), /--out is required/],
    [[...good.args, "--bogus"], /Unknown option '--bogus'/],
    [[...good.args, "--steps", "two"], /--steps must be a non-negative integer/],
  ];
  try {
    for (const [args, message] of cases) {
      const run = await gradcheck(args);
      assert.notEqual(run.code, 0, `${args.join(" ")} should fail`);
      assert.match(run.stderr, /^gradcheck: /);
      assert.match(run.stderr, message);
      assert.equal(run.stderr.trim().split("\n").length, 1, `one line, no stack trace:\n${run.stderr}`);
    }
  } finally {
    for (const f of [good, wrongShape, outOfRange, tooLong, ragged]) await Deno.remove(f.dir, { recursive: true });
  }
});
