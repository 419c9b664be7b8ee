// InMemoryCheckpointStore: a machine's host memory for checkpoints, a fixed arena in one
// SharedArrayBuffer that every Worker of the cluster can attach to. It keeps up to K checkpoints
// (default 3) per owner: the machine's own shards and the replicas it holds for peers.
//
// Publishing is a seqlock per slot. A writer takes a slot that is not the newest complete one, makes its
// version odd, writes and verifies the shard, and only then makes the version even again (an atomic
// store). A reader, copying a slot or using it in place, keeps what it read only if the version was the
// same even number before and after. So a reader in another Worker never takes a torn or half-written
// checkpoint, even if the writer is terminated mid-write: that slot just stays odd until a later write
// reclaims it.
//
// Layout of the buffer (all offsets in bytes):
//   0..64                  control: magic, layout version, lock, node, max owners, slots per owner,
//                          owners used (int32); allocated and arena bytes (float64 at 32 and 40)
//   64..                   owner records: owner node, slot capacity, data offset, then one slot record
//                          per slot: version, replicated-to bitmask (int32), byte length, saved at,
//                          iteration (float64)
//   data (64-aligned)..    the slots themselves, allocated to owners on their first save

import {
  CheckpointCorruptError,
  type DecodedShard,
  readShardHeader,
  type ShardExpectation,
  shardLayout,
  type ShardMeta,
  type ShardTensors,
  verifyShard,
  writeShard,
} from "./checkpoint.ts";
import { enableFastChecksum } from "./checksum.ts";
import {
  type CheckpointStore,
  loadNewestValid,
  type LoadResult,
  type ReadBytes,
  type StoredEntry,
  useNewestValid,
} from "./store.ts";

const MAGIC = 0x47454d49; // "GEMI"
const LAYOUT_VERSION = 1;
const CONTROL_BYTES = 64;
const OWNER_HEADER_BYTES = 24;
const SLOT_RECORD_BYTES = 32; // int32 version, int32 replicas, float64 length, time, iteration
const DATA_ALIGNMENT = 64;
const HEADER_GROWTH = 4096;

/** In a slot's replica-holder mask (peers 0..30), the bit that marks the checkpoint to keep. */
const KEEP_FLAG = 1 << 31;

// Int32 indices of the control block.
const C_MAGIC = 0, C_VERSION = 1, C_LOCK = 2, C_NODE = 3, C_MAX_OWNERS = 4, C_SLOTS = 5, C_OWNERS_USED = 6;
// Float64 indices of the control block.
const F_ALLOCATED = 4, F_ARENA = 5;

/** The arena cannot fit another owner's slots (or a shard is larger than its owner's slots). */
export class ArenaFullError extends Error {
  override name = "ArenaFullError";
}

/** A checkpoint being written into a slot: fill `bytes`, then `commit` (verify and publish). */
export interface SlotWriter {
  bytes: Uint8Array;
  /**
   * Verifies the shard in the slot and publishes it; throws (leaving it unpublished) if it fails a check.
   * `chunksChecked`: the chunks were checked against their checksums as they were written (`writeShard`
   * does), so only the header is checked again.
   */
  commit(options?: { chunksChecked?: boolean }): StoredEntry;
}

export interface MemoryStoreOptions {
  /** Checkpoints kept per owner (at least 2: a write never touches the newest complete one). */
  slotsPerOwner?: number;
  /** Owners (this machine and the peers it holds replicas for) the arena can hold. */
  maxOwners?: number;
}

// A WebAssembly page, and the most pages a (32-bit) WebAssembly memory can have.
const WASM_PAGE = 65536, WASM_MAX_PAGES = 65536;

/**
 * The arena's memory: a shared WebAssembly.Memory where it fits in one (up to 4 GiB), so that chunk
 * checksums run with WebAssembly SIMD at memory speed, else a plain SharedArrayBuffer.
 */
