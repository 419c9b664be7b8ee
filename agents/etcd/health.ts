// The health store on etcd: the `HealthStore` the root agent watches, with etcd's leases and watches in
// place of the in-memory ones, so that machines in other processes and hosts heartbeat into it. Keys live
// under `gemini/<cluster>/health/` and values are JSON.
//
// Leases: etcd counts a lease's time to live in whole seconds, and raises a short one to its own minimum
// (1.5 times its election timeout: 2 s with etcd's defaults). `grant(ttlMs)` asks for ceil(ttlMs / 1000)
// seconds, at least one, and `grantedTtlMs` says what etcd gave. A lease handle is a small number local to
// this store (etcd's lease ids are 64-bit, past what a JavaScript number holds exactly).

import { EtcdLeaseInvalidError, type IKeyValue, type Lease, type Namespace, type Watcher } from "etcd3";
import type { HealthEvent, HealthStore } from "../protocol/health.ts";
import { clusterPrefix, type Etcd } from "./client.ts";

/** The whole seconds etcd is asked for, for a time to live in milliseconds. */
export function leaseSeconds(ttlMs: number): number {
  return Math.max(1, Math.ceil(ttlMs / 1000));
}

export class EtcdHealthStore implements HealthStore {
  readonly #etcd: Etcd;
  readonly #space: Namespace;
  readonly #leases = new Map<number, { lease: Lease; ttlMs: number }>();
  readonly #watchers = new Set<Watcher>();
  #nextLease = 1;

  constructor(etcd: Etcd, cluster: string) {
    this.#etcd = etcd;
    this.#space = etcd.client.namespace(`${clusterPrefix(cluster)}health/`);
  }

  async grant(ttlMs: number): Promise<number> {
    if (!(ttlMs > 0)) throw new Error(`a lease needs a positive time to live, got ${ttlMs}`);
    const lease = await this.#etcd.call("a lease grant", async () => {
      const lease = this.#space.lease(leaseSeconds(ttlMs), { autoKeepAlive: false });
      await lease.grant();
      return lease;
    });
    const id = await lease.grant();
    const { grantedTTL } = await this.#etcd.call(
      "a lease's time to live",
      () => this.#etcd.client.leaseClient.leaseTimeToLive({ ID: id }),
    );
    const handle = this.#nextLease++;
    this.#leases.set(handle, { lease, ttlMs: Number(grantedTTL) * 1000 });
    return handle;
  }

  /** The time to live etcd granted the lease, in milliseconds (whole seconds, at least etcd's minimum). */
  grantedTtlMs(lease: number): number | undefined {
    return this.#leases.get(lease)?.ttlMs;
  }

  async keepAlive(lease: number): Promise<boolean> {
    const held = this.#leases.get(lease);
    if (!held) return false;
    try {
      await this.#etcd.call("a lease keep-alive", () => held.lease.keepaliveOnce(this.#etcd.deadline()));
      return true;
    } catch (error) {
      if (!(error instanceof EtcdLeaseInvalidError)) throw error;
      this.#leases.delete(lease);
      return false;
    }
  }

  async revoke(lease: number): Promise<void> {
    const held = this.#leases.get(lease);
    if (!held) return;
    this.#leases.delete(lease);
    await this.#etcd.call("a lease revoke", () => held.lease.revoke());
  }

  async put(key: string, value: unknown, lease?: number): Promise<void> {
    const json = JSON.stringify(value);
    if (lease === undefined) {
      await this.#etcd.call("a put", () => this.#space.put(key).value(json).exec());
      return;
    }
    const held = this.#leases.get(lease);
    if (!held) throw new Error(`lease ${lease} has expired`);
    try {
      await this.#etcd.call("a put", () => held.lease.put(key).value(json).exec());
    } catch (error) {
      if (!(error instanceof EtcdLeaseInvalidError)) throw error;
      this.#leases.delete(lease);
      throw new Error(`lease ${lease} has expired`);
    }
  }

  async get(prefix: string): Promise<Map<string, unknown>> {
    const found = await this.#etcd.call("a get", () => this.#space.getAll().prefix(prefix).strings());
    const values = new Map<string, unknown>();
    for (const [key, json] of Object.entries(found)) {
      const value = decode(key, json);
      if (value !== undefined) values.set(key, value.value);
    }
    return values;
  }

  watch(prefix: string, listener: (event: HealthEvent) => void): () => void {
    // The watcher exists, with its listeners, before etcd confirms it (`watching`); after an outage etcd3
    // resumes it from the last revision it saw, so a key that expired meanwhile is still seen deleted.
    const watcher = this.#space.watch().prefix(prefix).watcher();
    watcher.on("put", (kv: IKeyValue) => {
      const key = kv.key.toString(), value = decode(key, kv.value.toString());
      if (value !== undefined) listener({ type: "put", key, value: value.value });
    });
    watcher.on("delete", (kv: IKeyValue) => listener({ type: "delete", key: kv.key.toString() }));
    watcher.on("disconnected", (error: Error) => console.error(`etcd watch on ${prefix} lost: ${error.message}`));
    watcher.on("error", (error: Error) => console.error(`etcd watch on ${prefix} failed: ${error.message}`));
    this.#watchers.add(watcher);
    return () => {
      if (this.#watchers.delete(watcher)) watcher.cancel().catch(() => {});
    };
  }

  /** Resolves once etcd has confirmed every watch set so far (events from then on are seen). */
  async watching(): Promise<void> {
    await Promise.all(
      [...this.#watchers].filter((watcher) => watcher.id === null).map((watcher) =>
        new Promise<void>((resolve) => watcher.once("connected", () => resolve()))
      ),
    );
  }

  /** Cancels every watch and revokes every lease this store granted (their keys go at once). */
  async close(): Promise<void> {
    for (const watcher of this.#watchers) await watcher.cancel().catch(() => {});
    this.#watchers.clear();
    const leases = [...this.#leases.values()];
    this.#leases.clear();
    await Promise.all(leases.map(({ lease }) => lease.revoke().catch(() => {})));
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
