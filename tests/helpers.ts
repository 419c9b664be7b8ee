// What the GPU tests share: one device per test file, upload and readback, one-pass runs,
// and a relative-error comparison against the float64 reference.

import assert from "node:assert/strict";
import { acquireGpu, readBuffer, storageBuffer, storageBufferFrom } from "../core/gpu.ts";
import { seededFloats } from "../core/random.ts";

let shared: Promise<GPUDevice> | null = null;

/** One device for the whole test file (creating one per test is slow on software adapters). */
export function testDevice(): Promise<GPUDevice> {
  shared ??= acquireGpu().then((gpu) => gpu.device);
  return shared;
}

export function upload(device: GPUDevice, values: ArrayLike<number>, label = "test input"): GPUBuffer {
  return storageBufferFrom(device, Float32Array.from(values), label);
}

export function uploadU32(device: GPUDevice, values: ArrayLike<number>, label = "test u32 input"): GPUBuffer {
  return storageBufferFrom(device, Uint32Array.from(values), label);
}

export function zeros(device: GPUDevice, count: number, label = "test output"): GPUBuffer {
  return storageBuffer(device, count * 4, label);
}

export async function download(device: GPUDevice, buffer: GPUBuffer, count: number): Promise<Float32Array> {
  return new Float32Array(await readBuffer(device, buffer, count * 4));
}

/** Encodes one compute pass with `body` and submits it. */
export function runPass(device: GPUDevice, body: (pass: GPUComputePassEncoder) => void) {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  body(pass);
  pass.end();
  device.queue.submit([encoder.finish()]);
}

/** Seeded values in [-scale, scale), rounded to f32 so the GPU and the reference see the same inputs. */
export function randomInput(count: number, seed: number, scale = 1): Float64Array {
  return Float64Array.from(seededFloats(count, seed), (v) => v * scale);
}

/** max |actual - expected| / max |expected| below `tolerance`, with the worst element in the message. */
export function assertClose(actual: ArrayLike<number>, expected: ArrayLike<number>, tolerance: number, what: string) {
  assert.equal(actual.length, expected.length, `${what}: length`);
  let worst = 0, at = 0, scale = 0;
  for (let i = 0; i < expected.length; i++) {
    scale = Math.max(scale, Math.abs(expected[i]));
    const error = Math.abs(actual[i] - expected[i]);
    if (!(error <= worst)) [worst, at] = [error, i]; // NaN in actual is caught as worst too
  }
  const relative = worst / Math.max(scale, 1e-30);
  assert.ok(
    relative < tolerance,
    `${what}: relative error ${relative.toExponential(2)} at [${at}] (${actual[at]} vs ${
      expected[at]
    }), limit ${tolerance}`,
  );
}
