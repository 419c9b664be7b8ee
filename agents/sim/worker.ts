// A simulated machine's Worker: the worker agent hosted with its own GPUDevice (GPT-2 on the GPU), its NIC's
// port to the network switch, its host memory (the cluster's SharedArrayBuffer), a heartbeat thread of its
// own, and a port to tell the cluster that it is dying. The root agent drives it through comlink; bulk bytes
// go through the network. A machine process has it prepared for the job before it has a rank (`prepare`:
// a hot spare), so that its start only binds the rank; a Worker started unprepared builds as it starts.

import * as Comlink from "comlink";
import { acquireGpu, formatAdapter, type Gpu } from "../../core/gpu.ts";
import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import type { CheckpointStore } from "../../core/store.ts";
import { GpuEngine, type PreparedModel, prepareModel } from "../engine.ts";
import { WallClock } from "../protocol/clock.ts";
import {
  type FaultPoint,
  type IterationPlan,
  type MachineSpec,
  type MachineStatus,
  openPersistentStore,
  type RestoreSource,
} from "../protocol/spec.ts";
import { MachineAgent, silence } from "../worker-agent.ts";
import { NetworkEndpoint } from "./network.ts";
import { collectGarbage } from "./collect-garbage.ts";

// The heartbeat thread: it answers "up?" once it runs, then, given its orders, posts { rank, incarnation,
// iteration } to the root agent's port at every interval.
const HEARTBEAT_SOURCE = `onmessage = ({ data }) => {
  if (data === "up?") return postMessage("up");
  const { root, intervalMs, rank, incarnation, progress } = data;
  const iteration = new Int32Array(progress);
  const beat = () => root.postMessage({ rank, incarnation, iteration: Atomics.load(iteration, 0) });
  beat();
  setInterval(beat, intervalMs);
};`;

/**
 * The machine's heartbeat thread (a Worker of its Worker, from a Blob so that it needs no file of its own
 * in the page's bundle), so that long GPU work never delays a heartbeat. It beats once given its orders at
 * the machine's start, and ends with the machine. `up` settles once it has answered: a machine prepared
 * ahead waits for that, since in Deno here, both cores busy, a new Worker took a second to answer its
 * first message, and the first message to one never sent any took half a second, however old it was.
 */
function spawnHeartbeat(): { heartbeat: Worker; up: Promise<unknown> } {
  const url = URL.createObjectURL(new Blob([HEARTBEAT_SOURCE], { type: "text/javascript" }));
  const heartbeat = new Worker(url, { type: "module", name: "machine heartbeat" });
  URL.revokeObjectURL(url);
  const up = new Promise((resolve) => heartbeat.onmessage = resolve);
  heartbeat.postMessage("up?");
  return { heartbeat, up };
}

let acquired: Promise<Gpu> | null = null;
/** The GPU, acquired once. */
const device = () => acquired ??= acquireGpu();

/** What a machine's training needs besides its rank: a spare builds everything from it before it has one. */
export type Job = Pick<MachineSpec, "training" | "persistent" | "machines">;

/** What a machine has before its rank: its GPU, its persistent store, its heartbeat thread, and its model if prepared. */
interface Ready {
  job: string;
  gpu: Gpu;
  persistent: CheckpointStore;
  heartbeat: Worker;
  /** Built and run once ahead (`prepareModel`); a machine started without being prepared builds it as it starts. */
  model?: PreparedModel;
}

/** What `prepare` made ready, for the next start. */
let ready: Promise<Ready> | null = null;

/** What a machine needs before its rank; `ahead`, everything (a spare's), else only what its start waits for. */
async function readyFor(job: Job, ahead: boolean): Promise<Ready> {
  const { heartbeat, up } = spawnHeartbeat();
  const gpu = await device();
  const persistent = await openPersistentStore(job.persistent);
  if (!ahead) return { job: JSON.stringify(job), gpu, persistent, heartbeat };
  const model = await prepareModel(gpu.device, job.training, job.machines);
  await up;
  return { job: JSON.stringify(job), gpu, persistent, heartbeat, model };
}

