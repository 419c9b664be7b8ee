// The kernels section: matmul GFLOP/s for the layer shapes of GPT-2 training steps, ours beside
// TensorFlow.js's WebGPU matMul on the same adapter and the same shapes and transposes.

import * as tf from "@tensorflow/tfjs";
import { storageBuffer, storageBufferFrom } from "../core/gpu.ts";
import { type GPT2Config, MODEL_PRESETS } from "../core/model.ts";
import { seededFloats } from "../core/random.ts";
import { readBuffer } from "../core/gpu.ts";
import { Matmul, type MatmulLayout } from "../kernels/matmul.ts";
import { type BenchContext, median, type Section, time } from "./measure.ts";
import { useTfjsWebGPU } from "./tfjs_gpt2.ts";

/** The models and batch shapes the kernel and training sections measure. */
export function benchModels(quick: boolean): { name: string; config: GPT2Config; batch: number; time: number }[] {
  const models = [{ name: "tiny", config: MODEL_PRESETS.tiny, batch: 8, time: 32 }];
  if (!quick) {
    models.push({ name: "small", config: MODEL_PRESETS.small, batch: 8, time: 64 });
    models.push({ name: "medium", config: MODEL_PRESETS.medium, batch: 4, time: 128 });
  }
  return models;
}

interface Shape {
  what: string;
  m: number;
  n: number;
  k: number;
  layout: MatmulLayout;
}

function layerShapes(config: GPT2Config, rows: number): Shape[] {
  const C = config.n_embd, V = config.vocab_size;
  return [
    { what: "attn.c_attn  x·W", m: rows, n: 3 * C, k: C, layout: {} },
    { what: "mlp.c_fc  x·W", m: rows, n: 4 * C, k: C, layout: {} },
    { what: "mlp.c_proj  x·W", m: rows, n: C, k: 4 * C, layout: {} },
    { what: "lm_head  x·wteᵀ", m: rows, n: V, k: C, layout: { transposeB: true } },
    { what: "mlp.c_fc backward  dy·Wᵀ", m: rows, n: C, k: 4 * C, layout: { transposeB: true } },
    { what: "mlp.c_fc backward  xᵀ·dy", m: C, n: 4 * C, k: rows, layout: { transposeA: true } },
  ];
}

// Each timing runs this many matmuls back to back and reads the result once, so that the readback
// (slow on software adapters) does not dominate either side.
const BATCHED = 10;

async function timeOurs(device: GPUDevice, shape: Shape, repeats: number): Promise<number> {
  const { m, n, k, layout } = shape;
  const a = storageBufferFrom(device, seededFloats(m * k, 1), "bench A");
  const b = storageBufferFrom(device, seededFloats(k * n, 2), "bench B");
  const out = storageBuffer(device, m * n * 4, "bench out");
  const kernel = new Matmul(device, layout);
  try {
    const seconds = await time(repeats, () => {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      for (let i = 0; i < BATCHED; i++) kernel.encode(pass, out, a, b, null, m, n, k);
      pass.end();
      device.queue.submit([encoder.finish()]);
      return readBuffer(device, out);
    });
    return median(seconds) / BATCHED;
  } finally {
    for (const buffer of [a, b, out]) buffer.destroy();
  }
}

async function timeTfjs(shape: Shape, repeats: number): Promise<number> {
  const { m, n, k, layout } = shape;
  const a = tf.tensor(seededFloats(m * k, 1), layout.transposeA ? [k, m] : [m, k]);
  const b = tf.tensor(seededFloats(k * n, 2), layout.transposeB ? [n, k] : [k, n]);
  try {
    const seconds = await time(repeats, async () => {
      const results = Array.from(
        { length: BATCHED },
        () => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D, layout.transposeA, layout.transposeB),
      );
      await results[BATCHED - 1].data();
      tf.dispose(results);
    });
    return median(seconds) / BATCHED;
  } finally {
    tf.dispose([a, b]);
  }
}

export const kernelsSection: Section = {
  name: "kernels",
  steps: (quick) => benchModels(quick).reduce((sum, model) => sum + layerShapes(model.config, 1).length, 0),
  async run({ device, quick, progress }: BenchContext) {
    const repeats = quick ? 3 : 5;
    const peer = await useTfjsWebGPU();
    const raw = [];
    for (const model of benchModels(quick)) {
      for (const shape of layerShapes(model.config, model.batch * model.time)) {
        const flop = 2 * shape.m * shape.n * shape.k;
        const ours = await timeOurs(device, shape, repeats);
        const theirs = peer ? await timeTfjs(shape, repeats) : NaN;
        raw.push({ model: model.name, ...shape, flop, oursSeconds: ours, tfjsSeconds: theirs });
        progress.step(`matmul ${model.name} ${shape.what}`);
      }
    }
    const gflops = (flop: number, seconds: number) => Number.isNaN(seconds) ? "n/a" : (flop / seconds / 1e9).toFixed(2);
    return {
      title: "Matmul kernels",
      summary: summarizeKernels(raw),
      intro:
        `GFLOP/s of one matmul, the median over ${repeats} runs of ${BATCHED} back to back, for the layer shapes of ` +
        `each model's training step (rows = batch x sequence). Peer: TensorFlow.js ${tf.version.tfjs} WebGPU matMul` +
        `${peer ? "" : " (could not start here)"}, same adapter, same shapes and transposes.`,
      header: ["model", "layer", "M x N x K", "ours GFLOP/s", "tfjs GFLOP/s", "ours / tfjs"],
      rows: raw.map((r) => [
        r.model,
        r.what,
        `${r.m} x ${r.n} x ${r.k}`,
        gflops(r.flop, r.oursSeconds),
        gflops(r.flop, r.tfjsSeconds),
        Number.isNaN(r.tfjsSeconds) ? "n/a" : (r.tfjsSeconds / r.oursSeconds).toFixed(2),
      ]),
      raw,
    };
  },
};

/** The median of our speed over TensorFlow.js's across the shapes measured against it. */
function summarizeKernels(raw: { oursSeconds: number; tfjsSeconds: number }[]): string {
  const ratios = raw.filter((r) => !Number.isNaN(r.tfjsSeconds)).map((r) => r.tfjsSeconds / r.oursSeconds);
  return ratios.length
    ? `our matmul at ${median(ratios).toFixed(2)}x TensorFlow.js's speed (median over ${ratios.length} layer shapes)`
    : "TensorFlow.js could not start here: no peer";
}
