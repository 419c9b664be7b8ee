// Training on one node: the loss falls on data with learnable structure, a run resumed from its
// exported state continues bit for bit as if it had never stopped, a cluster machine's trainer with AdamW's
// moments for its shard only updates it as one holding them all, and the memory plan made before anything is
// allocated is what the trainer allocates, or one error that names what would fit.

import assert from "node:assert/strict";
import { syntheticCorpus } from "../core/data.ts";
import { shardRanges } from "../core/shard.ts";
import { readShardParameters, updateShard } from "../core/sharded.ts";
import { type GPT2Config, parameterLayout } from "../core/model.ts";
import {
  DEFAULT_TRAINER_SETTINGS,
  fitMemory,
  type MemoryPlanSettings,
  planMemory,
  Trainer,
  type TrainerSettings,
} from "../core/trainer.ts";
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

Deno.test("a trainer with m and v for its shard only updates the shard bit for bit, in the shard's bytes", async () => {
  const device = await testDevice();
  const settings = { ...SETTINGS, batch: 2, time: 8 }, options = { maxBindingBytes: 40960 }; // wte in pieces
  const whole = new Trainer(device, CONFIG, settings, undefined, options);
  const shard = shardRanges(whole.model.totalFloats, 3)[0];
  const sharded = new Trainer(device, CONFIG, settings, undefined, { ...options, range: shard });
  try {
    const n = shard.end - shard.start;
    assert.ok(sharded.m.parts(shard.start, shard.end).length > 1, "the shard spans pieces");
    const bytes = (trainer: Trainer) => trainer.m.pieces.reduce((sum, piece) => sum + piece.buffer.size, 0);
    assert.equal(bytes(sharded), n * 4);
    assert.equal(bytes(whole), whole.model.totalFloats * 4);
    for (let step = 1; step <= 3; step++) {
      const grads = Float32Array.from({ length: n }, (_, i) => Math.sin(i * step) * 1e-2);
      for (const trainer of [whole, sharded]) updateShard(trainer, shard, grads, 0.25 * step);
    }
    const [a, b] = [await whole.exportState(), await sharded.exportState()];
    const bits = (values: Float32Array) => new Uint32Array(values.buffer, values.byteOffset, values.length);
    assert.deepEqual(bits(await readShardParameters(sharded, shard)), bits(await readShardParameters(whole, shard)));
    assert.deepEqual(bits(b.m), bits(a.m.slice(shard.start, shard.end)));
    assert.deepEqual(bits(b.v), bits(a.v.slice(shard.start, shard.end)));
    assert.ok(b.m.some((value) => value !== 0), "the moments moved");
    // The rest of the state is not the sharded trainer's to update, nor to be given moments for.
    const rest = shardRanges(whole.model.totalFloats, 3)[1];
    assert.throws(
      () => updateShard(sharded, rest, new Float32Array(rest.end - rest.start), 1),
      /holds AdamW's moments for \[0, \d+\) only/,
    );
    assert.throws(() => sharded.importState(a), /m has \d+ floats, expected \d+/);
  } finally {
    whole.destroy();
    sharded.destroy();
  }
});

const PLAN: MemoryPlanSettings = {
  config: CONFIG,
  batch: 8,
  time: 24,
  machines: 4,
  slotsPerOwner: 3,
  captureBuffers: 2,
  owners: 2,
  checkpointBytes: 100_000,
  chunkBytes: 65536,
};

Deno.test("the memory plan's parameters, gradients, moments and activations are what a machine's trainer allocates", async () => {
  // The plan is the largest machine's: the trainer holds the moments of the largest of the 4 shards.
  const shards = shardRanges(parameterLayout(CONFIG).totalFloats, 4);
  const range = shards.reduce((a, b) => b.end - b.start > a.end - a.start ? b : a);
  const trainer = new Trainer(await testDevice(), CONFIG, SETTINGS, CORPUS, { range });
  try {
    const plan = planMemory(PLAN);
    const planned = plan.gpu.slice(0, 4).reduce((sum, [, bytes]) => sum + bytes, 0); // all but the checkpoint staging
    const moments = [trainer.m, trainer.v].flatMap((flat) => flat.pieces).reduce((sum, p) => sum + p.buffer.size, 0);
    assert.equal(planned, trainer.model.allocatedBytes + moments);
    assert.equal(plan.host[0][1], 3 * 2 * 100_000);
  } finally {
    trainer.destroy();
  }
});

Deno.test("a plan that does not fit is one error naming the largest batch and sequence that would", () => {
  const unlimited = { bindingBytes: 2 ** 40, availableBytes: 2 ** 50, gpuInHostMemory: true };
  assert.equal(fitMemory(PLAN, unlimited).gpuBytes, planMemory(PLAN).gpuBytes);
  // Memory for exactly batch 5 (at sequence 24) on 4 machines.
  const at = (batch: number, time: number) => {
    const plan = planMemory({ ...PLAN, batch, time });
    return 4 * (plan.gpuBytes + plan.hostBytes);
  };
  const budget = { ...unlimited, availableBytes: at(5, 24) };
  assert.throws(
    () => fitMemory(PLAN, budget),
    (error: Error) => {
      assert.match(error.message, /^batch 8 x sequence 24 does not fit: 4 machines need .* GiB/);
      const time = [...Array(24).keys()].map((t) => t + 1).filter((t) => at(8, t) <= budget.availableBytes).at(-1);
      assert.ok(
        error.message.endsWith(`the largest that would: batch 5 at sequence 24, or sequence ${time} at batch 8`),
      );
      return true;
    },
  );
  // The logits, [B,T,V] floats, are the largest buffer: bound by the binding limit instead.
  assert.throws(
    () => fitMemory(PLAN, { ...unlimited, bindingBytes: 3 * 24 * 256 * 4 }),
    /its logits \(196608 bytes\) exceeds the adapter's largest storage binding \(73728 bytes\); the largest that would: batch 3 at sequence 24, or sequence 9 at batch 8/,
  );
});
