// The chunk checksum: the WebAssembly SIMD path gives exactly the plain loop's result, for every length
// and alignment, also taken in pieces; and a flipped bit or swapped words change it.

import assert from "node:assert/strict";
import { checksumWords, enableFastChecksum, RunningChecksum } from "../core/checksum.ts";
import { Rng } from "../core/random.ts";

/** The definition, written out as plainly as possible. */
function reference(words: Int32Array): number {
  let a = 0, b = 0;
  for (const w of words) {
    a = (a + w) | 0;
    b = (b + a) | 0;
  }
  return (a ^ Math.imul(b, 0x9e3779b1) ^ words.length) >>> 0;
}

Deno.test("the SIMD checksum over a shared WebAssembly.Memory equals the plain loop at every length and offset", () => {
  const memory = new WebAssembly.Memory({ initial: 16, maximum: 16, shared: true });
  assert.ok(enableFastChecksum(memory), "this runtime has WebAssembly SIMD");
  const words = new Int32Array(memory.buffer as unknown as SharedArrayBuffer);
  const rng = new Rng(9);
  for (let i = 0; i < words.length; i++) words[i] = rng.nextU32() | 0;
  for (const offset of [0, 1, 2, 3, 5]) {
    for (const length of [0, 1, 3, 4, 5, 7, 8, 15, 16, 17, 31, 33, 64, 1000, 65_537, 262_144]) {
      const slice = words.subarray(offset, offset + length);
      assert.equal(checksumWords(slice), reference(slice), `offset ${offset}, length ${length}`);
    }
  }
});

Deno.test("a flipped bit or two swapped words change the checksum", () => {
  const words = Int32Array.from({ length: 1000 }, (_, i) => i * 7919);
  const base = checksumWords(words);
  const flipped = words.slice();
  flipped[500] ^= 1 << 17;
  assert.notEqual(checksumWords(flipped), base);
  const swapped = words.slice();
  [swapped[10], swapped[11]] = [swapped[11], swapped[10]];
  assert.notEqual(checksumWords(swapped), base);
});

Deno.test("a checksum taken in pieces equals the checksum of the whole", () => {
  const memory = new WebAssembly.Memory({ initial: 2, maximum: 2, shared: true });
  enableFastChecksum(memory);
  const rng = new Rng(3);
  for (
    const words of [new Int32Array(memory.buffer as unknown as SharedArrayBuffer, 0, 9_000), new Int32Array(9_000)]
  ) {
    for (let i = 0; i < words.length; i++) words[i] = rng.nextU32() | 0;
    for (const cuts of [[], [1], [16, 17, 4_000], [5, 6, 7, 8_999]]) {
      const running = new RunningChecksum();
      [0, ...cuts].forEach((from, i) => running.add(words.subarray(from, [...cuts, words.length][i])));
      assert.equal(running.value, reference(words), `cut at ${cuts.join(", ") || "nothing"}`);
    }
  }
});