function arenaMemory(bytes: number): WebAssembly.Memory | SharedArrayBuffer {
  const pages = Math.ceil(bytes / WASM_PAGE);
  if (pages > WASM_MAX_PAGES) return new SharedArrayBuffer(bytes);
  return new WebAssembly.Memory({ initial: pages, maximum: pages, shared: true });
}

/** The SharedArrayBuffer behind an arena (TypeScript types a shared memory's buffer as an ArrayBuffer). */
function bytesOf(memory: WebAssembly.Memory | SharedArrayBuffer): SharedArrayBuffer {
  return memory instanceof WebAssembly.Memory ? memory.buffer as unknown as SharedArrayBuffer : memory;
}

export class InMemoryCheckpointStore implements CheckpointStore {
  /** The arena: hand it to another Worker and `attach` there. */
  readonly memory: WebAssembly.Memory | SharedArrayBuffer;
  /** The arena's bytes. */
  readonly buffer: SharedArrayBuffer;
  readonly #i32: Int32Array;
  readonly #f64: Float64Array;
  readonly #bytes: Uint8Array;

  /** Allocates an arena of `arenaBytes` for machine `node`. */
  static create(node: number, arenaBytes: number, options: MemoryStoreOptions = {}): InMemoryCheckpointStore {
    const slots = options.slotsPerOwner ?? 3, maxOwners = options.maxOwners ?? 16;
    if (!Number.isInteger(slots) || slots < 2) {
      throw new Error(`slotsPerOwner must be an integer of at least 2, got ${slots}`);
    }
    if (!Number.isInteger(maxOwners) || maxOwners < 1) {
      throw new Error(`maxOwners must be a positive integer, got ${maxOwners}`);
    }
    const tables = CONTROL_BYTES + maxOwners * (OWNER_HEADER_BYTES + slots * SLOT_RECORD_BYTES);
    const dataStart = Math.ceil(tables / DATA_ALIGNMENT) * DATA_ALIGNMENT;
    if (!(arenaBytes >= dataStart)) {
      throw new Error(`an arena of ${arenaBytes} bytes cannot even hold its tables (${dataStart})`);
    }
    let memory: WebAssembly.Memory | SharedArrayBuffer;
    try {
      memory = arenaMemory(arenaBytes);
    } catch (error) {
      throw new ArenaFullError(
        `cannot allocate a ${arenaBytes}-byte arena for machine ${node}: ${(error as Error).message}`,
      );
    }
    const buffer = bytesOf(memory);
    const i32 = new Int32Array(buffer, 0, CONTROL_BYTES / 4), f64 = new Float64Array(buffer, 0, CONTROL_BYTES / 8);
    i32[C_NODE] = node;
    i32[C_MAX_OWNERS] = maxOwners;
    i32[C_SLOTS] = slots;
    f64[F_ALLOCATED] = dataStart;
    f64[F_ARENA] = arenaBytes;
    i32[C_VERSION] = LAYOUT_VERSION;
    // Commit the arena's pages now (the OS maps them on first touch), so that no checkpoint pays for
    // page faults: measured here, a first write into untouched memory took ten times as long.
    new Uint8Array(buffer, dataStart).fill(0);
    Atomics.store(i32, C_MAGIC, MAGIC);
    return new InMemoryCheckpointStore(memory);
  }

  /**
   * A view on an arena another Worker created: pass its `memory` where the arena is a WebAssembly.Memory
   * (checksums then run with SIMD here too), or its `buffer`.
   */
  static attach(memory: WebAssembly.Memory | SharedArrayBuffer): InMemoryCheckpointStore {
    return new InMemoryCheckpointStore(memory);
  }

