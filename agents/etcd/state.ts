// The cluster's state in etcd, what a standby root needs to take over: the members, the epoch, the newest
// complete iteration of every shard, who holds which replica, and the recovery in progress. Keys live
// under `gemini/<cluster>/state/`, values are JSON.
//
// Fencing: every write is one etcd transaction that first compares the epoch key with the writer's epoch.
// A root (or machine) from an older epoch has its write refused by etcd itself, and gets a `FencedError`;
// nothing it wrote after it was superseded is ever read. `advanceEpoch` moves the epoch on the same way,
// so of two roots that both think they lead, only one advances it.

import type { RecoveryPhase } from "../protocol/root.ts";
import { clusterPrefix, type Etcd, type KeyValue, type Operation } from "./client.ts";

/** A machine process known to the cluster; a spare has no rank. */
export interface MemberRecord {
  /** Where its peers reach it (host:port). */
  address: string;
  rank: number | null;
  /** Which start of this rank it is: a machine fenced out has an older one. */
  incarnation: number;
}

/** A copy of an owner's shard in some member's memory. */
export interface ReplicaRecord {
  member: string;
  iteration: number;
}

export interface RecoveryRecord {
  /** The epoch the recovery runs in. */
  epoch: number;
  phase: RecoveryPhase;
  /** The ranks being recovered. */
  failed: number[];
  /** The iteration the cluster rolls back to, once planned. */
  iteration: number | null;
}

export interface ClusterState {
  epoch: number;
  /** By member id. */
  members: Map<string, MemberRecord>;
  /** The newest complete iteration of each rank's shard. */
  shards: Map<number, number>;
  /** Each owner rank's replicas. */
  replicas: Map<number, ReplicaRecord[]>;
  recovery: RecoveryRecord | null;
}

/** One change to the state; `null` removes the entry. */
export type StateChange =
  | { kind: "member"; id: string; member: MemberRecord | null }
  | { kind: "shard"; rank: number; iteration: number }
  | { kind: "replicas"; rank: number; replicas: ReplicaRecord[] | null }
  | { kind: "recovery"; recovery: RecoveryRecord | null };

/** A write from an epoch that is no longer the cluster's. */
export class FencedError extends Error {
  constructor(readonly writerEpoch: number, readonly currentEpoch: number) {
    super(`fenced: this write is from epoch ${writerEpoch}, and the cluster is at epoch ${currentEpoch}`);
    this.name = "FencedError";
  }
}

const EPOCH = "epoch";

/** The key of `cluster`'s epoch, which every fenced write compares. */
export function epochKey(cluster: string): string {
  return `${clusterPrefix(cluster)}state/${EPOCH}`;
}
/** Who last advanced the epoch: a retried advance whose first try went through knows it was its own. */
const ADVANCED_BY = "epoch-advanced-by";

function keyOf(change: StateChange): string {
  switch (change.kind) {
    case "member":
      if (!/^[A-Za-z0-9._:-]{1,128}$/.test(change.id)) {
        throw new Error(`a member id is 1 to 128 letters, digits, ".", "_", ":" or "-", got "${change.id}"`);
      }
      return `members/${change.id}`;
    case "shard":
    case "replicas":
      if (!Number.isInteger(change.rank) || change.rank < 0) {
        throw new Error(`a rank is a non-negative integer, got ${change.rank}`);
      }
      return `${change.kind === "shard" ? "shards" : "replicas"}/${change.rank}`;
    case "recovery":
      return "recovery";
  }
}

function valueOf(change: StateChange): unknown {
  switch (change.kind) {
    case "member":
      return change.member;
    case "shard":
      return change.iteration;
    case "replicas":
      return change.replicas;
    case "recovery":
      return change.recovery;
  }
}

function parseEpoch(text: string | null): number {
  const epoch = text === null ? NaN : Number(text);
  if (!Number.isSafeInteger(epoch) || epoch < 0) throw new Error(`the cluster's epoch key holds "${text}"`);
  return epoch;
}

const isCount = (value: unknown) => Number.isSafeInteger(value) && (value as number) >= 0;
// deno-lint-ignore no-explicit-any
type Loose = any;

/** What each kind of key must hold: the state is read by a root that did not write it, and checked. */
const SHAPES: Record<string, (value: Loose) => boolean> = {
  members: (value) =>
    typeof value?.address === "string" && (value.rank === null || isCount(value.rank)) && isCount(value.incarnation),
  shards: isCount,
  replicas: (value) =>
    Array.isArray(value) && value.every((replica) => typeof replica?.member === "string" && isCount(replica.iteration)),
  recovery: (value) =>
    isCount(value?.epoch) && typeof value.phase === "string" && Array.isArray(value.failed) &&
    value.failed.every(isCount) && (value.iteration === null || isCount(value.iteration)),
};

