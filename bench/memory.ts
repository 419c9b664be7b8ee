// The memory section: the host's plain memcpy bandwidth (the physical limit every checkpoint copy is
// measured against), GPU upload and readback, and the residual kernel's effective bandwidth.

import { readBuffer, storageBuffer } from "../core/gpu.ts";
import { seededFloats } from "../core/random.ts";
import { Residual } from "../kernels/residual.ts";
import { type BenchContext, formatBandwidth, formatBytes, median, type Section, time } from "./measure.ts";

export const memorySection: Section = {
  name: "memory",
  steps: () => 4,
  async run({ device, quick, progress }: BenchContext) {
    const bytes = quick ? 16 << 20 : 128 << 20, repeats = quick ? 3 : 7;
    const measured: { name: string; bytes: number; seconds: number[] }[] = [];
    const measure = async (name: string, moved: number, body: () => Promise<unknown> | unknown) => {
      measured.push({ name, bytes: moved, seconds: await time(repeats, body) });
      progress.step(name);
    };

    const source = new Uint8Array(bytes).fill(7), target = new Uint8Array(bytes);
    await measure("host memcpy (Uint8Array.set)", bytes, () => target.set(source));
    const a = storageBuffer(device, bytes, "bench a"), b = storageBuffer(device, bytes, "bench b");
    const out = storageBuffer(device, bytes, "bench out");
    try {
      const data = seededFloats(bytes / 4, 1);
      await measure("GPU upload (writeBuffer)", bytes, () => {
        device.queue.writeBuffer(a, 0, data);
        return device.queue.onSubmittedWorkDone();
      });
      await measure("GPU readback (copy + mapAsync)", bytes, () => readBuffer(device, a, bytes));
      const residual = new Residual(device);
      // Two reads and one write of every element cross the GPU's memory.
      await measure("residual-add kernel (2 reads + 1 write)", 3 * bytes, () => {
        const encoder = device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        residual.forward(pass, out, a, b, bytes / 4);
        pass.end();
        device.queue.submit([encoder.finish()]);
        return device.queue.onSubmittedWorkDone();
      });
    } finally {
      for (const buffer of [a, b, out]) buffer.destroy();
    }

    const memcpy = measured[0].bytes / median(measured[0].seconds);
    return {
      title: "Memory bandwidth",
      summary: `host memcpy ${formatBandwidth(memcpy)}, the limit for checkpoints in memory`,
      intro: `${
        formatBytes(bytes)
      } per transfer, medians of ${repeats}; "x memcpy" is the bandwidth over this run's host memcpy, the limit.`,
      header: ["what", "bytes", "ms", "bandwidth", "x memcpy"],
      rows: measured.map((m) => {
        const seconds = median(m.seconds), bandwidth = m.bytes / seconds;
        return [
          m.name,
          formatBytes(m.bytes),
          (seconds * 1000).toFixed(2),
          formatBandwidth(bandwidth),
          (bandwidth / memcpy).toFixed(2),
        ];
      }),
      raw: measured,
    };
  },
};
