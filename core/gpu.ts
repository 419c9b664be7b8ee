// The one place that obtains a GPUDevice: in Deno, in a page and in a Worker (Deno's or the browser's).
// It asks for the limits the kernels need, reports which adapter it got, and makes device loss loud.

/** What we tell a user about the adapter a run is on (and what the bench and the lab print). */
export interface AdapterReport {
  description: string;
  vendor: string;
  architecture: string;
  /** True for a software or otherwise "fallback" adapter (llvmpipe, lavapipe, SwiftShader, WARP). */
  isFallback: boolean;
}

export interface Gpu {
  device: GPUDevice;
  adapter: AdapterReport;
}

/** Thrown when this runtime has no usable WebGPU adapter; its message says how to get one. */
export class GpuUnavailableError extends Error {
  override name = "GpuUnavailableError";
}

export const NO_ADAPTER_HELP = [
  "no WebGPU adapter was found.",
  "Without a GPU, a software adapter works: on Debian/Ubuntu `apt-get install mesa-vulkan-drivers` (lavapipe)",
  "or `apt-get install libgl1-mesa-dri` (llvmpipe; pick it with DENO_WEBGPU_BACKEND=gl);",
  "in Chromium start the browser with --enable-unsafe-webgpu.",
].join(" ");

// Limits the kernels are written against: below these a kernel would fail to compile or bind.
const KERNEL_MINIMUM_LIMITS = {
  maxStorageBuffersPerShaderStage: 8,
  maxComputeInvocationsPerWorkgroup: 256,
  maxComputeWorkgroupSizeX: 256,
  maxComputeWorkgroupStorageSize: 16384,
} as const;

// Limits whose ceiling grows with the model: take whatever the adapter offers, since the WebGPU
// defaults (128 MiB per binding, 256 MiB per buffer) are smaller than a GPT-2 124M's state.
const TAKE_ADAPTER_MAXIMUM = [
  ...Object.keys(KERNEL_MINIMUM_LIMITS),
  "maxStorageBufferBindingSize",
  "maxBufferSize",
  "maxComputeWorkgroupsPerDimension",
] as const;

/** Why a device was lost: passed to `onLost` so callers can react beyond the log line. */
export type LostHandler = (info: GPUDeviceLostInfo) => void;

/**
 * Obtains a device on the best adapter this runtime has. Device loss is always logged with its
 * reason (except after our own `device.destroy()`), and uncaptured validation errors are logged.
 */
export async function acquireGpu(options: { onLost?: LostHandler } = {}): Promise<Gpu> {
  const gpu = (globalThis.navigator as Navigator | undefined)?.gpu;
  if (!gpu) throw new GpuUnavailableError(`this runtime has no navigator.gpu: ${NO_ADAPTER_HELP}`);
  const adapter = await gpu.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter) throw new GpuUnavailableError(NO_ADAPTER_HELP);
  const report = describeAdapter(adapter);

  const offeredLimit = (name: string) => (adapter.limits as unknown as Record<string, number>)[name];
  for (const [name, needed] of Object.entries(KERNEL_MINIMUM_LIMITS)) {
    const offered = offeredLimit(name);
    if (offered < needed) {
      throw new GpuUnavailableError(
        `the adapter "${report.description}" offers ${name} = ${offered}, the kernels need ${needed}`,
      );
    }
  }
  const requiredLimits: Record<string, number> = {};
  for (const name of TAKE_ADAPTER_MAXIMUM) requiredLimits[name] = offeredLimit(name);

  const device = await adapter.requestDevice({ requiredLimits, label: `gemini-lab on ${report.description}` });
  device.lost.then((info) => {
    if (info.reason === "destroyed") return; // our own destroy(): an orderly shutdown, not a failure
    console.error(`GPU device lost (${info.reason || "unknown"}): ${info.message}`);
    options.onLost?.(info);
  });
  device.addEventListener("uncapturederror", (event) => {
    console.error(`GPU error: ${(event as GPUUncapturedErrorEvent).error.message}`);
  });
  return { device, adapter: report };
}

