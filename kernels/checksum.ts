// The chunk checksums of a checkpoint shard, computed on the GPU while the shard is captured, so that
// the host only copies the shard and verifies it (core/checksum.ts defines the checksum:
// a = sum of w_i, b = sum of (n - i) w_i over a chunk's 32-bit words, mod 2^32; a ^ b * 0x9e3779b1 ^ n).
// The shard's body is params[start, end) | m[start, end) | v[start, end); a workgroup per chunk, each
// thread summing a stride of its words, then a tree over the workgroup. Integer sums mod 2^32 do not
// depend on their order, so the result is exact and the same as the host's.

import { Kernel, type KernelSpec } from "./kernel.ts";

const CHECKSUM = {
  entryPoint: "chunk_checksums",
  uniforms: { start: "u32", floats: "u32", chunk_words: "u32" },
  storage: { checksums: ["read_write", "u32"], params: ["read", "u32"], m: ["read", "u32"], v: ["read", "u32"] },
  code: /* wgsl */ `
var<workgroup> sums_a: array<u32, 256>;
var<workgroup> sums_b: array<u32, 256>;

/** Word i of the shard's body. */
fn body_word(i: u32) -> u32 {
  if (i < args.floats) { return params[args.start + i]; }
  if (i < 2u * args.floats) { return m[args.start + i - args.floats]; }
  return v[args.start + i - 2u * args.floats];
}

@compute @workgroup_size(256)
fn chunk_checksums(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>) {
  let chunk = wid.x;
  let first = chunk * args.chunk_words;
  let n = min(args.chunk_words, 3u * args.floats - first);
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
`,
} satisfies KernelSpec;

// WebGPU guarantees this many workgroups in one dimension: a chunk per workgroup.
const MAX_CHUNKS = 65535;

export class ChunkChecksums {
  readonly #kernel: Kernel<typeof CHECKSUM>;

  constructor(device: GPUDevice) {
    this.#kernel = new Kernel(device, CHECKSUM);
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
    this.#kernel.dispatch(pass, { start, floats, chunk_words: chunkWords }, { checksums, params, m, v }, [chunks]);
  }
}
