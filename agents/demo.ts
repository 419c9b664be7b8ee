// `deno task demo`: the main job, headless. It reports the adapter it runs on and checks that the
// GPU computes what the CPU does; the training and cluster issues grow it into the full Gemini run.

import { acquireGpu, formatAdapter } from "../core/gpu.ts";
import { describeSelfCheck, runSelfCheck } from "../core/selfcheck.ts";

async function main(): Promise<number> {
  let gpu;
  try {
    gpu = await acquireGpu();
  } catch (error) {
    console.error(`demo: ${error instanceof Error ? error.message : error}`);
    return 1;
  }
  console.log(`adapter: ${formatAdapter(gpu.adapter)}`);
  const result = await runSelfCheck(gpu.device);
  console.log(describeSelfCheck(result));
  gpu.device.destroy();
  return result.mismatches === 0 ? 0 : 1;
}

Deno.exit(await main());
