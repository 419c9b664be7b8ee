// GPT-2 at its published size on this adapter: training steps (ms and tokens/s, the first with its shader
// compilation), the memory plan's GPU bytes beside what the trainer allocated, and generation in tokens/s;
// beside our steps, the TensorFlow.js peer's on the same batches, or why it could not take one (as it
// failed: a thrown error, a GPU error tfjs only logs, or a loss that is not a number). On a software adapter
// it takes minutes. Last, the memory plan of a cluster machine against the peak RSS a Worker cluster took.

import { generate, GPT2, type GPT2Config, initialParameters, MODEL_PRESETS } from "../core/model.ts";
import { Rng } from "../core/random.ts";
import { DEFAULT_TRAINER_SETTINGS, planMemory, Trainer, type TrainerSettings } from "../core/trainer.ts";
import type { Batch } from "../core/data.ts";
import type { BenchContext, Section } from "./measure.ts";
import { tfjsDevice, TfjsGPT2, useTfjsWebGPU } from "./tfjs_gpt2.ts";
import { measureClusterPeakApart } from "./memory-plan.ts";

export interface Gpt2Measurement {
  config: GPT2Config;
  batch: number;
  time: number;
  /** Pieces each of params, grads, m and v is held in on this adapter. */
  pieces: number;
  /** Every training step, in order: the first compiles the shaders. */
  steps: { milliseconds: number; tokensPerSecond: number; loss: number }[];
  /** TensorFlow.js's steps on the same batches from the same weights, or why it could not train. */
  tfjs: { steps: { milliseconds: number; loss: number }[] } | { error: string };
  /** The plan's parameters, gradients, moments and activations, and what the trainer allocated for them. */
  plannedGpuBytes: number;
  allocatedGpuBytes: number;
  /** Greedy tokens after a one-token prompt, timed after the first (which compiles the sampler). */
  generation: { tokens: number; tokensPerSecond: number };
}

/** Measures `steps` training steps of GPT-2 (124M by default) on random tokens and `tokens` generated ones. */
export async function measureGpt2(
  device: GPUDevice,
  { config = MODEL_PRESETS.gpt2, batch = 1, time = 16, steps = 3, tokens = 4 } = {},
): Promise<Gpt2Measurement> {
  const settings = { ...DEFAULT_TRAINER_SETTINGS, batch, time };
  const trainer = new Trainer(device, config, settings);
  const rng = new Rng(1), random = () => Uint32Array.from({ length: batch * time }, () => rng.below(config.vocab_size));
  const batches = Array.from({ length: steps }, () => ({ inputs: random(), targets: random() }));
  const measured: Gpt2Measurement["steps"] = [];
  let pieces, allocatedGpuBytes;
  try {
    for (const batch of batches) {
      const { milliseconds, tokensPerSecond, loss } = await trainer.trainOn(batch);
      measured.push({ milliseconds, tokensPerSecond, loss });
    }
    pieces = trainer.model.params.pieces.length;
    allocatedGpuBytes = trainer.model.allocatedBytes +
      [trainer.m, trainer.v].flatMap((flat) => flat.pieces).reduce((sum, piece) => sum + piece.buffer.size, 0);
  } finally {
    trainer.destroy();
  }
  // The checkpoint staging (the plan's last GPU line) belongs to a checkpointer, not to the trainer.
  const plan = planMemory({
    config,
    batch,
    time,
    machines: 1,
    slotsPerOwner: 1,
    captureBuffers: 1,
    owners: 1,
    checkpointBytes: 0,
    chunkBytes: 1 << 20,
  });
  const plannedGpuBytes = plan.gpu.slice(0, 4).reduce((sum, [, bytes]) => sum + bytes, 0);

  const model = new GPT2(device, config, 1, 1 + tokens);
  let generation;
  try {
    const settings = { tokens, temperature: 0, topK: 0, seed: 1 };
    let started = 0, count = 0;
    for await (const _ of generate(device, model, [0], settings)) {
      if (count++ === 0) started = performance.now();
    }
    generation = { tokens: count - 1, tokensPerSecond: (count - 1) / ((performance.now() - started) / 1000) };
  } finally {
    model.destroy();
  }
  // Last, and on its own device: whatever tfjs does to its device cannot touch our measurements.
  const tfjs = await measureTfjs(config, initialParameters(config, settings.seed), batches, settings);
  return { config, batch, time, pieces, steps: measured, tfjs, plannedGpuBytes, allocatedGpuBytes, generation };
}

/** The TensorFlow.js peer's steps on `batches`, or the first reason it could not take one. */
async function measureTfjs(
  config: GPT2Config,
  params: Float32Array,
  batches: Batch[],
  { batch, time, lr }: TrainerSettings,
): Promise<Gpt2Measurement["tfjs"]> {
  if (!await useTfjsWebGPU()) return { error: "tfjs's WebGPU backend did not start on this adapter" };
  // tfjs logs a GPU error (a buffer over the binding limit, memory) and goes on with garbage: catch them.
  const gpu = tfjsDevice();
  gpu.pushErrorScope("out-of-memory");
  gpu.pushErrorScope("validation");
  const steps: { milliseconds: number; loss: number }[] = [];
  let thrown: string | undefined, model: TfjsGPT2 | undefined;
  try {
    model = new TfjsGPT2(config, params, time, lr);
    for (const each of batches) {
      const start = performance.now();
      const loss = await model.trainOn(each, batch, time);
      steps.push({ milliseconds: performance.now() - start, loss });
      if (!Number.isFinite(loss)) break;
    }
  } catch (error) {
    thrown = (error as Error).message;
  } finally {
    model?.dispose();
  }
  const validation = await gpu.popErrorScope(), memory = await gpu.popErrorScope();
  const notANumber = steps.find((step) => !Number.isFinite(step.loss));
  const reason = thrown ?? validation?.message ?? memory?.message ??
    (notANumber ? `a loss of ${notANumber.loss} at step ${steps.indexOf(notANumber) + 1}` : undefined);
  return reason === undefined ? { steps } : { error: reason.split("\n")[0].slice(0, 300) };
}

