// What every checkpoint store offers (host memory, a file system, the browser's storage), and the one
// rule they share for loading: the newest checkpoint that passes every check, falling back to older
// ones and saying why each newer one was passed over.

import { CheckpointCorruptError, type DecodedShard, decodeShard, type ShardExpectation } from "./checkpoint.ts";

/** One stored checkpoint shard. */
export interface StoredEntry {
  /** The machine whose state it is. */
  owner: number;
  iteration: number;
  bytes: number;
  /** When it was published (ms since the epoch). */
  savedAt: number;
  /** Kept for its own machine, or a replica held for a peer. */
  kind: "own" | "replica";
  /** The machines known to hold a replica of it. */
  replicatedTo: number[];
}

export interface LoadResult {
  entry: StoredEntry;
  shard: DecodedShard;
  /** Newer checkpoints that failed a check, newest first, with the reason. */
  skipped: { iteration: number; error: string }[];
}

export interface CheckpointStore {
  /** For reports: "memory (node 3)", "files in /tmp/x", "OPFS". */
  readonly description: string;
  /** Stores a whole encoded shard for `owner`; it becomes visible only once complete and verified. */
  save(owner: number, iteration: number, shard: Uint8Array): Promise<StoredEntry>;
  /** The newest checkpoint of `owner` (of `expect.iteration` if given) that passes every check (see `loadNewestValid`). */
  load(owner: number, expect?: ShardExpectation): Promise<LoadResult>;
  /** What is stored, newest first within each owner. */
  entries(owner?: number): Promise<StoredEntry[]>;
}

/**
 * The newest iteration of which every owner in `entries` has a checkpoint (none: null). A store shared by the
 * cluster's machines never evicts it to make room: owners whose writes failed or were skipped at different
 * iterations would otherwise be left with no iteration in common, and a recovery that needs the store
 * would have to go back to the start.
 */
export function newestWhole(entries: StoredEntry[]): number | null {
  const byOwner = new Map<number, Set<number>>();
  for (const entry of entries) byOwner.set(entry.owner, (byOwner.get(entry.owner) ?? new Set()).add(entry.iteration));
  const [first, ...others] = [...byOwner.values()];
  const common = [...(first ?? [])].filter((iteration) => others.every((held) => held.has(iteration)));
  return common.length ? Math.max(...common) : null;
}

/** No checkpoint of an owner passes its checks (or there is none). */
export class NoCheckpointError extends Error {
  override name = "NoCheckpointError";
}

/** Bytes of a stored checkpoint as read: a copy, or a view on shared memory that a writer may reuse. */
export interface ReadBytes {
  bytes: Uint8Array;
  /** False if the bytes may have changed since they were read (a writer reused the slot): the read is torn. */
  unchanged(): boolean;
}

/**
 * Tries `candidates` (only those of `expect.iteration`, when it is given) newest first: the first whose bytes decode and verify, and are still unchanged
 * after `use` has consumed them, gives the result; a corrupt, torn or vanished one is recorded in
 * `skipped` and the next older one is tried.
 */
export async function useNewestValid<T>(
  owner: number,
  candidates: StoredEntry[],
  read: (entry: StoredEntry) => Promise<ReadBytes | null>,
  expect: ShardExpectation,
  source: (entry: StoredEntry) => string,
  use: (shard: DecodedShard, entry: StoredEntry) => T,
): Promise<{ entry: StoredEntry; result: T; skipped: LoadResult["skipped"] }> {
  const skipped: LoadResult["skipped"] = [];
  const torn = (entry: StoredEntry) =>
    skipped.push({ iteration: entry.iteration, error: `${source(entry)}: changed while being read` });
  const wanted = candidates.filter((entry) => expect.iteration === undefined || entry.iteration === expect.iteration);
  for (const entry of wanted.sort((a, b) => b.iteration - a.iteration)) {
    const read_ = await read(entry);
    if (!read_) {
      torn(entry);
      continue;
    }
    let result: T;
    try {
      result = use(
        decodeShard(read_.bytes, { ...expect, iteration: entry.iteration, owner: entry.owner }, source(entry)),
        entry,
      );
    } catch (error) {
      if (!(error instanceof CheckpointCorruptError)) throw error;
      if (read_.unchanged()) skipped.push({ iteration: entry.iteration, error: error.message });
      else torn(entry);
      continue;
    }
    if (read_.unchanged()) return { entry, result, skipped };
    torn(entry);
  }
  const why = skipped.length ? `: ${skipped.map((s) => s.error).join("; ")}` : "";
  throw new NoCheckpointError(`no complete, valid checkpoint of machine ${owner}${why}`);
}

/** `useNewestValid` for reads that are copies: the decoded shard itself is the result. */
export async function loadNewestValid(
  owner: number,
  candidates: StoredEntry[],
  read: (entry: StoredEntry) => Promise<Uint8Array | null>,
  expect: ShardExpectation,
  source: (entry: StoredEntry) => string,
): Promise<LoadResult> {
  const copy = async (entry: StoredEntry) => {
    const bytes = await read(entry);
    return bytes && { bytes, unchanged: () => true };
  };
  const { entry, result, skipped } = await useNewestValid(owner, candidates, copy, expect, source, (shard) => shard);
  return { entry, shard: result, skipped };
}
