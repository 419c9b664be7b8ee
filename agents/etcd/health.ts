// The health store on etcd: the `HealthStore` the root agent watches, with etcd's leases and watches in
// place of the in-memory ones, so that machines in other processes and hosts heartbeat into it. Keys live
// under `gemini/<cluster>/health/` and values are JSON.
//
// Leases: etcd counts a lease's time to live in whole seconds, and raises a short one to its own minimum
// (1.5 times its election timeout: 2 s with etcd's defaults). `grant(ttlMs)` asks for ceil(ttlMs / 1000)
// seconds, at least one, and `grantedTtlMs` says what etcd gave. A lease's number is etcd's own lease id,
// which we choose (at random, below 2^53, so that a JavaScript number holds it exactly): any process's
// store can keep alive or revoke a lease another granted, as a root that takes over must.

import {
  castGrpcError,
  EtcdLeaseInvalidError,
  GRPCUnavailableError,
  type IKeyValue,
  type ILeaseKeepAliveResponse,
  type Namespace,
  type Watcher,
} from "etcd3";
import type { HealthEvent, HealthStore } from "../protocol/health.ts";
import { clusterPrefix, type Etcd } from "./client.ts";

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
  readonly #space: Namespace;
  /** The leases this store granted, and the time to live etcd gave each. */
  readonly #granted = new Map<number, number>();
  readonly #watchers = new Set<Watcher>();

  constructor(etcd: Etcd, cluster: string) {
    this.#etcd = etcd;
    this.#space = etcd.client.namespace(`${clusterPrefix(cluster)}health/`);
  }

  async grant(ttlMs: number): Promise<number> {
    if (!(ttlMs > 0)) throw new Error(`a lease needs a positive time to live, got ${ttlMs}`);
    for (;;) {
      const id = randomLeaseId();
      try {
        const { TTL } = await this.#etcd.call(
          "a lease grant",
          () => this.#etcd.client.leaseClient.leaseGrant({ TTL: leaseSeconds(ttlMs), ID: String(id) }),
        );
        this.#granted.set(id, Number(TTL) * 1000);
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
    const { TTL } = await this.#etcd.call("a lease keep-alive", () => this.#keepAliveOnce(lease));
    if (TTL !== "0") return true;
    this.#granted.delete(lease);
    return false;
  }

  async revoke(lease: number): Promise<void> {
    this.#granted.delete(lease);
    try {
      await this.#etcd.call("a lease revoke", () => this.#etcd.client.leaseClient.leaseRevoke({ ID: String(lease) }));
    } catch (error) {
      if (!(error instanceof EtcdLeaseInvalidError)) throw error; // already gone: that is what was asked
    }
  }

  async put(key: string, value: unknown, lease?: number): Promise<void> {
    const put = this.#space.put(key).value(JSON.stringify(value));
    if (lease !== undefined) put.lease(String(lease));
    try {
      await this.#etcd.call("a put", () => put.exec());
    } catch (error) {
      if (!(error instanceof EtcdLeaseInvalidError)) throw error;
      this.#granted.delete(lease!);
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
    await Promise.all([...this.#granted.keys()].map((lease) => this.revoke(lease).catch(() => {})));
  }

  /** One keep-alive on a stream of its own (etcd answers TTL "0" for a lease that has ended). */
  async #keepAliveOnce(lease: number): Promise<ILeaseKeepAliveResponse> {
    const stream = await this.#etcd.client.leaseClient.leaseKeepAlive(this.#etcd.deadline());
    try {
      return await new Promise((resolve, reject) => {
        stream.on("data", resolve);
        stream.on("error", (error: Error) => reject(castGrpcError(error)));
        stream.on("end", () => reject(new GRPCUnavailableError("the keep-alive stream ended without an answer")));
        stream.write({ ID: String(lease) });
      });
    } finally {
      stream.end();
    }
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
