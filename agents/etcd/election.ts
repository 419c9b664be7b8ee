// Root election: every root process, the active one and its standbys, campaigns in one etcd election per
// cluster (etcd3's `Election`, the recipe of etcd's Go client: each candidate's key is bound to its own
// lease, and the oldest key leads). A leader whose lease ends, because its process died or stalled past
// the lease or its connection to etcd was lost, loses its key, and the next candidate is elected. The
// winner then reads the cluster's state back (`ClusterStateStore.read`) and advances the epoch, which
// fences everything the old leader might still try to write.

import { type Campaign, type Election, EtcdLeaseInvalidError, isRecoverableError } from "etcd3";
import { clusterPrefix, type Etcd } from "./client.ts";

/** A won election: held until `lost` settles or `resign` is called. */
export interface Leadership {
  /** The value this candidate campaigned with. */
  readonly id: string;
  /**
   * Resolves when the leadership is lost: its lease ended, or could not be kept alive for twice its time
   * to live (etcd3's rule, which an etcd outage that long trips). Never after `resign`.
   */
  readonly lost: Promise<Error>;
  /** The etcd lease the leadership rests on, as etcd writes it (a decimal 64-bit id). */
  lease(): Promise<string>;
  /** Gives the leadership up at once: the next candidate is elected without waiting for a lease to end. */
  resign(): Promise<void>;
}

export class RootElection {
  readonly #election: Election;
  /** The seconds a leader's lease lives without keep-alives: how long a dead leader keeps its standbys waiting. */
  readonly ttlSeconds: number;

  constructor(etcd: Etcd, cluster: string, ttlSeconds = 5) {
    if (!Number.isInteger(ttlSeconds) || ttlSeconds < 1) {
      throw new Error(`a root's lease is a whole number of seconds, at least 1, got ${ttlSeconds}`);
    }
    this.ttlSeconds = ttlSeconds;
    this.#election = etcd.client.namespace(clusterPrefix(cluster)).election("root", ttlSeconds);
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
        const passes = error instanceof EtcdLeaseInvalidError || (error instanceof Error && isRecoverableError(error));
        if (!passes || signal?.aborted) throw error;
        log?.(`${id}: its campaign failed (${error.message}); it campaigns again`);
        await new Promise((resolve) => setTimeout(resolve, this.ttlSeconds * 1000 / 4));
      }
    }
  }

  #campaignOnce(id: string, signal?: AbortSignal): Promise<Leadership> {
    const campaign: Campaign = this.#election.campaign(id);
    return new Promise((resolve, reject) => {
      let elected = false, loseIt: (error: Error) => void;
      const lost = new Promise<Error>((resolve) => loseIt = resolve);
      const abort = () => {
        reject(signal!.reason);
        campaign.resign().catch(() => {});
      };
      signal?.addEventListener("abort", abort, { once: true });
      campaign.on("error", (error: Error) => {
        signal?.removeEventListener("abort", abort);
        elected ? loseIt(error) : reject(error);
      });
      campaign.on("elected", () => {
        signal?.removeEventListener("abort", abort);
        elected = true;
        resolve({
          id,
          lost,
          lease: async () => (await campaign.getCampaignKey()).split("/").at(-1)!,
          resign: () => campaign.resign(),
        });
      });
    });
  }

  /** The current leader's id, if there is one. */
  leader(): Promise<string | undefined> {
    return this.#election.leader();
  }
}
