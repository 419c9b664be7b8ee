// What the cluster tells each machine when it starts it, what machines report back, and how a
// machine and the root reach the persistent store: the types at the boundary between the root agent
// and the worker agents (which run in different Workers and talk through comlink).

import { BrowserCheckpointStore } from "../core/browser-store.ts";
import { type Corpus, syntheticCorpus } from "../core/data.ts";
import { FileCheckpointStore } from "../core/file-store.ts";
import type { GPT2Config } from "../core/model.ts";
import type { CheckpointStore, StoredEntry } from "../core/store.ts";
import type { TrainerSettings } from "../core/trainer.ts";
import type { InterleavingSettings, ReplicationPolicy } from "./interleaving.ts";

export interface TrainingSpec {
  config: GPT2Config;
  /** Rows of the global batch each machine trains on (the global batch is machines x this). */
  batchPerMachine: number;
  time: number;
  /** Optimizer settings and the seed of the initial parameters and the data order. */
  optimizer: Omit<TrainerSettings, "batch" | "time">;
  /** A seeded synthetic corpus, generated the same on every machine. */
  corpus: { tokens: number; seed: number };
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
  /** How checkpoints go to the peers: the policy, its idle-span profiling and its staging buffer. */
  replication: InterleavingSettings;
}

/** The persistent store: files (Deno) or the browser's OPFS / IndexedDB, with an optional bandwidth cap. */
export type PersistentSpec =
  | { kind: "files"; directory: string; bandwidth?: number }
  | { kind: "browser"; name: string; bandwidth?: number };

export function openPersistentStore(spec: PersistentSpec): Promise<CheckpointStore> {
  return spec.kind === "files"
    ? Promise.resolve(new FileCheckpointStore(spec.directory, { keep: 3, bandwidth: spec.bandwidth }))
    : BrowserCheckpointStore.open({ name: spec.name, keep: 3, bandwidth: spec.bandwidth });
}

export function corpusFor(spec: TrainingSpec): Corpus {
  return syntheticCorpus(spec.corpus.tokens, spec.corpus.seed, spec.config.vocab_size);
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
   * null until every machine has profiled its idle spans, and meanwhile every checkpoint is.
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
