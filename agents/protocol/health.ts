// The root agent's health store: machines register under keys bound to leases, and a lease that is not
// kept alive in time expires and deletes its keys, which watchers see as a failure. This is the shape of
// etcd's leases and watches, so a real distributed key-value store can take the in-memory one's place.
// Leases run on an injected clock: the wall clock in the live cluster, a virtual one in tests.

import { type Clock, WallClock } from "./clock.ts";

export interface HealthEvent {
  type: "put" | "delete";
  key: string;
  value?: unknown;
}

export interface HealthStore {
  /** A lease that expires `ttlMs` after it was granted or last kept alive. */
  grant(ttlMs: number): Promise<number>;
  /** Renews a lease; false if it has already expired or been revoked. */
  keepAlive(lease: number): Promise<boolean>;
  /** Ends a lease now, deleting its keys. */
  revoke(lease: number): Promise<void>;
  /** Sets `key`, bound to `lease` if given (deleted when the lease ends). */
  put(key: string, value: unknown, lease?: number): Promise<void>;
  /** Every key under `prefix` and its value. */
  get(prefix: string): Promise<Map<string, unknown>>;
  /** Calls `listener` with each change under `prefix`; returns the cancel function. */
  watch(prefix: string, listener: (event: HealthEvent) => void): () => void;
}

interface Lease {
  ttlMs: number;
  cancel: () => void;
  keys: Set<string>;
}

export class InMemoryHealthStore implements HealthStore {
  readonly #values = new Map<string, { value: unknown; lease?: number }>();
  readonly #leases = new Map<number, Lease>();
  readonly #watchers = new Set<{ prefix: string; listener: (event: HealthEvent) => void }>();
  readonly #clock: Clock;
  #nextLease = 1;

  constructor(clock: Clock = new WallClock()) {
    this.#clock = clock;
  }

  grant(ttlMs: number): Promise<number> {
    if (!(ttlMs > 0)) return Promise.reject(new Error(`a lease needs a positive time to live, got ${ttlMs}`));
    const id = this.#nextLease++;
    this.#leases.set(id, { ttlMs, cancel: this.#clock.setTimer(ttlMs, () => this.#end(id)), keys: new Set() });
    return Promise.resolve(id);
  }

  keepAlive(lease: number): Promise<boolean> {
    const held = this.#leases.get(lease);
    if (!held) return Promise.resolve(false);
    held.cancel();
    held.cancel = this.#clock.setTimer(held.ttlMs, () => this.#end(lease));
    return Promise.resolve(true);
  }

  revoke(lease: number): Promise<void> {
    this.#end(lease);
    return Promise.resolve();
  }

  put(key: string, value: unknown, lease?: number): Promise<void> {
    if (lease !== undefined) {
      const held = this.#leases.get(lease);
      if (!held) return Promise.reject(new Error(`lease ${lease} has expired`));
      held.keys.add(key);
    }
    this.#values.set(key, { value, lease });
    this.#notify({ type: "put", key, value });
    return Promise.resolve();
  }

  get(prefix: string): Promise<Map<string, unknown>> {
    const found = new Map<string, unknown>();
    for (const [key, { value }] of this.#values) if (key.startsWith(prefix)) found.set(key, value);
    return Promise.resolve(found);
  }

  watch(prefix: string, listener: (event: HealthEvent) => void): () => void {
    const watcher = { prefix, listener };
    this.#watchers.add(watcher);
    return () => this.#watchers.delete(watcher);
  }

  /** Ends every lease (their keys are deleted without notifying: the store is going away). */
  close() {
    for (const lease of this.#leases.values()) lease.cancel();
    this.#leases.clear();
    this.#watchers.clear();
  }

  #end(id: number) {
    const lease = this.#leases.get(id);
    if (!lease) return;
    lease.cancel();
    this.#leases.delete(id);
    for (const key of lease.keys) {
      if (this.#values.get(key)?.lease !== id) continue;
      this.#values.delete(key);
      this.#notify({ type: "delete", key });
    }
  }

  #notify(event: HealthEvent) {
    for (const { prefix, listener } of this.#watchers) if (event.key.startsWith(prefix)) listener(event);
  }
}
