// Checkpoints of a training run: from the GPU into host memory and back onto the GPU bit for bit, with
// training held up only for the capture's start; and a whole state through a standard safetensors file.

import assert from "node:assert/strict";
import { CheckpointCapture } from "../core/capture.ts";
import { encodeShard, writeShard } from "../core/checkpoint.ts";
import { Checkpointer } from "../core/checkpointing.ts";
import { storageBufferFrom } from "../core/gpu.ts";
import { seededFloats } from "../core/random.ts";
import { BatchLoader, syntheticCorpus } from "../core/data.ts";
import { InMemoryCheckpointStore } from "../core/memory-store.ts";
import { parseSafetensors } from "../core/safetensors.ts";
import { shardRanges } from "../core/shard.ts";
import { NoCheckpointError } from "../core/store.ts";
import { DEFAULT_TRAINER_SETTINGS, Trainer, type TrainerState } from "../core/trainer.ts";
import { trainerStateFromSafetensors, trainerStateToSafetensors } from "../core/weights.ts";
import { CONFIG, shardMeta } from "./checkpoint_fixtures.ts";
import { testDevice } from "./helpers.ts";

const SETTINGS = { ...DEFAULT_TRAINER_SETTINGS, batch: 2, time: 12 };
const CORPUS = syntheticCorpus(20_000, 3, 97);

function assertSameState(actual: TrainerState, expected: TrainerState) {
  assert.equal(actual.step, expected.step);
  assert.deepEqual(actual.data, expected.data);
  for (const key of ["params", "m", "v"] as const) {
    assert.deepEqual(new Uint32Array(actual[key].buffer), new Uint32Array(expected[key].buffer), `${key} differ`);
  }
}

Deno.test("a checkpoint taken from the GPU into memory every step restores onto the GPU bit for bit", async () => {
  const device = await testDevice();
  const store = InMemoryCheckpointStore.create(0, 8 << 20);
  const original = new Trainer(device, CONFIG, SETTINGS, CORPUS);
  const checkpointer = new Checkpointer(original, store);
  const resumed = new Trainer(device, CONFIG, { ...SETTINGS, seed: 5 }, CORPUS);
  try {
    for (let i = 0; i < 3; i++) {
      await original.trainStep();
      const { blockedMilliseconds, published } = await checkpointer.afterStep();
      const timing = await published;
      assert.equal(timing.entry.iteration, i + 1);
      assert.ok(blockedMilliseconds <= timing.totalMilliseconds);
    }
    assert.deepEqual((await store.entries(0)).map((e) => e.iteration), [3, 2, 1]);
    const expectedLosses = [(await original.trainStep()).loss, (await original.trainStep()).loss];

    const restorer = new Checkpointer(resumed, store);
    const loaded = await restorer.restore();
    restorer.destroy();
    assert.equal(loaded.entry.iteration, 3);
    assert.equal(resumed.step, 3);
    assert.deepEqual([(await resumed.trainStep()).loss, (await resumed.trainStep()).loss], expectedLosses);
    assertSameState(await resumed.exportState(), await original.exportState());
  } finally {
    checkpointer.destroy();
    original.destroy();
    resumed.destroy();
  }
});

Deno.test("a capture through one staging buffer waits for the last to be written out before it copies", async () => {
  const device = await testDevice();
  const store = InMemoryCheckpointStore.create(0, 8 << 20);
  const original = new Trainer(device, CONFIG, SETTINGS, CORPUS);
  const checkpointer = new Checkpointer(original, store, { captureBuffers: 1 });
  const resumed = new Trainer(device, CONFIG, { ...SETTINGS, seed: 5 }, CORPUS);
  try {
    await original.trainStep();
    const first = await original.model.readParameters(), second = first.map((value) => value / 2);
    const checkpoints = [await checkpointer.afterStep()];
    // The state changes at once, without waiting for the GPU: the next capture's copy is queued right away.
    original.model.params.write(0, second);
    original.step++;
    checkpoints.push(await checkpointer.afterStep());
    await Promise.all(checkpoints.map(({ published }) => published));
    const restorer = new Checkpointer(resumed, store);
    for (const [iteration, params] of [[1, first], [2, second]] as const) {
      await restorer.restore(iteration);
      assert.deepEqual(await resumed.model.readParameters(), params, `checkpoint ${iteration}`);
    }
    restorer.destroy();
  } finally {
    checkpointer.destroy();
    original.destroy();
    resumed.destroy();
  }
});

