// A simulated machine's Worker: the worker agent hosted with its own GPUDevice (GPT-2 on the GPU), its NIC's
// port to the network switch, its host memory (the cluster's SharedArrayBuffer), a heartbeat thread of its
// own, and a port to tell the cluster that it is dying. The root agent drives it through comlink; bulk bytes
// go through the network.

import * as Comlink from "comlink";
import { acquireGpu, formatAdapter, type Gpu } from "../../core/gpu.ts";
import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import { GpuEngine } from "../engine.ts";
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

// The heartbeat thread: it posts { rank, incarnation, iteration } to the root agent's port at every interval.
const HEARTBEAT_SOURCE = `onmessage = ({ data: { root, intervalMs, rank, incarnation, progress } }) => {
  const iteration = new Int32Array(progress);
  const beat = () => root.postMessage({ rank, incarnation, iteration: Atomics.load(iteration, 0) });
  beat();
  setInterval(beat, intervalMs);
};`;

/**
 * The machine's heartbeat thread (a Worker of its Worker, from a Blob so that it needs no file of its own
 * in the page's bundle), so that long GPU work never delays a heartbeat. It ends with the machine.
 */
function startHeartbeat(spec: MachineSpec, progress: Int32Array): Worker {
  const url = URL.createObjectURL(new Blob([HEARTBEAT_SOURCE], { type: "text/javascript" }));
  const heartbeat = new Worker(url, { type: "module", name: `machine ${spec.rank} heartbeat` });
  URL.revokeObjectURL(url);
  heartbeat.postMessage({
    root: spec.root,
    intervalMs: spec.heartbeatMs,
    rank: spec.rank,
    incarnation: spec.incarnation,
    progress: progress.buffer,
  }, [spec.root]);
  return heartbeat;
}

let acquired: Promise<Gpu> | null = null;
/** The GPU, acquired once: a spare machine's process acquires it before the machine is given a rank. */
const device = () => acquired ??= acquireGpu();

/** Starts the machine: its GPU, its memory, its network port and its heartbeats, and the agent on them. */
async function startMachine(spec: MachineSpec): Promise<MachineAgent> {
  const gpu = await device();
  const persistent = await openPersistentStore(spec.persistent);
  // [iteration]: what the heartbeats report, shared with the heartbeat thread.
  const progress = new Int32Array(new SharedArrayBuffer(4));
  const heartbeat = startHeartbeat(spec, progress);
  return new MachineAgent(spec, {
    engine: (setup) => new GpuEngine(gpu.device, setup),
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

/** Calls `body` on the started machine; a machine that has failed never answers. */
function onMachine<T>(body: (machine: MachineAgent) => T | Promise<T>): Promise<T> {
  if (!agent) return Promise.reject(new Error("this machine has not been started"));
  if (agent.dead) return silence();
  return Promise.resolve(body(agent));
}

/** What the root agent calls on a machine (through comlink). */
const api = {
  async prepare() {
    await device();
  },
  async start(spec: MachineSpec): Promise<MachineStatus> {
    agent = await startMachine(spec);
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
  shutdown: () => onMachine((machine) => machine.shutdown()),
};

export type MachineApi = typeof api;

Comlink.expose(api);
