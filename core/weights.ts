// GPT-2 weights as safetensors: load a published checkpoint (Hugging Face's gpt2 model.safetensors,
// with or without the "transformer." prefix of GPT2LMHeadModel) into the flat parameter layout, and
// save ours the same way so that other tools load them; and a whole training state (weights, AdamW
// moments, step, data order) exported to and imported from one standard safetensors file.

import { type GPT2Config, parameterLayout, validateConfig } from "./model.ts";
import {
  encodeSafetensors,
  parseSafetensors,
  SafetensorsError,
  type SafetensorsFile,
  tensorAsF32,
} from "./safetensors.ts";
import type { TrainerState } from "./trainer.ts";

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

/**
 * The shape of the GPT-2 in a safetensors file: from our own files' metadata, else from the tensors as
 * Hugging Face publishes them (wte [V,C], wpe [n_ctx,C], blocks h.0 to h.<L-1>; every GPT-2 size has heads
 * 64 wide, which the shapes alone do not tell).
 */
export function configFromSafetensors(file: Uint8Array, source = "safetensors file"): GPT2Config {
  const parsed = parseSafetensors(file, source);
  if (parsed.metadata.gpt2_config) return validateConfig(JSON.parse(parsed.metadata.gpt2_config));
  const shape = (name: string) => {
    const tensor = parsed.tensors.get(name) ?? parsed.tensors.get(`transformer.${name}`);
    if (!tensor || tensor.shape.length !== 2) {
      throw new SafetensorsError(`${source}: no 2-D tensor "${name}", not a GPT-2`);
    }
    return tensor.shape;
  };
  const [V, C] = shape("wte.weight"), [maxT] = shape("wpe.weight");
  const layers = new Set(
    [...parsed.tensors.keys()].map((name) => /(?:^|\.)h\.(\d+)\./.exec(name)?.[1]).filter(Boolean),
  );
  if (C % 64 !== 0) throw new SafetensorsError(`${source}: n_embd ${C} is not a whole number of 64-wide heads`);
  return validateConfig({ vocab_size: V, n_ctx: maxT, n_embd: C, n_head: C / 64, n_layer: layers.size });
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

/**
 * A whole training state as one standard safetensors file: the parameters under their Hugging Face
 * names (so any GPT-2 loader takes them), AdamW's moments as `optimizer.m.<name>` and `optimizer.v.<name>`,
 * and the step, data order and config in the metadata.
 */
export function trainerStateToSafetensors(state: TrainerState, config: GPT2Config): Uint8Array {
  return encodeSafetensors(
    [
      ...namedParameters(state.params, config),
      ...namedParameters(state.m, config, "optimizer.m."),
      ...namedParameters(state.v, config, "optimizer.v."),
    ],
    { format: "pt", gpt2_config: JSON.stringify(config), step: String(state.step), data: JSON.stringify(state.data) },
  );
}

/** The training state written by `trainerStateToSafetensors`, checked against `config`. */
export function trainerStateFromSafetensors(file: Uint8Array, config: GPT2Config, source = "checkpoint"): TrainerState {
  const parsed = parseSafetensors(file, source);
  const { step, data } = parsed.metadata;
  if (step === undefined || data === undefined) {
    throw new SafetensorsError(`${source}: no training state in its metadata (a weights-only file?)`);
  }
  const { specs, totalFloats } = parameterLayout(config);
  const read = (prefix: string) => {
    const flat = new Float32Array(totalFloats);
    for (const spec of specs) flat.set(tensorAsF32(parsed, `${prefix}${spec.name}`, spec.shape, source), spec.offset);
    return flat;
  };
  return {
    step: Number(step),
    params: read(""),
    m: read("optimizer.m."),
    v: read("optimizer.v."),
    data: JSON.parse(data),
  };
}
