// The types at the boundary between the root agent and the worker agents: the cluster's settings, what
// the cluster tells each machine when it starts it, what machines report back, how a machine and the root
// reach the persistent store, and `Machines`: how the root starts, stops and drives machines, whatever
// they run on (Workers in this process today).

import { BrowserCheckpointStore } from "../../core/browser-store.ts";
import { shardLayout } from "../../core/checkpoint.ts";
import { type Corpus, syntheticCorpus } from "../../core/data.ts";
import { FileCheckpointStore } from "../../core/file-store.ts";
import { InMemoryCheckpointStore } from "../../core/memory-store.ts";
import { type GPT2Config, MODEL_PRESETS, parameterLayout } from "../../core/model.ts";
import { shardRanges } from "../../core/shard.ts";
import type { CheckpointStore, StoredEntry } from "../../core/store.ts";
import { DEFAULT_TRAINER_SETTINGS, type MemoryPlanSettings, type TrainerSettings } from "../../core/trainer.ts";
import type { Clock } from "./clock.ts";
import {
  DEFAULT_INTERLEAVING,
  type InterleavingSettings,
  type ReplicationPolicy,
} from "../replication/interleaving.ts";
import type { PlacementStrategy } from "../replication/placement.ts";

export interface TrainingSpec {
  config: GPT2Config;
  /** Rows of the global batch each machine trains on (the global batch is machines x this). */
  batchPerMachine: number;
  time: number;
  /** Optimizer settings and the seed of the initial parameters and the data order. */
  optimizer: Omit<TrainerSettings, "batch" | "time">;
  /**
   * A seeded synthetic corpus of `tokens` tokens, generated the same on every machine; or a user's text,
   * tokenized once before the cluster starts, whose tokens every machine is given.
   */
  corpus: { tokens: number; seed: number } | Corpus;
}

export interface CheckpointSpec {
  /** An in-memory checkpoint (and its replication) every this many iterations, to begin with. */
  every: number;
  /** A checkpoint to the persistent store every this many iterations (0: never). */
  persistEvery: number;
  /** The shard's chunk size: the unit of checksums and of replication on the network. */
  chunkBytes: number;
  /** Checkpoints kept per owner in host memory. */
  slotsPerOwner: number;
  /**
   * GPU staging buffers a checkpoint's capture alternates between: with 2 the next capture never waits
   * for the last to be written out; 1 is allocated for each capture (see core/capture.ts), which saves a
   * shard's params, m and v of memory between captures and blocks each capture longer.
   */
  captureBuffers: number;
  /** How checkpoints go to the peers: the policy, its idle-span profiling and its staging buffer. */
  replication: InterleavingSettings;
}

/** The persistent store: files (Deno) or the browser's OPFS / IndexedDB, with an optional bandwidth cap. */
export type PersistentSpec =
  | { kind: "files"; directory: string; bandwidth?: number }
  | { kind: "browser"; name: string; bandwidth?: number }
  /** One arena in this thread that every machine of an in-process cluster shares (its cluster opens it). */
  | { kind: "memory"; bandwidth?: number };

export function openPersistentStore(spec: PersistentSpec): Promise<CheckpointStore> {
  if (spec.kind === "memory") {
    return Promise.reject(new Error("an in-memory persistent store is shared: its cluster hands it to every machine"));
  }
  return spec.kind === "files"
    ? Promise.resolve(new FileCheckpointStore(spec.directory, { keep: 3, bandwidth: spec.bandwidth }))
    : BrowserCheckpointStore.open({ name: spec.name, keep: 3, bandwidth: spec.bandwidth });
}

export function corpusFor({ corpus, config }: TrainingSpec): Corpus {
  if ("seed" in corpus) return syntheticCorpus(corpus.tokens, corpus.seed, config.vocab_size);
  if (corpus.vocabSize > config.vocab_size) {
    throw new Error(
      `the corpus "${corpus.name}" has a vocabulary of ${corpus.vocabSize}, the model ${config.vocab_size}`,
    );
  }
  return corpus;
}

export interface NetworkSettings {
  /** Bytes per second of each link (a NIC sends and receives at this rate at once). */
  bandwidth: number;
  /** Milliseconds from a message's last byte leaving to its arrival. */
  latencyMs: number;
}

export interface ClusterSettings {
  machines: number;
  /** Copies of each checkpoint in CPU memory, the owner's included (m). */
  replicas: number;
  placement: PlacementStrategy;
  training: TrainingSpec;
  checkpoint: CheckpointSpec;
  persistent: PersistentSpec;
  network: NetworkSettings;
  heartbeatMs: number;
}

/**
 * A cluster the size of the paper's smallest (four machines, m = 2, group placement), training the tiny
 * model with a checkpoint in memory every iteration (replicated in the idle spans of training traffic) and
 * a persistent one every 4, over a network 20 times faster than the persistent store (the paper's 400
 * Gbps against 20 Gbps, scaled to this model).
 */
