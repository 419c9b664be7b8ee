// Training on one node: the loss falls on data with learnable structure, and a run resumed from its
// exported state continues bit for bit as if it had never stopped.

import assert from "node:assert/strict";
import { syntheticCorpus } from "../core/data.ts";
import type { GPT2Config } from "../core/model.ts";
import { DEFAULT_TRAINER_SETTINGS, Trainer, type TrainerSettings } from "../core/trainer.ts";
import { testDevice } from "./helpers.ts";

const CONFIG: GPT2Config = { vocab_size: 256, n_ctx: 32, n_embd: 48, n_head: 3, n_layer: 2 };
const SETTINGS: TrainerSettings = { ...DEFAULT_TRAINER_SETTINGS, batch: 8, time: 24, lr: 1e-2 };
const CORPUS = syntheticCorpus(50_000, 1);

Deno.test("the loss on the synthetic corpus falls well below its starting value", async () => {
  const trainer = new Trainer(await testDevice(), CONFIG, SETTINGS, CORPUS);
  try {
    const losses: number[] = [];
    for (let i = 0; i < 80; i++) losses.push((await trainer.trainStep()).loss);
    assert.ok(Math.abs(losses[0] - Math.log(256)) < 0.2, `an untrained model is near ln(256): ${losses[0]}`);
    const last = losses.slice(-5).reduce((a, b) => a + b) / 5;
    assert.ok(last < 0.6 * losses[0], `mean of the last 5 losses ${last} vs first ${losses[0]}`);
  } finally {
    trainer.destroy();
  }
});

Deno.test("a run resumed from its exported state continues bit for bit", async () => {
  const device = await testDevice();
  const original = new Trainer(device, CONFIG, SETTINGS, CORPUS);
  const resumed = new Trainer(device, CONFIG, { ...SETTINGS, seed: 99 }, CORPUS); // its own start is overwritten
  try {
    for (let i = 0; i < 3; i++) await original.trainStep();
    const saved = await original.exportState();
    const expected = [];
    for (let i = 0; i < 3; i++) expected.push((await original.trainStep()).loss);

    resumed.importState(saved);
    const actual = [];
    for (let i = 0; i < 3; i++) actual.push((await resumed.trainStep()).loss);
    assert.deepEqual(actual, expected);
    const [a, b] = [await original.exportState(), await resumed.exportState()];
    assert.equal(b.step, 6);
    assert.deepEqual(b.data, a.data);
    for (const key of ["params", "m", "v"] as const) {
      assert.deepEqual(new Uint32Array(b[key].buffer), new Uint32Array(a[key].buffer), `${key} differ`);
    }
  } finally {
    original.destroy();
    resumed.destroy();
  }
});
