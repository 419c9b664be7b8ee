// The chunk checksum of checkpoint shards: Fletcher-style over 32-bit words w_0 .. w_{n-1}, mod 2^32,
//   a = sum of w_i,   b = sum of the running sums of a = sum of (n - i) * w_i,
//   checksum = a ^ (b * 0x9e3779b1) ^ n.
// A flipped byte always changes a; a reordering changes b. Because b is a weighted sum, the checksum can
// be computed in parallel (the GPU does, during a capture) and four lanes at a time (WebAssembly SIMD, for
// memory that is a shared WebAssembly.Memory, such as a checkpoint arena), with the same result as the
// plain loop here.

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

// A module of one function, sums(pointer, groups): the running sums over `groups` groups of four words
// at `pointer` of the imported shared memory, four lanes at a time, combined into b << 32 | a.
// Lane j holds a_j = sum of its words and b_j = sum of its running sums; over n = 4T words,
//   a = sum of a_j,   b = 4 * sum of b_j - (a_1 + 2 a_2 + 3 a_3).
// Hand-assembled: the opcodes are WebAssembly's (0xfd prefixes the SIMD ones).
const SUMS_BODY = [
  0x02,
  0x01,
  0x7f,
  0x02,
  0x7b, // locals: end i32 (2); a, b v128 (3, 4)
  0x20,
  0x00,
  0x20,
  0x01,
  0x41,
  0x10,
  0x6c,
  0x6a,
  0x21,
  0x02, // end = pointer + groups * 16
  0x02,
  0x40,
  0x03,
  0x40, // block, loop
  0x20,
  0x00,
  0x20,
  0x02,
  0x4f,
  0x0d,
  0x01, // if pointer >= end: break
  0x20,
  0x03,
  0x20,
  0x00,
  0xfd,
  0x00,
  0x04,
  0x00,
  0xfd,
  0xae,
  0x01,
  0x21,
  0x03, // a += load(pointer)
  0x20,
  0x04,
  0x20,
  0x03,
  0xfd,
  0xae,
  0x01,
  0x21,
  0x04, // b += a
  0x20,
  0x00,
  0x41,
  0x10,
  0x6a,
  0x21,
  0x00, // pointer += 16
  0x0c,
  0x00, // continue
  0x0b,
  0x0b, // end loop, end block
  // 4 * (b0 + b1 + b2 + b3) - a1 - 2 a2 - 3 a3, as the high half
  0x20,
  0x04,
  0xfd,
  0x1b,
  0x00,
  0x20,
  0x04,
  0xfd,
  0x1b,
  0x01,
  0x6a,
  0x20,
  0x04,
  0xfd,
  0x1b,
  0x02,
  0x6a,
  0x20,
  0x04,
  0xfd,
  0x1b,
  0x03,
  0x6a,
  0x41,
  0x02,
  0x74,
  0x20,
  0x03,
  0xfd,
  0x1b,
  0x01,
  0x6b,
  0x20,
  0x03,
  0xfd,
  0x1b,
  0x02,
  0x41,
  0x01,
  0x74,
  0x6b,
  0x20,
  0x03,
  0xfd,
  0x1b,
  0x03,
  0x41,
  0x03,
  0x6c,
  0x6b,
  0xad,
  0x42,
  0x20,
  0x86,
  // a0 + a1 + a2 + a3, as the low half
  0x20,
  0x03,
  0xfd,
  0x1b,
  0x00,
  0x20,
  0x03,
  0xfd,
  0x1b,
  0x01,
  0x6a,
  0x20,
  0x03,
  0xfd,
  0x1b,
  0x02,
  0x6a,
  0x20,
  0x03,
  0xfd,
  0x1b,
  0x03,
  0x6a,
  0xad,
  0x84,
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

type Sums = (pointer: number, groups: number) => bigint;

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

/** The checksum of `words` (see the top of this file). */
export function checksumWords(words: Int32Array): number {
  const sums = fastSums.get(words.buffer);
  let a = 0, b = 0, done = 0;
  if (sums && words.byteOffset % 4 === 0) {
    const groups = words.length >> 2;
    const packed = sums(words.byteOffset, groups);
    a = Number(BigInt.asIntN(32, packed));
    b = Number(BigInt.asIntN(32, packed >> 32n));
    done = groups * 4;
  }
  [a, b] = continueSums(words.subarray(done), a, b);
  return finish(a, b, words.length);
}
