// The whole GPT-2 on the GPU against the float64 reference: loss and the gradient of every parameter
// of a 2-layer model on awkward sizes; the reference itself checked by finite differences; and two
// runs giving bit-identical results.

import assert from "node:assert/strict";
import { GPT2, type GPT2Config, initialParameters, parameterLayout } from "../core/model.ts";
import { Rng } from "../core/random.ts";
import { gpt2LossAndGradients, type Tensors } from "./reference.ts";
import { assertClose, testDevice } from "./helpers.ts";

const CONFIG: GPT2Config = { vocab_size: 97, n_ctx: 16, n_embd: 48, n_head: 3, n_layer: 2 };
const B = 3, T = 13;

function randomBatch(seed: number) {
  const rng = new Rng(seed);
  const tokens = () => Array.from({ length: B * T }, () => rng.below(CONFIG.vocab_size));
  return { inputs: tokens(), targets: tokens() };
}

/** The flat f32 parameters as named float64 tensors (what the reference takes). */
function toTensors(flat: Float32Array): Tensors {
  return new Map(
    parameterLayout(CONFIG).specs.map((
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
) {
  const model = new GPT2(device, CONFIG, B, T);
  try {
    model.writeParameters(params);
    model.setBatch(batch.inputs, batch.targets);
    const encoder = device.createCommandEncoder();
    model.encodeForward(encoder, true);
    model.encodeBackward(encoder);
    device.queue.submit([encoder.finish()]);
    return { loss: await model.readMeanLoss(), grads: await model.readGradients() };
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

Deno.test("GPT-2 on the GPU: loss and every parameter's gradient match the float64 reference (relative error < 1e-3)", async () => {
  const device = await testDevice();
  const params = testParameters(), batch = randomBatch(2);
  const gpu = await gpuLossAndGradients(device, params, batch);
  const expected = gpt2LossAndGradients(CONFIG, toTensors(params), batch.inputs, batch.targets, B, T);
  assert.ok(Math.abs(gpu.loss - expected.loss) / expected.loss < 1e-5, `loss ${gpu.loss} vs ${expected.loss}`);
  for (const spec of parameterLayout(CONFIG).specs) {
    assertClose(
      gpu.grads.subarray(spec.offset, spec.offset + spec.size),
      expected.grads.get(spec.name)!,
      1e-3,
      `grad ${spec.name}`,
    );
  }
});

Deno.test("two runs of the same step give bit-identical loss and gradients", async () => {
  const device = await testDevice();
  const params = testParameters(), batch = randomBatch(4);
  const first = await gpuLossAndGradients(device, params, batch);
  const second = await gpuLossAndGradients(device, params, batch);
  assert.equal(first.loss, second.loss);
  assert.deepEqual(new Uint32Array(first.grads.buffer), new Uint32Array(second.grads.buffer));
});
