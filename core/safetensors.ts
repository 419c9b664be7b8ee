// The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range, then the raw little-endian data.
// Reads F32, F16 and BF16 (converted to f32); writes F32. Every way a file can be broken gets its own
// message: truncated, a header that does not parse, a tensor that is missing or of the wrong shape.

export type Dtype = "F32" | "F16" | "BF16";
const BYTES_PER_ELEMENT: Record<Dtype, number> = { F32: 4, F16: 2, BF16: 2 };

export interface TensorInfo {
  dtype: Dtype;
  shape: number[];
  /** The tensor's bytes inside the file. */
  bytes: Uint8Array;
}

export interface SafetensorsFile {
  tensors: Map<string, TensorInfo>;
  metadata: Record<string, string>;
}

export class SafetensorsError extends Error {
  override name = "SafetensorsError";
}

// A header larger than this is not a safetensors header (the reference implementation caps it at 100 MB).
const MAX_HEADER_BYTES = 100_000_000;

/** Parses a whole safetensors file held in memory; `source` names it in error messages. */
export function parseSafetensors(file: Uint8Array, source = "safetensors file"): SafetensorsFile {
  const fail = (why: string): never => {
    throw new SafetensorsError(`${source}: ${why}`);
  };
  if (file.length < 8) fail(`truncated: ${file.length} bytes, shorter than the 8-byte header length`);
  const headerLength = Number(new DataView(file.buffer, file.byteOffset, 8).getBigUint64(0, true));
  if (headerLength > MAX_HEADER_BYTES) {
    fail(`the header length ${headerLength} is not plausible (not a safetensors file?)`);
  }
  if (8 + headerLength > file.length) {
    fail(`truncated: the header needs ${headerLength} bytes, the file has ${file.length - 8}`);
  }
  let header: unknown;
  try {
    header = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(file.subarray(8, 8 + headerLength)));
  } catch (error) {
    fail(`the header does not parse as JSON (${(error as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) fail("the header is not a JSON object");
  const data = file.subarray(8 + headerLength);
  const tensors = new Map<string, TensorInfo>();
  let metadata: Record<string, string> = {};
  for (const [name, entry] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") {
      metadata = entry as Record<string, string>;
      continue;
    }
    const { dtype, shape, data_offsets: offsets } = (entry ?? {}) as Record<string, unknown>;
    if (typeof dtype !== "string" || !(dtype in BYTES_PER_ELEMENT)) {
      fail(`tensor "${name}" has dtype ${JSON.stringify(dtype)}; F32, F16 and BF16 are supported`);
    }
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      fail(`tensor "${name}" has no valid shape`);
    }
    if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)) {
      fail(`tensor "${name}" has no valid data_offsets`);
    }
    const [begin, end] = offsets as number[];
    const elements = (shape as number[]).reduce((a, b) => a * b, 1);
    if (end - begin !== elements * BYTES_PER_ELEMENT[dtype as Dtype]) {
      fail(
        `tensor "${name}": data_offsets hold ${end - begin} bytes, shape ${JSON.stringify(shape)} of ${dtype} needs ${
          elements * BYTES_PER_ELEMENT[dtype as Dtype]
        }`,
      );
    }
    if (end > data.length) fail(`truncated: tensor "${name}" ends at byte ${end} of a data section of ${data.length}`);
    tensors.set(name, { dtype: dtype as Dtype, shape: shape as number[], bytes: data.subarray(begin, end) });
  }
  return { tensors, metadata };
}

/** The tensor `name` as f32 values, after checking its shape; F16 and BF16 are widened exactly. */
export function tensorAsF32(
  file: SafetensorsFile,
  name: string,
  expectedShape: number[],
  source = "safetensors file",
): Float32Array {
  const tensor = file.tensors.get(name);
  if (!tensor) throw new SafetensorsError(`${source}: tensor "${name}" is missing`);
  if (tensor.shape.length !== expectedShape.length || tensor.shape.some((d, i) => d !== expectedShape[i])) {
    throw new SafetensorsError(
      `${source}: tensor "${name}" has shape ${JSON.stringify(tensor.shape)}, the config needs ${
        JSON.stringify(expectedShape)
      }`,
    );
  }
  // F32 data is copied as it is (every platform WebGPU runs on is little-endian, like the format).
  if (tensor.dtype === "F32") return new Float32Array(tensor.bytes.slice().buffer);
  const view = new DataView(tensor.bytes.buffer, tensor.bytes.byteOffset, tensor.bytes.byteLength);
  const count = tensor.bytes.byteLength / BYTES_PER_ELEMENT[tensor.dtype];
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    if (tensor.dtype === "F16") out[i] = halfToFloat(view.getUint16(2 * i, true));
    else out[i] = new Float32Array(new Uint32Array([view.getUint16(2 * i, true) << 16]).buffer)[0];
  }
  return out;
}

/** IEEE 754 binary16 to a number (exact: every half is a float). */
function halfToFloat(bits: number): number {
  const sign = bits & 0x8000 ? -1 : 1, exponent = (bits >> 10) & 0x1f, fraction = bits & 0x3ff;
  if (exponent === 0) return sign * 2 ** -14 * (fraction / 1024);
  if (exponent === 31) return fraction ? NaN : sign * Infinity;
  return sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
}

export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** A safetensors file of F32 tensors, in the given order, with optional string metadata. */
export function encodeSafetensors(tensors: TensorToWrite[], metadata?: Record<string, string>): Uint8Array {
  const header: Record<string, unknown> = metadata ? { __metadata__: metadata } : {};
  let offset = 0;
  for (const { name, shape, data } of tensors) {
    const elements = shape.reduce((a, b) => a * b, 1);
    if (elements !== data.length) {
      throw new Error(`tensor "${name}": shape ${JSON.stringify(shape)} does not hold ${data.length} values`);
    }
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + data.byteLength] };
    offset += data.byteLength;
  }
  // The data section starts 8-byte aligned: pad the JSON with spaces, as the reference writer does.
  const json = new TextEncoder().encode(JSON.stringify(header));
  const headerBytes = new Uint8Array(json.length + (8 - (json.length % 8)) % 8).fill(0x20);
  headerBytes.set(json);
  const file = new Uint8Array(8 + headerBytes.length + offset);
  new DataView(file.buffer).setBigUint64(0, BigInt(headerBytes.length), true);
  file.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const { data } of tensors) {
    file.set(new Uint8Array(data.buffer, data.byteOffset, data.byteLength), at);
    at += data.byteLength;
  }
  return file;
}
