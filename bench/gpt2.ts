// GPT-2 at its published size on this adapter: training steps (ms and tokens/s, the first with its shader
// compilation), the memory plan's GPU bytes beside what the trainer allocated, and generation in tokens/s.
// For the bench to wire as rows; on a software adapter one call takes minutes.

import { generate, GPT2, type GPT2Config, MODEL_PRESETS } from "../core/model.ts";
import { Rng } from "../core/random.ts";
import { DEFAULT_TRAINER_SETTINGS, planMemory, Trainer } from "../core/trainer.ts";

export interface Gpt2Measurement {
  config: GPT2Config;
  batch: number;
  time: number;
  /** Pieces each of params, grads, m and v is held in on this adapter. */
  pieces: number;
  /** Every training step, in order: the first compiles the shaders. */
  steps: { milliseconds: number; tokensPerSecond: number; loss: number }[];
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
  const trainer = new Trainer(device, config, { ...DEFAULT_TRAINER_SETTINGS, batch, time });
  const rng = new Rng(1), random = () => Uint32Array.from({ length: batch * time }, () => rng.below(config.vocab_size));
  const measured: Gpt2Measurement["steps"] = [];
  let pieces, allocatedGpuBytes;
  try {
    for (let i = 0; i < steps; i++) {
      const { milliseconds, tokensPerSecond, loss } = await trainer.trainOn({ inputs: random(), targets: random() });
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
  return { config, batch, time, pieces, steps: measured, plannedGpuBytes, allocatedGpuBytes, generation };
}
