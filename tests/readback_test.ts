// Reading back through a bounded staging buffer (core/gpu.ts): a read larger than READBACK_STAGING_BYTES
// goes through it in turns and lands whole, at an offset, and into an array the caller reuses; a pieced
// buffer's range spanning pieces reads into the caller's array, which must be the range's length.

import assert from "node:assert/strict";
import { PiecedBuffer, READBACK_STAGING_BYTES, readBufferInto, storageBufferFrom } from "../core/gpu.ts";
import { testDevice } from "./helpers.ts";

Deno.test("a read larger than the staging buffer lands whole, from an offset, into the caller's array", async () => {
  const device = await testDevice();
  // Two turns and a tail not a whole staging buffer long, read from float 3 on.
  const floats = READBACK_STAGING_BYTES / 4 + 1001, values = Uint32Array.from({ length: floats }, (_, i) => i * 7);
  const buffer = storageBufferFrom(device, values, "larger than staging");
  try {
    const target = new Uint8Array((floats - 3) * 4).fill(0xff);
    await readBufferInto(device, buffer, target, 3 * 4);
    assert.deepEqual(new Uint32Array(target.buffer), values.subarray(3));
  } finally {
    buffer.destroy();
  }
});

Deno.test("a pieced buffer's range across pieces is read into the caller's array, of the range's length", async () => {
  const device = await testDevice();
  const flat = PiecedBuffer.allocate(device, [0, 64, 192], 300, "pieced");
  try {
    const values = Float32Array.from({ length: 300 }, (_, i) => i + 0.5);
    flat.write(0, values);
    const into = new Float32Array(250);
    assert.equal(await flat.read(30, 280, into), into);
    assert.deepEqual(into, values.subarray(30, 280));
    await assert.rejects(flat.read(30, 280, new Float32Array(249)), /reading 250 floats into an array of 249/);
  } finally {
    flat.destroy();
  }
});