function describeAdapter(adapter: GPUAdapter): AdapterReport {
  const info = adapter.info;
  // `isFallbackAdapter` moved from the adapter to its info in the spec; runtimes differ in which they have.
  const legacyFlag = (adapter as unknown as { isFallbackAdapter?: boolean }).isFallbackAdapter;
  // Chromium leaves the description empty and names SwiftShader in vendor and architecture instead.
  const description = info.description || [info.vendor, info.architecture, info.device].filter(Boolean).join(" ") ||
    "unnamed adapter";
  return {
    description,
    vendor: info.vendor,
    architecture: info.architecture,
    isFallback: Boolean(info.isFallbackAdapter ?? legacyFlag) || SOFTWARE_ADAPTER_NAMES.test(description),
  };
}

// Software rasterisers that some runtimes do not flag as fallback adapters.
const SOFTWARE_ADAPTER_NAMES = /llvmpipe|lavapipe|swiftshader|softpipe|warp/i;

/** One line for logs and the demo: "llvmpipe (LLVM 15.0.6, 256 bits) [software adapter]". */
export function formatAdapter(adapter: AdapterReport): string {
  const vendor = adapter.vendor ? `, vendor ${adapter.vendor}` : "";
  return `${adapter.description}${vendor} [${
    adapter.isFallback ? "software adapter: slow, tiny models only" : "hardware"
  }]`;
}

/** A storage buffer holding `data`, usable as a kernel input or output and as a copy source and target. */
export function storageBufferFrom(
  device: GPUDevice,
  data: Float32Array | Uint32Array | Int32Array,
  label: string,
): GPUBuffer {
  const buffer = device.createBuffer({
    label,
    size: alignTo4(data.byteLength),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    mappedAtCreation: true,
  });
  new Uint8Array(buffer.getMappedRange()).set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  buffer.unmap();
  return buffer;
}

