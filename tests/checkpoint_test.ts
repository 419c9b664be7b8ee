// The shard format and the in-memory store: bit-exact round trips, every kind of corruption caught and
// fallen back from, eviction of all but the newest K, arena exhaustion, statistics, publishing that a
// reader in another Worker never sees torn, even when the writer is terminated mid-write, the arena's
// lock across incarnations, replica holders of any rank, and the cheap existence check.

import assert from "node:assert/strict";
import { CheckpointCorruptError, decodeShard, encodeShard, shardLayout } from "../core/checkpoint.ts";
import { ArenaFullError, InMemoryCheckpointStore } from "../core/memory-store.ts";
import { NoCheckpointError } from "../core/store.ts";
import { Rng } from "../core/random.ts";
import { CONFIG, holdsPattern, patternShard, patternTensors, shardMeta } from "./checkpoint_fixtures.ts";

Deno.test("a shard round-trips bit for bit, with its metadata, over many chunks", () => {
  const rng = new Rng(1);
  const tensors = { params: new Float32Array(10_000), m: new Float32Array(10_000), v: new Float32Array(10_000) };
  for (const t of Object.values(tensors)) for (let i = 0; i < t.length; i++) t[i] = rng.normal() * 1e-3;
  tensors.params[7] = -0; // the sign of zero survives too
  const meta = shardMeta(42, 1);
  const bytes = encodeShard(meta, tensors);
  assert.equal(bytes.length, shardLayout(meta).totalBytes);
  assert.ok(shardLayout(meta).totalBytes > 3 * 40_000 && 3 * 40_000 / meta.chunkBytes > 20, "many chunks");
  const decoded = decodeShard(bytes, { config: CONFIG, iteration: 42, owner: 1 });
  assert.deepEqual(decoded.meta, meta);
  for (const name of ["params", "m", "v"] as const) {
    assert.deepEqual(
      new Uint32Array(decoded.tensors[name].slice().buffer),
      new Uint32Array(tensors[name].buffer),
      name,
    );
  }
});

Deno.test("corruption is detected with a clear reason: a flipped byte, truncation, another model or iteration", () => {
  const good = patternShard(5);
  const { bodyOffset } = shardLayout(shardMeta(5));
  const flipped = (at: number) => {
    const copy = good.slice();
    copy[at] ^= 0x10;
    return copy;
  };
  const cases: [Uint8Array, object, RegExp][] = [
    [flipped(bodyOffset + 3 * 4096 + 17), {}, /chunk 3 \(from body byte 12288\) does not match its checksum/],
    [flipped(bodyOffset - 70), {}, /header's checksum does not match/],
    [flipped(2), {}, /bad magic/],
    [good.subarray(0, good.length - 1), {}, /truncated: \d+ of \d+ bytes/],
    [good.subarray(0, 40), {}, /truncated inside the header/],
    [good, { config: { ...CONFIG, n_layer: 3 } }, /another model/],
    [good, { iteration: 6 }, /holds iteration 5, expected 6/],
    [good, { owner: 2 }, /belongs to machine 0, expected 2/],
  ];
  for (const [bytes, expect, message] of cases) {
    assert.throws(() => decodeShard(bytes, expect, "shard.gemckpt"), (error: Error) => {
      assert.ok(error instanceof CheckpointCorruptError);
      assert.match(error.message, /^shard\.gemckpt: /);
      assert.match(error.message, message);
      return true;
    });
  }
});

Deno.test("the memory store keeps the newest K checkpoints per owner and loads them bit for bit", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20, { slotsPerOwner: 3 });
  for (let iteration = 1; iteration <= 5; iteration++) await store.save(0, iteration, patternShard(iteration));
  assert.deepEqual((await store.entries(0)).map((e) => e.iteration), [5, 4, 3]);
  const loaded = await store.load(0, { config: CONFIG });
  assert.equal(loaded.entry.iteration, 5);
  assert.deepEqual(loaded.skipped, []);
  assert.ok(holdsPattern(loaded.shard.tensors, 5));
  await assert.rejects(store.load(7), NoCheckpointError);
});

