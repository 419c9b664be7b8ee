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

/** GPT-2's shape, as in core/model.ts. */
export interface ReferenceConfig {
  vocab_size: number;
  n_ctx: number;
  n_embd: number;
  n_head: number;
  n_layer: number;
}

/** Named float64 tensors (parameters or their gradients). */
export type Tensors = Map<string, F64>;

/**
 * The mean cross-entropy of GPT-2 on one batch and, unless `lossOnly`, the gradient of every parameter:
 * a float64 forward and backward written from the model's definition, independent of the GPU code.
 */
export function gpt2LossAndGradients(
  config: ReferenceConfig,
  params: Tensors,
  inputs: ArrayLike<number>,
  targets: ArrayLike<number>,
  batch: number,
  time: number,
  lossOnly = false,
): { loss: number; grads: Tensors } {
  const { vocab_size: V, n_embd: C, n_head: NH, n_layer: L } = config, B = batch, T = time, BT = B * T;
  const p = (name: string) => params.get(name)!;
  const shape = { batch: B, time: T, channels: C, heads: NH };
  const add = (a: F64, b: F64) => a.map((x, i) => x + b[i]);

  // Forward, keeping what the backward needs.
  const encoded = new Float64Array(BT * C);
  for (let i = 0; i < BT; i++) {
    for (let c = 0; c < C; c++) {
      encoded[i * C + c] = p("wte.weight")[inputs[i] * C + c] + p("wpe.weight")[(i % T) * C + c];
    }
  }
  const layers = [];
  let x = encoded;
  for (let l = 0; l < L; l++) {
    const h = (name: string) => p(`h.${l}.${name}`);
    const ln1 = layernormForward(x, h("ln_1.weight"), h("ln_1.bias"), BT, C);
    const qkv = matmul(ln1.out, h("attn.c_attn.weight"), h("attn.c_attn.bias"), BT, 3 * C, C);
    const attention = attentionForward(qkv, shape);
    const attproj = matmul(attention.out, h("attn.c_proj.weight"), h("attn.c_proj.bias"), BT, C, C);
    const residual2 = add(x, attproj);
    const ln2 = layernormForward(residual2, h("ln_2.weight"), h("ln_2.bias"), BT, C);
    const fch = matmul(ln2.out, h("mlp.c_fc.weight"), h("mlp.c_fc.bias"), BT, 4 * C, C);
    const fchGelu = gelu(fch);
    const fcproj = matmul(fchGelu, h("mlp.c_proj.weight"), h("mlp.c_proj.bias"), BT, C, 4 * C);
    layers.push({ x, ln1, qkv, attention, residual2, ln2, fch, fchGelu });
    x = add(residual2, fcproj);
  }
  const lnf = layernormForward(x, p("ln_f.weight"), p("ln_f.bias"), BT, C);
  const logits = matmul(lnf.out, p("wte.weight"), null, BT, V, C, false, true);
  const { losses, dlogits } = crossEntropy(logits, targets, BT, V);
  const loss = losses.reduce((a, b) => a + b, 0) / BT;
  const grads: Tensors = new Map([...params].map(([name, value]) => [name, new Float64Array(value.length)]));
  if (lossOnly) return { loss, grads };

  // Backward.
  const g = (name: string) => grads.get(name)!;
  const accumulate = (target: F64, values: F64) => values.forEach((v, i) => target[i] += v);
  /** y = x·W + b: returns dx and adds dW, db into the gradients of `layer`. */
  const linearBackward = (layer: string, dy: F64, input: F64, inputs: number, outputs: number) => {
    accumulate(g(`${layer}.weight`), matmul(input, dy, null, inputs, outputs, BT, true, false));
    for (let r = 0; r < BT; r++) for (let o = 0; o < outputs; o++) g(`${layer}.bias`)[o] += dy[r * outputs + o];
    return matmul(dy, p(`${layer}.weight`), null, BT, inputs, outputs, false, true);
  };
  const dlnf = matmul(dlogits, p("wte.weight"), null, BT, C, V);
  accumulate(g("wte.weight"), matmul(dlogits, lnf.out, null, V, C, BT, true, false));
  let dx = new Float64Array(BT * C);
  layernormBackward(dx, g("ln_f.weight"), g("ln_f.bias"), dlnf, x, p("ln_f.weight"), lnf.mean, lnf.rstd, BT, C);
  for (let l = L - 1; l >= 0; l--) {
    const s = layers[l], h = `h.${l}`;
    const dresidual3 = dx;
    const dfchGelu = linearBackward(`${h}.mlp.c_proj`, dresidual3, s.fchGelu, 4 * C, C);
    const dfch = geluGrad(s.fch, dfchGelu);
    const dln2 = linearBackward(`${h}.mlp.c_fc`, dfch, s.ln2.out, C, 4 * C);
    const dresidual2 = dresidual3.slice();
    layernormBackward(
      dresidual2,
      g(`${h}.ln_2.weight`),
      g(`${h}.ln_2.bias`),
      dln2,
      s.residual2,
      p(`${h}.ln_2.weight`),
      s.ln2.mean,
      s.ln2.rstd,
      BT,
      C,
    );
    const datty = linearBackward(`${h}.attn.c_proj`, dresidual2, s.attention.out, C, C);
    const dqkv = attentionBackward(datty, s.qkv, s.attention.att, shape);
    const dln1 = linearBackward(`${h}.attn.c_attn`, dqkv, s.ln1.out, C, 3 * C);
    dx = dresidual2.slice();
    layernormBackward(
      dx,
      g(`${h}.ln_1.weight`),
      g(`${h}.ln_1.bias`),
      dln1,
      s.x,
      p(`${h}.ln_1.weight`),
      s.ln1.mean,
      s.ln1.rstd,
      BT,
      C,
    );
  }
  for (let i = 0; i < BT; i++) {
    for (let c = 0; c < C; c++) {
      g("wte.weight")[inputs[i] * C + c] += dx[i * C + c];
      g("wpe.weight")[(i % T) * C + c] += dx[i * C + c];
    }
  }
  return { loss, grads };
}
