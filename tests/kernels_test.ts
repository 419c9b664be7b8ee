// Every kernel against the float64 CPU reference, on awkward sizes: nothing a power of two or a
// multiple of a tile (vocab 97, n_embd 48, 3 heads, T 13, batch 3).

import assert from "node:assert/strict";
import { AdamW } from "../kernels/adamw.ts";
import { Attention } from "../kernels/attention.ts";
import { CrossEntropy } from "../kernels/crossentropy.ts";
import { bucketTokens, Encoder } from "../kernels/encoder.ts";
import { Gelu } from "../kernels/gelu.ts";
import { LayerNorm } from "../kernels/layernorm.ts";
import { Matmul } from "../kernels/matmul.ts";
import * as ref from "./reference.ts";
import { assertClose, download, randomInput, runPass, testDevice, upload, uploadU32, zeros } from "./helpers.ts";

const B = 3, T = 13, C = 48, NH = 3, V = 97, R = B * T;
const TOLERANCE = 1e-5;

Deno.test("matmul in every layout, with and without bias and accumulation, on sizes off every tile", async () => {
  const device = await testDevice();
  for (const [m, n, k] of [[R, 3 * C, C], [R, V, C], [70, 130, 67], [1, 1, 1]]) {
    for (const transposeA of [false, true]) {
      for (const transposeB of [false, true]) {
        for (const [bias, accumulate] of [[false, false], [true, false], [false, true]]) {
          const a = randomInput(m * k, 1), b = randomInput(k * n, 2), biasValues = randomInput(n, 3);
          const initial = randomInput(m * n, 4);
          const out = upload(device, initial);
          const kernel = new Matmul(device, { transposeA, transposeB, bias, accumulate });
          runPass(device, (pass) =>
            kernel.encode(
              pass,
              out,
              upload(device, a),
              upload(device, b),
              bias ? upload(device, biasValues) : null,
              m,
              n,
              k,
            ));
          const expected = ref.matmul(a, b, bias ? biasValues : null, m, n, k, transposeA, transposeB);
          if (accumulate) expected.forEach((_, i) => expected[i] += initial[i]);
          assertClose(
            await download(device, out, m * n),
            expected,
            TOLERANCE,
            `matmul ${m}x${n}x${k} tA=${transposeA} tB=${transposeB} bias=${bias} acc=${accumulate}`,
          );
        }
      }
    }
  }
});

Deno.test("a kernel given a buffer for a binding it lacks, or none for one it has, throws naming it", async () => {
  const device = await testDevice();
  const [out, a, b] = [zeros(device, 1), zeros(device, 1), zeros(device, 1)];
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  assert.throws(() => new Matmul(device).encode(pass, out, a, b, a, 1, 1, 1), /no binding named "bias"/);
  assert.throws(() => new Matmul(device, { bias: true }).encode(pass, out, a, b, null, 1, 1, 1), /binding "bias"/);
  pass.end();
});

Deno.test("layernorm forward and backward", async () => {
  const device = await testDevice();
  const x = randomInput(R * C, 5, 2),
    weight = randomInput(C, 6),
    bias = randomInput(C, 7),
    dout = randomInput(R * C, 8);
  const expected = ref.layernormForward(x, weight, bias, R, C);
  const [out, mean, rstd] = [zeros(device, R * C), zeros(device, R), zeros(device, R)];
  const [xBuf, wBuf, bBuf] = [upload(device, x), upload(device, weight), upload(device, bias)];
  const layernorm = new LayerNorm(device);
  runPass(device, (pass) => layernorm.forward(pass, out, mean, rstd, xBuf, wBuf, bBuf, R, C));
  assertClose(await download(device, out, R * C), expected.out, TOLERANCE, "layernorm out");
  assertClose(await download(device, mean, R), expected.mean, TOLERANCE, "layernorm mean");
  assertClose(await download(device, rstd, R), expected.rstd, TOLERANCE, "layernorm rstd");

  // Backward accumulates: start the gradients from non-zero values.
  const dx0 = randomInput(R * C, 9), dw0 = randomInput(C, 10), db0 = randomInput(C, 11);
  const [dx, dw, db] = [dx0.slice(), dw0.slice(), db0.slice()];
  ref.layernormBackward(dx, dw, db, dout, x, weight, expected.mean, expected.rstd, R, C);
  const [dxBuf, dwBuf, dbBuf] = [upload(device, dx0), upload(device, dw0), upload(device, db0)];
  runPass(
    device,
    (pass) => layernorm.backward(pass, dxBuf, dwBuf, dbBuf, upload(device, dout), xBuf, wBuf, mean, rstd, R, C),
  );
  assertClose(await download(device, dxBuf, R * C), dx, TOLERANCE, "layernorm dx");
  assertClose(await download(device, dwBuf, C), dw, TOLERANCE, "layernorm dweight");
  assertClose(await download(device, dbBuf, C), db, TOLERANCE, "layernorm dbias");
});

