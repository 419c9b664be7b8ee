// `deno task gradcheck`: its output against the float64 reference and, where Debian's python3-torch is
// installed, against an independent PyTorch GPT-2; and one clear line for every kind of bad input.

import assert from "node:assert/strict";
import { type GPT2Config, initialParameters, parameterLayout } from "../core/model.ts";
import { Rng } from "../core/random.ts";
import { parseSafetensors, tensorAsF32 } from "../core/safetensors.ts";
import { parametersToSafetensors } from "../core/weights.ts";
import { gpt2LossAndGradients } from "./reference.ts";
import { assertClose } from "./helpers.ts";

const CONFIG: GPT2Config = { vocab_size: 97, n_ctx: 16, n_embd: 48, n_head: 3, n_layer: 2 };
const B = 3, T = 13;
const ROOT = new URL("..", import.meta.url).pathname;
const TORCH_PYTHON = "/usr/bin/python3";

async function gradcheck(args: string[]) {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["task", "--quiet", "gradcheck", ...args],
    cwd: ROOT,
  }).output();
  return { code, stdout: new TextDecoder().decode(stdout), stderr: new TextDecoder().decode(stderr) };
}

/** A temporary folder with W.safetensors (seeded weights) and T.json (a seeded batch). */
async function fixture(overrides: { config?: Partial<GPT2Config>; tokens?: Record<string, unknown> } = {}) {
  const dir = await Deno.makeTempDir();
  const params = initialParameters(CONFIG, 11);
  // Perturb biases and LayerNorm parameters so that no gradient is trivially zero.
  const rng = new Rng(5);
  for (let i = 0; i < params.length; i++) params[i] += 0.02 * (rng.uniform() - 0.5);
  await Deno.writeFile(`${dir}/W.safetensors`, parametersToSafetensors(params, CONFIG));
  const row = () => Array.from({ length: T }, () => rng.below(CONFIG.vocab_size));
  const batch = { inputs: Array.from({ length: B }, row), targets: Array.from({ length: B }, row) };
  await Deno.writeTextFile(
    `${dir}/T.json`,
    JSON.stringify({ ...batch, config: { ...CONFIG, ...overrides.config }, ...overrides.tokens }),
  );
  return {
    dir,
    params,
    batch,
    args: ["--weights", `${dir}/W.safetensors`, "--tokens", `${dir}/T.json`, "--out", `${dir}/O.safetensors`],
  };
}

function named(params: Float32Array) {
  return new Map(
    parameterLayout(CONFIG).specs.map((s) => [s.name, Float64Array.from(params.subarray(s.offset, s.offset + s.size))]),
  );
}

Deno.test("gradcheck writes the loss and every gradient, matching the float64 reference", async () => {
  const { dir, params, batch, args } = await fixture();
  try {
    const run = await gradcheck(args);
    assert.equal(run.code, 0, run.stderr);
    const out = parseSafetensors(await Deno.readFile(`${dir}/O.safetensors`));
    const expected = gpt2LossAndGradients(CONFIG, named(params), batch.inputs.flat(), batch.targets.flat(), B, T);
    assertClose(tensorAsF32(out, "loss", []), [expected.loss], 1e-5, "loss");
    for (const spec of parameterLayout(CONFIG).specs) {
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

Deno.test({
  name: "gradcheck agrees with PyTorch: loss, gradients, and 3 AdamW steps (losses and parameters)",
  ignore: !(await hasTorch()),
  fn: async () => {
    const { dir, args } = await fixture();
    try {
      const steps = ["3", "1e-3", "0.1"];
      const run = await gradcheck([...args, "--steps", steps[0], "--lr", steps[1], "--weight-decay", steps[2]]);
      assert.equal(run.code, 0, run.stderr);
      const torch = await new Deno.Command(TORCH_PYTHON, {
        args: [`${ROOT}tests/torch_gpt2.py`, `${dir}/W.safetensors`, `${dir}/T.json`, `${dir}/R.safetensors`, ...steps],
      }).output();
      assert.ok(torch.success, new TextDecoder().decode(torch.stderr));
      const ours = parseSafetensors(await Deno.readFile(`${dir}/O.safetensors`));
      const theirs = parseSafetensors(await Deno.readFile(`${dir}/R.safetensors`));
      const compare = (name: string, shape: number[], tolerance: number) =>
        assertClose(tensorAsF32(ours, name, shape), tensorAsF32(theirs, name, shape), tolerance, name);
      compare("loss", [], 1e-5);
      compare("losses", [3], 1e-5);
      const before = parseSafetensors(await Deno.readFile(`${dir}/W.safetensors`));
      for (const spec of parameterLayout(CONFIG).specs) {
        compare(`grad.${spec.name}`, spec.shape, 1e-3);
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
  },
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