Deno.test("a machine's shard is checkpointed in order with its own data order, and one that fails before its commit is never published", async () => {
  const device = await testDevice();
  const store = InMemoryCheckpointStore.create(0, 8 << 20);
  const original = new Trainer(device, CONFIG, SETTINGS, CORPUS);
  const resumed = new Trainer(device, CONFIG, { ...SETTINGS, seed: 5 }, CORPUS);
  const shard = shardRanges(original.model.totalFloats, 2)[1];
  // The global batch's order, as a cluster machine draws it: not the trainer's.
  const loader = new BatchLoader(CORPUS, 4, SETTINGS.time, 7),
    restoredLoader = new BatchLoader(CORPUS, 4, SETTINGS.time, 8);
  const saved: number[] = [];
  const checkpointer = new Checkpointer(original, store, {
    shard,
    data: loader,
    beforeCommit: ({ iteration }) => {
      if (iteration === 2) throw new Error("died in the middle of writing checkpoint 2");
    },
    afterSave: (entry) => saved.push(entry.iteration),
  });
  const restorer = new Checkpointer(resumed, store, { shard, data: restoredLoader });
  try {
    const published = [];
    for (let i = 0; i < 3; i++) {
      await original.trainStep();
      loader.next();
      published.push((await checkpointer.afterStep()).published); // not awaited: each waits for the one before
    }
    const outcomes = await Promise.allSettled(published);
    assert.deepEqual(outcomes.map((outcome) => outcome.status), ["fulfilled", "rejected", "fulfilled"]);
    assert.deepEqual(saved, [1, 3]);
    assert.deepEqual((await store.entries(0)).map((e) => e.iteration), [3, 1]);

    await assert.rejects(restorer.restore(2), NoCheckpointError); // never published
    assert.equal((await restorer.restore()).entry.iteration, 3);
    assert.equal(resumed.step, 3);
    assert.deepEqual(restoredLoader.state, loader.state);
    const [expected, actual] = [await original.exportState(), await resumed.exportState()];
    for (const key of ["params", "m", "v"] as const) {
      const range = (state: TrainerState) => new Uint32Array(state[key].buffer).subarray(shard.start, shard.end);
      assert.deepEqual(range(actual), range(expected), `${key} differ`);
    }
  } finally {
    checkpointer.destroy();
    restorer.destroy();
    original.destroy();
    resumed.destroy();
  }
});

Deno.test("the GPU's chunk checksums of a captured shard equal the host's, over a range and a partial last chunk", async () => {
  const device = await testDevice();
  const total = 5_000, start = 1_234, end = 4_321, chunkBytes = 4096; // 3 x 3,087 floats: 9 full chunks and a part
  const tensors = [1, 2, 3].map((seed) => seededFloats(total, seed));
  const buffers = tensors.map((values, i) => storageBufferFrom(device, values, `source ${i}`));
  const capture = new CheckpointCapture(device, end - start, { chunkBytes });
  try {
    const pending = await capture.begin({ params: buffers[0], m: buffers[1], v: buffers[2], start, end });
    const { tensors: captured, checksums, release } = await pending.mapped;
    const meta = { ...shardMeta(1), chunkBytes, shard: { index: 0, count: 1, start, end, totalFloats: total } };
    const [params, m, v] = tensors.map((values) => values.subarray(start, end));
    const hostComputed = encodeShard(meta, { params, m, v });
    const fromGpu = new Uint8Array(hostComputed.length);
    writeShard(fromGpu, meta, captured, checksums!); // checks every chunk against the GPU's checksum as it lands
    assert.equal(checksums!.length, 10);
    release();
    assert.deepEqual(fromGpu, hostComputed, "the same bytes, and the same checksums in the header");
  } finally {
    capture.destroy();
    for (const buffer of buffers) buffer.destroy();
  }
});

Deno.test("a whole training state exports to a standard safetensors file and imports back exactly", async () => {
  const device = await testDevice();
  const trainer = new Trainer(device, CONFIG, SETTINGS, CORPUS);
  try {
    for (let i = 0; i < 2; i++) await trainer.trainStep();
    const state = await trainer.exportState();
    const file = trainerStateToSafetensors(state, CONFIG);
    const names = [...parseSafetensors(file).tensors.keys()];
    assert.ok(names.includes("h.0.attn.c_attn.weight") && names.includes("optimizer.m.wte.weight"));
    assertSameState(trainerStateFromSafetensors(file, CONFIG), state);
    assert.throws(
      () => trainerStateFromSafetensors(file, { ...CONFIG, n_embd: 24 }),
      /has shape \[97,48\], the config needs \[97,24\]/,
    );
  } finally {
    trainer.destroy();
  }
});
