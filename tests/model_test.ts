// The whole GPT-2 on the GPU against the float64 reference: loss and the gradient of every parameter
// of a 2-layer model on awkward sizes; the reference itself checked by finite differences; two runs
// giving bit-identical results; and splitting changing nothing: a model whose wte is forced across
// several pieces, by a per-binding limit lowered in the test, computes bit-identical losses, gradients,
// gradient norms and AdamW updates (whole, and on a shard that spans pieces) to the same model in one piece.

import assert from "node:assert/strict";
import {
  GPT2,
  type GPT2Config,
  type GPT2Options,
  initialParameters,
  parameterLayout,
  pieceStarts,
} from "../core/model.ts";
import { Rng } from "../core/random.ts";
import { shardRanges } from "../core/shard.ts";
import { readShardParameters, updateShard } from "../core/sharded.ts";
import { DEFAULT_TRAINER_SETTINGS, Trainer } from "../core/trainer.ts";
import { gpt2LossAndGradients, type Tensors } from "./reference.ts";
import { assertClose, testDevice } from "./helpers.ts";

const CONFIG: GPT2Config = { vocab_size: 97, n_ctx: 16, n_embd: 48, n_head: 3, n_layer: 2 };
const B = 3, T = 13;

function randomBatch(seed: number, config = CONFIG, rows = B, time = T) {
  const rng = new Rng(seed);
  const tokens = () => Array.from({ length: rows * time }, () => rng.below(config.vocab_size));
  return { inputs: tokens(), targets: tokens() };
}

/** The flat f32 parameters as named float64 tensors (what the reference takes). */
function toTensors(flat: Float32Array, config = CONFIG): Tensors {
  return new Map(
    parameterLayout(config).specs.map((
      spec,
    ) => [spec.name, Float64Array.from(flat.subarray(spec.offset, spec.offset + spec.size))]),
  );
}

/** Initial parameters with the biases and LayerNorm parameters perturbed, so that their gradients are exercised. */
function testParameters(): Float32Array {
  const params = initialParameters(CONFIG, 42), rng = new Rng(7);
  for (const spec of parameterLayout(CONFIG).specs) {
    if (spec.name.endsWith(".bias") || /ln_.\.weight|ln_f\.weight/.test(spec.name)) {
      for (let i = spec.offset; i < spec.offset + spec.size; i++) params[i] += 0.1 * (rng.uniform() - 0.5);
    }
  }
  return params;
}

async function gpuLossAndGradients(
  device: GPUDevice,
  params: Float32Array,
  batch: { inputs: number[]; targets: number[] },
  { config = CONFIG, rows = B, time = T, options = {} as GPT2Options } = {},
) {
  const model = new GPT2(device, config, rows, time, options);
  try {
    await model.writeParameters(params);
    model.setBatch(batch.inputs, batch.targets);
    const encoder = device.createCommandEncoder();
    model.encodeForward(encoder, true);
    model.encodeBackward(encoder);
    device.queue.submit([encoder.finish()]);
    return { loss: await model.readMeanLoss(), grads: await model.readGradients(), pieces: model.params.pieces.length };
  } finally {
    model.destroy();
  }
}

