// The thin dispatch layer every op wrapper uses: a compute pipeline compiled once, bound to
// a uniform block of sizes at @binding(0) and storage buffers at @binding(1..n), dispatched
// over a grid that stays inside the 65535-workgroups-per-dimension limit.

/** Threads per workgroup for the element-wise kernels (the limit every adapter must offer). */
export const WORKGROUP_SIZE = 256;

// WebGPU guarantees at least this many workgroups per grid dimension.
const MAX_WORKGROUPS_PER_DIMENSION = 65535;

/**
 * The header of a one-thread-per-item entry point (one per shader module) on the 2-D grid that
 * `gridFor` makes; its body reads its item as `flat_index(wid, lid, groups)`.
 */
export function perItemEntry(name: string): string {
  return /* wgsl */ `
fn flat_index(wid: vec3<u32>, lid: vec3<u32>, groups: vec3<u32>) -> u32 {
  return (wid.y * groups.x + wid.x) * ${WORKGROUP_SIZE}u + lid.x;
}

@compute @workgroup_size(${WORKGROUP_SIZE})
fn ${name}(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_id) lid: vec3<u32>,
           @builtin(num_workgroups) groups: vec3<u32>)`;
}

/** The 2-D grid of workgroups that covers `threads` threads, `WORKGROUP_SIZE` to a workgroup. */
export function gridFor(threads: number): [number, number] {
  const groups = Math.max(1, Math.ceil(threads / WORKGROUP_SIZE));
  if (groups <= MAX_WORKGROUPS_PER_DIMENSION) return [groups, 1];
  const rows = Math.ceil(groups / MAX_WORKGROUPS_PER_DIMENSION);
  return [Math.ceil(groups / rows), rows];
}

/** A whole buffer, or a range of one (a tensor inside the flat parameter buffer). */
export type Binding = GPUBuffer | GPUBufferBinding;

/** The u32 word with the bits of the f32 nearest `value`, for a uniform field declared f32. */
export function f32Word(value: number): number {
  return new Uint32Array(new Float32Array([value]).buffer)[0];
}

/** One WGSL entry point, compiled once; `dispatch` records it into a compute pass. */
export class Kernel {
  readonly #device: GPUDevice;
  readonly #pipeline: GPUComputePipeline;
  // Kernels are called with the same sizes every iteration: one uniform buffer per distinct size block.
  readonly #uniforms = new Map<string, GPUBuffer>();

  /** Compiles `entryPoint` of `code`; the entry point's name labels it in GPU errors. */
  constructor(device: GPUDevice, entryPoint: string, code: string, label = entryPoint) {
    this.#device = device;
    const module = device.createShaderModule({ label, code });
    this.#pipeline = device.createComputePipeline({ label, layout: "auto", compute: { module, entryPoint } });
  }

  /**
   * Binds the uniform block at @binding(0) and `buffers` at @binding(1), (2), ... and dispatches `grid`.
   * The uniform block is either u32 words that stay the same from call to call (sizes: cached here;
   * `f32Word` packs a constant float), or a uniform buffer the caller keeps up to date (values that
   * change every step).
   */
  dispatch(
    pass: GPUComputePassEncoder,
    uniforms: readonly number[] | GPUBuffer,
    buffers: readonly Binding[],
    grid: readonly number[],
  ) {
    const uniform = Array.isArray(uniforms) ? this.#uniformFor(uniforms) : uniforms as GPUBuffer;
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: uniform } }];
    buffers.forEach((binding, i) => {
      entries.push({ binding: i + 1, resource: binding instanceof GPUBuffer ? { buffer: binding } : binding });
    });
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
