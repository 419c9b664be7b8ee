// The checkpoint shard format. A shard is one machine's part of the training state: a range of the flat
// parameters and the same range of AdamW's m and v, all f32, with everything resume needs (model config,
// iteration, data position and RNG). It is laid out so that it can be written and sent in fixed-size
// chunks and checked chunk by chunk:
//
//   bytes 0..8    "GEMCKPT1"
//   bytes 8..12   header length H (u32, little-endian)
//   bytes 12..16  checksum of the header bytes
//   bytes 16..    header: JSON, padded with spaces so that the body starts on a 64-byte boundary
//   body          params[range] | m[range] | v[range], checked in chunks of `chunkBytes`
//
// Checksums are Fletcher-style over 32-bit words (core/checksum.ts): a flipped byte always changes the
// first sum, a reordering the second.

import { checksumWords, RunningChecksum } from "./checksum.ts";
import type { DataState } from "./data.ts";
import type { GPT2Config } from "./model.ts";
import type { ShardRange } from "./shard.ts";

const MAGIC = "GEMCKPT1";
const PREAMBLE_BYTES = 16;
const BODY_ALIGNMENT = 64;
export const DEFAULT_CHUNK_BYTES = 1 << 20;

/** What a shard says about itself (all but the checksums, which the writer computes). */
export interface ShardMeta {
  config: GPT2Config;
  /** Training steps completed when it was taken. */
  iteration: number;
  data: DataState;
  /** The machine whose state this is. */
  owner: number;
  /** The range of the flat state it holds. */
  shard: ShardRange;
  chunkBytes: number;
  createdAt: number;
}

export interface TensorEntry {
  name: string;
  dtype: "F32";
  shape: number[];
  /** Byte offset in the body. */
  offset: number;
}

interface ShardHeader extends ShardMeta {
  format: 1;
  tensors: TensorEntry[];
  bodyBytes: number;
  /** One per chunk of the body, 8 hex digits each (a fixed width, so the header's size is known up front). */
  chunkChecksums: string[];
}