  private constructor(memory: WebAssembly.Memory | SharedArrayBuffer) {
    const buffer = bytesOf(memory);
    this.memory = memory;
    this.buffer = buffer;
    if (memory instanceof WebAssembly.Memory) enableFastChecksum(memory);
    this.#i32 = new Int32Array(buffer);
    this.#f64 = new Float64Array(buffer, 0, Math.floor(buffer.byteLength / 8));
    this.#bytes = new Uint8Array(buffer);
    if (Atomics.load(this.#i32, C_MAGIC) !== MAGIC || this.#i32[C_VERSION] !== LAYOUT_VERSION) {
      throw new Error("this SharedArrayBuffer is not a checkpoint arena of this version");
    }
  }

  /** The machine this arena belongs to. */
  get node(): number {
    return this.#i32[C_NODE];
  }

  get description(): string {
    return `host memory of machine ${this.node}`;
  }

  get arenaBytes(): number {
    return this.#f64[F_ARENA];
  }

  // --- records --------------------------------------------------------------------------------

  #ownerBase(index: number): number {
    return CONTROL_BYTES + index * (OWNER_HEADER_BYTES + this.#i32[C_SLOTS] * SLOT_RECORD_BYTES);
  }

  /** Byte offset of slot `slot`'s record for the owner at `index`. */
  #slotBase(index: number, slot: number): number {
    return this.#ownerBase(index) + OWNER_HEADER_BYTES + slot * SLOT_RECORD_BYTES;
  }

  #ownerIndex(owner: number): number {
    const used = Atomics.load(this.#i32, C_OWNERS_USED);
    for (let i = 0; i < used; i++) if (this.#i32[this.#ownerBase(i) / 4] === owner) return i;
    return -1;
  }

  #slotCapacity(index: number): number {
    return this.#f64[(this.#ownerBase(index) + 8) / 8];
  }

