// Text from a lab run's parameters, on the page's own GPU device, with the sampler `deno task generate`
// uses (`generate` in core/model.ts): the recovered cluster's parameters and the failure-free run's go
// through the same model, prompt and seed, so equal parameters give equal text.

import { acquireGpu } from "../core/gpu.ts";
import { generate, type GenerateSettings, GPT2, type GPT2Config } from "../core/model.ts";

/** The tokens `generate` draws after `prompt` from each of `parameters`, in order, on one model. */
export async function generateFrom(
  config: GPT2Config,
  parameters: Float32Array[],
  prompt: number[],
  settings: GenerateSettings,
): Promise<number[][]> {
  const { device } = await acquireGpu();
  const model = new GPT2(device, config, 1, prompt.length + settings.tokens);
  try {
    const texts: number[][] = [];
    for (const params of parameters) {
      await model.writeParameters(params);
      const tokens: number[] = [];
      for await (const token of generate(device, model, prompt, settings)) tokens.push(token);
      texts.push(tokens);
    }
    return texts;
  } finally {
    model.destroy();
    device.destroy();
  }
}

/** Byte tokens as text a class can read: printable ASCII as it is, any other byte as \xNN. */
export function showBytes(tokens: readonly number[]): string {
  return tokens.map((byte) =>
    byte >= 0x20 && byte < 0x7f && byte !== 0x5c
      ? String.fromCharCode(byte)
      : `\\x${byte.toString(16).padStart(2, "0")}`
  ).join("");
}
