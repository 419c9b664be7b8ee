// The memory section: the host's plain memcpy bandwidth (the physical limit every checkpoint copy is
// measured against), GPU upload and readback, and the residual kernel's effective bandwidth.

import { readBuffer, storageBuffer } from "../core/gpu.ts";
import { seededFloats } from "../core/random.ts";
import { Residual } from "../kernels/residual.ts";
import { type Measurement, measurement, type Progress, time } from "./measure.ts";

const SECTION = "memory";
export const MEMORY_STEPS = 4;

export async function benchMemory(
  device: GPUDevice,
  bytes: number,
  repeats: number,
  progress: Progress,
): Promise<Measurement[]> {
  const results: Measurement[] = [];
  const source = new Uint8Array(bytes).fill(7), target = new Uint8Array(bytes);
  results.push(measurement(SECTION, "host memcpy", bytes, await time(repeats, () => target.set(source))));
  progress.step("host memcpy");

  const elements = bytes / 4;
  const a = storageBuffer(device, bytes, "bench a"), b = storageBuffer(device, bytes, "bench b");
  const out = storageBuffer(device, bytes, "bench out");
  try {
    const data = seededFloats(elements, 1);
    const upload = async () => {
      device.queue.writeBuffer(a, 0, data);
      await device.queue.onSubmittedWorkDone();
    };
    results.push(measurement(SECTION, "GPU upload (writeBuffer)", bytes, await time(repeats, upload)));
    progress.step("GPU upload");

    const readback = async () => void await readBuffer(device, a, bytes);
    results.push(measurement(SECTION, "GPU readback (copy + mapAsync)", bytes, await time(repeats, readback)));
    progress.step("GPU readback");

    const residual = new Residual(device);
    const add = async () => {
      const encoder = device.createCommandEncoder();
      const pass = encoder.beginComputePass();
      residual.forward(pass, out, a, b, elements);
      pass.end();
      device.queue.submit([encoder.finish()]);
      await device.queue.onSubmittedWorkDone();
    };
    // Two reads and one write of every element cross the GPU's memory.
    results.push(measurement(SECTION, "residual forward (2 reads + 1 write)", 3 * bytes, await time(repeats, add)));
    progress.step("residual kernel");
  } finally {
    for (const buffer of [a, b, out]) buffer.destroy();
  }
  return results;
}
