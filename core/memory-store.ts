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
// The few table writes that allocate an owner's slots or pick one to write take the arena's lock. The
// lock word names its holder, so that it is never taken from a live one, however long it holds it: only
// from a holder known to be gone, one of an older incarnation of the machine than the newest attached (a
// machine's Worker is restarted only after the old one was terminated). Each of those sections leaves the
// tables usable at every step (at worst an allocation is lost), so a holder that died inside one leaves
// nothing to repair.
//
// Layout of the buffer (all offsets in bytes):
//   0..64                  control: magic, layout version, node, max owners, slots per owner, owners used,
//                          machines, current incarnation, holders attached (int32); allocated and arena
//                          bytes (float64 at 40 and 48); the lock (int64 at 56): 0 when free, else its
//                          holder's incarnation << 32 | the holder's number
//   64..                   owner records: owner node, slot capacity, data offset, then one slot record
//                          per slot: version, keep flag (int32), byte length, saved at, iteration
//                          (float64), then the machines that hold a replica of it: a bitmap of one bit
//                          per machine, in int32 words padded to 8 bytes
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
  newestWhole,
  type ReadBytes,
  type StoredEntry,
  useNewestValid,
} from "./store.ts";

const MAGIC = 0x47454d49; // "GEMI"
const LAYOUT_VERSION = 2;
const CONTROL_BYTES = 64;
const OWNER_HEADER_BYTES = 24;
const SLOT_FIXED_BYTES = 32; // int32 version, int32 keep flag, float64 length, time, iteration; then the bitmap
const DATA_ALIGNMENT = 64;
const HEADER_GROWTH = 4096;

// Int32 indices of the control block.
const C_MAGIC = 0, C_VERSION = 1, C_NODE = 2, C_MAX_OWNERS = 3, C_SLOTS = 4, C_OWNERS_USED = 5, C_MACHINES = 6;
const C_INCARNATION = 7, C_HOLDERS = 8;
// Float64 indices of the control block.
const F_ALLOCATED = 5, F_ARENA = 6;
// The lock's index in the control block as int64s.
const L_LOCK = 7;

/** Bytes of a slot record whose replica-holder bitmap has a bit for each of `machines`. */
function slotRecordBytes(machines: number): number {
  return SLOT_FIXED_BYTES + Math.ceil(machines / 64) * 8;
}

/** Throws unless `rank` is one of the `machines` an arena was sized for. */
function checkRank(rank: number, machines: number, what: string) {
  if (!Number.isInteger(rank) || rank < 0 || rank >= machines) {
    throw new RangeError(
      `${what} must be one of machines 0..${machines - 1} (the arena was sized for ${machines}), got ${rank}`,
    );
  }
}

/** Whether this thread may block in Atomics.wait: a page's main thread may not, and spins instead. */
let mayBlock = true;

/** Waits until the lock word no longer holds `held`; returns at once where this thread may not block. */
function waitForRelease(lock: BigInt64Array, held: bigint) {
  if (!mayBlock) return;
  try {
    Atomics.wait(lock, L_LOCK, held);
  } catch (error) {
    if (!(error instanceof TypeError)) throw error;
    mayBlock = false;
  }
}

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
  /**
   * The cluster's machines: ranks 0..machines-1 may own checkpoints here and be recorded as holding
   * replicas of them (each slot has a bit for each). Default 32.
   */
  machines?: number;
  /** Where the arena is, for reports and errors, when it is not a machine's host memory. */
  place?: string;
}

export interface AttachOptions {
  /**
   * The attaching machine's incarnation. A Worker restarted after its machine's failure (once the old
   * one was terminated) attaches with a newer one: that declares every holder of an older incarnation
   * gone, so a lock one of them died holding is taken over, and those may no longer take it. An older
   * incarnation than the current one is refused. Without it, the store joins the current incarnation
   * (another thread alongside it, such as a reader).
   */
  incarnation?: number;
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
  readonly #lock: BigInt64Array;
  readonly #bytes: Uint8Array;
  readonly #machines: number;
  readonly #slotRecordBytes: number;
  readonly #incarnation: number;
  /** What the lock word holds while this view holds the lock: its incarnation and its number. */
  readonly #holder: bigint;
  /** Where the arena is, when it is not a machine's host memory (see `MemoryStoreOptions.place`). */
  readonly #place: string | null;