Deno.test("gelu forward and backward, including arguments large enough to overflow a naive tanh", async () => {
  const device = await testDevice();
  const x = randomInput(R * 4 * C, 12, 6);
  x[0] = 80, x[1] = -80, x[2] = 0;
  const dout = randomInput(x.length, 13), dx0 = randomInput(x.length, 14);
  const gelu = new Gelu(device);
  const [out, xBuf, dxBuf] = [zeros(device, x.length), upload(device, x), upload(device, dx0)];
  runPass(device, (pass) => {
    gelu.forward(pass, out, xBuf, x.length);
    gelu.backward(pass, dxBuf, xBuf, upload(device, dout), x.length);
  });
  assertClose(await download(device, out, x.length), ref.gelu(x), TOLERANCE, "gelu out");
  const dx = ref.geluGrad(x, dout).map((g, i) => g + dx0[i]);
  assertClose(await download(device, dxBuf, x.length), dx, TOLERANCE, "gelu dx");
});

Deno.test("causal attention forward and backward", async () => {
  const device = await testDevice();
  const shape = { batch: B, time: T, channels: C, heads: NH };
  const qkv = randomInput(R * 3 * C, 15, 2), dout = randomInput(R * C, 16);
  const expected = ref.attentionForward(qkv, shape);
  const attention = new Attention(device);
  const [out, att, qkvBuf] = [zeros(device, R * C), zeros(device, B * NH * T * T), upload(device, qkv)];
  const [dqkv, dpre] = [zeros(device, R * 3 * C), zeros(device, B * NH * T * T)];
  runPass(device, (pass) => {
    attention.forward(pass, out, att, qkvBuf, B, T, C, NH);
    attention.backward(pass, dqkv, dpre, upload(device, dout), qkvBuf, att, B, T, C, NH);
  });
  assertClose(await download(device, out, R * C), expected.out, TOLERANCE, "attention out");
  assertClose(await download(device, att, B * NH * T * T), expected.att, TOLERANCE, "attention att");
  const dqkvExpected = ref.attentionBackward(dout, qkv, expected.att, shape);
  assertClose(await download(device, dqkv, R * 3 * C), dqkvExpected, TOLERANCE, "attention dqkv");
});

Deno.test("cross-entropy losses and the gradient of their mean", async () => {
  const device = await testDevice();
  const logits = randomInput(R * V, 17, 4), targets = Array.from({ length: R }, (_, r) => (r * 37) % V);
  const expected = ref.crossEntropy(logits, targets, R, V);
  const kernel = new CrossEntropy(device);
  const [logitsBuf, losses] = [upload(device, logits), zeros(device, R)];
  runPass(device, (pass) => kernel.encode(pass, logitsBuf, losses, uploadU32(device, targets), R, V, true));
  assertClose(await download(device, losses, R), expected.losses, TOLERANCE, "losses");
  assertClose(await download(device, logitsBuf, R * V), expected.dlogits, TOLERANCE, "dlogits");
});