/** The bench's GPT-2 section: 124M training steps and generation on this adapter, and the memory plan's check. */
export const gpt2Section: Section = {
  name: "gpt2",
  steps: () => 2,
  async run({ device, quick, progress }: BenchContext) {
    const measured = await measureGpt2(device, quick ? { steps: 2, tokens: 2 } : {});
    progress.step("GPT-2 124M");
    // Every checkpoint slot is written by iteration 3, and the first persistent copy taken at 4.
    const cluster = await measureClusterPeakApart(4, quick ? 3 : 5);
    progress.step("cluster memory");
    const mib = (bytes: number) => `${(bytes / 2 ** 20).toFixed(1)} MiB`;
    const over = `${(100 * (cluster.measuredBytes / cluster.plannedBytes - 1)).toFixed(1)}%`;
    const later = measured.steps.slice(1), tokens = measured.batch * measured.time;
    const mean = later.reduce((sum, step) => sum + step.milliseconds, 0) / later.length;
    const gib = (bytes: number) => `${(bytes / 2 ** 30).toFixed(3)} GiB`;
    return {
      title: "GPT-2 124M at its published size",
      summary:
        `${(tokens / (mean / 1000)).toFixed(2)} tokens/s training (batch ${measured.batch} x ${measured.time}), ` +
        `${measured.generation.tokensPerSecond.toFixed(3)} tokens/s generating; planned GPU bytes ${
          measured.plannedGpuBytes === measured.allocatedGpuBytes ? "equal" : "differ from"
        } what was allocated; TensorFlow.js ${
          "error" in measured.tfjs ? "could not train it" : `${tfjsTokensPerSecond(measured)} tokens/s`
        }; a 4-machine cluster's peak RSS ${over} off its memory plan`,
      intro: `GPT-2 124M (${measured.pieces} pieces per flat buffer under this adapter's binding limit), random ` +
        `tokens, batch ${measured.batch} x ${measured.time}: each training step (the first compiles the shaders), ` +
        `greedy generation after it has compiled, and the memory plan's parameters, gradients, moments and ` +
        `activations beside what the trainer allocated. Then TensorFlow.js (its WebGPU backend, tf.train.adam) ` +
        `from the same weights on the same batches: its steps, or the reason it could not take one, as it failed. ` +
        `Last, ${cluster.machines} Worker machines train a ${cluster.parameters}-parameter GPT-2 (batch 1 x 16) ` +
        `for ${cluster.iterations} iterations: the process's peak RSS, less its RSS before, against ${cluster.machines} ` +
        `x the memory plan (GPU + host; on a software adapter GPU memory is host memory).`,
      header: ["measure", "value"],
      rows: [
        ...measured.steps.map((step, i) => [
          `training step ${i + 1}${i === 0 ? " (compiles)" : ""}`,
          `${(step.milliseconds / 1000).toFixed(1)} s, ${step.tokensPerSecond.toFixed(2)} tokens/s`,
        ]),
        [
          "generation",
          `${measured.generation.tokensPerSecond.toFixed(3)} tokens/s (${measured.generation.tokens} tokens)`,
        ],
        ["GPU bytes planned", gib(measured.plannedGpuBytes)],
        ["GPU bytes allocated", gib(measured.allocatedGpuBytes)],
        [`cluster memory plan (${cluster.machines} x (GPU + host))`, mib(cluster.plannedBytes)],
        [
          "cluster peak RSS measured",
          `${mib(cluster.measuredBytes)} over ${mib(cluster.baselineBytes)} before it: ${over} off the plan`,
        ],
        ...("error" in measured.tfjs ? [["TensorFlow.js", `could not train: ${measured.tfjs.error}`]] : measured.tfjs
          .steps.map((step, i) => [
            `TensorFlow.js step ${i + 1}${i === 0 ? " (compiles)" : ""}`,
            `${(step.milliseconds / 1000).toFixed(1)} s, loss ${step.loss.toFixed(4)} (ours ${
              measured.steps[i].loss.toFixed(4)
            })`,
          ])),
      ],
      raw: { ...measured, cluster },
    };
  },
};

/** TensorFlow.js's tokens/s over its steps after the first (which compiles), as ours are counted. */
function tfjsTokensPerSecond(measured: Gpt2Measurement): string {
  if ("error" in measured.tfjs) return "n/a";
  const later = measured.tfjs.steps.slice(1), tokens = measured.batch * measured.time;
  const mean = later.reduce((sum, step) => sum + step.milliseconds, 0) / later.length;
  return (tokens / (mean / 1000)).toFixed(2);
}
