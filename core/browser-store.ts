// The persistent baseline in the browser, behind the same interface as the file store: the Origin
// Private File System where the browser has it (each checkpoint a file, written through a writable
// stream that the browser commits atomically on close, so a tab that dies mid-write leaves no partial
// file), and IndexedDB through idb-keyval otherwise (each checkpoint one put, one transaction). An
// optional bandwidth cap paces writes and reads, as for the file store.

import { createStore, del, get, keys, set, type UseStore } from "idb-keyval";
import { readShardHeader, type ShardExpectation } from "./checkpoint.ts";
import { describeCap, pace } from "./pace.ts";
import { type CheckpointStore, loadNewestValid, type LoadResult, type StoredEntry } from "./store.ts";

export interface BrowserStoreOptions {
  keep?: number;
  bandwidth?: number;
  /** Use IndexedDB even where OPFS exists (the tests exercise both). */
  backend?: "opfs" | "indexeddb";
  /** Separates stores of different runs or tests (an OPFS folder, an IndexedDB database). */
  name?: string;
}

/** Where the bytes live: the two browser backends, as the store sees them. */
interface Backend {
  readonly kind: "OPFS" | "IndexedDB";
  write(owner: number, iteration: number, bytes: Uint8Array, bandwidth?: number): Promise<void>;
  read(owner: number, iteration: number): Promise<Uint8Array | null>;
  remove(owner: number, iteration: number): Promise<void>;
  list(): Promise<StoredEntry[]>;
}

// TypeScript's DOM library lacks the async iterator of directory handles that every OPFS browser has.
const entriesOf = (folder: FileSystemDirectoryHandle) =>
  (folder as unknown as { entries(): AsyncIterable<[string, FileSystemHandle]> }).entries();

const fileName = (iteration: number) => `${String(iteration).padStart(10, "0")}.gemckpt`;

async function opfsBackend(name: string): Promise<Backend | null> {
  const storage = globalThis.navigator?.storage;
  if (!storage?.getDirectory) return null;
  let root: FileSystemDirectoryHandle;
  try {
    root = await (await storage.getDirectory()).getDirectoryHandle(name, { create: true });
  } catch {
    return null; // OPFS present but refused (a private window, a file:// page)
  }
  if (!("createWritable" in FileSystemFileHandle.prototype)) return null;
  const folder = (owner: number) => root.getDirectoryHandle(`machine-${owner}`, { create: true });
  return {
    kind: "OPFS",
    async write(owner, iteration, bytes, bandwidth) {
      const writable = await (await (await folder(owner)).getFileHandle(fileName(iteration), { create: true }))
        .createWritable();
      const start = performance.now(), step = 4 << 20;
      try {
        for (let offset = 0; offset < bytes.length; offset += step) {
          await writable.write(bytes.slice(offset, offset + step));
          await pace(Math.min(offset + step, bytes.length), start, bandwidth);
        }
        await writable.close(); // the browser swaps the new contents in atomically here
      } catch (error) {
        await writable.abort().catch(() => {});
        throw error;
      }
    },
    async read(owner, iteration) {
      try {
        const file = await (await (await folder(owner)).getFileHandle(fileName(iteration))).getFile();
        return new Uint8Array(await file.arrayBuffer());
      } catch {
        return null;
      }
    },
    async remove(owner, iteration) {
      await (await folder(owner)).removeEntry(fileName(iteration)).catch(() => {});
    },
    async list() {
      const found: StoredEntry[] = [];
      for await (
        const [ownerName, ownerHandle] of entriesOf(root)
      ) {
        const owner = /^machine-(\d+)$/.exec(ownerName);
        if (!owner || ownerHandle.kind !== "directory") continue;
        for await (
          const [name, handle] of entriesOf(ownerHandle as FileSystemDirectoryHandle)
        ) {
          if (handle.kind !== "file" || !/^\d{10}\.gemckpt$/.test(name)) continue;
          // Another machine's store may delete its old checkpoints while this one lists: skip what vanished.
          const file = await (handle as FileSystemFileHandle).getFile().catch(() => null);
          if (!file) continue;
          found.push({
            owner: Number(owner[1]),
            iteration: Number(name.slice(0, 10)),
            bytes: file.size,
            savedAt: file.lastModified,
            kind: "own",
            replicatedTo: [],
          });
        }
      }
      return found;
    },
  };
}