/** The state of a shard's range: parameters and AdamW moments. */
export interface ShardTensors {
  params: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

export interface DecodedShard {
  meta: ShardMeta;
  tensors: ShardTensors;
}

/** A shard that fails a check: it is reported, never loaded. */
export class CheckpointCorruptError extends Error {
  override name = "CheckpointCorruptError";
}

function checksumBytes(bytes: Uint8Array): number {
  // The header is not a multiple of 4 bytes: checksum the words and fold in the tail.
  const words = bytes.length >> 2;
  let sum = checksumWords(new Int32Array(bytes.slice(0, words * 4).buffer));
  for (let i = words * 4; i < bytes.length; i++) sum = (Math.imul(sum, 31) + bytes[i]) >>> 0;
  return sum;
}

const hex = (value: number) => value.toString(16).padStart(8, "0");

function headerFor(meta: ShardMeta, checksums?: number[]): ShardHeader {
  const floats = meta.shard.end - meta.shard.start, tensorBytes = floats * 4;
  const bodyBytes = 3 * tensorBytes;
  const chunks = Math.ceil(bodyBytes / meta.chunkBytes);
  return {
    format: 1,
    ...meta,
    tensors: ["params", "adam.m", "adam.v"].map((name, i) => ({
      name,
      dtype: "F32",
      shape: [floats],
      offset: i * tensorBytes,
    })),
    bodyBytes,
    chunkChecksums: Array.from({ length: chunks }, (_, i) => hex(checksums?.[i] ?? 0)),
  };
}

/** Where the parts of a shard with this metadata go, and its total size. */
export function shardLayout(meta: ShardMeta): { headerBytes: number; bodyOffset: number; totalBytes: number } {
  if (meta.chunkBytes <= 0 || meta.chunkBytes % 4) {
    throw new Error(`chunk size must be a positive multiple of 4, got ${meta.chunkBytes}`);
  }
  const headerBytes = new TextEncoder().encode(JSON.stringify(headerFor(meta))).length;
  const bodyOffset = Math.ceil((PREAMBLE_BYTES + headerBytes) / BODY_ALIGNMENT) * BODY_ALIGNMENT;
  return { headerBytes, bodyOffset, totalBytes: bodyOffset + headerFor(meta).bodyBytes };
}

/**
 * The pieces `writeShard` copies a chunk in, checksumming each right after it is copied: small enough to
 * be still in a core's cache when it is read again (measured here on a 128 MiB shard: 256 KiB pieces
 * saved at 0.83 of memcpy, whole 1 MiB chunks at 0.68).
 */
const WRITE_PIECE_BYTES = 256 * 1024;

/**
 * Writes a shard into `target` (at least `shardLayout(meta).totalBytes` long, e.g. a slot of a store)
 * straight from the tensors, and returns the bytes written. Each chunk is checksummed in `target` as it is
 * copied, a piece at a time while each is still in the cache: against the checksums given (computed by
 * the GPU from the tensors it captured, so the check covers the whole way from the GPU to `target`; a
 * mismatch is a CheckpointCorruptError), or to compute them.
 */
export function writeShard(
  target: Uint8Array,
  meta: ShardMeta,
  tensors: ShardTensors,
  checksums?: ArrayLike<number>,
): Uint8Array {
  const { bodyOffset, totalBytes } = shardLayout(meta);
  const floats = meta.shard.end - meta.shard.start;
  if (target.length < totalBytes) throw new Error(`a shard of ${totalBytes} bytes does not fit in ${target.length}`);
  if (target.byteOffset % 4) throw new Error("a shard must be written at a 4-byte aligned offset");
  for (const [name, values] of Object.entries(tensors)) {
    if (values.length !== floats) {
      throw new Error(`shard tensor ${name}: ${values.length} floats, the range holds ${floats}`);
    }
  }
  const body = target.subarray(bodyOffset, totalBytes);
  const chunks = Math.ceil(body.length / meta.chunkBytes);
  if (checksums && checksums.length !== chunks) throw new Error(`${checksums.length} checksums for ${chunks} chunks`);
  const sources = [tensors.params, tensors.m, tensors.v].map((t) =>
    new Uint8Array(t.buffer, t.byteOffset, t.byteLength)
  );
  const tensorBytes = floats * 4;
  const sums: number[] = [];
  for (let chunk = 0; chunk < chunks; chunk++) {
    const begin = chunk * meta.chunkBytes, end = Math.min(begin + meta.chunkBytes, body.length);
    const running = new RunningChecksum();
    // The body is the three tensors end to end: a chunk may take the end of one and the start of the next.
    for (let at = begin; at < end;) {
      const tensor = Math.floor(at / tensorBytes), offset = at - tensor * tensorBytes;
      const length = Math.min(end - at, tensorBytes - offset, WRITE_PIECE_BYTES);
      body.set(sources[tensor].subarray(offset, offset + length), at);
      running.add(new Int32Array(body.buffer, body.byteOffset + at, length / 4));
      at += length;
    }
    const sum = running.value;
    if (checksums && sum !== checksums[chunk]) {
      throw new CheckpointCorruptError(
        `checkpoint ${meta.iteration} of machine ${meta.owner}: chunk ${chunk} as written does not match the checksum ` +
          "computed where it was captured",
      );
    }
    sums.push(sum);
  }
  writeHeader(target, meta, sums);
  return target.subarray(0, totalBytes);
}

function chunkChecksums(body: Uint8Array, chunkBytes: number): number[] {
  const words = new Int32Array(body.buffer, body.byteOffset, body.byteLength / 4);
  const perChunk = chunkBytes / 4;
  return Array.from(
    { length: Math.ceil(words.length / perChunk) },
    (_, i) => checksumWords(words.subarray(i * perChunk, (i + 1) * perChunk)),
  );
}

function writeHeader(target: Uint8Array, meta: ShardMeta, checksums: number[]) {
  const { bodyOffset } = shardLayout(meta);
  const json = new TextEncoder().encode(JSON.stringify(headerFor(meta, checksums)));
  target.set(new TextEncoder().encode(MAGIC), 0);
  const padded = new Uint8Array(bodyOffset - PREAMBLE_BYTES).fill(0x20);
  padded.set(json);
  const view = new DataView(target.buffer, target.byteOffset, PREAMBLE_BYTES);
  view.setUint32(8, padded.length, true);
  view.setUint32(12, checksumBytes(padded), true);
  target.set(padded, PREAMBLE_BYTES);
}

/** A standalone shard: `writeShard` into a buffer of its own. */
export function encodeShard(meta: ShardMeta, tensors: ShardTensors): Uint8Array {
  return writeShard(new Uint8Array(shardLayout(meta).totalBytes), meta, tensors);
}

/** What a reader expects of a shard; anything else is a corrupt or foreign one. */
export interface ShardExpectation {
  config?: GPT2Config;
  iteration?: number;
  owner?: number;
}

/** Reads and checks a shard's header only: enough to list what a file or slot holds. */
export function readShardHeader(bytes: Uint8Array, source = "checkpoint"): ShardHeader {
  const fail = (why: string): never => {
    throw new CheckpointCorruptError(`${source}: ${why}`);
  };
  if (bytes.length < PREAMBLE_BYTES) fail(`truncated: ${bytes.length} bytes`);
  // Decoded from copies: browsers' TextDecoder refuses views on shared memory (an arena), and a copy is
  // what was checked even if a writer changes the slot meanwhile.
  if (new TextDecoder().decode(bytes.slice(0, 8)) !== MAGIC) fail("not a gemini-lab checkpoint (bad magic)");
  const view = new DataView(bytes.buffer, bytes.byteOffset, PREAMBLE_BYTES);
  const headerLength = view.getUint32(8, true);
  if (PREAMBLE_BYTES + headerLength > bytes.length) fail(`truncated inside the header (${bytes.length} bytes)`);
  const headerBytes = bytes.slice(PREAMBLE_BYTES, PREAMBLE_BYTES + headerLength);
  if (checksumBytes(headerBytes) !== view.getUint32(12, true)) fail("the header's checksum does not match");
  return JSON.parse(new TextDecoder().decode(headerBytes)) as ShardHeader;
}

/**
 * Checks a whole shard: its header, that it is the model, iteration and owner expected, that it is not
 * truncated, and every chunk's checksum (unless `chunks` is false: for a shard whose chunks `writeShard`
 * has just checked as it wrote them). Throws a CheckpointCorruptError saying what is wrong.
 */
export function verifyShard(
  bytes: Uint8Array,
  expect: ShardExpectation = {},
  source = "checkpoint",
  { chunks = true }: { chunks?: boolean } = {},
): ShardHeader {
  const header = readShardHeader(bytes, source);
  const fail = (why: string): never => {
    throw new CheckpointCorruptError(`${source}: ${why}`);
  };
  if (expect.config && JSON.stringify(header.config) !== JSON.stringify(expect.config)) {
    fail(`it is of another model: ${JSON.stringify(header.config)}, expected ${JSON.stringify(expect.config)}`);
  }
  if (expect.iteration !== undefined && header.iteration !== expect.iteration) {
    fail(`it holds iteration ${header.iteration}, expected ${expect.iteration}`);
  }
  if (expect.owner !== undefined && header.owner !== expect.owner) {
    fail(`it belongs to machine ${header.owner}, expected ${expect.owner}`);
  }
  const { bodyOffset, totalBytes } = shardLayout(header);
  if (bytes.length < totalBytes) fail(`truncated: ${bytes.length} of ${totalBytes} bytes`);
  if (!chunks) return header;
  const actual = chunkChecksums(bytes.subarray(bodyOffset, totalBytes), header.chunkBytes);
  const bad = header.chunkChecksums.findIndex((expected, i) => expected !== hex(actual[i]));
  if (bad >= 0) {
    fail(`chunk ${bad} (from body byte ${bad * header.chunkBytes}) does not match its checksum: the data is corrupt`);
  }
  return header;
}

/** Verifies a shard (see `verifyShard`) and returns its metadata and tensors, as views on `bytes`. */
export function decodeShard(bytes: Uint8Array, expect: ShardExpectation = {}, source = "checkpoint"): DecodedShard {
  const header = verifyShard(bytes, expect, source);
  const aligned = bytes.byteOffset % 4 ? bytes.slice() : bytes;
  const { bodyOffset } = shardLayout(header);
  const floats = header.shard.end - header.shard.start;
  const tensor = (i: number) =>
    new Float32Array(aligned.buffer, aligned.byteOffset + bodyOffset + i * floats * 4, floats);
  const { format: _format, tensors: _tensors, bodyBytes: _bodyBytes, chunkChecksums: _checksums, ...meta } = header;
  return { meta, tensors: { params: tensor(0), m: tensor(1), v: tensor(2) } };
}
