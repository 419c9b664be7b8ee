// Sharded data-parallel training's side of a trainer: every machine computes the gradient of its rows of
// the global batch (`Trainer.computeGradients`), the cluster averages it shard by shard (agents/collectives.ts),
// and each machine takes the optimizer step on its shard of params, m and v only, then shares its shard of
// the parameters.

import type { ShardRange } from "./shard.ts";
import type { Trainer } from "./trainer.ts";

/**
 * One optimizer step on `shard` of the trainer's state: `grads` is that range of the gradient averaged over
 * every machine and `normSquared` the squared norm of the whole averaged gradient (the cluster sums it); the
 * rest of params, m and v is left as it is. AdamW binds the shard's range of each piece it spans, which
 * is why shards (and pieces) start on a storage-binding boundary.
 */
export function updateShard(trainer: Trainer, shard: ShardRange, grads: Float32Array, normSquared: number) {
  const { start, end } = shard, n = end - start;
  if (grads.length !== n) throw new Error(`updateShard: ${grads.length} gradients for a range of ${n}`);
  const { device: { queue }, model, adamw } = trainer;
  model.grads.write(start, grads);
  queue.writeBuffer(adamw.normSquared, 0, Float32Array.of(normSquared));
  const encoder = trainer.device.createCommandEncoder({ label: `shard update ${trainer.step + 1}` });
  const pass = encoder.beginComputePass({ label: "optimizer shard" });
  trainer.encodeUpdate(pass, start, end);
  pass.end();
  queue.submit([encoder.finish()]);
  trainer.step++;
}

/** The trainer's parameters in `shard`: this machine's piece of the all-gather. */
export function readShardParameters(trainer: Trainer, { start, end }: ShardRange): Promise<Float32Array> {
  return trainer.model.params.read(start, end);
}