  /** Allocates an arena of `arenaBytes` for machine `node`; this view joins its first incarnation, 0. */
  static create(node: number, arenaBytes: number, options: MemoryStoreOptions = {}): InMemoryCheckpointStore {
    const slots = options.slotsPerOwner ?? 3, maxOwners = options.maxOwners ?? 16, machines = options.machines ?? 32;
    if (!Number.isInteger(slots) || slots < 2) {
      throw new Error(`slotsPerOwner must be an integer of at least 2, got ${slots}`);
    }
    if (!Number.isInteger(maxOwners) || maxOwners < 1) {
      throw new Error(`maxOwners must be a positive integer, got ${maxOwners}`);
    }
    if (!Number.isInteger(machines) || machines < 1 || machines > 0x7fffffff) {
      throw new Error(`machines must be a positive 32-bit integer, got ${machines}`);
    }
    checkRank(node, machines, "the arena's own machine");
    const tables = CONTROL_BYTES + maxOwners * (OWNER_HEADER_BYTES + slots * slotRecordBytes(machines));
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
    i32[C_MACHINES] = machines;
    f64[F_ALLOCATED] = dataStart;
    f64[F_ARENA] = arenaBytes;
    i32[C_VERSION] = LAYOUT_VERSION;
    // Commit the arena's pages now (the OS maps them on first touch), so that no checkpoint pays for
    // page faults: measured here, a first write into untouched memory took ten times as long.
    new Uint8Array(buffer, dataStart).fill(0);
    Atomics.store(i32, C_MAGIC, MAGIC);
    return new InMemoryCheckpointStore(memory, undefined, options.place);
  }

  /**
   * A view on an arena another Worker created: pass its `memory` where the arena is a WebAssembly.Memory
   * (checksums then run with SIMD here too), or its `buffer`; and, for a machine's (re)started Worker, its
   * `incarnation` (see `AttachOptions`).
   */
  static attach(
    memory: WebAssembly.Memory | SharedArrayBuffer,
    options: AttachOptions = {},
  ): InMemoryCheckpointStore {
    return new InMemoryCheckpointStore(memory, options.incarnation);
  }