Deno.test("the memory store keeps the iteration it is told to keep when it reuses a slot, while it has another", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20, { slotsPerOwner: 3 });
  const iterations = async (owner: number) => (await store.entries(owner)).map((e) => e.iteration);
  await store.save(0, 3, patternShard(3));
  await store.save(1, 3, patternShard(3, 1)); // a replica of machine 1's checkpoint 3
  store.keep(3);
  for (const iteration of [4, 5, 6, 7]) {
    await store.save(0, iteration, patternShard(iteration));
    await store.save(1, iteration, patternShard(iteration, 1));
  }
  assert.deepEqual(await iterations(0), [7, 6, 3], "3, kept, outlives the newer 4 and 5");
  assert.deepEqual(await iterations(1), [7, 6, 3], "for every owner in this memory");
  store.keep(6);
  await store.save(0, 8, patternShard(8));
  assert.deepEqual(await iterations(0), [8, 7, 6], "now 6 is the one kept, and 3 goes");
  // The kept iteration written again (it was trained again after a rollback) takes its own slot back: one
  // copy, still kept.
  store.keep(7);
  await store.save(0, 7, patternShard(7));
  assert.deepEqual(await iterations(0), [8, 7, 6]);
  await store.save(0, 9, patternShard(9));
  await store.save(0, 10, patternShard(10));
  assert.deepEqual(await iterations(0), [10, 9, 7], "7, kept still, outlives 8");
  assert.ok(holdsPattern((await store.load(0)).shard.tensors, 10));
  const two = InMemoryCheckpointStore.create(0, 4 << 20, { slotsPerOwner: 2 });
  await two.save(0, 1, patternShard(1));
  two.keep(1);
  for (const iteration of [2, 3]) await two.save(0, iteration, patternShard(iteration));
  assert.deepEqual((await two.entries(0)).map((e) => e.iteration), [3, 2], "with two slots, the newest two");
});

Deno.test("a corrupt newest checkpoint is never loaded: the store falls back to the previous one", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20);
  await store.save(0, 1, patternShard(1));
  const entry = await store.save(0, 2, patternShard(2));
  // Flip one byte of iteration 2 where it lies in the arena, as a bad DIMM or a stray write would.
  const arena = new Uint8Array(store.buffer), needle = patternShard(2);
  const at = findBytes(arena, needle.subarray(needle.length - 64));
  assert.ok(at > 0 && entry.bytes === needle.length);
  arena[at + 5] ^= 1;
  const loaded = await store.load(0);
  assert.equal(loaded.entry.iteration, 1);
  assert.ok(holdsPattern(loaded.shard.tensors, 1));
  assert.equal(loaded.skipped.length, 1);
  assert.match(
    loaded.skipped[0].error,
    /checkpoint 2 of machine 0 in machine 0's memory: chunk \d+ .* does not match its checksum/,
  );
  // The same in place, without copying out of the arena.
  const inPlace = await store.useNewest(0, {}, (shard) => holdsPattern(shard.tensors, 1));
  assert.deepEqual([inPlace.entry.iteration, inPlace.result, inPlace.skipped.length], [1, true, 1]);
});

Deno.test("a store the cluster shares keeps the newest iteration every owner has, though an owner missed later ones", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20, { slotsPerOwner: 3 });
  const iterations = async (owner: number) => (await store.entries(owner)).map((e) => e.iteration);
  await store.save(0, 1, patternShard(1));
  await store.save(1, 1, patternShard(1, 1)); // machine 1's later writes failed
  for (const iteration of [2, 3, 4, 5]) await store.save(0, iteration, patternShard(iteration));
  assert.deepEqual(await iterations(0), [5, 4, 1], "1 is all both have");
  await store.save(1, 4, patternShard(4, 1));
  await store.save(0, 6, patternShard(6));
  assert.deepEqual(await iterations(0), [6, 5, 4], "now 4 is");
});

Deno.test("an iteration written again (after a rollback) replaces its copy: never two, so a corrupt one never outlives the good one", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20, { slotsPerOwner: 3 });
  for (const iteration of [1, 2, 3]) await store.save(0, iteration, patternShard(iteration));
  await store.save(0, 3, patternShard(3));
  assert.deepEqual((await store.entries(0)).map((e) => e.iteration), [3, 2, 1], "one copy of 3, and 1 kept");
  const arena = new Uint8Array(store.buffer), needle = patternShard(3);
  arena[findBytes(arena, needle.subarray(needle.length - 64)) + 5] ^= 1;
  // The cluster rolled back to 2 and computes 3 again: the corrupt 3 is overwritten, 1 and 2 stay.
  await store.save(0, 3, patternShard(3));
  assert.deepEqual((await store.entries(0)).map((e) => e.iteration), [3, 2, 1]);
  // Evicting the oldest from now on never leaves a corrupt 3 behind a good one.
  await store.save(0, 4, patternShard(4));
  await store.save(0, 5, patternShard(5));
  assert.deepEqual((await store.entries(0)).map((e) => e.iteration), [5, 4, 3]);
  assert.equal((await store.load(0, { iteration: 3 })).skipped.length, 0);
});

