// Capturing a checkpoint shard from the GPU without holding training up: the shard's range of the
// parameters and of AdamW's m and v is copied on the GPU into a staging buffer (queued behind the step
// that produced it, so the next step can be submitted at once), mapped when the copy is done, and
// written from the mapped memory straight into a store's slot. Two staging buffers alternate, so one
// capture can be written out while the next is copied; training waits only when both are still busy.

import type { ShardTensors } from "./checkpoint.ts";

/** The GPU buffers a shard is taken from (flat, the same layout) and the range of them it holds. */
export interface CaptureSource {
  params: GPUBuffer;
  m: GPUBuffer;
  v: GPUBuffer;
  /** In floats: [start, end). */
  start: number;
  end: number;
}

/** A capture in flight: how long the caller was held up, and the mapped state once the copy is done. */
export interface PendingCapture {
  /** Milliseconds `begin` kept training from going on (waiting for a free staging buffer, encoding). */
  blockedMilliseconds: number;
  /** Resolves once the GPU has copied the shard: views on the mapped staging memory, valid until `release`. */
  mapped: Promise<{ tensors: ShardTensors; release: () => void }>;
}

interface Staging {
  buffer: GPUBuffer;
  /** Settles when the last capture through this buffer has been released. */
  free: Promise<void>;
}

export class CheckpointCapture {
  readonly #device: GPUDevice;
  readonly #floats: number;
  readonly #staging: Staging[];
  #next = 0;

  /** Staging for shards of `floats` floats (params, m and v: 12 bytes a float, twice). */
  constructor(device: GPUDevice, floats: number) {
    this.#device = device;
    this.#floats = floats;
    this.#staging = [0, 1].map((i) => ({
      buffer: device.createBuffer({
        label: `checkpoint staging ${i}`,
        size: 3 * floats * 4,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      }),
      free: Promise.resolve(),
    }));
  }

  /** Queues the copy of `source`'s range; call it right after submitting the step whose state it is. */
  async begin(source: CaptureSource): Promise<PendingCapture> {
    const start = performance.now();
    const floats = source.end - source.start;
    if (floats !== this.#floats) throw new Error(`this capture stages shards of ${this.#floats} floats, not ${floats}`);
    const staging = this.#staging[this.#next];
    this.#next = (this.#next + 1) % this.#staging.length;
    await staging.free; // both buffers busy: the one time training has to wait
    let release!: () => void;
    staging.free = new Promise((resolve) => release = resolve);

    const encoder = this.#device.createCommandEncoder({ label: "checkpoint capture" });
    [source.params, source.m, source.v].forEach((buffer, i) =>
      encoder.copyBufferToBuffer(buffer, source.start * 4, staging.buffer, i * floats * 4, floats * 4)
    );
    this.#device.queue.submit([encoder.finish()]);
    const mapped = staging.buffer.mapAsync(GPUMapMode.READ).catch((error) => {
      release(); // a failed map (a lost device) must not keep the buffer busy forever
      throw error;
    }).then(() => {
      const range = staging.buffer.getMappedRange();
      const tensor = (i: number) => new Float32Array(range, i * floats * 4, floats);
      return {
        tensors: { params: tensor(0), m: tensor(1), v: tensor(2) },
        release: () => {
          staging.buffer.unmap();
          release();
        },
      };
    });
    return { blockedMilliseconds: performance.now() - start, mapped };
  }

  destroy() {
    for (const staging of this.#staging) staging.buffer.destroy();
  }
}
