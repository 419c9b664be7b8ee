// A GPU self-check that the demo, the lab page and the tests share: run the residual kernel
// forward and backward on seeded random data and compare every element with the CPU's f32 result.
// Adding two f32s is exact after rounding on both sides, so the comparison is for equality.

import { readBuffer, storageBuffer, storageBufferFrom } from "./gpu.ts";
import { Residual } from "../kernels/residual.ts";
import { seededFloats } from "./random.ts";

export interface SelfCheckResult {
  elements: number;
  /** Elements whose GPU value differs from the CPU's, forward and backward together. */
  mismatches: number;
  /** The first difference, for the error message. */
  firstMismatch?: { output: string; index: number; gpu: number; cpu: number };
}

export async function runSelfCheck(device: GPUDevice, elements = 100_003): Promise<SelfCheckResult> {
  const a = seededFloats(elements, 1), b = seededFloats(elements, 2), dOut = seededFloats(elements, 3);
  const aBuf = storageBufferFrom(device, a, "selfcheck a");
  const bBuf = storageBufferFrom(device, b, "selfcheck b");
  const dOutBuf = storageBufferFrom(device, dOut, "selfcheck dOut");
  const outBuf = storageBuffer(device, a.byteLength, "selfcheck out");
  // Backward accumulates into dA and dB: start them at a and b so the += is exercised too.
  const dABuf = storageBufferFrom(device, a, "selfcheck dA");
  const dBBuf = storageBufferFrom(device, b, "selfcheck dB");
  try {
    const residual = new Residual(device);
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    residual.forward(pass, outBuf, aBuf, bBuf, elements);
    residual.backward(pass, dABuf, dBBuf, dOutBuf, elements);
    pass.end();
    device.queue.submit([encoder.finish()]);

    const result: SelfCheckResult = { elements, mismatches: 0 };
    const compare = (output: string, gpu: Float32Array, cpu: (i: number) => number) => {
      for (let i = 0; i < elements; i++) {
        const expected = Math.fround(cpu(i));
        if (gpu[i] !== expected) {
          result.mismatches++;
          result.firstMismatch ??= { output, index: i, gpu: gpu[i], cpu: expected };
        }
      }
    };
    compare("out", new Float32Array(await readBuffer(device, outBuf)), (i) => a[i] + b[i]);
    compare("dA", new Float32Array(await readBuffer(device, dABuf)), (i) => a[i] + dOut[i]);
    compare("dB", new Float32Array(await readBuffer(device, dBBuf)), (i) => b[i] + dOut[i]);
    return result;
  } finally {
    for (const buffer of [aBuf, bBuf, dOutBuf, outBuf, dABuf, dBBuf]) buffer.destroy();
  }
}

/** One line for a person: "GPU self-check passed: 100003 elements ..." or what differed. */
export function describeSelfCheck(result: SelfCheckResult): string {
  if (result.mismatches === 0) {
    return `GPU self-check passed: residual forward and backward on ${result.elements} elements equal the CPU's`;
  }
  const m = result.firstMismatch!;
  return `GPU self-check FAILED: ${result.mismatches} of ${3 * result.elements} values differ from the CPU's ` +
    `(first: ${m.output}[${m.index}] = ${m.gpu}, CPU ${m.cpu})`;
}
