// Capturing a checkpoint shard from the GPU without holding training up: the shard's range of the
// parameters and of AdamW's m and v is copied on the GPU into a staging buffer (queued behind the step
// that produced it, so the next step can be submitted at once), mapped when the copy is done, and
// written from the mapped memory straight into a store's slot. The GPU also computes the shard's chunk
// checksums on the way, so the host only copies and verifies. By default two staging buffers alternate,
// so one capture can be written out while the next is copied; training waits only when both are still
// busy. One buffer is enough where a step takes longer than writing a capture out: it is then allocated for
// each capture and freed once that is written out, so that a shard's worth of memory (twice that while it
// is mapped: wgpu's GL backend reads a mapped buffer into host memory) is held only while a capture is in
// flight. Allocating it lengthens the capture's hold-up (GPT-2 124M's 356 MiB on llvmpipe, four machines on
// two cores: 0.7 to 11 s), so two buffers stay allocated.

import { ChunkChecksums } from "../kernels/checksum.ts";
import { DEFAULT_CHUNK_BYTES, type ShardTensors } from "./checkpoint.ts";
import { PiecedBuffer, storageBuffer } from "./gpu.ts";

/** A flat array on the GPU: one buffer, or a model's pieces. */
type Flat = GPUBuffer | PiecedBuffer;

/** The GPU buffers a shard is taken from (flat, the same layout) and the range of them it holds. */
export interface CaptureSource {
  params: Flat;
  m: Flat;
  v: Flat;
  /** In floats: [start, end). */
  start: number;
  end: number;
}

/** A captured shard: views on mapped staging memory, valid until `release`. */
export interface CapturedShard {
  tensors: ShardTensors;
  /** The shard's chunk checksums, computed on the GPU; null where the shard was too large to bind. */
  checksums: Uint32Array | null;
  release: () => void;
}

/** A capture in flight: how long the caller was held up, and the mapped state once the copy is done. */
export interface PendingCapture {
  /** Milliseconds `begin` kept training from going on (waiting for a free staging buffer, encoding). */
  blockedMilliseconds: number;
  /** Resolves once the GPU has copied the shard. */
  mapped: Promise<CapturedShard>;
}

interface Staging {
  /** Null while a buffer allocated for each capture has none. */
  buffer: GPUBuffer | null;
  /** Settles when the last capture through this buffer has been released. */
  free: Promise<void>;
}

export class CheckpointCapture {
  readonly #device: GPUDevice;
  readonly #floats: number;
  readonly #chunkWords: number;
  readonly #chunks: number;
  readonly #staging: Staging[];
  readonly #checksumKernel: ChunkChecksums;
  readonly #checksums: GPUBuffer;
  readonly #wantChecksumsOnGpu: boolean;
  /** Whether the one staging buffer is allocated for each capture (see the top of this file). */
  readonly #perCapture: boolean;
  #next = 0;

