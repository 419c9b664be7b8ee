// The simulated hardware: machines (each a Worker with its own GPUDevice, plus a SharedArrayBuffer that
// the cluster allocates as its host memory) and the network between them; and the failure injection.
// A software failure ends a machine's Worker but leaves its memory, so the restarted Worker finds its
// checkpoints there; a hardware failure ends the Worker and discards its memory, so the replacement
// machine starts with empty memory. Machines share nothing but the network. The cluster is the root
// agent's `Machines`; it alone knows when and how a machine really failed (`onFailure`), which the root
// learns only by missed heartbeats.

import * as Comlink from "comlink";
import { Rng } from "../../core/random.ts";
import type { Clock } from "../protocol/clock.ts";
import { validateInterleaving } from "../replication/interleaving.ts";
import { corruptNewestReplica, type MemoryStats, memoryStats } from "./host-faults.ts";
import { Network } from "./network.ts";
import { collectGarbage } from "./collect-garbage.ts";
import {
  type ClusterSettings,
  type FaultPoint,
  type Heartbeat,
  hostMemory,
  type Machine,
  machinePlace,
  type Machines,
} from "../protocol/spec.ts";
import type { MachineApi } from "./worker.ts";

export type FailureKind = "software" | "hardware";

/** A failure as the cluster saw it happen (the root only learns of it by the missing heartbeats). */
export interface FailureRecord {
  rank: number;
  kind: FailureKind;
  /** Where the machine was: an injected fault point, or "at once" for a failure injected from outside. */
  where: string;
  /** On the network's clock (ms). */
  at: number;
}

/** How long closing the cluster waits for its Workers' threads to end. */
export const WORKER_TEARDOWN_MS = 500;

interface Slot {
  memory: WebAssembly.Memory | SharedArrayBuffer | null;
  worker: Worker | null;
  /** The cluster's ends of the machine's heartbeat and life channels, closed when it stops. */
  ports: MessagePort[];
  incarnation: number;
  /** The kind of failure an armed fault point of this machine stands for. */
  armedKind: FailureKind;
  lastFailure: FailureRecord | null;
  api: Comlink.Remote<MachineApi> | null;
  /** Settles when the running machine stops (a failed one never answers a call). */
  stopped: Promise<void>;
  markStopped: () => void;
  /** Where its heartbeats go: the root that launched it, or one that took over. */
  onHeartbeat: (heartbeat: Heartbeat) => void;
}

export class SimulatedCluster implements Machines {
  readonly settings: ClusterSettings;
  readonly network: Network;
  readonly #workerUrl: URL;
  readonly #slots: Slot[];
  readonly #failureListeners = new Set<(failure: FailureRecord) => void>();