Deno.test("a chunk that lands different from the checksum computed at capture is never published", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20);
  await store.save(0, 1, patternShard(1));
  assert.equal(store.saveShard(shardMeta(2), patternTensors(2)).iteration, 2); // checksums computed while writing
  // As if the GPU's checksums (or the staging memory) disagreed with what reached the slot.
  const meta3 = shardMeta(3);
  const wrong = Array.from({ length: Math.ceil((3 * 10_000 * 4) / meta3.chunkBytes) }, () => 12345);
  assert.throws(
    () => store.saveShard(meta3, patternTensors(3), wrong),
    /chunk 0 as written does not match the checksum computed where it was captured/,
  );
  assert.equal((await store.load(0)).entry.iteration, 2, "the newest complete checkpoint is still 2");
});

Deno.test("a checkpoint used in place is discarded if a writer reuses its slot meanwhile", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20, { slotsPerOwner: 3 });
  await store.save(0, 1, patternShard(1));
  await store.save(0, 2, patternShard(2));
  // While checkpoint 2 is being used, three more saves go round the slots and overwrite it (and 1).
  const attempt = store.useNewest(0, {}, (_, entry) => {
    for (const iteration of [3, 4, 5]) {
      const shard = patternShard(iteration);
      store.write(0, iteration, shard.length, (slot) => slot.set(shard));
    }
    return entry.iteration;
  });
  await assert.rejects(attempt, /checkpoint 2 of machine 0 in machine 0's memory: changed while being read/);
  assert.equal((await store.useNewest(0, {}, (_, entry) => entry.iteration)).result, 5);
});