  private constructor(memory: WebAssembly.Memory | SharedArrayBuffer, incarnation?: number, place?: string) {
    this.#place = place ?? null;
    const buffer = bytesOf(memory);
    this.memory = memory;
    this.buffer = buffer;
    if (memory instanceof WebAssembly.Memory) enableFastChecksum(memory);
    this.#i32 = new Int32Array(buffer);
    this.#f64 = new Float64Array(buffer, 0, Math.floor(buffer.byteLength / 8));
    this.#lock = new BigInt64Array(buffer, 0, CONTROL_BYTES / 8);
    this.#bytes = new Uint8Array(buffer);
    if (Atomics.load(this.#i32, C_MAGIC) !== MAGIC || this.#i32[C_VERSION] !== LAYOUT_VERSION) {
      throw new Error("this SharedArrayBuffer is not a checkpoint arena of this version");
    }
    this.#machines = this.#i32[C_MACHINES];
    this.#slotRecordBytes = slotRecordBytes(this.#machines);
    this.#incarnation = this.#join(incarnation);
    const number = (Atomics.add(this.#i32, C_HOLDERS, 1) + 1) >>> 0;
    this.#holder = (BigInt(this.#incarnation) << 32n) | BigInt(number);
  }

  /** Records `incarnation` as the machine's current one, refusing an older one; or joins the current one. */
  #join(incarnation?: number): number {
    let current = Atomics.load(this.#i32, C_INCARNATION);
    if (incarnation === undefined) return current;
    if (!Number.isInteger(incarnation) || incarnation < 0 || incarnation > 0x7fffffff) {
      throw new Error(`an incarnation is a 31-bit integer, got ${incarnation}`);
    }
    while (current < incarnation) {
      const seen = Atomics.compareExchange(this.#i32, C_INCARNATION, current, incarnation);
      current = seen === current ? incarnation : seen;
    }
    if (current > incarnation) {
      throw new Error(
        `machine ${this.node}'s incarnation ${incarnation} is gone: incarnation ${current} has attached its memory since`,
      );
    }
    return incarnation;
  }

  /** The machine this arena belongs to. */
  get node(): number {
    return this.#i32[C_NODE];
  }

  /**
   * Gives an arena that holds nothing yet to machine `node`: a spare machine commits its memory before a
   * root gives it a rank.
   */
  assign(node: number) {
    checkRank(node, this.#machines, "the arena's own machine");
    this.#withLock(() => {
      if (Atomics.load(this.#i32, C_OWNERS_USED)) throw new Error(`${this.description} holds checkpoints already`);
      Atomics.store(this.#i32, C_NODE, node);
    });
  }

  get description(): string {
    return this.#place ?? `host memory of machine ${this.node}`;
  }

  get arenaBytes(): number {
    return this.#f64[F_ARENA];
  }

  // --- records --------------------------------------------------------------------------------

  #ownerBase(index: number): number {
    return CONTROL_BYTES + index * (OWNER_HEADER_BYTES + this.#i32[C_SLOTS] * this.#slotRecordBytes);
  }

  /** Byte offset of slot `slot`'s record for the owner at `index`. */
  #slotBase(index: number, slot: number): number {
    return this.#ownerBase(index) + OWNER_HEADER_BYTES + slot * this.#slotRecordBytes;
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

  #iteration(index: number, slot: number): number {
    return this.#f64[this.#slotBase(index, slot) / 8 + 3];
  }

  /** Int32 index of the first word of a slot's replica-holder bitmap, and the number of its words. */
  #holders(index: number, slot: number): [first: number, words: number] {
    return [(this.#slotBase(index, slot) + SLOT_FIXED_BYTES) / 4, Math.ceil(this.#machines / 32)];
  }

  #entry(index: number, slot: number): StoredEntry {
    const base = this.#slotBase(index, slot), owner = this.#i32[this.#ownerBase(index) / 4];
    const [first, words] = this.#holders(index, slot), replicatedTo: number[] = [];
    for (let word = 0; word < words; word++) {
      const bits = Atomics.load(this.#i32, first + word);
      for (let bit = 0; bits && bit < 32; bit++) if (bits & (1 << bit)) replicatedTo.push(word * 32 + bit);
    }
    return {
      owner,
      iteration: this.#iteration(index, slot),
      bytes: this.#f64[base / 8 + 1],
      savedAt: this.#f64[base / 8 + 2],
      kind: owner === this.node ? "own" : "replica",
      replicatedTo,
    };
  }

  // --- the lock, for the short sections that change the tables ---------------------------------

  /**
   * Runs `body` holding the arena's lock (see the top of this file): waits for a live holder however long
   * it holds it, takes it over from a gone one, and refuses once a newer incarnation has attached.
   */
  #withLock<T>(body: () => T): T {
    for (;;) {
      const current = Atomics.load(this.#i32, C_INCARNATION);
      if (this.#incarnation < current) {
        throw new Error(
          `machine ${this.node}'s incarnation ${this.#incarnation} was superseded by incarnation ${current}: ` +
            `it may no longer change the arena`,
        );
      }
      const held = Atomics.compareExchange(this.#lock, L_LOCK, 0n, this.#holder);
      if (held === 0n) break;
      if (held === this.#holder) throw new Error("the arena's lock is not reentrant");
      const gone = Number(held >> 32n) < current;
      if (gone && Atomics.compareExchange(this.#lock, L_LOCK, held, this.#holder) === held) break;
      if (!gone) waitForRelease(this.#lock, held);
    }
    try {
      return body();
    } finally {
      Atomics.compareExchange(this.#lock, L_LOCK, this.#holder, 0n);
      Atomics.notify(this.#lock, L_LOCK);
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
    checkRank(owner, this.#machines, `an owner of checkpoints in machine ${this.node}'s memory`);
    const index = this.#ownerFor(owner, byteLength);
    if (byteLength > this.#slotCapacity(index)) {
      throw new ArenaFullError(
        `a ${byteLength}-byte checkpoint of machine ${owner} does not fit its ${this.#slotCapacity(index)}-byte slots`,
      );
    }
    let kept = false;
    const slot = this.#withLock(() => {
      const chosen = this.#slotToWrite(index, iteration);
      const word = this.#slotBase(index, chosen) / 4;
      // The iteration to keep, written again in its own slot, stays kept.
      kept = this.#version(index, chosen) > 0 && this.#iteration(index, chosen) === iteration &&
        Atomics.load(this.#i32, word + 1) !== 0;
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
        // Held by no peer yet.
        const [first, words] = this.#holders(index, slot);
        Atomics.store(this.#i32, word + 1, kept ? 1 : 0);
        this.#i32.fill(0, first, first + words);
        Atomics.store(this.#i32, word, this.#i32[word] + 1); // even again: published
        return this.#entry(index, slot);
      },
    };
  }

  /**
   * Encodes a shard straight into a slot from its tensors (e.g. mapped GPU staging memory), checking each
   * chunk as it lands against the checksums given (from the GPU) or computing them, and publishes it.
   * `beforeCommit` runs once the shard is written, before it is published: if it throws, the slot is left
   * unpublished, as by a writer that died there.
   */
  saveShard(
    meta: ShardMeta,
    tensors: ShardTensors,
    checksums?: ArrayLike<number>,
    beforeCommit?: (meta: ShardMeta) => void,
  ): StoredEntry {
    const writer = this.beginWrite(meta.owner, meta.iteration, shardLayout(meta).totalBytes);
    writeShard(writer.bytes, meta, tensors, checksums);
    beforeCommit?.(meta);
    return writer.commit({ chunksChecked: true });
  }

  /** `beginWrite`, `fill` the slot, and commit: for a shard that is all at hand. */
  write(owner: number, iteration: number, byteLength: number, fill: (slot: Uint8Array) => void): StoredEntry {
    const writer = this.beginWrite(owner, iteration, byteLength);
    fill(writer.bytes);
    return writer.commit();
  }

  /**
   * The slot of the same checkpoint if it is here already (written again after a rollback: one copy of an
   * iteration, never two), else an empty slot, else an abandoned one, else the oldest complete one: never
   * the newest complete one, and, while another is left, never the one to keep (see `keep`) nor the newest
   * iteration every owner here has (see `newestWhole`).
   * There is one writer per owner at a time, so an odd (being-written) slot that a writer sees was left
   * by a writer that died mid-write. Two copies of one iteration would be read as one (reads find a
   * checkpoint by its iteration), and the eviction of the oldest could drop the good one and keep a corrupt one.
   */
  #slotToWrite(index: number, iteration: number): number {
    const slots = Array.from({ length: this.#i32[C_SLOTS] }, (_, slot) => slot);
    const published = (slot: number) => this.#version(index, slot) > 0 && this.#version(index, slot) % 2 === 0;
    const same = slots.find((slot) => published(slot) && this.#iteration(index, slot) === iteration);
    if (same !== undefined) return same;
    const empty = slots.find((slot) => this.#version(index, slot) === 0);
    if (empty !== undefined) return empty;
    const abandoned = slots.find((slot) => this.#version(index, slot) % 2 === 1);
    if (abandoned !== undefined) return abandoned;
    const candidates = slots.sort((a, b) => this.#iteration(index, b) - this.#iteration(index, a)).slice(1);
    const whole = newestWhole(this.#entries());
    const kept = (slot: number) =>
      Atomics.load(this.#i32, this.#slotBase(index, slot) / 4 + 1) !== 0 || this.#iteration(index, slot) === whole;
    // With two slots, the one to keep may be the only candidate: then it goes anyway.
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
        const match = this.#version(index, slot) % 2 === 0 && this.#iteration(index, slot) === iteration;
        Atomics.store(this.#i32, this.#slotBase(index, slot) / 4 + 1, match ? 1 : 0);
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
    checkRank(peer, this.#machines, `a holder of replicas recorded in machine ${this.node}'s memory`);
    const index = this.#ownerIndex(owner);
    for (let slot = 0; index >= 0 && slot < this.#i32[C_SLOTS]; slot++) {
      if (this.#version(index, slot) % 2 === 0 && this.#iteration(index, slot) === iteration) {
        Atomics.or(this.#i32, this.#holders(index, slot)[0] + (peer >>> 5), 1 << (peer & 31));
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
    return found.sort(([ia, sa], [ib, sb]) => ia - ib || this.#iteration(ib, sb) - this.#iteration(ia, sa));
  }

  /**
   * Where `owner`'s checkpoint `iteration` is published, as its slot and the slot's version then (the
   * version was the same even number before and after the iteration was read): null if nowhere.
   */
  #publishedSlot(owner: number, iteration: number): [index: number, slot: number, version: number] | null {
    const index = this.#ownerIndex(owner);
    for (let slot = 0; index >= 0 && slot < this.#i32[C_SLOTS]; slot++) {
      const version = this.#version(index, slot);
      if (version === 0 || version % 2 === 1 || this.#iteration(index, slot) !== iteration) continue;
      if (this.#version(index, slot) === version) return [index, slot, version];
    }
    return null;
  }

  /**
   * Whether `owner`'s checkpoint `iteration` is published here. A cheap look at the slot records alone:
   * it does not read the shard, so it does not tell whether its bytes are still intact (`withCheckpoint`
   * and the loads verify them).
   */
  has(owner: number, iteration: number): boolean {
    return this.#publishedSlot(owner, iteration) !== null;
  }

  /**
   * The bytes of a published slot, as a view (`copy` false) or a copy, with a check that tells whether
   * a writer has reused the slot since: a seqlock read. Null if the slot no longer holds `iteration`.
   */
  #readSlot(owner: number, iteration: number, copy: boolean): ReadBytes | null {
    const published = this.#publishedSlot(owner, iteration);
    if (!published) return null;
    const [index, slot, before] = published;
    const start = this.#slotData(index, slot), length = this.#f64[this.#slotBase(index, slot) / 8 + 1];
    const bytes = copy ? this.#bytes.slice(start, start + length) : this.#bytes.subarray(start, start + length);
    const unchanged = () => this.#version(index, slot) === before;
    if (copy && !unchanged()) return null;
    return { bytes, unchanged };
  }

  #source(entry: Pick<StoredEntry, "owner" | "iteration">): string {
    return `checkpoint ${entry.iteration} of machine ${entry.owner} in ${
      this.#place ?? `machine ${this.node}'s memory`
    }`;
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
