// The checkpoint section: for model states from 1 MB to 1 GB, how long a checkpoint holds training up
// and how long it takes in all, into host memory (the Gemini path) and into a file with fsync (the
// persistent baseline), and how long each takes to load; with the plain memcpy of the same bytes,
// measured in the same run, as the physical limit.

import { CheckpointCapture } from "../core/capture.ts";
import { decodeShard, encodeShard, shardLayout, type ShardMeta } from "../core/checkpoint.ts";
import { FileCheckpointStore } from "../core/file-store.ts";
import { storageBufferFrom } from "../core/gpu.ts";
import { InMemoryCheckpointStore } from "../core/memory-store.ts";
import { MODEL_PRESETS } from "../core/model.ts";
import { seededFloats } from "../core/random.ts";
import { type BenchContext, formatBandwidth, formatBytes, median, type Section, time } from "./measure.ts";

const MB = 1 << 20;

function stateSizes(quick: boolean): number[] {
  return quick ? [MB, 16 * MB] : [MB, 16 * MB, 128 * MB, 1024 * MB];
}

function repeatsFor(bytes: number): number {
  return bytes >= 512 * MB ? 2 : bytes >= 64 * MB ? 3 : 5;
}

/**
 * Warm-up runs before the timed ones (JIT, caches, and the first touch of fresh staging and slot memory,
 * which costs more than the copy here); none for the largest state, where one pass takes seconds.
 */
function warmupsFor(bytes: number): number {
  return bytes >= 512 * MB ? 0 : bytes >= 64 * MB ? 1 : 2;
}

/** `time` in milliseconds, the unit of this section's raw numbers. */
async function timeRuns(warmups: number, repeats: number, body: () => Promise<unknown> | unknown): Promise<number[]> {
  return (await time(repeats, body, warmups)).map((seconds) => seconds * 1000);
}

/** Turns of memcpy and a save from host memory: cheap next to a capture from the GPU, so more of them. */
const HOST_WARMUPS = 2, HOST_REPEATS = 9;

/** A save's speed as a fraction of memcpy's, the limit, on the same bytes. */
function ofMemcpy(row: Row, samples: number[]): string {
  return (median(row.memcpy) / median(samples)).toFixed(2);
}

function millisecondsOf(body: () => unknown): number {
  const start = performance.now();
  body();
  return performance.now() - start;
}

/** One way of capturing from the GPU: where the chunk checksums were computed, and its timings (ms). */
interface CaptureTimes {
  /** Whether the GPU computed the checksums (it cannot when a buffer exceeds one storage binding). */
  checksumsOnGpu: boolean;
  /** How long the capture held training up. */
  blocked: number[];
  /** The host's part: the shard from mapped staging memory into a slot, verified and published. */
  mappedSave: number[];
  /** The whole capture, from its start to the checkpoint published in memory. */
  total: number[];
}

interface Row {
  bytes: number;
  memcpy: number[];
  /** The store's own path: the shard from its tensors in host memory into a slot, verified and published. */
  hostSave: number[];
  captures: CaptureTimes[];
  memoryLoad: number[];
  fileSave: number[];
  fileLoad: number[];
}

async function measureState(device: GPUDevice, stateBytes: number, directory: string): Promise<Row> {
  const floats = Math.floor(stateBytes / 12);
  const repeats = repeatsFor(stateBytes), warmups = warmupsFor(stateBytes);
  const meta: ShardMeta = {
    config: MODEL_PRESETS.tiny,
    iteration: 1,
    data: { position: 1, rng: 1 },
    owner: 0,
    shard: { index: 0, count: 1, start: 0, end: floats, totalFloats: floats },
    chunkBytes: MB,
    createdAt: Date.now(),
  };
  const tensors = { params: seededFloats(floats, 1), m: seededFloats(floats, 2), v: seededFloats(floats, 3) };
  const shardBytes = shardLayout(meta).totalBytes;

  const store = InMemoryCheckpointStore.create(0, 3 * (shardBytes + 64) + 64 * 1024, {
    slotsPerOwner: 3,
    maxOwners: 1,
  });
  // The limit, copying the same bytes once host to host, and the store's own path, saving them from host
  // memory, taking turns so that this shared machine's noise falls on both alike. Both read the same
  // encoded shard and write three slot-sized destinations in turn, as the store's slots are: so the two
  // differ only by the store's work (checksums, header, publishing), and memcpy gets no more help from
  // the cache than the store does. (The destinations are touched first: this machine's first touch of
  // fresh memory runs at about 0.35 GB/s.)
  const source = encodeShard(meta, tensors); // iteration 1
  const targets = [1, 2, 3].map(() => new Uint8Array(shardBytes).fill(1));
  const inHostMemory = decodeShard(source).tensors;
  const memcpy: number[] = [], hostSave: number[] = [];
  for (let i = 0; i < HOST_WARMUPS + HOST_REPEATS; i++) {
    const copied = millisecondsOf(() => targets[i % targets.length].set(source));
    meta.iteration++;
    const saved = millisecondsOf(() => store.saveShard(meta, inHostMemory));
    if (i >= HOST_WARMUPS) memcpy.push(copied), hostSave.push(saved);
  }

  // From the GPU into host memory, with the chunk checksums computed on the GPU and on the host.
  const gpu = {
    params: storageBufferFrom(device, tensors.params, "bench params"),
    m: storageBufferFrom(device, tensors.m, "bench m"),
    v: storageBufferFrom(device, tensors.v, "bench v"),
  };
  const captures: CaptureTimes[] = [];
  try {
    for (const checksumsOnGpu of [true, false]) {
      const capture = new CheckpointCapture(device, floats, { chunkBytes: meta.chunkBytes, checksumsOnGpu });
      const times: CaptureTimes = { checksumsOnGpu: false, blocked: [], mappedSave: [], total: [] };
      try {
        for (let i = 0; i < warmups + repeats; i++) {
          const start = performance.now();
          meta.iteration++;
          const pending = await capture.begin({ ...gpu, start: 0, end: floats });
          const { tensors: mapped, checksums, release } = await pending.mapped;
          const hostStart = performance.now();
          store.saveShard(meta, mapped, checksums ?? undefined);
          const hostEnd = performance.now();
          release();
          times.checksumsOnGpu = checksums !== null;
          if (i < warmups) continue;
          times.blocked.push(pending.blockedMilliseconds);
          times.mappedSave.push(hostEnd - hostStart);
          times.total.push(performance.now() - start);
        }
      } finally {
        capture.destroy();
      }
      // Where the GPU cannot checksum this state, both runs were host runs: keep one.
      if (checksumsOnGpu === times.checksumsOnGpu) captures.push(times);
    }
  } finally {
    for (const buffer of Object.values(gpu)) buffer.destroy();
  }
  // A restore verifies the shard in place and uploads it from the arena: here into warm host memory.
  const memoryLoad = await timeRuns(warmups, repeats, () =>
    store.useNewest(0, {}, ({ tensors: stored }) => {
      targets[0].set(new Uint8Array(stored.params.buffer, stored.params.byteOffset, 3 * stored.params.byteLength));
    }));

  // The persistent baseline: a file written, fsync'd and renamed; then read back and verified.
  const files = new FileCheckpointStore(directory, { keep: 2 });
  const fileSave = await timeRuns(warmups, repeats, () => files.save(0, 1, source)); // each save replaces the last
  const fileLoad = await timeRuns(warmups, repeats, () => files.load(0));
  return { bytes: shardBytes, memcpy, hostSave, captures, memoryLoad, fileSave, fileLoad };
}