function findBytes(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

Deno.test("later checkpoints with longer headers (bigger iteration and data position) still fit the slots", async () => {
  // With shards of 10,923 floats the header of iteration 1 just fits below a 64-byte boundary, and a
  // twelve-digit iteration pushes the body one boundary further.
  const floats = 10_923, later = 999_999_999_999;
  assert.ok(patternShard(later, 0, floats).length > patternShard(1, 0, floats).length, "the later shard is longer");
  const store = InMemoryCheckpointStore.create(0, 4 << 20);
  await store.save(0, 1, patternShard(1, 0, floats));
  await store.save(0, later, patternShard(later, 0, floats));
  assert.ok(holdsPattern((await store.load(0)).shard.tensors, later));
});

Deno.test("an arena that is full is a clear error, and nothing stored is disturbed", async () => {
  const shard = patternShard(1);
  const store = InMemoryCheckpointStore.create(0, 4 * shard.length, { slotsPerOwner: 3 });
  await store.save(0, 1, shard);
  await assert.rejects(store.save(1, 1, patternShard(1, 1)), (error: Error) => {
    assert.ok(error instanceof ArenaFullError);
    assert.match(
      error.message,
      /machine 0's arena cannot hold 3 checkpoints of \d+ bytes for machine 1: \d+ of \d+ bytes are free/,
    );
    return true;
  });
  await assert.rejects(store.save(0, 2, patternShard(2, 0, 20_000)), /does not fit its \d+-byte slots/);
  assert.ok(holdsPattern((await store.load(0)).shard.tensors, 1));
  assert.throws(() => InMemoryCheckpointStore.create(0, 100), /cannot even hold its tables/);
  assert.throws(() => InMemoryCheckpointStore.create(0, 1 << 20, { slotsPerOwner: 1 }), /at least 2/);
});

Deno.test("statistics: bytes per owner and per kind, newest iteration per owner, where replicas are", async () => {
  const store = InMemoryCheckpointStore.create(2, 8 << 20);
  await store.save(2, 7, patternShard(7, 2));
  await store.save(2, 8, patternShard(8, 2));
  await store.save(3, 8, patternShard(8, 3));
  store.markReplicated(2, 8, 3);
  store.markReplicated(2, 8, 5);
  const stats = store.stats();
  const size = patternShard(7, 2).length;
  assert.deepEqual(stats.byKind, { own: 2 * size, replica: size });
  assert.deepEqual(stats.byOwner.get(2), { bytes: 2 * size, newest: 8 });
  assert.deepEqual(stats.byOwner.get(3), { bytes: size, newest: 8 });
  const [newest] = await store.entries(2);
  assert.deepEqual([newest.iteration, newest.kind, newest.replicatedTo], [8, "own", [3, 5]]);
  assert.equal((await store.entries(3))[0].kind, "replica");
});

Deno.test("a reader Worker never sees a torn checkpoint while a writer Worker is terminated mid-write", async () => {
  const store = InMemoryCheckpointStore.create(0, 64 << 20);
  await store.save(0, 0, patternShard(0, 0, 200_000));
  // The reader counts its reads here, and reads until it has reached the count the test sets: [reads, until].
  const progress = new Int32Array(new SharedArrayBuffer(8));
  const writer = new Worker(new URL("./workers/checkpoint_writer.ts", import.meta.url), { type: "module" });
  const reader = new Worker(new URL("./workers/checkpoint_reader.ts", import.meta.url), { type: "module" });
  try {
    const readerDone = nextMessage(reader), writerStopped = nextMessage(writer);
    reader.postMessage({ buffer: store.buffer, progress: progress.buffer });
    // After 6 complete writes, and 10 reads alongside them, the writer stops half way through a write and
    // is terminated there.
    writer.postMessage({ buffer: store.buffer, progress: progress.buffer, floats: 200_000, writes: 6, reads: 10 });
    const stopped = await writerStopped as number;
    writer.terminate();
    // The reader goes on reading with the abandoned slot in the arena.
    Atomics.store(progress, 1, Atomics.load(progress, 0) + 10);
    assert.deepEqual(await readerDone, []);
    const loaded = await store.load(0);
    assert.equal(loaded.entry.iteration, stopped - 1, "the newest complete checkpoint is the last finished write");
    assert.ok(holdsPattern(loaded.shard.tensors, stopped - 1));
    // The abandoned slot is reclaimed by the next write, and the newest complete one is untouched by it. (The
    // writer goes on until the reader has read 10 times: under load that took it past iteration 100.)
    const next = stopped + 100;
    await store.save(0, next, patternShard(next, 0, 200_000));
    assert.deepEqual((await store.entries(0)).map((e) => e.iteration).slice(0, 2), [next, stopped - 1]);
  } finally {
    writer.terminate();
    reader.terminate();
  }
});

/** The arena's lock word (at byte 56, see core/memory-store.ts), and what it holds while a holder holds it. */
function lockWord(store: InMemoryCheckpointStore): BigInt64Array {
  return new BigInt64Array(store.buffer, 56, 1);
}
const holder = (incarnation: number, number: number) => (BigInt(incarnation) << 32n) | BigInt(number);

Deno.test("the arena's lock: a live holder is waited for however long it holds it, never broken", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20);
  // A holder of the current incarnation holds the lock: alive, for all anyone knows.
  const lock = lockWord(store), live = holder(0, 1000);
  Atomics.store(lock, 0, live);
  const worker = new Worker(new URL("./workers/lock_waiter.ts", import.meta.url), { type: "module" });
  try {
    const saving = nextMessage(worker);
    worker.postMessage({ buffer: store.buffer, owner: 1 });
    assert.equal(await saving, "saving");
    const saved = nextMessage(worker);
    // Wake the waiting Worker twice (Atomics.notify counts the waiters it woke): in between, it found the
    // lock still held, with its clock days later, and waited again.
    for (let woken = 0; woken < 2; woken += Atomics.notify(lock, 0, 1)) {
      assert.ok(Atomics.load(lock, 0) === live && !store.has(1, 1), "the Worker went past a live holder's lock");
    }
    Atomics.store(lock, 0, 0n);
    Atomics.notify(lock, 0);
    assert.equal(await saved, 1);
    assert.deepEqual((await store.entries(1)).map((e) => e.iteration), [1]);
    assert.equal(Atomics.load(lock, 0), 0n, "and released it");
  } finally {
    worker.terminate();
  }
});

