// What a cluster of processes keeps in etcd's health space (`gemini/<cluster>/health/`), beside the root
// agent's own keys (`machines/<rank>`, `root/state`): the job's settings, which the first root writes and
// every machine waits for; each machine process, under a lease it keeps alive itself; the incarnation each
// rank was last started as; each iteration's loss and each recovery; and the end of the run.

import type { PeerAddress } from "../net/tcp-transport.ts";
import type { EtcdHealthStore } from "../etcd/health.ts";

export const SETTINGS_KEY = "settings";
export const DONE_KEY = "done";
export const PROCESSES = "processes/";
export const INCARNATIONS = "incarnations/";
export const LOSSES = "losses/";
export const RECOVERIES = "recoveries/";

/** A recovery as a root records it (under its epoch): the ranks recovered, and where each shard came from. */
export interface RecoveryRecord {
  root: string;
  ranks: number[];
  iteration: number;
  /** By rank: "local", "peer 3", "persistent" or "initial". */
  sources: string[];
  /** Milliseconds of each phase, on the root's clock: from the first detection to training resumed. */
  phases: { replacement: number; retrieval: number; load: number; synchronize: number; total: number };
}

/** A machine process as it registers itself: where its control port is, and the rank it runs (none: a spare). */
export interface ProcessRecord {
  control: string;
  rank: number | null;
  incarnation: number;
}

/** `host:port` as an address; a mistake is one clear error. */
export function parseAddress(text: string, what: string): PeerAddress {
  const match = /^(.+):(\d{1,5})$/.exec(text);
  const port = match ? Number(match[2]) : NaN;
  if (!match || port > 65535) throw new Error(`${what} must be HOST:PORT, got "${text}"`);
  return { hostname: match[1].replace(/^\[(.*)\]$/, "$1"), port };
}

export const formatAddress = ({ hostname, port }: PeerAddress) =>
  `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;

/**
 * The first entry under `prefix` for which `test` holds: one there now, else the first put a watch sees.
 */
export async function waitFor(
  health: EtcdHealthStore,
  prefix: string,
  test: (key: string, value: unknown) => boolean = () => true,
): Promise<[string, unknown]> {
  let seen!: (entry: [string, unknown]) => void;
  const put = new Promise<[string, unknown]>((resolve) => seen = resolve);
  const unwatch = health.watch(prefix, (event) => {
    if (event.type === "put" && test(event.key, event.value)) seen([event.key, event.value]);
  });
  const find = async () => [...await health.get(prefix)].find(([key, value]) => test(key, value));
  try {
    // Read first: an etcd that cannot be reached fails this (after the client's bounded retries), where
    // waiting for the watch to be confirmed would wait for ever.
    const now = await find();
    if (now) return now;
    await health.watching(); // a put from now on is seen; one before is read
    return await find() ?? await put;
  } finally {
    unwatch();
  }
}

/** The value of `key` once it is set. */
export async function valueOf(health: EtcdHealthStore, key: string): Promise<unknown> {
  return (await waitFor(health, key, (found) => found === key))[1];
}
