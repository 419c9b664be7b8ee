// Shards of the training state: the flat parameters (and AdamW's m and v, laid out the same) cut into
// contiguous ranges, one a machine. A single-node run is the one shard of the whole state.

/**
 * 256 bytes, in floats: WebGPU's largest storage-binding offset alignment. The model's tensors and the
 * shards start on such a boundary, so that each can be bound on its own (AdamW updates a shard through one
 * binding) and the layout is the same on every adapter.
 */
export const STORAGE_ALIGNMENT_FLOATS = 64;

export interface ShardRange {
  /** This shard's index among `count` shards. */
  index: number;
  count: number;
  /** In floats: [start, end) of the flat state. */
  start: number;
  end: number;
  totalFloats: number;
}

/** The `count` shards of a flat state of `totalFloats` floats, each starting on an aligned boundary. */
export function shardRanges(totalFloats: number, count: number): ShardRange[] {
  const units = Math.ceil(totalFloats / STORAGE_ALIGNMENT_FLOATS);
  if (units < count) throw new Error(`${totalFloats} floats cannot be cut into ${count} aligned shards`);
  return Array.from({ length: count }, (_, index) => {
    const start = Math.floor((units * index) / count) * STORAGE_ALIGNMENT_FLOATS;
    const end = Math.min(totalFloats, Math.floor((units * (index + 1)) / count) * STORAGE_ALIGNMENT_FLOATS);
    return { index, count, start, end, totalFloats };
  });
}
