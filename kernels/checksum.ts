// The chunk checksums of a checkpoint shard, computed on the GPU while the shard is captured, so that
// the host only copies the shard and verifies it (core/checksum.ts defines the checksum:
// a = sum of w_i, b = sum of (n - i) w_i over a chunk's 32-bit words, mod 2^32; a ^ b * 0x9e3779b1 ^ n).
// The shard's body is params[start, end) | m[start, end) | v[start, end); a workgroup per chunk, each
// thread summing a stride of its words, then a tree over the workgroup. Integer sums mod 2^32 do not
// depend on their order, so the result is exact and the same as the host's.

import { Kernel } from "./kernel.ts";

const CHECKSUM_WGSL = /* wgsl */ `
struct Sizes { start: u32, floats: u32, chunk_words: u32 }
@group(0) @binding(0) var<uniform> sizes: Sizes;
@group(0) @binding(1) var<storage, read_write> checksums: array<u32>;
@group(0) @binding(2) var<storage, read> params: array<u32>;
@group(0) @binding(3) var<storage, read> m: array<u32>;
@group(0) @binding(4) var<storage, read> v: array<u32>;

var<workgroup> sums_a: array<u32, 256>;
var<workgroup> sums_b: array<u32, 256>;

/** Word i of the shard's body. */
fn body_word(i: u32) -> u32 {
  if (i < sizes.floats) { return params[sizes.start + i]; }
  if (i < 2u * sizes.floats) { return m[sizes.start + i - sizes.floats]; }
  return v[sizes.start + i - 2u * sizes.floats];
}

@compute @workgroup_size(256)
fn chunk_checksums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let chunk = wid.x;
  let first = chunk * sizes.chunk_words;
  let n = min(sizes.chunk_words, 3u * sizes.floats - first);
  var a = 0u;
  var b = 0u;
  for (var i = lid.x; i < n; i += 256u) {
    let w = body_word(first + i);
    a += w;
    b += (n - i) * w;
  }
  sums_a[lid.x] = a;
  sums_b[lid.x] = b;
  for (var stride = 128u; stride > 0u; stride >>= 1u) {
    workgroupBarrier();
    if (lid.x < stride) {
      sums_a[lid.x] += sums_a[lid.x + stride];
      sums_b[lid.x] += sums_b[lid.x + stride];
    }
  }
  if (lid.x == 0u) { checksums[chunk] = sums_a[0] ^ (sums_b[0] * 0x9e3779b1u) ^ n; }
}
`;

// WebGPU guarantees this many workgroups in one dimension: a chunk per workgroup.
const MAX_CHUNKS = 65535;

export class ChunkChecksums {
  readonly #kernel: Kernel;

  constructor(device: GPUDevice) {
    this.#kernel = new Kernel(device, "chunk_checksums", CHECKSUM_WGSL);
  }

  /** True when a shard of `floats` floats in `chunkWords`-word chunks can be checksummed in one dispatch. */
  static fits(floats: number, chunkWords: number): boolean {
    return Math.ceil((3 * floats) / chunkWords) <= MAX_CHUNKS;
  }

  /** checksums[chunks] for the body params[start, start+floats) | m[...] | v[...], in chunks of `chunkWords`. */
  encode(
    pass: GPUComputePassEncoder,
    checksums: GPUBuffer,
    params: GPUBuffer,
    m: GPUBuffer,
    v: GPUBuffer,
    start: number,
    floats: number,
    chunkWords: number,
  ) {
    const chunks = Math.ceil((3 * floats) / chunkWords);
    this.#kernel.dispatch(pass, [start, floats, chunkWords], [checksums, params, m, v], [chunks]);
  }
}
