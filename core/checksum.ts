// The chunk checksum of checkpoint shards: Fletcher-style over 32-bit words w_0 .. w_{n-1}, mod 2^32,
//   a = sum of w_i,   b = sum of the running sums of a = sum of (n - i) * w_i,
//   checksum = a ^ (b * 0x9e3779b1) ^ n.
// A flipped byte always changes a; a reordering changes b. Because b is a weighted sum, the checksum can
// be computed in parallel (the GPU does, during a capture), sixteen words at a time (WebAssembly SIMD, for
// memory that is a shared WebAssembly.Memory, such as a checkpoint arena) and in pieces, with the same
// result as the plain loop here.

const MIX = 0x9e3779b1;

function finish(a: number, b: number, n: number): number {
  return (a ^ Math.imul(b, MIX) ^ n) >>> 0;
}

/** The running sums (a, b) continued over `words` from (a, b): the plain loop. */
function continueSums(words: Int32Array, a: number, b: number): [number, number] {
  for (let i = 0; i < words.length; i++) {
    a = (a + words[i]) | 0;
    b = (b + a) | 0;
  }
  return [a, b];
}

// A module of one function, sums(pointer, blocks): the running sums over `blocks` blocks of 16 words at
// `pointer` of the imported shared memory, combined into b << 32 | a. Each block is four vectors of four
// lanes; vector k's lanes keep their own sums (a_kj, b_kj), so the four chains run side by side instead
// of each add waiting for the last. Over n = 16T words, lane (k, j) holds word 16t + 4k + j, whose weight
// in b is n - (16t + 4k + j); so, folding the four vectors into one (lane j of a four-lane pass),
//   a_j = sum over k of a_kj,   b_j = 4 * sum over k of b_kj - (a_1j + 2 a_2j + 3 a_3j),
// and then, as for one vector of four lanes,
//   a = sum of a_j,   b = 4 * sum of b_j - (a_1 + 2 a_2 + 3 a_3).
// Hand-assembled: the opcodes are WebAssembly's (0xfd prefixes the SIMD ones).
const I32X4_ADD = [0xfd, 0xae, 0x01], I32X4_SUB = [0xfd, 0xb1, 0x01], I32X4_SHL = [0xfd, 0xab, 0x01];
const lane = (local: number, j: number) => [0x20, local, 0xfd, 0x1b, j]; // i32x4.extract_lane j of a local
const A = [2, 3, 4, 5], B = [6, 7, 8, 9]; // the locals holding a_k and b_k (0 and 1 are the parameters)
// deno-fmt-ignore
const SUMS_BODY = [
  0x01, 0x08, 0x7b, // locals 2 to 9 (A and B): v128
  0x02, 0x40, 0x03, 0x40, // block, loop
  0x20, 0x01, 0x45, 0x0d, 0x01, // if blocks == 0: break
  // a_k += load(pointer + 16 k); b_k += a_k
  ...[0, 1, 2, 3].flatMap((k) => [
    0x20, A[k], 0x20, 0x00, 0xfd, 0x00, 0x04, 16 * k, ...I32X4_ADD, 0x22, A[k], 0x20, B[k], ...I32X4_ADD, 0x21, B[k],
  ]),
  0x20, 0x00, 0x41, 0xc0, 0x00, 0x6a, 0x21, 0x00, // pointer += 64
  0x20, 0x01, 0x41, 0x01, 0x6b, 0x21, 0x01, // blocks -= 1
  0x0c, 0x00, 0x0b, 0x0b, // continue, end loop, end block
  // b = 4 * (b_0 + b_1 + b_2 + b_3) - ((a_1 + a_2 + a_3) + (a_2 + a_3) + a_3), into B[0]
  0x20, B[0], 0x20, B[1], ...I32X4_ADD, 0x20, B[2], ...I32X4_ADD, 0x20, B[3], ...I32X4_ADD, 0x41, 0x02, ...I32X4_SHL,
  0x20, A[1], 0x20, A[2], ...I32X4_ADD, 0x20, A[3], ...I32X4_ADD, 0x20, A[2], ...I32X4_ADD, 0x20, A[3], ...I32X4_ADD,
  0x20, A[3], ...I32X4_ADD, ...I32X4_SUB, 0x21, B[0],
  // a = a_0 + a_1 + a_2 + a_3, into A[0]
  0x20, A[0], 0x20, A[1], ...I32X4_ADD, 0x20, A[2], ...I32X4_ADD, 0x20, A[3], ...I32X4_ADD, 0x21, A[0],
  // across the lanes: 4 * (b0 + b1 + b2 + b3) - a1 - 2 a2 - 3 a3, as the high half
  ...lane(B[0], 0), ...lane(B[0], 1), 0x6a, ...lane(B[0], 2), 0x6a, ...lane(B[0], 3), 0x6a, 0x41, 0x02, 0x74,
  ...lane(A[0], 1), 0x6b, ...lane(A[0], 2), 0x41, 0x01, 0x74, 0x6b, ...lane(A[0], 3), 0x41, 0x03, 0x6c, 0x6b,
  0xad, 0x42, 0x20, 0x86, // i64.extend_i32_u, << 32
  // a0 + a1 + a2 + a3, as the low half
  ...lane(A[0], 0), ...lane(A[0], 1), 0x6a, ...lane(A[0], 2), 0x6a, ...lane(A[0], 3), 0x6a, 0xad, 0x84, // | a
  0x0b,
];

