// GPT-2 weights as safetensors: load a published checkpoint (Hugging Face's gpt2 model.safetensors,
// with or without the "transformer." prefix of GPT2LMHeadModel) into the flat parameter layout, and
// save ours the same way so that other tools load them.

import { type GPT2Config, parameterLayout } from "./model.ts";
import { encodeSafetensors, parseSafetensors, type SafetensorsFile, tensorAsF32 } from "./safetensors.ts";

/** The flat parameters of `config` from a safetensors file; a missing or misshapen tensor is an error. */
export function parametersFromSafetensors(file: Uint8Array, config: GPT2Config, source?: string): Float32Array {
  const parsed: SafetensorsFile = parseSafetensors(file, source);
  const { specs, totalFloats } = parameterLayout(config);
  const params = new Float32Array(totalFloats);
  for (const spec of specs) {
    // Published checkpoints differ in the prefix; the attention-mask buffers and the tied lm_head are not parameters.
    const name = parsed.tensors.has(spec.name) || !parsed.tensors.has(`transformer.${spec.name}`)
      ? spec.name
      : `transformer.${spec.name}`;
    params.set(tensorAsF32(parsed, name, spec.shape, source), spec.offset);
  }
  return params;
}

/** The parameters (flat, `parameterLayout(config)`) as named tensors: under `prefix` when one is given. */
export function namedParameters(params: Float32Array, config: GPT2Config, prefix = "") {
  return parameterLayout(config).specs.map((spec) => ({
    name: `${prefix}${spec.name}`,
    shape: spec.shape,
    data: params.subarray(spec.offset, spec.offset + spec.size),
  }));
}

/** A safetensors file of the parameters, with the config in its metadata. */
export function parametersToSafetensors(params: Float32Array, config: GPT2Config): Uint8Array {
  return encodeSafetensors(namedParameters(params, config), { format: "pt", gpt2_config: JSON.stringify(config) });
}