  /**
   * Staging for shards of `floats` floats (params, m and v: 12 bytes a float, in each of `buffers` staging
   * buffers) and their checksums in chunks of `chunkBytes`, which must be the chunk size of the shards
   * written from it.
   * `checksumsOnGpu` should be false on a software adapter: there the GPU is the CPU, and its work runs
   * inside `queue.submit`, so checksumming "on the GPU" would only move that work into the time
   * training is blocked (measured on llvmpipe for a 16 MiB shard: 1.4 ms blocked without, 18.7 ms with).
   */
  constructor(
    device: GPUDevice,
    floats: number,
    { chunkBytes = DEFAULT_CHUNK_BYTES, buffers = 2, checksumsOnGpu = true }: {
      chunkBytes?: number;
      buffers?: number;
      checksumsOnGpu?: boolean;
    } = {},
  ) {
    if (!(Number.isInteger(buffers) && buffers >= 1)) {
      throw new Error(`a capture needs at least one staging buffer, got ${buffers}`);
    }
    this.#device = device;
    this.#wantChecksumsOnGpu = checksumsOnGpu;
    this.#floats = floats;
    this.#chunkWords = chunkBytes / 4;
    this.#chunks = Math.ceil((3 * floats) / this.#chunkWords);
    this.#checksumKernel = new ChunkChecksums(device);
    this.#checksums = storageBuffer(device, this.#chunks * 4, "checkpoint chunk checksums");
    this.#perCapture = buffers === 1;
    this.#staging = Array.from({ length: buffers }, (_, i) => ({
      buffer: this.#perCapture ? null : this.#stagingBuffer(i),
      free: Promise.resolve(),
    }));
  }

  #stagingBuffer(i: number): GPUBuffer {
    return this.#device.createBuffer({
      label: `checkpoint staging ${i}`,
      size: 3 * this.#floats * 4 + this.#chunks * 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  /** The buffers the GPU checksums shards from: when asked to, and each is in one piece that fits one binding. */
  #checksumSources(flats: PiecedBuffer[]): GPUBuffer[] | null {
    const limit = this.#device.limits.maxStorageBufferBindingSize;
    // The kernel reads every buffer from the shard's start: each must hold the state from float 0.
    const buffers = flats.map((flat) =>
      flat.pieces.length === 1 && flat.pieces[0].start === 0 ? flat.pieces[0].buffer : null
    );
    const fit = buffers.every((buffer) => buffer && buffer.size <= limit);
    return this.#wantChecksumsOnGpu && ChunkChecksums.fits(this.#floats, this.#chunkWords) && fit
      ? buffers as GPUBuffer[]
      : null;
  }

  /** Queues the copy of `source`'s range; call it right after submitting the step whose state it is. */
  async begin(source: CaptureSource): Promise<PendingCapture> {
    const start = performance.now();
    const floats = source.end - source.start;
    if (floats !== this.#floats) throw new Error(`this capture stages shards of ${this.#floats} floats, not ${floats}`);
    const staging = this.#staging[this.#next];
    this.#next = (this.#next + 1) % this.#staging.length;
    await staging.free; // every buffer busy: the one time training has to wait
    let released!: () => void;
    staging.free = new Promise((resolve) => released = resolve);
    const buffer = staging.buffer ??= this.#stagingBuffer(0);
    const release = () => {
      if (this.#perCapture) {
        buffer.destroy();
        staging.buffer = null;
      }
      released();
    };

    const encoder = this.#device.createCommandEncoder({ label: "checkpoint capture" });
    const flats = [source.params, source.m, source.v].map((flat) =>
      flat instanceof PiecedBuffer ? flat : PiecedBuffer.of(this.#device, flat)
    );
    const checksumSources = this.#checksumSources(flats), withChecksums = checksumSources !== null;
    if (checksumSources) {
      const pass = encoder.beginComputePass({ label: "checkpoint checksums" });
      this.#checksumKernel.encode(
        pass,
        this.#checksums,
        ...checksumSources as [GPUBuffer, GPUBuffer, GPUBuffer],
        source.start,
        floats,
        this.#chunkWords,
      );
      pass.end();
      encoder.copyBufferToBuffer(this.#checksums, 0, buffer, 3 * floats * 4, this.#chunks * 4);
    }
    flats.forEach((flat, i) => flat.encodeCopyTo(encoder, source.start, source.end, buffer, i * floats * 4));
    this.#device.queue.submit([encoder.finish()]);
    const mapped = buffer.mapAsync(GPUMapMode.READ).catch((error) => {
      release(); // a failed map (a lost device) must not keep the buffer busy forever
      throw error;
    }).then(() => {
      const range = buffer.getMappedRange();
      const tensor = (i: number) => new Float32Array(range, i * floats * 4, floats);
      return {
        tensors: { params: tensor(0), m: tensor(1), v: tensor(2) },
        checksums: withChecksums ? new Uint32Array(range, 3 * floats * 4, this.#chunks) : null,
        release: () => {
          buffer.unmap();
          release();
        },
      };
    });
    return { blockedMilliseconds: performance.now() - start, mapped };
  }

  destroy() {
    for (const staging of this.#staging) staging.buffer?.destroy();
    this.#checksums.destroy();
  }
}
