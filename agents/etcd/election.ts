// Root election: every root process, the active one and its standbys, campaigns in one etcd election per
// cluster (etcd's election service, the recipe of etcd's Go client: each candidate's key is bound to its own
// lease, and the oldest key leads). A leader whose lease ends, because its process died or stalled past
// the lease or its connection to etcd was lost, loses its key, and the next candidate is elected. The
// winner then reads the cluster's state back (`ClusterStateStore.read`) and advances the epoch, which
// fences everything the old leader might still try to write.

import { clusterPrefix, type Etcd, isPassing } from "./client.ts";

/** A candidate's lease ended, or could not be kept alive for two of its lives. */
class LeaseLostError extends Error {
  override name = "LeaseLostError";
}

/** A won election: held until `lost` settles or `resign` is called. */
export interface Leadership {
  /** The value this candidate campaigned with. */
  readonly id: string;
  /**
   * Resolves when the leadership is lost: its lease ended, or could not be kept alive for twice its time
   * to live (an etcd away that long, or a process stalled that long). Never after `resign`.
   */
  readonly lost: Promise<Error>;
  /** The etcd lease the leadership rests on, as etcd writes it (a decimal 64-bit id). */
  readonly lease: string;
  /** Gives the leadership up at once: the next candidate is elected without waiting for a lease to end. */
  resign(): Promise<void>;
}

/**
 * Keeps a lease alive, a keep-alive every third of its life; `ended` resolves when etcd says the lease has
 * ended, or when no keep-alive was answered for twice its life (an etcd that long away, or a stalled process).
 */
function keepAlive(etcd: Etcd, lease: string, ttlSeconds: number) {
  let lastAnswer = etcd.clock.now(), stopped = false, cancel = () => {};
  let end!: (error: Error) => void;
  const ended = new Promise<Error>((resolve) => end = resolve);
  const beat = async () => {
    if (stopped) return;
    try {
      const ttl = await etcd.leaseKeepAlive(lease);
      if (stopped) return; // resigned meanwhile: its lease was revoked on purpose
      if (ttl === 0) return end(new LeaseLostError(`lease ${lease} has ended`));
      lastAnswer = etcd.clock.now();
    } catch (error) {
      if (stopped) return;
      if (!isPassing(error)) return end(error as Error);
      if (etcd.clock.now() - lastAnswer > 2 * ttlSeconds * 1000) {
        return end(
          new LeaseLostError(`lease ${lease} was not kept alive for ${2 * ttlSeconds} s: ${(error as Error).message}`),
        );
      }
    }
    if (!stopped) cancel = etcd.clock.setTimer(ttlSeconds * 1000 / 3, beat);
  };
  cancel = etcd.clock.setTimer(ttlSeconds * 1000 / 3, beat);
  return {
    ended,
    stop: () => {
      stopped = true;
      cancel();
    },
  };
}

export class RootElection {
  readonly #etcd: Etcd;
  readonly #name: string;
  /** The seconds a leader's lease lives without keep-alives: how long a dead leader keeps its standbys waiting. */
  readonly ttlSeconds: number;

  constructor(etcd: Etcd, cluster: string, ttlSeconds = 5) {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new Error(`a root's lease is a whole number of seconds, at least 1, got ${ttlSeconds}`);
    }
    this.ttlSeconds = ttlSeconds;
    this.#etcd = etcd;
    this.#name = `${clusterPrefix(cluster)}election/root`;
  }

  /**
   * Campaigns as `id` and resolves once elected. A candidate whose lease ends before it is elected (its process
   * stalled past the lease, or etcd was away for two of its lives) campaigns again on a fresh lease, saying so
   * through `log`, until `signal` aborts; a failure that cannot pass (etcd refused it) rejects. A candidate
   * waits behind the leader for as long as it leads.
   */
  async campaign(
    id: string,
    { signal, log }: { signal?: AbortSignal; log?: (line: string) => void } = {},
  ): Promise<Leadership> {
    for (;;) {
      signal?.throwIfAborted();
      try {
        return await this.#campaignOnce(id, signal);
      } catch (error) {
        const passes = error instanceof LeaseLostError || isPassing(error);
        if (!passes || signal?.aborted) throw error;
        log?.(`${id}: its campaign failed (${(error as Error).message}); it campaigns again`);
        await new Promise((resolve) => this.#etcd.clock.setTimer(this.ttlSeconds * 1000 / 4, () => resolve(undefined)));
      }
    }
  }

  async #campaignOnce(id: string, signal?: AbortSignal): Promise<Leadership> {
    const etcd = this.#etcd;
    const { id: lease } = await etcd.call("a root's lease grant", () => etcd.leaseGrant(this.ttlSeconds));
    const kept = keepAlive(etcd, lease, this.ttlSeconds);
    // A lease lost while waiting ends the campaign's request, which then fails with the loss (once elected,
    // `lost` says it instead).
    const giveUp = new AbortController();
    kept.ended.then((error) => giveUp.abort(error));
    try {
      const waiting = AbortSignal.any(signal ? [signal, giveUp.signal] : [giveUp.signal]);
      const leader = await etcd.campaign(this.#name, lease, id, waiting);
      return {
        id,
        lost: kept.ended,
        lease,
        resign: async () => {
          kept.stop();
          await etcd.call("a root's resignation", () => etcd.resign(leader));
          await etcd.leaseRevoke(lease).catch(() => {}); // its key is gone already; the lease goes with it
        },
      };
    } catch (error) {
      // Not elected: the lease goes, and with it this candidate's key if etcd still has it.
      kept.stop();
      await etcd.leaseRevoke(lease).catch(() => {});
      throw error;
    }
  }

  /** The current leader's id, if there is one. */
  leader(): Promise<string | undefined> {
    return this.#etcd.call("reading the root election's leader", () => this.#etcd.leader(this.#name));
  }
}