export class ClusterStateStore {
  readonly #etcd: Etcd;
  readonly #prefix: string;

  private constructor(etcd: Etcd, prefix: string) {
    this.#etcd = etcd;
    this.#prefix = prefix;
  }

  /** The state of `cluster`; the first to open it sets its epoch to 0. */
  static async open(etcd: Etcd, cluster: string): Promise<ClusterStateStore> {
    const prefix = `${clusterPrefix(cluster)}state/`;
    await etcd.call(
      "creating the epoch",
      () => etcd.txn([{ key: prefix + EPOCH, createRevision: 0 }], [{ put: prefix + EPOCH, value: "0" }]),
    );
    return new ClusterStateStore(etcd, prefix);
  }

  /** Everything, read at one revision. */
  async read(): Promise<ClusterState> {
    const found = await this.#etcd.call(
      "reading the cluster state",
      () => this.#etcd.get(this.#prefix, { prefix: true }),
    );
    const byKey = new Map(found.map((kv) => [kv.key.slice(this.#prefix.length), kv.value]));
    const state: ClusterState = {
      epoch: parseEpoch(byKey.get(EPOCH) ?? null),
      members: new Map(),
      shards: new Map(),
      replicas: new Map(),
      recovery: null,
    };
    for (const [key, json] of byKey) {
      if (key === EPOCH || key === ADVANCED_BY) continue;
      let value: unknown;
      try {
        value = JSON.parse(json);
      } catch {
        throw new Error(`the cluster state's key ${key} holds a value that is not JSON: ${json.slice(0, 80)}`);
      }
      const [kind, name] = key.split("/", 2), shape = SHAPES[kind];
      if (!shape) continue; // a key a later version writes
      if (!shape(value)) {
        throw new Error(`the cluster state's key ${key} holds ${json.slice(0, 80)}: not a ${kind} entry`);
      }
      if (kind === "members") state.members.set(name, value as MemberRecord);
      else if (kind === "shards") state.shards.set(Number(name), value as number);
      else if (kind === "replicas") state.replicas.set(Number(name), value as ReplicaRecord[]);
      else state.recovery = value as RecoveryRecord;
    }
    return state;
  }

  /** The cluster's epoch now. */
  async epoch(): Promise<number> {
    const [kv] = await this.#etcd.call("reading the epoch", () => this.#etcd.get(this.#prefix + EPOCH));
    return parseEpoch(kv?.value ?? null);
  }

  /**
   * Makes every change at once if the cluster is still at `epoch`; otherwise changes nothing and throws a
   * `FencedError`. Tried again after a lost answer, it changes the same keys to the same values.
   */
  async write(epoch: number, changes: StateChange[]): Promise<void> {
    const operations = changes.map((change): Operation => {
      const key = this.#prefix + keyOf(change), value = valueOf(change);
      return value === null ? { delete: key } : { put: key, value: JSON.stringify(value) };
    });
    const result = await this.#etcd.call(
      "a fenced write of the cluster state",
      () => this.#etcd.txn(this.#atEpoch(epoch), operations, [{ get: this.#prefix + EPOCH }]),
    );
    if (!result.succeeded) throw new FencedError(epoch, refusedEpoch(result.found));
  }

  /**
   * Moves the epoch from `from` to `from + 1` and returns it, if the cluster is still at `from`;
   * otherwise (another root or recovery moved it first) throws a `FencedError`.
   */
  async advanceEpoch(from: number): Promise<number> {
    const to = from + 1, token = crypto.randomUUID();
    const [epoch, advancedBy] = [this.#prefix + EPOCH, this.#prefix + ADVANCED_BY];
    const result = await this.#etcd.call("advancing the epoch", () =>
      this.#etcd.txn(
        this.#atEpoch(from),
        [{ put: epoch, value: String(to) }, { put: advancedBy, value: token }],
        [{ get: epoch }, { get: advancedBy }],
      ));
    if (result.succeeded) return to;
    const current = refusedEpoch(result.found);
    // Our first try went through and only its answer was lost: the epoch is ours.
    if (current === to && result.found[1]?.[0]?.value === token) return to;
    throw new FencedError(from, current);
  }

  #atEpoch(epoch: number) {
    return [{ key: this.#prefix + EPOCH, value: String(epoch) }];
  }
}

/** The epoch a refused transaction read first in its failure branch. */
export function refusedEpoch(found: KeyValue[][]): number {
  return parseEpoch(found[0]?.[0]?.value ?? null);
}