Deno.test("the float64 reference's gradients agree with finite differences of its loss", () => {
  const params = toTensors(testParameters()), batch = randomBatch(1);
  const { grads } = gpt2LossAndGradients(CONFIG, params, batch.inputs, batch.targets, B, T);
  const rng = new Rng(3), h = 1e-5;
  for (
    const name of [
      "wte.weight",
      "wpe.weight",
      "h.0.ln_1.weight",
      "h.0.attn.c_attn.weight",
      "h.1.attn.c_proj.bias",
      "h.1.mlp.c_fc.weight",
      "h.1.ln_2.bias",
      "ln_f.weight",
    ]
  ) {
    const tensor = params.get(name)!;
    for (let trial = 0; trial < 3; trial++) {
      // wte: pick a row that occurs in the batch, or the gradient is just the lm_head's part.
      const i = name === "wte.weight"
        ? batch.inputs[trial] * CONFIG.n_embd + rng.below(CONFIG.n_embd)
        : rng.below(tensor.length);
      const saved = tensor[i];
      tensor[i] = saved + h;
      const plus = gpt2LossAndGradients(CONFIG, params, batch.inputs, batch.targets, B, T, true).loss;
      tensor[i] = saved - h;
      const minus = gpt2LossAndGradients(CONFIG, params, batch.inputs, batch.targets, B, T, true).loss;
      tensor[i] = saved;
      const numeric = (plus - minus) / (2 * h), analytic = grads.get(name)![i];
      assert.ok(
        Math.abs(numeric - analytic) <= 1e-6 + 1e-4 * Math.abs(analytic),
        `${name}[${i}]: finite difference ${numeric}, backward ${analytic}`,
      );
    }
  }
});

/** The GPU's loss and every gradient against the float64 reference's (relative error < 1e-3). */
async function assertMatchesReference(
  params: Float32Array,
  batch: { inputs: number[]; targets: number[] },
  { config = CONFIG, rows = B, time = T, options = {} as GPT2Options } = {},
) {
  const gpu = await gpuLossAndGradients(await testDevice(), params, batch, { config, rows, time, options });
  const expected = gpt2LossAndGradients(config, toTensors(params, config), batch.inputs, batch.targets, rows, time);
  assert.ok(Math.abs(gpu.loss - expected.loss) / expected.loss < 1e-5, `loss ${gpu.loss} vs ${expected.loss}`);
  for (const spec of parameterLayout(config).specs) {
    assertClose(
      gpu.grads.subarray(spec.offset, spec.offset + spec.size),
      expected.grads.get(spec.name)!,
      1e-3,
      `grad ${spec.name}`,
    );
  }
  return gpu;
}

Deno.test("GPT-2 on the GPU: loss and every parameter's gradient match the float64 reference (relative error < 1e-3)", async () => {
  await assertMatchesReference(testParameters(), randomBatch(2));
});

Deno.test("GPT-2's vocabulary and width (its wte in two pieces under a 128 MiB binding) match the float64 reference", async () => {
  const config: GPT2Config = { vocab_size: 50257, n_ctx: 4, n_embd: 768, n_head: 12, n_layer: 1 };
  const rows = 1, time = 4;
  const options = { maxBindingBytes: 128 * 2 ** 20 }; // the WebGPU default, whatever this adapter allows
  const batch = randomBatch(8, config, rows, time);
  const gpu = await assertMatchesReference(initialParameters(config, 3), batch, { config, rows, time, options });
  assert.ok(gpu.pieces >= 2, `${gpu.pieces} pieces`);
});

Deno.test("two runs of the same step give bit-identical loss and gradients", async () => {
  const device = await testDevice();
  const params = testParameters(), batch = randomBatch(4);
  const first = await gpuLossAndGradients(device, params, batch);
  const second = await gpuLossAndGradients(device, params, batch);
  assert.equal(first.loss, second.loss);
  assert.deepEqual(new Uint32Array(first.grads.buffer), new Uint32Array(second.grads.buffer));
});

// wte (509 x 32 floats, 65152 bytes) is the largest tensor; mlp.c_fc.weight (16384 bytes) the next.
const SPLIT: GPT2Config = { vocab_size: 509, n_ctx: 16, n_embd: 32, n_head: 2, n_layer: 2 };
const LIMIT = 16384;
const SPLIT_B = 2, SPLIT_T = 11;
const SPLIT_SETTINGS = { ...DEFAULT_TRAINER_SETTINGS, batch: SPLIT_B, time: SPLIT_T, lr: 1e-2, maxGradNorm: 0.5 };