/** Ends what was made ready for a start that will not come (the GPU device stays: it is acquired once). */
function discard({ model, heartbeat }: Ready) {
  heartbeat.terminate();
  model?.model.destroy();
}

/**
 * Starts the machine on what was prepared for its job (prepared now if nothing was): its memory, its
 * network port and its heartbeats, and the agent on them.
 */
async function startMachine(spec: MachineSpec): Promise<MachineAgent> {
  const job: Job = { training: spec.training, persistent: spec.persistent, machines: spec.machines };
  const key = JSON.stringify(job), prepared = await ready;
  ready = null;
  if (prepared && prepared.job !== key) discard(prepared); // made for another job: of no use
  const { gpu, model, persistent, heartbeat } = prepared?.job === key ? prepared : await readyFor(job, false);
  // [iteration]: what the heartbeats report, shared with the heartbeat thread.
  const progress = new Int32Array(new SharedArrayBuffer(4));
  heartbeat.postMessage({
    root: spec.root,
    intervalMs: spec.heartbeatMs,
    rank: spec.rank,
    incarnation: spec.incarnation,
    progress: progress.buffer,
  }, [spec.root]);
  return new MachineAgent(spec, {
    engine: (setup) => new GpuEngine(gpu.device, setup, model),
    transport: new NetworkEndpoint(spec.rank, spec.network, spec.epoch),
    clock: new WallClock(),
    store: InMemoryCheckpointStore.attach(spec.memory, { incarnation: spec.incarnation }),
    persistent,
    adapter: formatAdapter(gpu.adapter),
    progress: (iteration) => Atomics.store(progress, 0, iteration),
    died: (where) => {
      heartbeat.terminate();
      spec.life.postMessage({ rank: spec.rank, where });
    },
    stop: () => heartbeat.terminate(),
  });
}

let agent: MachineAgent | null = null;

/** Calls `body` on the started machine, then collects what it left; a machine that has failed never answers. */
function onMachine<T>(body: (machine: MachineAgent) => T | Promise<T>): Promise<T> {
  if (!agent) return Promise.reject(new Error("this machine has not been started"));
  if (agent.dead) return silence();
  return Promise.resolve(body(agent)).finally(collectGarbage);
}

/** What the root agent calls on a machine (through comlink). */
const api = {
  /** Builds everything the machine needs but its rank (a spare machine's process has this done while it waits). */
  async prepare(job: Job) {
    ready?.then(discard, () => {});
    ready = readyFor(job, true);
    await ready;
    collectGarbage(); // the initial parameters, built on the host
  },
  async start(spec: MachineSpec): Promise<MachineStatus> {
    agent = await startMachine(spec);
    collectGarbage();
    return agent.status();
  },
  step: (plan: IterationPlan) => onMachine((machine) => machine.step(plan)),
  abort: (epoch: number) => onMachine((machine) => machine.abort(epoch)),
  fetch: (iteration: number, source: RestoreSource) => onMachine((machine) => machine.fetch(iteration, source)),
  load: (iteration: number, initial: boolean) => onMachine((machine) => machine.load(iteration, initial)),
  serve: (owner: number, iteration: number, to: number) => onMachine((machine) => machine.serve(owner, iteration, to)),
  synchronize: () => onMachine((machine) => machine.synchronize()),
  status: () => onMachine((machine) => machine.status()),
  state: () => onMachine((machine) => machine.state()),
  injectFault: (fault: FaultPoint) => onMachine((machine) => machine.injectFault(fault)),
  shutdown: () => {
    if (agent) return onMachine((machine) => machine.shutdown());
    const prepared = ready;
    ready = null;
    return prepared?.then((unused) => {
      discard(unused);
      unused.gpu.device.destroy();
    }) ?? Promise.resolve();
  },
};

export type MachineApi = typeof api;

Comlink.expose(api);