Deno.test("the arena's lock: one left by a Worker terminated inside it is taken over by the machine's next incarnation", async () => {
  const first = InMemoryCheckpointStore.create(0, 4 << 20); // incarnation 0
  await first.save(0, 1, patternShard(1));
  const lock = lockWord(first);
  Atomics.store(lock, 0, holder(0, 1000)); // incarnation 0's Worker, terminated while it held the lock
  const next = InMemoryCheckpointStore.attach(first.memory, { incarnation: 1 });
  await next.save(0, 2, patternShard(2));
  assert.equal(Atomics.load(lock, 0), 0n, "taken over, then released");
  // The older incarnation is gone: its views may no longer take the lock, and it may not attach again.
  await assert.rejects(
    first.save(0, 3, patternShard(3)),
    /machine 0's incarnation 0 was superseded by incarnation 1: it may no longer change the arena/,
  );
  assert.throws(
    () => InMemoryCheckpointStore.attach(first.memory, { incarnation: 0 }),
    /machine 0's incarnation 0 is gone: incarnation 1 has attached its memory since/,
  );
  // A view attached without an incarnation joins the current one.
  await InMemoryCheckpointStore.attach(first.buffer).save(0, 3, patternShard(3));
  assert.deepEqual((await next.entries(0)).map((e) => e.iteration), [3, 2, 1]);
});

Deno.test("replica holders are recorded for every rank the arena is sized for, past 31; a rank beyond is an error", async () => {
  const store = InMemoryCheckpointStore.create(40, 8 << 20, { machines: 101 });
  await store.save(40, 8, patternShard(8, 40));
  await store.save(100, 8, patternShard(8, 100)); // a replica held for machine 100
  for (const peer of [100, 32, 31, 0, 64, 63]) store.markReplicated(40, 8, peer);
  store.keep(8); // the keep flag is none of them
  const holders = async (owner: number) => (await store.entries(owner)).map((e) => [e.iteration, e.replicatedTo]);
  assert.deepEqual(await holders(40), [[8, [0, 31, 32, 63, 64, 100]]]);
  assert.deepEqual(await holders(100), [[8, []]]);
  // A checkpoint written into a reused slot is held by no peer yet; the kept one still lists its holders.
  for (const iteration of [9, 10, 11]) await store.save(40, iteration, patternShard(iteration, 40));
  assert.deepEqual(await holders(40), [[11, []], [10, []], [8, [0, 31, 32, 63, 64, 100]]]);
  assert.deepEqual(
    (await InMemoryCheckpointStore.attach(store.buffer).entries(40)).map((e) => e.replicatedTo),
    [[], [], [0, 31, 32, 63, 64, 100]],
    "as another view of the arena reads them",
  );
  const beyond = /must be one of machines 0\.\.100 \(the arena was sized for 101\), got 101/;
  assert.throws(() => store.markReplicated(40, 11, 101), beyond);
  await assert.rejects(store.save(101, 1, patternShard(1, 101)), beyond);
  assert.throws(() => InMemoryCheckpointStore.create(101, 8 << 20, { machines: 101 }), beyond);
});

Deno.test("has: whether a checkpoint is published, from the slot records alone, without verifying its bytes", async () => {
  const store = InMemoryCheckpointStore.create(0, 4 << 20, { slotsPerOwner: 2 });
  await store.save(0, 1, patternShard(1));
  const shard = patternShard(2), writer = store.beginWrite(0, 2, shard.length);
  writer.bytes.set(shard);
  assert.deepEqual([store.has(0, 1), store.has(0, 2)], [true, false], "not before it is committed");
  writer.commit();
  assert.deepEqual([store.has(0, 1), store.has(0, 2), store.has(0, 3), store.has(1, 2)], [true, true, false, false]);
  // A byte of checkpoint 2 flipped in the arena: `has` does not read it, `withCheckpoint` does.
  writer.bytes[writer.bytes.length - 5] ^= 1;
  assert.equal(store.has(0, 2), true);
  assert.equal(store.withCheckpoint(0, 2, () => true), null);
  await store.save(0, 3, patternShard(3)); // into checkpoint 1's slot
  assert.deepEqual([store.has(0, 1), store.has(0, 3)], [false, true]);
});

/** The next message `worker` posts (or its uncaught error). */
function nextMessage(worker: Worker): Promise<unknown> {
  return new Promise((resolve, reject) => {
    worker.onmessage = ({ data }) => resolve(data);
    worker.onerror = (event) => reject(new Error(event.message));
  });
}

Deno.test("patternTensors fixtures differ between iterations (the torn-read test depends on it)", () => {
  assert.ok(!holdsPattern(patternTensors(1), 2));
});
