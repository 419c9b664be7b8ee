// The thin dispatch layer every op wrapper uses: a compute pipeline compiled once, bound to
// a uniform block of sizes at @binding(0) and storage buffers at @binding(1..n), dispatched
// over a grid that stays inside the 65535-workgroups-per-dimension limit.

/** Threads per workgroup for the element-wise kernels (the limit every adapter must offer). */
export const WORKGROUP_SIZE = 256;

// WebGPU guarantees at least this many workgroups per grid dimension.
const MAX_WORKGROUPS_PER_DIMENSION = 65535;

/** WGSL shared by element-wise kernels: the flat index of this thread on a 2-D grid of 1-D workgroups. */
export const FLAT_INDEX_WGSL = /* wgsl */ `
fn flat_index(wid: vec3<u32>, lid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return (wid.y * groups.x + wid.x) * ${WORKGROUP_SIZE}u + lid.x;
}`;

/** The 2-D grid of workgroups that covers `threads` threads, `WORKGROUP_SIZE` to a workgroup. */
export function gridFor(threads: number): [number, number] {
  const groups = Math.max(1, Math.ceil(threads / WORKGROUP_SIZE));
  if (groups <= MAX_WORKGROUPS_PER_DIMENSION) return [groups, 1];
  const rows = Math.ceil(groups / MAX_WORKGROUPS_PER_DIMENSION);
  return [Math.ceil(groups / rows), rows];
}

/** One WGSL entry point, compiled once; `dispatch` records it into a compute pass. */
export class Kernel {
  readonly #device: GPUDevice;
  readonly #pipeline: GPUComputePipeline;
  // Kernels are called with the same sizes every iteration: one uniform buffer per distinct size block.
  readonly #uniforms = new Map<string, GPUBuffer>();

  constructor(device: GPUDevice, label: string, code: string, entryPoint: string) {
    this.#device = device;
    const module = device.createShaderModule({ label, code });
    this.#pipeline = device.createComputePipeline({ label, layout: "auto", compute: { module, entryPoint } });
  }

  /** Binds `sizes` (u32s) at @binding(0) and `buffers` at @binding(1), (2), ... and dispatches `grid`. */
  dispatch(
    pass: GPUComputePassEncoder,
    sizes: readonly number[],
    buffers: readonly GPUBuffer[],
    grid: readonly number[],
  ) {
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.#uniformFor(sizes) } }];
    buffers.forEach((buffer, i) => entries.push({ binding: i + 1, resource: { buffer } }));
    const bindGroup = this.#device.createBindGroup({ layout: this.#pipeline.getBindGroupLayout(0), entries });
    pass.setPipeline(this.#pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(grid[0], grid[1] ?? 1, grid[2] ?? 1);
  }

  #uniformFor(sizes: readonly number[]): GPUBuffer {
    const key = sizes.join(",");
    let buffer = this.#uniforms.get(key);
    if (!buffer) {
      // Uniform blocks are 16-byte aligned: pad the u32s to a multiple of four.
      const words = new Uint32Array(Math.max(4, Math.ceil(sizes.length / 4) * 4));
      words.set(sizes);
      buffer = this.#device.createBuffer({
        label: `sizes ${key}`,
        size: words.byteLength,
        usage: GPUBufferUsage.UNIFORM,
        mappedAtCreation: true,
      });
      new Uint32Array(buffer.getMappedRange()).set(words);
      buffer.unmap();
      this.#uniforms.set(key, buffer);
    }
    return buffer;
  }
}