/** An uninitialised (zeroed) storage buffer of `byteLength` bytes. */
export function storageBuffer(device: GPUDevice, byteLength: number, label: string): GPUBuffer {
  return device.createBuffer({
    label,
    size: alignTo4(byteLength),
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
}

/** Copies `byteLength` bytes of a GPU buffer from `offset` (a multiple of 4) back to the host (waits for the queue). */
export async function readBuffer(
  device: GPUDevice,
  source: GPUBuffer,
  byteLength = source.size,
  offset = 0,
): Promise<ArrayBuffer> {
  const target = new Uint8Array(byteLength);
  await readBufferInto(device, source, target, offset);
  return target.buffer;
}

/**
 * The largest staging buffer a readback maps at once: a larger read goes through it in turns, so reading
 * GPT-2's gradients does not hold a second whole copy of them in mapped memory (host memory, on a software adapter).
 */
export const READBACK_STAGING_BYTES = 32 << 20;

/**
 * The most a `PiecedBuffer.upload` writes at once: queue.writeBuffer copies what it writes into a staging
 * buffer that lives until its submission is done, so a whole upload of GPT-2's parameters would hold a second
 * copy of them (475 MiB, host memory on a software adapter).
 */
export const UPLOAD_PIECE_BYTES = 32 << 20;

/**
 * Copies `target.byteLength` bytes of a GPU buffer from `offset` (a multiple of 4) into `target`, through one
 * staging buffer of at most READBACK_STAGING_BYTES (waits for the queue).
 */
export async function readBufferInto(device: GPUDevice, source: GPUBuffer, target: Uint8Array, offset = 0) {
  const staging = device.createBuffer({
    label: `${source.label} readback`,
    size: alignTo4(Math.min(target.byteLength, READBACK_STAGING_BYTES)),
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  try {
    for (let done = 0; done < target.byteLength || done === 0; done += staging.size) {
      const bytes = Math.min(staging.size, target.byteLength - done);
      const encoder = device.createCommandEncoder();
      encoder.copyBufferToBuffer(source, offset + done, staging, 0, alignTo4(bytes));
      device.queue.submit([encoder.finish()]);
      await staging.mapAsync(GPUMapMode.READ);
      target.set(new Uint8Array(staging.getMappedRange(), 0, bytes), done);
      staging.unmap();
    }
  } finally {
    staging.destroy();
  }
}

function alignTo4(byteLength: number): number {
  return Math.max(4, Math.ceil(byteLength / 4) * 4);
}

/** One piece of a `PiecedBuffer`: its own GPU buffer, holding [start, end) of the flat array (in floats). */
export interface Piece {
  buffer: GPUBuffer;
  start: number;
  end: number;
}

/** The part of a range inside one piece: [start, end) of the flat array, at `binding` in the piece's buffer. */
export interface PiecePart {
  start: number;
  end: number;
  binding: Required<GPUBufferBinding>;
}

/**
 * A flat f32 array on the GPU (the parameters, their gradients, AdamW's m or v) in pieces that each fit one
 * storage binding: the adapter's per-binding limit (128 MiB by default) is smaller than GPT-2's state. The
 * logical layout stays one flat range of floats, as checkpoints and shards address it; a range may span
 * pieces, and `parts` cuts it at their boundaries.
 */
export class PiecedBuffer {
  readonly pieces: Piece[];
  readonly floats: number;
  readonly #device: GPUDevice;

  constructor(device: GPUDevice, pieces: Piece[]) {
    this.#device = device;
    this.pieces = pieces;
    this.floats = pieces.at(-1)!.end;
  }

  /** New zeroed pieces starting at each of `starts` (the first 0, each a multiple of 64 floats), up to `floats`. */
  static allocate(device: GPUDevice, starts: readonly number[], floats: number, label: string): PiecedBuffer {
    return new PiecedBuffer(
      device,
      starts.map((start, i) => {
        const end = starts[i + 1] ?? floats;
        return { buffer: storageBuffer(device, (end - start) * 4, `${label} [${start}, ${end})`), start, end };
      }),
    );
  }

  /** A flat array that is one whole buffer. */
  static of(device: GPUDevice, buffer: GPUBuffer): PiecedBuffer {
    return new PiecedBuffer(device, [{ buffer, start: 0, end: buffer.size / 4 }]);
  }

  /** The parts of [start, end) in each piece it touches, in order. */
  parts(start: number, end: number): PiecePart[] {
    return this.pieces.filter((piece) => piece.start < end && piece.end > start).map((piece) => {
      const from = Math.max(start, piece.start), to = Math.min(end, piece.end);
      return {
        start: from,
        end: to,
        binding: { buffer: piece.buffer, offset: (from - piece.start) * 4, size: (to - from) * 4 },
      };
    });
  }

  /** A binding of [start, end), which must lie inside one piece (every tensor but a chunked one does). */
  binding(start: number, end: number): GPUBufferBinding {
    const parts = this.parts(start, end);
    if (parts.length !== 1) {
      throw new Error(`[${start}, ${end}) is not inside one piece of ${this.pieces[0].buffer.label}`);
    }
    return parts[0].binding;
  }

  /** Writes `values` at float `start` (queue.writeBuffer, piece by piece). */
  write(start: number, values: Float32Array) {
    for (const { binding, start: from, end: to } of this.parts(start, start + values.length)) {
      this.#device.queue.writeBuffer(binding.buffer, binding.offset, values.subarray(from - start, to - start));
    }
  }

  /** Writes `values` at float `start` as `write` does, UPLOAD_PIECE_BYTES at a time, each submitted and done. */
  async upload(start: number, values: Float32Array) {
    const pieceFloats = UPLOAD_PIECE_BYTES / 4;
    for (let done = 0; done < values.length; done += pieceFloats) {
      this.write(start + done, values.subarray(done, done + pieceFloats));
      this.#device.queue.submit([]);
      await this.#device.queue.onSubmittedWorkDone();
    }
  }

  /** Records copies of [start, end) into `target` from byte `targetOffset` on. */
  encodeCopyTo(encoder: GPUCommandEncoder, start: number, end: number, target: GPUBuffer, targetOffset: number) {
    for (const { binding } of this.parts(start, end)) {
      encoder.copyBufferToBuffer(binding.buffer, binding.offset, target, targetOffset, binding.size);
      targetOffset += binding.size;
    }
  }

  encodeClear(encoder: GPUCommandEncoder) {
    for (const piece of this.pieces) encoder.clearBuffer(piece.buffer);
  }

  /** Reads [start, end) back to the host, into `out` if given (a buffer the caller reuses); waits for the queue. */
  async read(start = 0, end = this.floats, out = new Float32Array(end - start)): Promise<Float32Array> {
    if (out.length !== end - start) throw new Error(`reading ${end - start} floats into an array of ${out.length}`);
    for (const { binding, start: from, end: to } of this.parts(start, end)) {
      const target = new Uint8Array(out.buffer, out.byteOffset + (from - start) * 4, (to - from) * 4);
      await readBufferInto(this.#device, binding.buffer, target, binding.offset);
    }
    return out;
  }

  destroy() {
    for (const piece of this.pieces) piece.buffer.destroy();
  }
}
