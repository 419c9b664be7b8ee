// The health store on etcd: the `HealthStore` the root agent watches, with etcd's leases and watches in
// place of the in-memory ones, so that machines in other processes and hosts heartbeat into it. Keys live
// under `gemini/<cluster>/health/` and values are JSON.
//
// Leases: etcd counts a lease's time to live in whole seconds, and raises a short one to its own minimum
// (1.5 times its election timeout: 2 s with etcd's defaults). `grant(ttlMs)` asks for ceil(ttlMs / 1000)
// seconds, at least one, and `grantedTtlMs` says what etcd gave. A lease's number is etcd's own lease id,
// which we choose (at random, below 2^53, so that a JavaScript number holds it exactly): any process's
// store can keep alive or revoke a lease another granted, as a root that takes over must.

import type { HealthEvent, HealthStore } from "../protocol/health.ts";
import { clusterPrefix, type Etcd, type EtcdWatch, isLeaseGone } from "./client.ts";
import { epochKey, FencedError, refusedEpoch } from "./state.ts";

/** The whole seconds etcd is asked for, for a time to live in milliseconds. */
export function leaseSeconds(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}

/** A lease id no one is likely to hold: 53 random bits (a clash is refused by etcd, and drawn again). */
function randomLeaseId(): number {
  const [high, low] = crypto.getRandomValues(new Uint32Array(2));
  return (high & 0x1fffff) * 2 ** 32 + low || 1;
}

export class EtcdHealthStore implements HealthStore {
  readonly #etcd: Etcd;
  readonly #prefix: string;
  readonly #epochKey: string;
  /** The leases this store granted, and the time to live etcd gave each. */
  readonly #granted = new Map<number, number>();
  readonly #watches = new Set<EtcdWatch>();

  constructor(etcd: Etcd, cluster: string) {
    this.#etcd = etcd;
    this.#prefix = `${clusterPrefix(cluster)}health/`;
    this.#epochKey = epochKey(cluster);
  }

  async grant(ttlMs: number): Promise<number> {
    if (!(ttlMs > 0)) throw new Error(`a lease needs a positive time to live, got ${ttlMs}`);
    for (;;) {
      const id = randomLeaseId();
      try {
        const granted = await this.#etcd.call(
          "a lease grant",
          () => this.#etcd.leaseGrant(leaseSeconds(ttlMs), String(id)),
        );
        this.#granted.set(id, granted.ttlSeconds * 1000);
        return id;
      } catch (error) {
        if (!/lease already exists/.test((error as Error).message)) throw error;
      }
    }
  }

  /** The time to live etcd granted a lease this store granted, in milliseconds (whole seconds, at least etcd's minimum). */
  grantedTtlMs(lease: number): number | undefined {
    return this.#granted.get(lease);
  }

  async keepAlive(lease: number): Promise<boolean> {
    const ttl = await this.#etcd.call("a lease keep-alive", () => this.#etcd.leaseKeepAlive(String(lease)));
    if (ttl > 0) return true;
    this.#granted.delete(lease);
    return false;
  }

  async revoke(lease: number): Promise<void> {
    this.#granted.delete(lease);
    try {
      await this.#etcd.call("a lease revoke", () => this.#etcd.leaseRevoke(String(lease)));
    } catch (error) {
      if (!isLeaseGone(error)) throw error; // already gone: that is what was asked
    }
  }

  put(key: string, value: unknown, lease?: number): Promise<void> {
    const json = JSON.stringify(value);
    return this.#onLease(
      lease,
      () => this.#etcd.call("a put", () => this.#etcd.put(this.#prefix + key, json, lease?.toString())),
    );
  }

  /**
   * A put that etcd makes only while the cluster's epoch (`ClusterStateStore`'s) is still `epoch`; otherwise
   * nothing changes and it throws a `FencedError`. A machine writes its rank this way, so that a root that
   * was superseded cannot have one started.
   */
  async putAtEpoch(epoch: number, key: string, value: unknown, lease?: number): Promise<void> {
    const put = { put: this.#prefix + key, value: JSON.stringify(value), lease: lease?.toString() };
    const result = await this.#onLease(lease, () =>
      this.#etcd.call(
        "a fenced put",
        () => this.#etcd.txn([{ key: this.#epochKey, value: String(epoch) }], [put], [{ get: this.#epochKey }]),
      ));
    if (!result.succeeded) throw new FencedError(epoch, refusedEpoch(result.found));
  }

  /** Runs a write bound to `lease`; a lease that etcd no longer has is one clear error. */
  async #onLease<T>(lease: number | undefined, write: () => Promise<T>): Promise<T> {
    try {
      return await write();
    } catch (error) {
      if (!isLeaseGone(error)) throw error;
      this.#granted.delete(lease!);
      throw new Error(`lease ${lease} has expired`);
    }
  }

  async get(prefix: string): Promise<Map<string, unknown>> {
    const found = await this.#etcd.call("a get", () => this.#etcd.get(this.#prefix + prefix, { prefix: true }));
    const values = new Map<string, unknown>();
    for (const kv of found) {
      const key = kv.key.slice(this.#prefix.length), value = decode(key, kv.value);
      if (value !== undefined) values.set(key, value.value);
    }
    return values;
  }

  watch(prefix: string, listener: (event: HealthEvent) => void): () => void {
    const watch = this.#etcd.watch(this.#prefix + prefix, ({ type, kv }) => {
      const key = kv.key.slice(this.#prefix.length);
      if (type === "delete") return listener({ type, key });
      const value = decode(key, kv.value);
      if (value !== undefined) listener({ type, key, value: value.value });
    }, (line) => console.error(line));
    this.#watches.add(watch);
    return () => {
      if (this.#watches.delete(watch)) watch.cancel();
    };
  }

  /** Resolves once etcd has confirmed every watch set so far (events from then on are seen). */
  async watching(): Promise<void> {
    await Promise.all([...this.#watches].map((watch) => watch.started));
  }

  /** Cancels every watch and revokes every lease this store granted (their keys go at once). */
  async close(): Promise<void> {
    for (const watch of this.#watches) watch.cancel();
    this.#watches.clear();
    await Promise.all([...this.#granted.keys()].map((lease) => this.revoke(lease).catch(() => {})));
  }
}

/** A value decoded from JSON; a value that is not JSON (another writer's) is reported and skipped. */
function decode(key: string, json: string): { value: unknown } | undefined {
  try {
    return { value: JSON.parse(json) };
  } catch {
    console.error(`etcd health key ${key} holds a value that is not JSON; it is ignored`);
    return undefined;
  }
}