export const checkpointSection: Section = {
  name: "checkpoint",
  steps: (quick) => stateSizes(quick).length,
  async run({ device, quick, progress }: BenchContext) {
    const rows: Row[] = [], skipped: string[] = [];
    for (const bytes of stateSizes(quick)) {
      const directory = await Deno.makeTempDir({ prefix: "gemini-bench-" });
      try {
        rows.push(await measureState(device, bytes, directory));
      } catch (error) {
        // "As far as memory allows": a state this machine or adapter cannot hold is reported, not fatal.
        skipped.push(`${formatBytes(bytes)}: ${(error as Error).message}`);
      } finally {
        await Deno.remove(directory, { recursive: true });
      }
      progress.step(`checkpoint ${formatBytes(bytes)}`);
    }
    const ms = (samples: number[]) => median(samples).toFixed(2);
    const rate = (bytes: number, samples: number[]) => formatBandwidth(bytes / (median(samples) / 1000));
    return {
      title: "Checkpoints: host memory against a file with fsync",
      summary: summarizeCheckpoints(rows),
      intro: 'One shard holding the whole state (parameters, AdamW m and v), medians. "memory save" writes the shard ' +
        "into a slot of the in-memory store, checksums (or, from the GPU with GPU checksums, checks) every chunk, " +
        'verifies and publishes it: "from host memory" from its tensors in host memory, taking turns with memcpy; ' +
        '"from mapped staging" the host\'s part of a capture from the GPU, from the mapped staging memory. A capture ' +
        'queues the shard\'s copy (and, in the GPU rows, its chunk checksums) on the GPU; "blocked" is how long ' +
        'that holds training up, "capture" is all of it. ' +
        '"file save" writes a file, fsyncs and renames it. "memory load" verifies the newest checkpoint in place ' +
        'and copies its tensors out (what a restore uploads to the GPU); "file load" reads and verifies a file. ' +
        "memcpy copies the same encoded shard once into three destinations in turn, as the store fills its three " +
        "slots: the limit." +
        (skipped.length ? ` Not measured: ${skipped.join("; ")}.` : ""),
      header: [
        "state",
        "checksums",
        "memcpy",
        "memory save from host memory",
        "x memcpy",
        "memory save from mapped staging",
        "x memcpy",
        "blocked ms",
        "capture ms",
        "file save ms",
        "file save / blocked",
        "memory load",
        "file load ms",
      ],
      rows: rows.flatMap((r) =>
        r.captures.map((c) => [
          formatBytes(r.bytes),
          c.checksumsOnGpu ? "GPU" : "host",
          rate(r.bytes, r.memcpy),
          rate(r.bytes, r.hostSave),
          ofMemcpy(r, r.hostSave),
          rate(r.bytes, c.mappedSave),
          ofMemcpy(r, c.mappedSave),
          ms(c.blocked),
          ms(c.total),
          ms(r.fileSave),
          `${Math.round(median(r.fileSave) / Math.max(median(c.blocked), 0.001))}x`,
          rate(r.bytes, r.memoryLoad),
          ms(r.fileLoad),
        ])
      ),
      raw: { rows, skipped },
    };
  },
};

/** The largest state measured: the in-memory save against memcpy, and training blocked against a file save. */
function summarizeCheckpoints(rows: Row[]): string {
  const largest = rows[rows.length - 1];
  if (!largest) return "no state could be measured";
  const host = largest.captures.find((c) => !c.checksumsOnGpu) ?? largest.captures[0];
  return `${formatBytes(largest.bytes)}: memory save at ${
    ofMemcpy(largest, largest.hostSave)
  } of memcpy from host memory, ${ofMemcpy(largest, host.mappedSave)} from mapped GPU staging; training blocked ${
    median(host.blocked).toFixed(2)
  } ms against ${median(largest.fileSave).toFixed(1)} ms for a file save`;
}