/** An unsigned LEB128 number, as WebAssembly writes sizes. */
function leb128(value: number): number[] {
  const bytes: number[] = [];
  do {
    bytes.push((value & 0x7f) | (value >= 0x80 ? 0x80 : 0));
    value >>>= 7;
  } while (value);
  return bytes;
}

/** A module section: its id, its size, its bytes. */
const section = (id: number, bytes: number[]) => [id, ...leb128(bytes.length), ...bytes];

const SUMS_MODULE = new Uint8Array([
  0x00,
  0x61,
  0x73,
  0x6d,
  0x01,
  0x00,
  0x00,
  0x00, // magic, version 1
  ...section(0x01, [0x01, 0x60, 0x02, 0x7f, 0x7f, 0x01, 0x7e]), // type 0: (i32, i32) -> i64
  // import "env" "memory": a shared memory of 1 to 65536 pages
  ...section(0x02, [
    0x01,
    0x03,
    0x65,
    0x6e,
    0x76,
    0x06,
    0x6d,
    0x65,
    0x6d,
    0x6f,
    0x72,
    0x79,
    0x02,
    0x03,
    0x01,
    0x80,
    0x80,
    0x04,
  ]),
  ...section(0x03, [0x01, 0x00]), // function 0 has type 0
  ...section(0x07, [0x01, 0x04, 0x73, 0x75, 0x6d, 0x73, 0x00, 0x00]), // export "sums" = function 0
  ...section(0x0a, [0x01, ...leb128(SUMS_BODY.length), ...SUMS_BODY]), // code: one body
]);

type Sums = (pointer: number, blocks: number) => bigint;

// The SIMD checksum for each shared WebAssembly.Memory that checkpoints live in, found by its buffer.
const fastSums = new WeakMap<ArrayBufferLike, Sums>();

/**
 * Compiles the SIMD checksum for `memory` (a shared WebAssembly.Memory) so that `checksumWords` uses it
 * for words in that memory. Returns false where WebAssembly SIMD is missing: the plain loop serves then.
 */
export function enableFastChecksum(memory: WebAssembly.Memory): boolean {
  if (fastSums.has(memory.buffer)) return true;
  try {
    const module = new WebAssembly.Module(SUMS_MODULE);
    const instance = new WebAssembly.Instance(module, { env: { memory } });
    fastSums.set(memory.buffer, instance.exports.sums as Sums);
    return true;
  } catch {
    return false; // no WebAssembly SIMD here
  }
}

/** The running sums (a, b) over `words`, from zero. */
function sumsOf(words: Int32Array): [number, number] {
  const sums = fastSums.get(words.buffer);
  if (!sums) return continueSums(words, 0, 0);
  const blocks = words.length >> 4;
  const packed = sums(words.byteOffset, blocks);
  const a = Number(BigInt.asIntN(32, packed)), b = Number(BigInt.asIntN(32, packed >> 32n));
  return continueSums(words.subarray(blocks * 16), a, b);
}

/** The checksum of `words` (see the top of this file). */
export function checksumWords(words: Int32Array): number {
  return finish(...sumsOf(words), words.length);
}

/**
 * The checksum of words that arrive in pieces, each added as it lands (while it is still in the cache):
 * the same as `checksumWords` over all of them end to end.
 */
export class RunningChecksum {
  #a = 0;
  #b = 0;
  #words = 0;

  add(words: Int32Array): void {
    const [a, b] = sumsOf(words);
    // Each running sum over the new words also carries the sum of all the words before them.
    this.#b = (this.#b + Math.imul(words.length, this.#a) + b) | 0;
    this.#a = (this.#a + a) | 0;
    this.#words += words.length;
  }

  get value(): number {
    return finish(this.#a, this.#b, this.#words);
  }
}