function indexedDbBackend(name: string): Backend {
  const database: UseStore = createStore(name, "checkpoints");
  // The key carries what a listing needs, so listing never loads a checkpoint: "owner:iteration:bytes:savedAt".
  const keyOf = (owner: number, iteration: number, bytes: number, savedAt: number) =>
    `${owner}:${iteration}:${bytes}:${savedAt}`;
  const parse = (key: IDBValidKey): StoredEntry | null => {
    const match = /^(\d+):(\d+):(\d+):(\d+)$/.exec(String(key));
    return match
      ? { owner: +match[1], iteration: +match[2], bytes: +match[3], savedAt: +match[4], kind: "own", replicatedTo: [] }
      : null;
  };
  const find = async (owner: number, iteration: number) =>
    (await keys(database)).find((key) => {
      const entry = parse(key);
      return entry?.owner === owner && entry.iteration === iteration;
    });
  return {
    kind: "IndexedDB",
    async write(owner, iteration, bytes, bandwidth) {
      const start = performance.now();
      await set(keyOf(owner, iteration, bytes.length, Date.now()), bytes, database); // one transaction: all or nothing
      await pace(bytes.length, start, bandwidth);
    },
    async read(owner, iteration) {
      const key = await find(owner, iteration);
      return key === undefined ? null : (await get<Uint8Array>(key, database)) ?? null;
    },
    async remove(owner, iteration) {
      const key = await find(owner, iteration);
      if (key !== undefined) await del(key, database);
    },
    async list() {
      return (await keys(database)).map(parse).filter((entry): entry is StoredEntry => entry !== null);
    },
  };
}

export class BrowserCheckpointStore implements CheckpointStore {
  readonly #backend: Backend;
  readonly #keep: number;
  readonly #bandwidth?: number;

  /** OPFS where the browser has it (unless `backend` says otherwise), else IndexedDB. */
  static async open(options: BrowserStoreOptions = {}): Promise<BrowserCheckpointStore> {
    const name = options.name ?? "gemini-lab";
    const opfs = options.backend === "indexeddb" ? null : await opfsBackend(name);
    if (options.backend === "opfs" && !opfs) throw new Error("this browser has no usable Origin Private File System");
    return new BrowserCheckpointStore(opfs ?? indexedDbBackend(name), options);
  }

  private constructor(backend: Backend, options: BrowserStoreOptions) {
    this.#backend = backend;
    this.#keep = options.keep ?? 3;
    this.#bandwidth = options.bandwidth;
  }

  get backend(): "OPFS" | "IndexedDB" {
    return this.#backend.kind;
  }

  get description(): string {
    return `${this.#backend.kind}${describeCap(this.#bandwidth)}`;
  }

  async save(owner: number, iteration: number, shard: Uint8Array): Promise<StoredEntry> {
    readShardHeader(shard, `checkpoint ${iteration} of machine ${owner}`);
    await this.#backend.write(owner, iteration, shard, this.#bandwidth);
    for (const old of (await this.entries(owner)).slice(this.#keep)) await this.#backend.remove(owner, old.iteration);
    return { owner, iteration, bytes: shard.length, savedAt: Date.now(), kind: "own", replicatedTo: [] };
  }

  async entries(owner?: number): Promise<StoredEntry[]> {
    return (await this.#backend.list())
      .filter((entry) => owner === undefined || entry.owner === owner)
      .sort((a, b) => a.owner - b.owner || b.iteration - a.iteration);
  }

  async load(owner: number, expect: ShardExpectation = {}): Promise<LoadResult> {
    return await loadNewestValid(
      owner,
      await this.entries(owner),
      async (entry) => {
        const start = performance.now();
        const bytes = await this.#backend.read(entry.owner, entry.iteration);
        if (bytes) await pace(bytes.length, start, this.#bandwidth);
        return bytes;
      },
      expect,
      (entry) => `${this.#backend.kind} checkpoint ${entry.iteration} of machine ${entry.owner}`,
    );
  }
}