const uint32Batch = ({ inputs, targets }: { inputs: number[]; targets: number[] }) => ({
  inputs: Uint32Array.from(inputs),
  targets: Uint32Array.from(targets),
});
/** Bit for bit, naming the first difference (a deepEqual of long arrays takes minutes to describe one). */
function assertSameBits(actual: Float32Array, expected: Float32Array, what: string) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  const [a, b] = [actual, expected].map((values) => new Uint32Array(values.buffer, values.byteOffset, values.length));
  const at = a.findIndex((word, i) => word !== b[i]);
  assert.equal(at, -1, `${what} differ first at [${at}]: ${actual[at]} vs ${expected[at]}`);
}

Deno.test("a lowered binding limit cuts wte into pieces of whole rows, each within the limit", () => {
  const starts = pieceStarts(SPLIT, LIMIT), { specs, totalFloats } = parameterLayout(SPLIT);
  const wte = specs[0];
  const inWte = starts.filter((start) => start > wte.offset && start < wte.offset + wte.size);
  assert.ok(inWte.length >= 3, `wte is cut ${inWte.length} times`);
  for (const start of inWte) assert.equal((start - wte.offset) % SPLIT.n_embd, 0, "a cut between rows");
  [...starts, totalFloats].reduce((previous, next) => {
    assert.ok(next - previous <= LIMIT / 4, `piece [${previous}, ${next}) within the limit`);
    assert.equal(previous % 64, 0, "pieces start on a binding boundary");
    return next;
  });
  assert.throws(() => pieceStarts(SPLIT, 8192), /h\.0\.attn\.c_attn\.weight \(12288 bytes\) does not fit/);
});

Deno.test("wte in pieces: the loss and every gradient are bit-identical to one piece", async () => {
  const device = await testDevice();
  const params = initialParameters(SPLIT, 5), batch = randomBatch(6, SPLIT, SPLIT_B, SPLIT_T);
  const run = (options: GPT2Options) =>
    gpuLossAndGradients(device, params, batch, { config: SPLIT, rows: SPLIT_B, time: SPLIT_T, options });
  const whole = await run({}), split = await run({ maxBindingBytes: LIMIT });
  assert.equal(whole.pieces, 1);
  assert.ok(split.pieces >= 5, `${split.pieces} pieces`);
  assert.equal(split.loss, whole.loss);
  assert.ok(whole.grads.some((g) => g !== 0));
  assertSameBits(split.grads, whole.grads, "gradients");
});

Deno.test("wte in pieces: AdamW steps (the clipped norm over every piece) and a shard's update are bit-identical", async () => {
  const device = await testDevice();
  const trainers = [{}, { maxBindingBytes: LIMIT }].map((options) =>
    new Trainer(device, SPLIT, SPLIT_SETTINGS, undefined, options)
  );
  try {
    const reports = [];
    for (const trainer of trainers) {
      const steps = [];
      for (let i = 0; i < 3; i++) {
        steps.push(await trainer.trainOn(uint32Batch(randomBatch(10 + i, SPLIT, SPLIT_B, SPLIT_T))));
      }
      reports.push(steps.map(({ loss, gradNorm }) => [loss, gradNorm]));
    }
    assert.ok(reports[0][0][1] > 0.5, "the test must exercise clipping");
    assert.deepEqual(reports[1], reports[0]);

    // A shard that starts inside wte's first piece and ends past it.
    const [whole, split] = trainers;
    const shard = shardRanges(whole.model.totalFloats, 3)[0];
    assert.ok(split.model.params.parts(shard.start, shard.end).length > 1, "the shard spans pieces");
    const grads = Float32Array.from({ length: shard.end - shard.start }, (_, i) => Math.sin(i) * 1e-2);
    for (const trainer of trainers) updateShard(trainer, shard, grads, 0.25);
    assertSameBits(await readShardParameters(split, shard), await readShardParameters(whole, shard), "the shard");
    const [a, b] = [await whole.exportState(), await split.exportState()];
    for (const key of ["params", "m", "v"] as const) assertSameBits(b[key], a[key], key);
  } finally {
    for (const trainer of trainers) trainer.destroy();
  }
});