export function defaultClusterSettings(persistent: PersistentSpec): ClusterSettings {
  return {
    machines: 4,
    replicas: 2,
    placement: "group",
    training: {
      config: MODEL_PRESETS.tiny,
      batchPerMachine: 2,
      time: 32,
      optimizer: { ...DEFAULT_TRAINER_SETTINGS, lr: 1e-2 },
      corpus: { tokens: 1 << 16, seed: 1 },
    },
    checkpoint: {
      every: 1,
      persistEvery: 4,
      chunkBytes: 64 << 10,
      slotsPerOwner: 3,
      captureBuffers: 2,
      replication: { ...DEFAULT_INTERLEAVING },
    },
    persistent,
    network: { bandwidth: 400e6, latencyMs: 0.05 },
    heartbeatMs: 50,
  };
}

/** The encoded size of the largest machine's checkpoint (its shard, with the largest header it can have). */
export function largestCheckpointBytes(settings: ClusterSettings): number {
  const { training, checkpoint, machines } = settings;
  const { totalFloats } = parameterLayout(training.config);
  const largest = Math.max(...shardRanges(totalFloats, machines).map(({ end, start }) => end - start));
  return shardLayout({
    config: training.config,
    iteration: 1e12,
    data: { position: 1e12, rng: 2 ** 32 - 1 },
    owner: machines,
    shard: { index: machines, count: machines, start: totalFloats, end: totalFloats + largest, totalFloats },
    chunkBytes: checkpoint.chunkBytes,
    createdAt: Date.now(),
  }).totalBytes;
}

/** A checkpoint slot in host memory: the largest checkpoint, 4 KiB for headers that grow, rounded to 64 bytes. */
function slotBytes(settings: ClusterSettings): number {
  return largestCheckpointBytes(settings) + 4096 + 64;
}

/** What a machine's memory is planned from (`planMemory`): the job, and the checkpoint slots `hostMemory` makes. */
export function memoryPlanSettings(settings: ClusterSettings): MemoryPlanSettings {
  const { training, checkpoint, machines, replicas } = settings;
  return {
    config: training.config,
    batch: training.batchPerMachine,
    time: training.time,
    machines,
    slotsPerOwner: checkpoint.slotsPerOwner,
    captureBuffers: checkpoint.captureBuffers,
    owners: replicas,
    checkpointBytes: slotBytes(settings),
    chunkBytes: checkpoint.chunkBytes,
  };
}

/**
 * A new host memory for machine `rank`: an arena for K checkpoints of its shard and of the shards it keeps
 * replicas of (the tables take under 64 KiB).
 */
export function hostMemory(settings: ClusterSettings, rank: number): InMemoryCheckpointStore {
  const { checkpoint, replicas, machines } = settings;
  const arenaBytes = (1 << 16) + replicas * checkpoint.slotsPerOwner * slotBytes(settings);
  return InMemoryCheckpointStore.create(rank, arenaBytes, {
    slotsPerOwner: checkpoint.slotsPerOwner,
    maxOwners: replicas,
    machines,
  });
}

/** A machine's place in the cluster and its job: what every machine is told, however it is hosted. */
export type MachinePlace = Omit<MachineSpec, "memory" | "network" | "root" | "life">;

export function machinePlace(
  settings: ClusterSettings,
  rank: number,
  incarnation: number,
  epoch: number,
  replicaPeers: number[],
): MachinePlace {
  const { machines, training, checkpoint, persistent, heartbeatMs, network } = settings;
  return {
    rank,
    machines,
    incarnation,
    epoch,
    training,
    checkpoint,
    persistent,
    replicaPeers,
    heartbeatMs,
    bandwidth: network.bandwidth,
  };
}

/** Everything a machine needs to start: its place in the cluster, the job, its memory and its ports. */
export interface MachineSpec {
  rank: number;
  machines: number;
  /** How many times this rank has been started (0 for the first machine). */
  incarnation: number;
  /** The recovery epoch the cluster is in (messages of older epochs are ignored). */
  epoch: number;
  training: TrainingSpec;
  checkpoint: CheckpointSpec;
  persistent: PersistentSpec;
  /** The peers this machine sends its checkpoint to (the placement plan's choice). */
  replicaPeers: number[];
  heartbeatMs: number;
  /** The machine's host memory: the arena of its in-memory checkpoint store. */
  memory: WebAssembly.Memory | SharedArrayBuffer;
  /** Its NIC's connection to the network switch. */
  network: MessagePort;
  /** Its NIC's bandwidth, bytes/s each way. */
  bandwidth: number;
  /** Where its heartbeats go: { rank, incarnation, iteration } messages to the root agent. */
  root: MessagePort;
  /** Where it reports that it is dying (an injected failure), so the cluster can end it. */
  life: MessagePort;
}

/** Where a machine takes its shard from in a recovery. */
export type RestoreSource =
  | { from: "local" }
  | { from: "peer"; peer: number }
  | { from: "persistent" }
  | { from: "initial" };