Deno.test("encoder forward, and a backward that gathers repeated tokens deterministically", async () => {
  const device = await testDevice();
  // Few distinct tokens, so that most buckets hold several positions.
  const tokens = Array.from({ length: R }, (_, i) => (i * 7) % 5 + 90);
  const wte = randomInput(V * C, 18), wpe = randomInput(T * C, 19), dout = randomInput(R * C, 20);
  const dwte0 = randomInput(V * C, 21), dwpe0 = randomInput(T * C, 22);
  const encoder = new Encoder(device);
  const buckets = bucketTokens(tokens);
  assert.equal(buckets.tokens.length, 5);
  const [out, dwte, dwpe] = [zeros(device, R * C), upload(device, dwte0), upload(device, dwpe0)];
  runPass(device, (pass) => {
    encoder.forward(pass, out, uploadU32(device, tokens), upload(device, wte), upload(device, wpe), B, T, C);
    const doutBuf = upload(device, dout);
    encoder.backwardWpe(pass, dwpe, doutBuf, B, T, C);
    encoder.backwardWte(
      pass,
      dwte,
      doutBuf,
      {
        starts: uploadU32(device, buckets.starts),
        positions: uploadU32(device, buckets.positions),
        tokens: uploadU32(device, buckets.tokens),
      },
      buckets.tokens.length,
      B,
      T,
      C,
    );
  });
  const expectedOut = new Float64Array(R * C), expectedDwte = dwte0.slice(), expectedDwpe = dwpe0.slice();
  for (let p = 0; p < R; p++) {
    for (let c = 0; c < C; c++) {
      expectedOut[p * C + c] = wte[tokens[p] * C + c] + wpe[(p % T) * C + c];
      expectedDwte[tokens[p] * C + c] += dout[p * C + c];
      expectedDwpe[(p % T) * C + c] += dout[p * C + c];
    }
  }
  assertClose(await download(device, out, R * C), expectedOut, TOLERANCE, "encoder out");
  assertClose(await download(device, dwte, V * C), expectedDwte, TOLERANCE, "dwte");
  assertClose(await download(device, dwpe, T * C), expectedDwpe, TOLERANCE, "dwpe");
});

Deno.test("gradient-norm clipping and AdamW match torch.optim.AdamW's update", async () => {
  const device = await testDevice();
  const n = 70_001; // more than the norm's 64 x 256 threads, so each sums a stride
  const params = randomInput(n, 23), grads = randomInput(n, 24, 0.5), m0 = randomInput(n, 25, 0.1);
  const v0 = randomInput(n, 26, 0.01).map(Math.abs);
  const settings = { lr: 1e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, maxGradNorm: 1 };
  const t = 3;
  const adamw = new AdamW(device);
  const [p, m, v, g] = [upload(device, params), upload(device, m0), upload(device, v0), upload(device, grads)];
  runPass(device, (pass) => {
    adamw.encodeGradNorm(pass, [{ binding: g, start: 0, end: n }]);
    adamw.encodeUpdate(pass, p, m, v, g, n, t, settings);
  });
  const norm = Math.sqrt(grads.reduce((a, x) => a + x * x, 0));
  assert.ok(norm > settings.maxGradNorm, "the test must exercise clipping");
  assertClose(await download(device, adamw.normSquared, 1), [norm * norm], 1e-5, "gradient norm squared");
  const clip = settings.maxGradNorm / norm;
  const expected = { p: new Float64Array(n), m: new Float64Array(n), v: new Float64Array(n) };
  for (let i = 0; i < n; i++) {
    const gi = grads[i] * clip;
    expected.m[i] = settings.beta1 * m0[i] + (1 - settings.beta1) * gi;
    expected.v[i] = settings.beta2 * v0[i] + (1 - settings.beta2) * gi * gi;
    const mHat = expected.m[i] / (1 - settings.beta1 ** t), vHat = expected.v[i] / (1 - settings.beta2 ** t);
    expected.p[i] = params[i] * (1 - settings.lr * settings.weightDecay) -
      settings.lr * mHat / (Math.sqrt(vHat) + settings.eps);
  }
  assertClose(await download(device, m, n), expected.m, TOLERANCE, "adamw m");
  assertClose(await download(device, v, n), expected.v, TOLERANCE, "adamw v");
  assertClose(await download(device, p, n), expected.p, TOLERANCE, "adamw params");
});
