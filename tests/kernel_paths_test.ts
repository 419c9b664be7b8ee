// Kernels that take different paths by size must give the same bits either way: the matmul's skinny
// tile (M <= 16) and its square one, AdamW's vec4 body and its scalar tail. Each test puts the same
// inputs through both paths in one run and compares the outputs bit for bit.

import assert from "node:assert/strict";
import { AdamW } from "../kernels/adamw.ts";
import { Matmul } from "../kernels/matmul.ts";
import { download, randomInput, runPass, testDevice, upload } from "./helpers.ts";

/** The index of the first element whose bits differ, or -1. */
function firstDifference(a: Float32Array, b: Float32Array): number {
  const x = new Uint32Array(a.buffer, a.byteOffset, a.length), y = new Uint32Array(b.buffer, b.byteOffset, b.length);
  return x.findIndex((word, i) => word !== y[i]);
}

Deno.test("matmul: M = 13 (the skinny tile) gives the bits of the same rows inside M = 45 (the square tile)", async () => {
  const device = await testDevice();
  const small = 13, big = 45, n = 130, k = 67;
  for (const transposeA of [false, true]) {
    for (const transposeB of [false, true]) {
      for (const [bias, accumulate] of [[false, false], [true, false], [false, true]]) {
        // op(A) of the big product holds the small one's rows first; stored [M,K], or [K,M] transposed.
        const rows = randomInput(big * k, 1);
        const opA = (m: number) =>
          Float64Array.from({ length: m * k }, (_, i) => transposeA ? rows[(i % m) * k + Math.floor(i / m)] : rows[i]);
        const b = upload(device, randomInput(k * n, 2)), biasValues = upload(device, randomInput(n, 3));
        const initial = randomInput(big * n, 4);
        const kernel = new Matmul(device, { transposeA, transposeB, bias, accumulate });
        const product = async (m: number) => {
          const out = upload(device, initial.subarray(0, m * n));
          runPass(
            device,
            (pass) => kernel.encode(pass, out, upload(device, opA(m)), b, bias ? biasValues : null, m, n, k),
          );
          return await download(device, out, m * n);
        };
        const [skinny, square] = [await product(small), await product(big)];
        const at = firstDifference(skinny, square.subarray(0, small * n));
        assert.equal(at, -1, `tA ${transposeA} tB ${transposeB} bias ${bias} acc ${accumulate}: differs at ${at}`);
      }
    }
  }
});

Deno.test("adamw: the vec4 body and the scalar tail give the same bits for the same inputs", async () => {
  const device = await testDevice();
  // 127 floats: [0, 64) take the vec4 path, [64, 127) the scalar tail; the tail repeats the body's first 63.
  const body = 64, n = 127;
  const repeated = (seed: number, scale: number) => {
    const values = randomInput(body, seed, scale);
    return Float64Array.from({ length: n }, (_, i) => values[i % body]);
  };
  const params = repeated(1, 1), grads = repeated(2, 0.5), m0 = repeated(3, 0.1), v0 = repeated(4, 0.01).map(Math.abs);
  const settings = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 };
  const adamw = new AdamW(device);
  const [p, m, v, g] = [params, m0, v0, grads].map((values) => upload(device, values));
  runPass(device, (pass) => {
    adamw.encodeGradNorm(pass, [{ binding: g, start: 0, end: n }]);
    adamw.encodeUpdate(pass, p, m, v, g, n, 2, settings);
  });
  for (const [name, buffer, before] of [["params", p, params], ["m", m, m0], ["v", v, v0]] as const) {
    const after = await download(device, buffer, n);
    assert.notEqual(after[0], Math.fround(before[0]), `${name} was updated`);
    const at = firstDifference(after.subarray(0, n - body), after.subarray(body));
    assert.equal(at, -1, `${name}: the vec4 and the scalar update differ at ${at}`);
  }
});