export function describeSource(source: RestoreSource): string {
  return source.from === "peer" ? `peer ${source.peer}` : source.from;
}

/** Where an injected failure strikes a machine: at a point of a given iteration, or in its next recovery. */
export type FaultPoint =
  | { phase: "step" | "checkpoint" | "replication"; iteration: number }
  | { phase: "recovery" };

/** What the root agent asks of an iteration: whether to checkpoint, and how to replicate. */
export interface IterationPlan {
  checkpoint: boolean;
  policy: ReplicationPolicy;
  /**
   * The checkpoints of iterations that are multiples of this are replicated (the same on every machine);
   * null until a machine has profiled its idle spans, and meanwhile every checkpoint is.
   */
  replicateEvery: number | null;
  /** The newest iteration every machine has replicated (0: none): every machine keeps it in memory. */
  keep: number;
}

export interface StepResult {
  iteration: number;
  /** This machine's mean loss on its slice of the batch. */
  loss: number;
  /** Milliseconds of each part of the iteration on this machine. */
  compute: number;
  reduceScatter: number;
  update: number;
  allGather: number;
  /** How long the checkpoint capture held training up. */
  checkpointBlocked: number;
  /** The newest of this machine's checkpoints that has been sent whole to every peer (0: none yet). */
  replicatedIteration: number;
  /** The idle spans the machine profiled on its NIC in an iteration (ms; empty while profiling). */
  idleSpans: number[];
  /** How many iterations' idle spans one of its checkpoints needs (null while profiling). */
  neededInterval: number | null;
}

export interface RestoreResult {
  source: RestoreSource;
  iteration: number;
  bytes: number;
  /** Getting the shard to this machine's memory (0 when it was already there). */
  retrieveMilliseconds: number;
  /** Putting it on the GPU. */
  loadMilliseconds: number;
}

export interface MachineStatus {
  rank: number;
  incarnation: number;
  iteration: number;
  adapter: string;
  /** What its host memory holds: its own checkpoints and the replicas it keeps for peers. */
  memory: StoredEntry[];
  arenaBytes: number;
  persistentSaves: number;
  persistentSkipped: number;
}

/** A heartbeat as a machine sends it. */
export interface Heartbeat {
  rank: number;
  incarnation: number;
  iteration: number;
}

/** What the root agent asks of a running machine (through comlink for a Worker). */
export interface MachineControl {
  step(plan: IterationPlan): Promise<StepResult>;
  /** Stops what the machine is doing and moves it to recovery epoch `epoch`. */
  abort(epoch: number): Promise<void>;
  /** Brings its shard of checkpoint `iteration` into its memory from `source`; returns its size. */
  fetch(iteration: number, source: RestoreSource): Promise<number>;
  /** Puts its shard of `iteration` from its memory (or the initial state) onto the GPU; returns the ms. */
  load(iteration: number, initial: boolean): Promise<number>;
  /** Sends `owner`'s checkpoint `iteration` from its memory to machine `to`. */
  serve(owner: number, iteration: number, to: number): Promise<number>;
  /** All-gathers the parameters after a recovery. */
  synchronize(): Promise<void>;
  status(): Promise<MachineStatus>;
  /** All the parameters, and its shard of m and v. */
  state(): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array }>;
  /** Releases its GPU and stops heartbeating. */
  shutdown(): Promise<void>;
}

/** A running machine as the root agent drives it. */
export interface Machine {
  rank: number;
  incarnation: number;
  control: MachineControl;
  /** Its state right after it started. */
  status: MachineStatus;
}

/**
 * The machines of a cluster, as the root agent starts and stops them: Workers in this process
 * (`SimulatedCluster`), or anything else that runs the worker agent.
 */
export interface Machines {
  readonly settings: ClusterSettings;
  /** The clock that machines' reports and the cluster's timeline are on. */
  readonly clock: Clock;
  /**
   * Starts machine `rank` in recovery epoch `epoch`, with the memory it had if it survived, else new memory;
   * it replicates to `replicaPeers` and heartbeats to `onHeartbeat`. Resolves at its first heartbeat.
   */
  launch(
    rank: number,
    epoch: number,
    replicaPeers: number[],
    onHeartbeat: (heartbeat: Heartbeat) => void,
  ): Promise<Machine>;
  /**
   * The running machine `rank` of `incarnation`, its heartbeats now going to `onHeartbeat`: how a root that
   * takes over from a lost one finds the machines it left (null if that incarnation no longer runs). A
   * cluster without it cannot outlive its root.
   */
  adopt?(rank: number, incarnation: number, onHeartbeat: (heartbeat: Heartbeat) => void): Promise<Machine | null>;
  /** Stops machine `rank`, declared failed, if it is still running (a slow machine wrongly suspected). */
  fence(rank: number): void;
  /** Stops every machine. */
  shutdown(): Promise<void>;
}
