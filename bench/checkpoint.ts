// The checkpoint section: for model states from 1 MB to 1 GB, how long a checkpoint holds training up
// and how long it takes in all, into host memory (the Gemini path) and into a file with fsync (the
// persistent baseline), and how long each takes to load; with the plain memcpy of the same bytes,
// measured in the same run, as the physical limit.

import { CheckpointCapture } from "../core/capture.ts";
import { encodeShard, shardLayout, type ShardMeta } from "../core/checkpoint.ts";
import { FileCheckpointStore } from "../core/file-store.ts";
import { storageBuffer } from "../core/gpu.ts";
import { InMemoryCheckpointStore } from "../core/memory-store.ts";
import { MODEL_PRESETS } from "../core/model.ts";
import { seededFloats } from "../core/random.ts";
import { type BenchContext, formatBandwidth, formatBytes, median, type Section } from "./measure.ts";

const MB = 1 << 20;

function stateSizes(quick: boolean): number[] {
  return quick ? [MB, 16 * MB] : [MB, 16 * MB, 128 * MB, 1024 * MB];
}

function repeatsFor(bytes: number): number {
  return bytes >= 512 * MB ? 2 : bytes >= 64 * MB ? 3 : 5;
}

/** Runs `body` `repeats` times (no warm-up for the largest states: one pass is already seconds) and returns ms. */
async function timeRuns(repeats: number, body: () => Promise<unknown> | unknown): Promise<number[]> {
  const samples: number[] = [];
  for (let i = 0; i < repeats; i++) {
    const start = performance.now();
    await body();
    samples.push(performance.now() - start);
  }
  return samples;
}

interface Row {
  bytes: number;
  memcpy: number[];
  memorySave: number[];
  captureBlocked: number[];
  captureTotal: number[];
  memoryLoad: number[];
  fileSave: number[];
  fileLoad: number[];
}

async function measureState(device: GPUDevice, stateBytes: number, directory: string): Promise<Row> {
  const floats = Math.floor(stateBytes / 12);
  const repeats = repeatsFor(stateBytes);
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
  const row: Row = {
    bytes: shardBytes,
    memcpy: [],
    memorySave: [],
    captureBlocked: [],
    captureTotal: [],
    memoryLoad: [],
    fileSave: [],
    fileLoad: [],
  };

  // The limit: copying the same bytes once, host to host.
  // (The target is touched first: this machine's first touch of fresh memory runs at about 0.35 GB/s.)
  const source = encodeShard(meta, tensors), target = new Uint8Array(shardBytes).fill(1); // iteration 1
  row.memcpy = await timeRuns(repeats, () => target.set(source));

  // Host memory: write the shard from the host tensors into a slot, verify, publish; then load it back.
  const store = InMemoryCheckpointStore.create(0, 3 * (shardBytes + 64) + 64 * 1024, {
    slotsPerOwner: 3,
    maxOwners: 1,
  });
  let iteration = 0;
  row.memorySave = await timeRuns(repeats, () => {
    meta.iteration = ++iteration;
    store.saveShard(meta, tensors);
  });
  // A restore verifies the shard in place and uploads it from the arena: here into warm host memory.
  row.memoryLoad = await timeRuns(repeats, () =>
    store.useNewest(0, {}, ({ tensors: stored }) => {
      target.set(new Uint8Array(stored.params.buffer, stored.params.byteOffset, 3 * stored.params.byteLength));
    }));

  // From the GPU: what training waits for (the capture's start) and the whole capture into memory.
  const gpu = {
    params: storageBuffer(device, floats * 4, "bench params"),
    m: storageBuffer(device, floats * 4, "bench m"),
    v: storageBuffer(device, floats * 4, "bench v"),
  };
  const capture = new CheckpointCapture(device, floats);
  try {
    for (let i = 0; i < repeats; i++) {
      const start = performance.now();
      meta.iteration = ++iteration;
      const pending = await capture.begin({ ...gpu, start: 0, end: floats });
      row.captureBlocked.push(pending.blockedMilliseconds);
      const { tensors: mapped, release } = await pending.mapped;
      store.saveShard(meta, mapped);
      release();
      row.captureTotal.push(performance.now() - start);
    }
  } finally {
    capture.destroy();
    for (const buffer of Object.values(gpu)) buffer.destroy();
  }

  // The persistent baseline: a file written, fsync'd and renamed; then read back and verified.
  const files = new FileCheckpointStore(directory, { keep: 2 });
  row.fileSave = await timeRuns(repeats, () => files.save(0, 1, source)); // each save replaces the last
  row.fileLoad = await timeRuns(repeats, () => files.load(0));
  return row;
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
      intro:
        'One shard holding the whole state (parameters, AdamW m and v), medians. "memory save" writes it into a slot ' +
        'of the in-memory store, checksums and verifies it and publishes it; "blocked" is how long a capture from the GPU ' +
        'holds training up, "capture" the whole capture from the GPU into memory; "file save" writes a file, fsyncs and ' +
        'renames it. "memory load" verifies the newest checkpoint in place and copies its tensors out (what a restore ' +
        'uploads to the GPU); "file load" reads the file and verifies it. memcpy copies the same bytes once, the limit.' +
        (skipped.length ? ` Not measured: ${skipped.join("; ")}.` : ""),
      header: [
        "state",
        "memcpy",
        "memory save",
        "x memcpy",
        "memory load",
        "blocked ms",
        "capture ms",
        "file save ms",
        "file save / blocked",
        "file load ms",
      ],
      rows: rows.map((r) => [
        formatBytes(r.bytes),
        rate(r.bytes, r.memcpy),
        rate(r.bytes, r.memorySave),
        (median(r.memcpy) / median(r.memorySave)).toFixed(2),
        rate(r.bytes, r.memoryLoad),
        ms(r.captureBlocked),
        ms(r.captureTotal),
        ms(r.fileSave),
        `${Math.round(median(r.fileSave) / Math.max(median(r.captureBlocked), 0.001))}x`,
        ms(r.fileLoad),
      ]),
      raw: { rows, skipped },
    };
  },
};
