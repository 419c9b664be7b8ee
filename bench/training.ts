// The training section: a full step (forward, backward, AdamW) per model size, ms and tokens/s, ours
// beside the same GPT-2 in TensorFlow.js on its WebGPU backend, from the same weights on the same batches
// (the losses are printed side by side: both implementations compute the same model).

import { BatchLoader, syntheticCorpus } from "../core/data.ts";
import { initialParameters, parameterCount } from "../core/model.ts";
import { DEFAULT_TRAINER_SETTINGS, Trainer } from "../core/trainer.ts";
import { benchModels } from "./kernels.ts";
import { type BenchContext, median, type Section } from "./measure.ts";
import { TfjsGPT2, useTfjsWebGPU } from "./tfjs_gpt2.ts";

// The first steps compile shaders (tfjs compiles per shape on first use): they are run but not timed.
const WARMUP_STEPS = 2;

export const trainingSection: Section = {
  name: "training",
  steps: (quick) => 2 * benchModels(quick).length,
  async run({ device, quick, progress }: BenchContext) {
    const steps = quick ? 3 : 5;
    const peer = await useTfjsWebGPU();
    const corpus = syntheticCorpus(1 << 20, 1);
    const raw = [];
    for (const model of benchModels(quick)) {
      const { config, batch, time } = model;
      // Clipping off and no weight decay: tf.train.adam has neither, and the losses are compared.
      const settings = { ...DEFAULT_TRAINER_SETTINGS, batch, time, lr: 1e-3, weightDecay: 0, maxGradNorm: 0 };
      const trainer = new Trainer(device, config, settings, corpus);
      const ours = { milliseconds: [] as number[], losses: [] as number[] };
      for (let i = 0; i < WARMUP_STEPS + steps; i++) {
        const report = await trainer.trainStep();
        if (i >= WARMUP_STEPS) ours.milliseconds.push(report.milliseconds);
        ours.losses.push(report.loss);
      }
      trainer.destroy();
      progress.step(`training ${model.name}: ours`);

      const theirs = { milliseconds: [] as number[], losses: [] as number[] };
      if (peer) {
        const tfjsModel = new TfjsGPT2(config, initialParameters(config, settings.seed), time, settings.lr);
        const loader = new BatchLoader(corpus, batch, time, settings.seed);
        for (let i = 0; i < WARMUP_STEPS + steps; i++) {
          const start = performance.now();
          theirs.losses.push(await tfjsModel.trainOn(loader.next(), batch, time));
          if (i >= WARMUP_STEPS) theirs.milliseconds.push(performance.now() - start);
        }
        tfjsModel.dispose();
      }
      progress.step(`training ${model.name}: tfjs`);
      raw.push({ model: model.name, config, batch, time, parameters: parameterCount(config), ours, tfjs: theirs });
    }
    const tokensPerSecond = (tokens: number, ms: number[]) =>
      ms.length ? Math.round(tokens / (median(ms) / 1000)).toString() : "n/a";
    return {
      title: "Training step",
      summary: summarizeTraining(raw),
      intro: `A whole step (forward, backward, Adam) on the synthetic corpus: the median of ${steps} steps after ` +
        `${WARMUP_STEPS} warm-up steps. Both start from the same weights and see the same batches; the last ` +
        "column is each side's loss after the last step.",
      header: [
        "model",
        "parameters",
        "batch x seq",
        "ours ms",
        "tfjs ms",
        "ours tokens/s",
        "tfjs tokens/s",
        "speed-up",
        "loss ours / tfjs",
      ],
      rows: raw.map((r) => {
        const tokens = r.batch * r.time, last = WARMUP_STEPS + steps - 1;
        const oursMs = median(r.ours.milliseconds),
          tfjsMs = r.tfjs.milliseconds.length ? median(r.tfjs.milliseconds) : NaN;
        return [
          r.model,
          r.parameters.toLocaleString("en"),
          `${r.batch} x ${r.time}`,
          oursMs.toFixed(1),
          Number.isNaN(tfjsMs) ? "n/a" : tfjsMs.toFixed(1),
          tokensPerSecond(tokens, r.ours.milliseconds),
          tokensPerSecond(tokens, r.tfjs.milliseconds),
          Number.isNaN(tfjsMs) ? "n/a" : `${(tfjsMs / oursMs).toFixed(2)}x`,
          `${r.ours.losses[last].toFixed(4)} / ${r.tfjs.losses[last]?.toFixed(4) ?? "n/a"}`,
        ];
      }),
      raw,
    };
  },
};

/** The largest model's step against TensorFlow.js's. */
function summarizeTraining(
  raw: { model: string; ours: { milliseconds: number[] }; tfjs: { milliseconds: number[] } }[],
) {
  const largest = raw[raw.length - 1], ours = median(largest.ours.milliseconds);
  const peer = largest.tfjs.milliseconds.length ? median(largest.tfjs.milliseconds) : NaN;
  return `${largest.model}: a step in ${ours.toFixed(1)} ms` +
    (Number.isNaN(peer) ? "" : `, TensorFlow.js ${peer.toFixed(1)} ms (${(peer / ours).toFixed(2)}x)`);
}
