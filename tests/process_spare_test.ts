// A hot spare (issue #16): what a machine builds before it has a rank must leave no trace in what it
// trains. The model prepared ahead (its pipelines run once on a throwaway batch and update) against one
// built at the start, in one engine and in the trainer Worker a machine process runs; and the arena
// committed ahead, given its rank later.

import assert from "node:assert/strict";
import * as Comlink from "comlink";
import { BatchLoader } from "../core/data.ts";
import { initialParameters, parameterLayout } from "../core/model.ts";
import { shardRanges } from "../core/shard.ts";
import { type EngineSetup, GpuEngine, prepareModel } from "../agents/engine.ts";
import {
  type ClusterSettings,
  corpusFor,
  defaultClusterSettings,
  hostMemory,
  type IterationPlan,
  machinePlace,
  type MachineSpec,
} from "../agents/protocol/spec.ts";
import type { MachineApi } from "../agents/sim/worker.ts";
import { acquireGpu } from "../core/gpu.ts";
import { sameState, Trainer } from "../core/trainer.ts";

function settingsFor(machines: number, directory: string): ClusterSettings {
  const settings = defaultClusterSettings({ kind: "files", directory });
  settings.machines = machines;
  return settings;
}

/** Three steps of rank 1 of two (its own gradient as the shard's), a checkpoint after each: losses and state. */
async function train(device: GPUDevice, settings: ClusterSettings, prepared: boolean) {
  const { training, machines, checkpoint } = settings, rank = 1;
  const loader = new BatchLoader(corpusFor(training), training.batchPerMachine * machines, training.time, 7);
  const shard = shardRanges(parameterLayout(training.config).totalFloats, machines)[rank];
  const setup: EngineSetup = {
    training,
    rank,
    shard,
    store: hostMemory(settings, rank),
    loader,
    chunkBytes: checkpoint.chunkBytes,
    captureBuffers: checkpoint.captureBuffers,
    beforeCommit: () => {},
    afterSave: () => {},
  };
  const engine = new GpuEngine(
    device,
    setup,
    prepared ? await prepareModel(device, training, machines) : undefined,
  );
  try {
    const initial = await engine.state();
    const losses: number[] = [];
    for (let step = 0; step < 3; step++) {
      const { inputs, targets } = loader.next(), rows = training.batchPerMachine * training.time;
      losses.push(
        await engine.computeGradients({
          inputs: inputs.subarray(rank * rows, (rank + 1) * rows),
          targets: targets.subarray(rank * rows, (rank + 1) * rows),
        }),
      );
      const grads = await engine.readGradients(shard.start, shard.end);
      engine.updateShard(grads, grads.reduce((sum, g) => sum + g * g, 0));
      await (await engine.checkpoint()).published;
    }
    await engine.restore(2);
    return { initial, losses, restored: await engine.state() };
  } finally {
    engine.destroy();
  }
}