  constructor(
    settings: ClusterSettings,
    workerUrl = new URL("./worker.ts", import.meta.url),
    options: { clock?: Clock } = {},
  ) {
    this.settings = settings;
    validateInterleaving(settings.checkpoint.replication, settings.checkpoint.chunkBytes);
    this.network = new Network(settings.network, { clock: options.clock });
    this.#workerUrl = workerUrl;
    this.#slots = Array.from({ length: settings.machines }, () => ({
      memory: null,
      worker: null,
      ports: [],
      incarnation: -1,
      armedKind: "software",
      lastFailure: null,
      api: null,
      stopped: Promise.resolve(),
      markStopped: () => {},
      onHeartbeat: () => {},
    }));
  }

  get clock(): Clock {
    return this.network.clock;
  }

  /**
   * Starts machine `rank` (again): with the memory it had if a software failure left it, else with new
   * memory. It sends its checkpoints to `replicaPeers`; its heartbeats go to `onHeartbeat`.
   */
  async launch(
    rank: number,
    epoch: number,
    replicaPeers: number[],
    onHeartbeat: (heartbeat: Heartbeat) => void,
  ): Promise<Machine> {
    const slot = this.#slots[rank];
    if (slot.worker) throw new Error(`machine ${rank} is already running`);
    if (!slot.memory) {
      collectGarbage(); // a lost machine's memory, before its replacement's
      slot.memory = hostMemory(this.settings, rank).memory;
    }
    slot.incarnation++;
    const worker = new Worker(this.#workerUrl, { type: "module", name: `machine ${rank}` });
    slot.worker = worker;
    slot.stopped = new Promise((resolve) => slot.markStopped = resolve);
    const network = new MessageChannel(), rootChannel = new MessageChannel(), life = new MessageChannel();
    slot.ports = [rootChannel.port1, life.port1];
    this.network.attach(rank, network.port1);
    // The machine is up once its heartbeat thread is: the first heartbeat ends the launch.
    let beating!: () => void;
    const firstHeartbeat = new Promise<void>((resolve) => beating = resolve);
    slot.onHeartbeat = onHeartbeat;
    rootChannel.port1.onmessage = ({ data }: MessageEvent<Heartbeat>) => {
      beating();
      slot.onHeartbeat(data);
    };
    life.port1.onmessage = ({ data }: MessageEvent<{ where: string }>) => this.#fail(rank, slot.armedKind, data.where);
    const api = Comlink.wrap<MachineApi>(worker);
    const spec = {
      ...machinePlace(this.settings, rank, slot.incarnation, epoch, replicaPeers),
      memory: slot.memory,
      network: network.port2,
      root: rootChannel.port2,
      life: life.port2,
    };
    // An uncaught error in the Worker is a crash: before it has started, the launch fails with it;
    // afterwards it is a software failure (the root sees the heartbeats stop).
    let started = false;
    const crashed = new Promise<never>((_, reject) => {
      worker.onerror = (event) => {
        event.preventDefault();
        const why = `machine ${rank} crashed: ${event.message}`;
        if (started) this.#fail(rank, "software", why);
        else reject(new Error(why));
      };
    });
    crashed.catch(() => {});
    const status = await Promise.race([
      api.start(Comlink.transfer(spec, [network.port2, rootChannel.port2, life.port2])),
      crashed,
    ]);
    await Promise.race([firstHeartbeat, crashed]);
    started = true;
    slot.api = api;
    return { rank, incarnation: slot.incarnation, control: api, status };
  }

  async adopt(rank: number, incarnation: number, onHeartbeat: (heartbeat: Heartbeat) => void) {
    const slot = this.#slots[rank], api = slot.api;
    if (!api || slot.incarnation !== incarnation) return null;
    slot.onHeartbeat = onHeartbeat;
    return { rank, incarnation, control: api, status: await api.status() };
  }

  /**
   * Injects a failure of `kind` into `ranks`: at once; after `afterMs` milliseconds on the cluster's clock,
   * wherever they are then; or when each reaches `point` (an iteration's step, checkpoint write or
   * replication, or its next recovery).
   */
  async inject(ranks: number[], kind: FailureKind, when?: FaultPoint | { afterMs: number }) {
    const down = ranks.filter((rank) => !this.isRunning(rank));
    if (down.length) throw new Error(`machine ${down.join(", ")} is already down`);
    if (!when) return this.fail(ranks, kind);
    if ("afterMs" in when) {
      this.clock.setTimer(when.afterMs, () => this.fail(ranks, kind));
      return;
    }
    for (const rank of ranks) {
      const slot = this.#slots[rank];
      slot.armedKind = kind;
      // A machine that has just failed (and whose failure the cluster has not heard of yet) never answers.
      await Promise.race([slot.api!.injectFault(when), slot.stopped]);
    }
  }

  /** Fails `ranks` now, wherever they are (those already down stay as they are). */
  fail(ranks: number[], kind: FailureKind) {
    for (const rank of ranks) this.#fail(rank, kind, "at once");
  }

  fence(rank: number) {
    this.#fail(rank, "software", "fenced: declared failed while it still ran");
  }

  /** Corrupts the newest replica machine `rank` holds for a peer (see `corruptNewestReplica`). */
  corrupt(rank: number): number | null {
    return corruptNewestReplica(this.#slots[rank].memory, rank);
  }

  /** What machine `rank`'s host memory holds (none while its hardware is lost). */
  memoryStats(rank: number): MemoryStats | null {
    return memoryStats(this.#slots[rank].memory);
  }

  /** Whether machine `rank` is running. */
  isRunning(rank: number): boolean {
    return this.#slots[rank].worker !== null;
  }

  /** The last failure of machine `rank` (its current incarnation's, if it is down). */
  lastFailure(rank: number): FailureRecord | null {
    return this.#slots[rank].lastFailure;
  }

  onFailure(listener: (failure: FailureRecord) => void): () => void {
    this.#failureListeners.add(listener);
    return () => this.#failureListeners.delete(listener);
  }

  #fail(rank: number, kind: FailureKind, where: string) {
    const slot = this.#slots[rank];
    if (!slot.worker) return;
    this.#stop(slot);
    this.network.detach(rank, `machine ${rank} failed`);
    if (kind === "hardware") slot.memory = null;
    slot.lastFailure = { rank, kind, where, at: this.network.now() };
    for (const listener of this.#failureListeners) listener(slot.lastFailure);
  }

  #stop(slot: Slot) {
    // Comlink's registry holds the Worker until its proxy is collected, and this handler reaches the proxy
    // (through the cluster and the root): a cluster shut down with it set was never collected (the next
    // GPT-2 124M cluster then met the last one's 5.7 GiB of checkpoint memory).
    if (slot.worker) {
      slot.worker.onerror = null;
      slot.worker.terminate();
    }
    slot.markStopped();
    slot.worker = null;
    slot.api = null;
    for (const port of slot.ports) port.close();
    slot.ports = [];
  }

  /**
   * Stops the cluster: each running machine first releases its GPU device in its own thread (a Worker
   * terminated while it holds one can bring the process down as it exits), then every Worker ends.
   */
  async shutdown() {
    const released = this.#slots.map((slot) => slot.api?.shutdown());
    await Promise.race([Promise.allSettled(released), new Promise((resolve) => setTimeout(resolve, 2000))]);
    for (const slot of this.#slots) this.#stop(slot);
    this.network.close();
    // Workers end some time after terminate(). wgpu's GL backend crashed here when one Worker's GL teardown
    // overlapped another's setup (EGL BadDisplay), so whatever uses the GPU next waits for it.
    await new Promise((resolve) => setTimeout(resolve, WORKER_TEARDOWN_MS));
  }
}

/** A failure of some machines at an iteration, as a seeded schedule lists them. */
export interface ScheduledFailure {
  iteration: number;
  ranks: number[];
  kind: FailureKind;
  phase: "step" | "checkpoint" | "replication";
}

/**
 * `count` failures at random iterations in [first, last], each of one random machine (two at once with
 * probability `pairs`), of a random kind and at a random point of the iteration, from `seed`.
 */
export function randomFailureSchedule(
  seed: number,
  { machines, first, last, count, pairs = 0 }: {
    machines: number;
    first: number;
    last: number;
    count: number;
    pairs?: number;
  },
): ScheduledFailure[] {
  const rng = new Rng(seed), phases = ["step", "checkpoint", "replication"] as const;
  const schedule: ScheduledFailure[] = [];
  for (let i = 0; i < count; i++) {
    const first_ = rng.below(machines);
    const ranks = rng.uniform() < pairs && machines > 1
      ? [first_, (first_ + 1 + rng.below(machines - 1)) % machines]
      : [first_];
    schedule.push({
      iteration: first + rng.below(last - first + 1),
      ranks,
      kind: rng.uniform() < 0.5 ? "software" : "hardware",
      phase: phases[rng.below(phases.length)],
    });
  }
  return schedule.sort((a, b) => a.iteration - b.iteration);
}