  #slotData(index: number, slot: number): number {
    return this.#f64[(this.#ownerBase(index) + 16) / 8] + slot * this.#slotCapacity(index);
  }

  #version(index: number, slot: number): number {
    return Atomics.load(this.#i32, this.#slotBase(index, slot) / 4);
  }

  #entry(index: number, slot: number): StoredEntry {
    const base = this.#slotBase(index, slot), owner = this.#i32[this.#ownerBase(index) / 4];
    const mask = Atomics.load(this.#i32, base / 4 + 1);
    return {
      owner,
      iteration: this.#f64[base / 8 + 3],
      bytes: this.#f64[base / 8 + 1],
      savedAt: this.#f64[base / 8 + 2],
      kind: owner === this.node ? "own" : "replica",
      replicatedTo: Array.from({ length: 31 }, (_, peer) => peer).filter((peer) => mask & (1 << peer)),
    };
  }

  // --- the lock, for the short sections that change the tables ---------------------------------

  #withLock<T>(body: () => T): T {
    // A spin lock (a page's main thread may not Atomics.wait), held for a few table writes. A holder
    // terminated inside it would hold it forever, so a lock held past a second is taken over.
    const deadline = Date.now() + 1000;
    while (Atomics.compareExchange(this.#i32, C_LOCK, 0, 1) !== 0) {
      if (Date.now() > deadline) break;
    }
    try {
      return body();
    } finally {
      Atomics.store(this.#i32, C_LOCK, 0);
    }
  }

  /** The owner's index, allocating its K slots of `capacity` bytes on its first save. */
  #ownerFor(owner: number, capacity: number): number {
    const existing = this.#ownerIndex(owner);
    if (existing >= 0) return existing;
    return this.#withLock(() => {
      const again = this.#ownerIndex(owner);
      if (again >= 0) return again;
      const used = this.#i32[C_OWNERS_USED], slots = this.#i32[C_SLOTS];
      if (used >= this.#i32[C_MAX_OWNERS]) {
        throw new ArenaFullError(
          `machine ${this.node}'s arena already holds checkpoints for ${used} owners, its maximum`,
        );
      }
      // Later checkpoints of the same shard have slightly longer headers (more digits in the iteration,
      // the data position, the time): slots leave room for that.
      const slotBytes = Math.ceil((capacity + HEADER_GROWTH) / DATA_ALIGNMENT) * DATA_ALIGNMENT;
      const start = this.#f64[F_ALLOCATED], free = this.arenaBytes - start;
      if (slots * slotBytes > free) {
        throw new ArenaFullError(
          `machine ${this.node}'s arena cannot hold ${slots} checkpoints of ${slotBytes} bytes for machine ${owner}: ` +
            `${free} of ${this.arenaBytes} bytes are free`,
        );
      }
      const base = this.#ownerBase(used);
      this.#i32[base / 4] = owner;
      this.#f64[(base + 8) / 8] = slotBytes;
      this.#f64[(base + 16) / 8] = start;
      this.#f64[F_ALLOCATED] = start + slots * slotBytes;
      Atomics.store(this.#i32, C_OWNERS_USED, used + 1);
      return used;
    });
  }

  // --- writing ----------------------------------------------------------------------------------

  /**
   * Starts a checkpoint of `owner` in place: the slot's bytes (`byteLength` of them) are returned to be
   * filled with the encoded shard, now or as its chunks arrive (from the GPU's mapped staging memory, or
   * from the network for a replica). Readers cannot see it until `commit` has verified and published it;
   * a writer that dies before then leaves an abandoned slot that the next write reclaims.
   */
  beginWrite(owner: number, iteration: number, byteLength: number): SlotWriter {
    const index = this.#ownerFor(owner, byteLength);
    if (byteLength > this.#slotCapacity(index)) {
      throw new ArenaFullError(
        `a ${byteLength}-byte checkpoint of machine ${owner} does not fit its ${this.#slotCapacity(index)}-byte slots`,
      );
    }
    const slot = this.#withLock(() => {
      const chosen = this.#slotToWrite(index);
      const word = this.#slotBase(index, chosen) / 4;
      Atomics.store(this.#i32, word, this.#i32[word] | 1); // odd: being written, invisible to readers
      return chosen;
    });
    const word = this.#slotBase(index, slot) / 4;
    const start = this.#slotData(index, slot);
    const bytes = this.#bytes.subarray(start, start + byteLength);
    return {
      bytes,
      commit: ({ chunksChecked = false } = {}) => {
        const source = `checkpoint ${iteration} of machine ${owner} written to memory`;
        verifyShard(bytes, { iteration, owner }, source, { chunks: !chunksChecked });
        this.#f64[word / 2 + 3] = iteration;
        this.#f64[word / 2 + 1] = byteLength;
        this.#f64[word / 2 + 2] = Date.now();
        Atomics.store(this.#i32, word + 1, 0);
        Atomics.store(this.#i32, word, this.#i32[word] + 1); // even again: published
        return this.#entry(index, slot);
      },
    };
  }

  /**
   * Encodes a shard straight into a slot from its tensors (e.g. mapped GPU staging memory), checking each
   * chunk as it lands against the checksums given (from the GPU) or computing them, and publishes it.
   */
  saveShard(meta: ShardMeta, tensors: ShardTensors, checksums?: ArrayLike<number>): StoredEntry {
    const writer = this.beginWrite(meta.owner, meta.iteration, shardLayout(meta).totalBytes);
    writeShard(writer.bytes, meta, tensors, checksums);
    return writer.commit({ chunksChecked: true });
  }

  /** `beginWrite`, `fill` the slot, and commit: for a shard that is all at hand. */
  write(owner: number, iteration: number, byteLength: number, fill: (slot: Uint8Array) => void): StoredEntry {
    const writer = this.beginWrite(owner, iteration, byteLength);
    fill(writer.bytes);
    return writer.commit();
  }

  /**
   * An empty slot, else an abandoned one, else the oldest complete one: never the newest complete one,
   * and, while another is left, never the one to keep (see `keep`).
   * There is one writer per owner at a time, so an odd (being-written) slot that a writer sees was left
   * by a writer that died mid-write.
   */
  #slotToWrite(index: number): number {
    const slots = Array.from({ length: this.#i32[C_SLOTS] }, (_, slot) => slot);
    const empty = slots.find((slot) => this.#version(index, slot) === 0);
    if (empty !== undefined) return empty;
    const abandoned = slots.find((slot) => this.#version(index, slot) % 2 === 1);
    if (abandoned !== undefined) return abandoned;
    const candidates = slots.sort((a, b) => this.#entry(index, b).iteration - this.#entry(index, a).iteration)
      .slice(1);
    const kept = (slot: number) => (Atomics.load(this.#i32, this.#slotBase(index, slot) / 4 + 1) & KEEP_FLAG) !== 0;
    // More than one slot can hold the kept iteration (one written again after a rollback): if every
    // candidate is kept, the oldest goes anyway.
    const unkept = candidates.filter((slot) => !kept(slot));
    return (unkept.length ? unkept : candidates).at(-1)!;
  }

  /**
   * Keeps every owner's checkpoint `iteration` (where stored) when a slot is reused, until another
   * iteration is kept: the cluster keeps the newest iteration every machine has replicated, which a
   * recovery from peers rolls back to when checkpoints are replicated less often than they are taken.
   */
  keep(iteration: number) {
    for (let index = 0; index < this.#i32[C_OWNERS_USED]; index++) {
      for (let slot = 0; slot < this.#i32[C_SLOTS]; slot++) {
        const base = this.#slotBase(index, slot) / 4;
        const match = this.#version(index, slot) % 2 === 0 && this.#f64[base / 2 + 3] === iteration;
        if (match) Atomics.or(this.#i32, base + 1, KEEP_FLAG);
        else Atomics.and(this.#i32, base + 1, ~KEEP_FLAG);
      }
    }
  }

  // deno-lint-ignore require-await
  async save(owner: number, iteration: number, shard: Uint8Array): Promise<StoredEntry> {
    readShardHeader(shard, `checkpoint ${iteration} of machine ${owner}`);
    return this.write(owner, iteration, shard.length, (slot) => slot.set(shard));
  }

  /** Records that `peer` now holds a replica of `owner`'s checkpoint `iteration` (if still stored). */
  markReplicated(owner: number, iteration: number, peer: number) {
    if (peer < 0 || peer > 30) throw new Error(`replica holders are tracked for machines 0..30, got ${peer}`);
    const index = this.#ownerIndex(owner);
    for (let slot = 0; index >= 0 && slot < this.#i32[C_SLOTS]; slot++) {
      const base = this.#slotBase(index, slot) / 4;
      if (this.#version(index, slot) % 2 === 0 && this.#f64[base / 2 + 3] === iteration) {
        Atomics.or(this.#i32, base + 1, 1 << peer);
      }
    }
  }

  // --- reading ----------------------------------------------------------------------------------

  /** Published checkpoints, newest first within each owner. */
  entries(owner?: number): Promise<StoredEntry[]> {
    return Promise.resolve(this.#entries(owner));
  }

  #entries(owner?: number): StoredEntry[] {
    return this.#published(owner).map(([index, slot]) => this.#entry(index, slot));
  }

  #published(owner?: number): [number, number][] {
    const found: [number, number][] = [];
    const used = Atomics.load(this.#i32, C_OWNERS_USED);
    for (let index = 0; index < used; index++) {
      if (owner !== undefined && this.#i32[this.#ownerBase(index) / 4] !== owner) continue;
      for (let slot = 0; slot < this.#i32[C_SLOTS]; slot++) {
        const version = this.#version(index, slot);
        if (version > 0 && version % 2 === 0) found.push([index, slot]);
      }
    }
    return found.sort(([ia, sa], [ib, sb]) => ia - ib || this.#entry(ib, sb).iteration - this.#entry(ia, sa).iteration);
  }

  /**
   * The bytes of a published slot, as a view (`copy` false) or a copy, with a check that tells whether
   * a writer has reused the slot since: a seqlock read. Null if the slot no longer holds `iteration`.
   */
  #readSlot(owner: number, iteration: number, copy: boolean): ReadBytes | null {
    const index = this.#ownerIndex(owner);
    for (let slot = 0; index >= 0 && slot < this.#i32[C_SLOTS]; slot++) {
      const before = this.#version(index, slot);
      if (before === 0 || before % 2 === 1 || this.#entry(index, slot).iteration !== iteration) continue;
      const start = this.#slotData(index, slot), length = this.#f64[this.#slotBase(index, slot) / 8 + 1];
      const bytes = copy ? this.#bytes.slice(start, start + length) : this.#bytes.subarray(start, start + length);
      const unchanged = () => this.#version(index, slot) === before;
      if (copy && !unchanged()) return null;
      return { bytes, unchanged };
    }
    return null;
  }

  #source(entry: Pick<StoredEntry, "owner" | "iteration">): string {
    return `checkpoint ${entry.iteration} of machine ${entry.owner} in machine ${this.node}'s memory`;
  }

  /** The newest complete, valid checkpoint of `owner` (a copy), falling back past corrupt or torn ones. */
  load(owner: number, expect: ShardExpectation = {}): Promise<LoadResult> {
    return loadNewestValid(
      owner,
      this.#entries(owner),
      (entry) => Promise.resolve(this.#readSlot(entry.owner, entry.iteration, true)?.bytes ?? null),
      expect,
      (entry) => this.#source(entry),
    );
  }

  /**
   * Hands the newest complete, valid checkpoint of `owner` to `use` in place, without copying it out of
   * the arena (a restore uploads it to the GPU straight from here). If a writer reused the slot while it
   * was being verified or used, that result is discarded and the next older checkpoint is tried.
   */
  useNewest<T>(owner: number, expect: ShardExpectation, use: (shard: DecodedShard, entry: StoredEntry) => T) {
    return useNewestValid(
      owner,
      this.#entries(owner),
      (entry) => Promise.resolve(this.#readSlot(entry.owner, entry.iteration, false)),
      expect,
      (entry) => this.#source(entry),
      use,
    );
  }

  /**
   * Hands `owner`'s checkpoint `iteration`, as encoded and verified in place, to `use` (to send it to a
   * peer without copying it out first); null if this memory holds no valid, unchanged one. `use` must be
   * done with the bytes when it returns: a later write may reuse the slot.
   */
  withCheckpoint<T>(owner: number, iteration: number, use: (bytes: Uint8Array) => T): T | null {
    const read = this.#readSlot(owner, iteration, false);
    if (!read) return null;
    try {
      verifyShard(read.bytes, { owner, iteration }, this.#source({ owner, iteration }));
    } catch (error) {
      if (error instanceof CheckpointCorruptError) return null;
      throw error;
    }
    const result = use(read.bytes);
    return read.unchanged() ? result : null;
  }

  /** Bytes used per owner and per kind, and the newest complete iteration per owner. */
  stats(): {
    arenaBytes: number;
    allocatedBytes: number;
    byOwner: Map<number, { bytes: number; newest: number }>;
    byKind: { own: number; replica: number };
  } {
    const byOwner = new Map<number, { bytes: number; newest: number }>();
    const byKind = { own: 0, replica: 0 };
    for (const [index, slot] of this.#published()) {
      const entry = this.#entry(index, slot);
      const current = byOwner.get(entry.owner) ?? { bytes: 0, newest: -1 };
      byOwner.set(entry.owner, {
        bytes: current.bytes + entry.bytes,
        newest: Math.max(current.newest, entry.iteration),
      });
      byKind[entry.kind] += entry.bytes;
    }
    return { arenaBytes: this.arenaBytes, allocatedBytes: this.#f64[F_ALLOCATED], byOwner, byKind };
  }
}