Deno.test("a model prepared ahead trains, checkpoints and restores bit for bit as one built at the start", async () => {
  const directory = await Deno.makeTempDir({ prefix: "gemini-spare-" });
  try {
    const settings = settingsFor(2, directory);
    // An engine destroys its device at the end, as a machine's does: one device each.
    const fresh = await train((await acquireGpu()).device, settings, false);
    const prepared = await train((await acquireGpu()).device, settings, true);
    // The warm-up ran an update on the prepared model: the engine still starts from the initial state.
    const { config, optimizer } = settings.training;
    const shard = shardRanges(parameterLayout(config).totalFloats, 2)[1];
    const zeros = new Float32Array(shard.end - shard.start);
    // Its shard of the state (the losses below cover the rest of the parameters).
    const params = initialParameters(config, optimizer.seed).slice(shard.start, shard.end);
    const initial = { params, m: zeros, v: zeros };
    assert.ok(sameState(prepared.initial, initial), "the prepared engine starts from the initial state");
    assert.ok(sameState(fresh.initial, initial), "the engine built at the start starts from the initial state");
    assert.deepEqual(prepared.losses, fresh.losses);
    assert.ok(sameState(prepared.restored, fresh.restored), "the state after three steps and a restore");
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("a trainer refuses a model built ahead for another job", async () => {
  const device = (await acquireGpu()).device;
  try {
    const { training } = settingsFor(2, "unused");
    const built = await prepareModel(device, training, 2);
    const settings = { ...training.optimizer, batch: training.batchPerMachine, time: training.time };
    for (const other of [{ ...settings, seed: settings.seed + 1 }, { ...settings, time: settings.time / 2 }]) {
      assert.throws(() => new Trainer(device, training.config, other, undefined, { built }), /another config/);
    }
  } finally {
    device.destroy();
  }
});

/** A trainer Worker (what a machine process runs), prepared for the job first or not, started as the only rank. */
async function trainInWorker(settings: ClusterSettings, prepare: boolean) {
  const worker = new Worker(new URL("../agents/sim/worker.ts", import.meta.url), { type: "module" });
  const api = Comlink.wrap<MachineApi>(worker);
  const network = new MessageChannel(), root = new MessageChannel(), life = new MessageChannel();
  try {
    const { training, persistent, machines } = settings;
    if (prepare) await api.prepare({ training, persistent, machines });
    const firstHeartbeat = new Promise((resolve) => root.port1.onmessage = ({ data }) => resolve(data));
    const spec: MachineSpec = {
      ...machinePlace(settings, 0, 0, 0, []),
      memory: hostMemory(settings, 0).memory,
      network: network.port2,
      root: root.port2,
      life: life.port2,
    };
    await api.start(Comlink.transfer(spec, [network.port2, root.port2, life.port2]));
    assert.deepEqual(await firstHeartbeat, { rank: 0, incarnation: 0, iteration: 0 });
    const plan: IterationPlan = { checkpoint: true, policy: "naive", replicateEvery: null, keep: 0 };
    const losses: number[] = [];
    for (let step = 0; step < 3; step++) losses.push((await api.step(plan)).loss);
    const state = await api.state();
    await api.shutdown();
    return { losses, state };
  } finally {
    worker.terminate();
    for (const port of [network.port1, root.port1, life.port1]) port.close();
  }
}

Deno.test("a trainer Worker prepared ahead heartbeats as it starts and trains bit for bit as one that was not", async () => {
  const directory = await Deno.makeTempDir({ prefix: "gemini-spare-" });
  try {
    const settings = settingsFor(1, directory);
    const cold = await trainInWorker(settings, false);
    const hot = await trainInWorker(settings, true);
    assert.deepEqual(hot.losses, cold.losses);
    assert.ok(sameState(hot.state, cold.state), "the state after three steps");
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("a trainer Worker prepared for a job that never starts releases what it built", async () => {
  const directory = await Deno.makeTempDir({ prefix: "gemini-spare-" });
  const worker = new Worker(new URL("../agents/sim/worker.ts", import.meta.url), { type: "module" });
  try {
    const api = Comlink.wrap<MachineApi>(worker);
    const { training, persistent, machines } = settingsFor(2, directory);
    await api.prepare({ training, persistent, machines });
    await api.shutdown();
    await assert.rejects(api.status(), /has not been started/);
  } finally {
    worker.terminate();
    await Deno.remove(directory, { recursive: true });
  }
});

Deno.test("an arena committed before its machine has a rank is given the rank, and only while it is empty", () => {
  const settings = settingsFor(4, "unused");
  const store = hostMemory(settings, 0);
  store.assign(2);
  assert.equal(store.node, 2);
  assert.throws(() => store.assign(4), RangeError);
  store.beginWrite(2, 1, 64); // its first write allocates the owner its slots
  assert.equal(store.node, 2);
  assert.throws(() => store.assign(3), /holds checkpoints already/);
});
