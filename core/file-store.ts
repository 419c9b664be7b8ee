// The persistent baseline in Deno: one file per checkpoint, written to a temporary name, fsync'd, then
// renamed into place (and the folder fsync'd), so a crash mid-write leaves the previous checkpoint
// intact and never a half-written one under a checkpoint's name. An optional bandwidth cap paces the
// writes and reads, modelling remote persistent storage (a cloud file system) at the lab's scale.

import { readShardHeader, type ShardExpectation } from "./checkpoint.ts";
import { describeCap, pace } from "./pace.ts";
import { type CheckpointStore, loadNewestValid, type LoadResult, newestWhole, type StoredEntry } from "./store.ts";

export interface FileStoreOptions {
  /** Checkpoints kept per owner; older ones are deleted after a save. */
  keep?: number;
  /** Bytes per second; unlimited when absent. */
  bandwidth?: number;
  /** Bytes written (or read) between bandwidth pauses and fsync-free progress. */
  ioChunkBytes?: number;
}

const SUFFIX = ".gemckpt";
const TEMPORARY = ".tmp-";

export class FileCheckpointStore implements CheckpointStore {
  readonly directory: string;
  readonly #keep: number;
  readonly #bandwidth?: number;
  readonly #ioChunkBytes: number;

  constructor(directory: string, options: FileStoreOptions = {}) {
    this.directory = directory;
    this.#keep = options.keep ?? 3;
    this.#bandwidth = options.bandwidth;
    this.#ioChunkBytes = options.ioChunkBytes ?? 4 << 20;
    if (!Number.isInteger(this.#keep) || this.#keep < 1) {
      throw new Error(`keep must be a positive integer, got ${this.#keep}`);
    }
    if (this.#bandwidth !== undefined && !(this.#bandwidth > 0)) {
      throw new Error(`bandwidth must be positive, got ${this.#bandwidth}`);
    }
  }

  get description(): string {
    return `files in ${this.directory}${describeCap(this.#bandwidth)}`;
  }

  #ownerDirectory(owner: number): string {
    return `${this.directory}/machine-${owner}`;
  }

  #path(owner: number, iteration: number): string {
    return `${this.#ownerDirectory(owner)}/${String(iteration).padStart(10, "0")}${SUFFIX}`;
  }

  async save(owner: number, iteration: number, shard: Uint8Array): Promise<StoredEntry> {
    readShardHeader(shard, `checkpoint ${iteration} of machine ${owner}`);
    const folder = this.#ownerDirectory(owner);
    await Deno.mkdir(folder, { recursive: true });
    const final = this.#path(owner, iteration);
    const temporary = `${final}${TEMPORARY}${crypto.randomUUID()}`;
    const start = performance.now();
    const file = await Deno.open(temporary, { write: true, createNew: true });
    try {
      for (let offset = 0; offset < shard.length; offset += this.#ioChunkBytes) {
        const chunk = shard.subarray(offset, offset + this.#ioChunkBytes);
        let written = 0;
        while (written < chunk.length) written += await file.write(chunk.subarray(written));
        await pace(offset + chunk.length, start, this.#bandwidth);
      }
      await file.sync();
    } catch (error) {
      file.close();
      await Deno.remove(temporary).catch(() => {});
      throw error;
    }
    file.close();
    await Deno.rename(temporary, final);
    await syncDirectory(folder);
    await this.#prune(owner);
    return { owner, iteration, bytes: shard.length, savedAt: Date.now(), kind: "own", replicatedTo: [] };
  }

  /**
   * Deletes all but the newest `keep` checkpoints of `owner` (and the newest iteration every owner has: see
   * `newestWhole`), and temporary files of writers that died.
   */
  async #prune(owner: number) {
    const whole = newestWhole(await this.entries());
    const entries = await this.entries(owner);
    for (const old of entries.slice(this.#keep)) {
      if (old.iteration !== whole) await Deno.remove(this.#path(owner, old.iteration)).catch(() => {});
    }
    for await (const item of Deno.readDir(this.#ownerDirectory(owner))) {
      if (item.name.includes(TEMPORARY)) {
        await Deno.remove(`${this.#ownerDirectory(owner)}/${item.name}`).catch(() => {});
      }
    }
  }

  async entries(owner?: number): Promise<StoredEntry[]> {
    const owners = owner === undefined ? await this.#owners() : [owner];
    const found: StoredEntry[] = [];
    for (const o of owners) {
      const list: StoredEntry[] = [];
      try {
        for await (const item of Deno.readDir(this.#ownerDirectory(o))) {
          if (!item.isFile || !item.name.endsWith(SUFFIX)) continue; // temporary files are never checkpoints
          const path = `${this.#ownerDirectory(o)}/${item.name}`;
          const info = await Deno.stat(path);
          list.push({
            owner: o,
            iteration: Number(item.name.slice(0, -SUFFIX.length)),
            bytes: info.size,
            savedAt: info.mtime?.getTime() ?? 0,
            kind: "own",
            replicatedTo: [],
          });
        }
      } catch (error) {
        if (!(error instanceof Deno.errors.NotFound)) throw error;
      }
      found.push(...list.sort((a, b) => b.iteration - a.iteration));
    }
    return found;
  }

  async #owners(): Promise<number[]> {
    const owners: number[] = [];
    try {
      for await (const item of Deno.readDir(this.directory)) {
        const match = /^machine-(\d+)$/.exec(item.name);
        if (item.isDirectory && match) owners.push(Number(match[1]));
      }
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
    return owners.sort((a, b) => a - b);
  }

  async load(owner: number, expect: ShardExpectation = {}): Promise<LoadResult> {
    return await loadNewestValid(
      owner,
      await this.entries(owner),
      (entry) => this.#read(this.#path(entry.owner, entry.iteration)),
      expect,
      (entry) => this.#path(entry.owner, entry.iteration),
    );
  }

  async #read(path: string): Promise<Uint8Array | null> {
    const start = performance.now();
    try {
      const bytes = await Deno.readFile(path);
      await pace(bytes.length, start, this.#bandwidth);
      return bytes;
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return null; // pruned by a concurrent save
      throw error;
    }
  }
}

/** fsync a folder so that a rename in it is durable (where the platform allows opening folders). */
async function syncDirectory(path: string) {
  if (Deno.build.os === "windows") return;
  const folder = await Deno.open(path, { read: true });
  try {
    await folder.sync();
  } finally {
    folder.close();
  }
}
