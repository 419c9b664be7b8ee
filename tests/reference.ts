// An independent CPU reference of every kernel and of the whole GPT-2 forward and backward, in float64,
// written straight from the definitions (llm.c's CPU code, in plain loops) for the tests to compare against.

export type F64 = Float64Array;

export function layernormForward(x: F64, weight: F64, bias: F64, rows: number, channels: number) {
  const out = new Float64Array(rows * channels), mean = new Float64Array(rows), rstd = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    const row = x.subarray(r * channels, (r + 1) * channels);
    const m = row.reduce((a, b) => a + b, 0) / channels;
    const variance = row.reduce((a, b) => a + (b - m) ** 2, 0) / channels;
    const s = 1 / Math.sqrt(variance + 1e-5);
    for (let c = 0; c < channels; c++) out[r * channels + c] = (row[c] - m) * s * weight[c] + bias[c];
    mean[r] = m;
    rstd[r] = s;
  }
  return { out, mean, rstd };
}

/** Adds the LayerNorm gradients into dx, dweight, dbias. */
export function layernormBackward(
  dx: F64,
  dweight: F64,
  dbias: F64,
  dout: F64,
  x: F64,
  weight: F64,
  mean: F64,
  rstd: F64,
  rows: number,
  channels: number,
) {
  for (let r = 0; r < rows; r++) {
    const o = r * channels;
    let dnormMean = 0, dnormNormMean = 0;
    for (let c = 0; c < channels; c++) {
      const norm = (x[o + c] - mean[r]) * rstd[r];
      dnormMean += weight[c] * dout[o + c];
      dnormNormMean += weight[c] * dout[o + c] * norm;
    }
    dnormMean /= channels;
    dnormNormMean /= channels;
    for (let c = 0; c < channels; c++) {
      const norm = (x[o + c] - mean[r]) * rstd[r];
      dbias[c] += dout[o + c];
      dweight[c] += norm * dout[o + c];
      dx[o + c] += (weight[c] * dout[o + c] - dnormMean - norm * dnormNormMean) * rstd[r];
    }
  }
}

/** out[M,N] = op(A)·op(B) (+ bias), layouts as in kernels/matmul.ts. */
export function matmul(
  a: F64,
  b: F64,
  bias: F64 | null,
  m: number,
  n: number,
  k: number,
  transposeA = false,
  transposeB = false,
): F64 {
  const out = new Float64Array(m * n);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j < n; j++) {
      let sum = bias ? bias[j] : 0;
      for (let p = 0; p < k; p++) {
        sum += (transposeA ? a[p * m + i] : a[i * k + p]) * (transposeB ? b[j * k + p] : b[p * n + j]);
      }
      out[i * n + j] = sum;
    }
  }
  return out;
}

const GELU_SCALE = Math.sqrt(2 / Math.PI);

export function gelu(x: F64): F64 {
  return x.map((v) => 0.5 * v * (1 + Math.tanh(GELU_SCALE * (v + 0.044715 * v ** 3))));
}

export function geluGrad(x: F64, dout: F64): F64 {
  return x.map((v, i) => {
    const th = Math.tanh(GELU_SCALE * (v + 0.044715 * v ** 3));
    return (0.5 * (1 + th) + 0.5 * v * (1 - th * th) * GELU_SCALE * (1 + 3 * 0.044715 * v * v)) * dout[i];
  });
}

export interface AttentionShape {
  batch: number;
  time: number;
  channels: number;
  heads: number;
}

export function attentionForward(qkv: F64, s: AttentionShape) {
  const { batch: B, time: T, channels: C, heads: NH } = s, hs = C / NH, scale = 1 / Math.sqrt(hs);
  const out = new Float64Array(B * T * C), att = new Float64Array(B * NH * T * T);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < NH; h++) {
        const q = (b * T + t) * 3 * C + h * hs, row = ((b * NH + h) * T + t) * T;
        const scores: number[] = [];
        for (let t2 = 0; t2 <= t; t2++) {
          const k = (b * T + t2) * 3 * C + C + h * hs;
          let dot = 0;
          for (let j = 0; j < hs; j++) dot += qkv[q + j] * qkv[k + j];
          scores.push(dot * scale);
        }
        const max = Math.max(...scores);
        const exps = scores.map((x) => Math.exp(x - max)), sum = exps.reduce((x, y) => x + y, 0);
        exps.forEach((e, t2) => att[row + t2] = e / sum);
        for (let j = 0; j < hs; j++) {
          let acc = 0;
          for (let t2 = 0; t2 <= t; t2++) acc += att[row + t2] * qkv[(b * T + t2) * 3 * C + 2 * C + h * hs + j];
          out[(b * T + t) * C + h * hs + j] = acc;
        }
      }
    }
  }
  return { out, att };
}

/** dqkv from dout, qkv and att (llm.c attention_backward, scatter-adds and all). */
export function attentionBackward(dout: F64, qkv: F64, att: F64, s: AttentionShape): F64 {
  const { batch: B, time: T, channels: C, heads: NH } = s, hs = C / NH, scale = 1 / Math.sqrt(hs);
  const dqkv = new Float64Array(B * T * 3 * C);
  for (let b = 0; b < B; b++) {
    for (let t = 0; t < T; t++) {
      for (let h = 0; h < NH; h++) {
        const row = ((b * NH + h) * T + t) * T, o = (b * T + t) * C + h * hs, q = (b * T + t) * 3 * C + h * hs;
        const datt = new Float64Array(t + 1);
        for (let t2 = 0; t2 <= t; t2++) {
          const v = (b * T + t2) * 3 * C + 2 * C + h * hs;
          for (let j = 0; j < hs; j++) {
            datt[t2] += qkv[v + j] * dout[o + j];
            dqkv[v + j] += att[row + t2] * dout[o + j];
          }
        }
        for (let t2 = 0; t2 <= t; t2++) {
          let dpre = 0;
          for (let t3 = 0; t3 <= t; t3++) {
            dpre += att[row + t3] * ((t2 === t3 ? 1 : 0) - att[row + t2]) * datt[t3];
          }
          const k = (b * T + t2) * 3 * C + C + h * hs;
          for (let j = 0; j < hs; j++) {
            dqkv[q + j] += qkv[k + j] * dpre * scale;
            dqkv[k + j] += qkv[q + j] * dpre * scale;
          }
        }
      }
    }
  }
  return dqkv;
}

/** Per-row losses and the gradient of their mean with respect to the logits. */
export function crossEntropy(logits: F64, targets: ArrayLike<number>, rows: number, vocab: number) {
  const losses = new Float64Array(rows), dlogits = new Float64Array(rows * vocab);
  for (let r = 0; r < rows; r++) {
    const row = logits.subarray(r * vocab, (r + 1) * vocab);
    const max = Math.max(...row);
    const sum = row.reduce((a, l) => a + Math.exp(l - max), 0);
    losses[r] = Math.log(sum) + max - row[targets[r]];
    for (let v = 0; v < vocab; v++) {
      dlogits[r * vocab + v] = (Math.exp(row[v] - max) / sum - (v === targets[r] ? 1 : 0)) / rows;
    }
  }
  return { losses, dlogits };
}
