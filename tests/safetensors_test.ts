// safetensors: round trips, F16 and BF16 reads, a Hugging Face GPT-2 file loading as it is, and a clear
// error for every way a file can be broken.

import assert from "node:assert/strict";
import { type GPT2Config, initialParameters, parameterLayout } from "../core/model.ts";
import { encodeSafetensors, parseSafetensors, SafetensorsError, tensorAsF32 } from "../core/safetensors.ts";
import { namedParameters, parametersFromSafetensors, parametersToSafetensors } from "../core/weights.ts";

const CONFIG: GPT2Config = { vocab_size: 97, n_ctx: 16, n_embd: 48, n_head: 3, n_layer: 2 };

/** A hand-made file with one tensor of raw 16-bit values. */
function sixteenBitFile(dtype: "F16" | "BF16", values: number[]): Uint8Array {
  const header = new TextEncoder().encode(
    JSON.stringify({ x: { dtype, shape: [values.length], data_offsets: [0, 2 * values.length] } }),
  );
  const file = new Uint8Array(8 + header.length + 2 * values.length);
  const view = new DataView(file.buffer);
  view.setBigUint64(0, BigInt(header.length), true);
  file.set(header, 8);
  values.forEach((v, i) => view.setUint16(8 + header.length + 2 * i, v, true));
  return file;
}

Deno.test("F32 tensors round-trip with their metadata, data 8-byte aligned", () => {
  const a = new Float32Array([1.5, -2, 3e-8]), b = new Float32Array([7]);
  const file = encodeSafetensors([{ name: "a", shape: [3], data: a }, { name: "b.ü", shape: [1, 1], data: b }], {
    k: "v",
  });
  const headerLength = Number(new DataView(file.buffer).getBigUint64(0, true));
  assert.equal((8 + headerLength) % 8, 0);
  const parsed = parseSafetensors(file);
  assert.deepEqual(parsed.metadata, { k: "v" });
  assert.deepEqual(tensorAsF32(parsed, "a", [3]), a);
  assert.deepEqual(tensorAsF32(parsed, "b.ü", [1, 1]), b);
});

Deno.test("F16 and BF16 tensors are read exactly, subnormals included", () => {
  // 1.0, -2.0, 65504 (largest half), 2^-24 (smallest subnormal)
  assert.deepEqual(
    tensorAsF32(parseSafetensors(sixteenBitFile("F16", [0x3c00, 0xc000, 0x7bff, 0x0001])), "x", [4]),
    new Float32Array([1, -2, 65504, 2 ** -24]),
  );
  // 1.0, -0.5 in bfloat16
  assert.deepEqual(
    tensorAsF32(parseSafetensors(sixteenBitFile("BF16", [0x3f80, 0xbf00])), "x", [2]),
    new Float32Array([1, -0.5]),
  );
});

Deno.test("GPT-2 parameters round-trip through safetensors under Hugging Face's names", () => {
  const params = initialParameters(CONFIG, 1);
  const file = parametersToSafetensors(params, CONFIG);
  const names = [...parseSafetensors(file).tensors.keys()];
  assert.ok(names.includes("h.1.attn.c_attn.weight") && names.includes("wte.weight") && names.includes("ln_f.bias"));
  assert.deepEqual(parametersFromSafetensors(file, CONFIG), params);
});

Deno.test("a checkpoint in the published GPT-2 form loads as it is: prefix, mask buffers, tied lm_head", () => {
  const params = initialParameters(CONFIG, 2);
  const T = CONFIG.n_ctx;
  const published = [
    ...namedParameters(params, CONFIG, "transformer."),
    // GPT2LMHeadModel's causal-mask buffers and its tied head sit beside the parameters.
    ...Array.from(
      { length: CONFIG.n_layer },
      (_, l) => ({ name: `transformer.h.${l}.attn.bias`, shape: [1, 1, T, T], data: new Float32Array(T * T).fill(1) }),
    ),
    {
      name: "lm_head.weight",
      shape: [CONFIG.vocab_size, CONFIG.n_embd],
      data: namedParameters(params, CONFIG)[0].data,
    },
  ].reverse(); // order in the file does not matter
  assert.deepEqual(parametersFromSafetensors(encodeSafetensors(published, { format: "pt" }), CONFIG), params);
});

Deno.test("broken files give one clear error each", () => {
  const good = parametersToSafetensors(initialParameters(CONFIG, 3), CONFIG);
  const headerLength = Number(new DataView(good.buffer).getBigUint64(0, true));
  const cases: [Uint8Array, RegExp][] = [
    [good.subarray(0, 5), /truncated: 5 bytes/],
    [good.subarray(0, 8 + headerLength - 3), /truncated: the header needs/],
    [good.subarray(0, good.length - 10), /truncated: tensor "ln_f.bias" ends at byte/],
    [
      Uint8Array.from([...good.subarray(0, 8), ...new TextEncoder().encode("{not json".padEnd(headerLength))]),
      /does not parse as JSON/,
    ],
    [new Uint8Array(16).fill(0xff), /not plausible/],
  ];
  for (const [file, message] of cases) {
    assert.throws(() => parametersFromSafetensors(file, CONFIG, "w.safetensors"), (error: Error) => {
      assert.ok(error instanceof SafetensorsError, error.message);
      assert.match(error.message, /^w\.safetensors: /);
      assert.match(error.message, message);
      return true;
    });
  }
  const other = { ...CONFIG, n_embd: 24 };
  assert.throws(
    () => parametersFromSafetensors(good, other, "w"),
    /tensor "wte.weight" has shape \[97,48\], the config needs \[97,24\]/,
  );
  const missing = encodeSafetensors(
    namedParameters(initialParameters(CONFIG, 3), CONFIG).filter((t) => t.name !== "h.1.mlp.c_fc.bias"),
  );
  assert.throws(() => parametersFromSafetensors(missing, CONFIG, "w"), /tensor "h.1.mlp.c_fc.bias" is missing/);
  assert.equal(parameterLayout(CONFIG).specs.length, 2 + 12 * CONFIG.n_layer + 2);
});
