// The thin dispatch layer every op wrapper uses. A kernel declares its bindings once, by name: the
// fields of its uniform block (`args`, @binding(0)) and its storage buffers (@binding(1..n), in the
// order declared). From that the wrapper writes the WGSL declarations in front of the kernel's code and
// builds the bind group from buffers passed by name, so the binding order is written in one place.
// Dispatches go over a grid that stays inside the 65535-workgroups-per-dimension limit.

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

/** The 32-bit types of uniform fields and storage elements. */
export type Scalar = "f32" | "u32";

/** A storage binding: its access and its element type (an `array<type>` in WGSL). */
export type StorageBinding = readonly ["read" | "read_write", Scalar | "vec4<f32>"];

export interface KernelSpec {
  /** The WGSL entry point; it also labels the pipeline in GPU errors unless `label` is given. */
  entryPoint: string;
  label?: string;
  /** The uniform block's fields in order, read in WGSL as `args.<field>`. */
  uniforms: Record<string, Scalar>;
  /**
   * The uniform values change from call to call (an optimizer step's): one uniform buffer, rewritten
   * with queue.writeBuffer by each dispatch, so a command buffer may hold at most one dispatch of the kernel.
   * Otherwise each distinct set of values (sizes) gets its own buffer, written once.
   */
  rewriteUniforms?: boolean;
  /** The storage buffers, bound at @binding(1), (2), ... in this order. */
  storage: Record<string, StorageBinding>;
  /** The structs, functions and entry point, using the declared names. */
  code: string;
}

/** The values of a kernel's uniform fields, by name. */
export type UniformValues<S extends KernelSpec> = { readonly [K in keyof S["uniforms"]]: number };
/** The buffers of a kernel's storage bindings, by name. */
export type Buffers<S extends KernelSpec> = { readonly [K in keyof S["storage"]]: Binding };

/** One WGSL entry point, compiled once; `dispatch` records it into a compute pass. */
export class Kernel<S extends KernelSpec> {
  readonly #device: GPUDevice;
  readonly #label: string;
  readonly #fields: [string, Scalar][];
  readonly #storage: string[];
  readonly #rewriteUniforms: boolean;
  readonly #pipeline: GPUComputePipeline;
  // Kernels are called with the same sizes every iteration: one uniform buffer per distinct size block
  // (or the one buffer that is rewritten, with `rewriteUniforms`).
  readonly #uniforms = new Map<string, GPUBuffer>();

  constructor(device: GPUDevice, spec: S) {
    this.#device = device;
    this.#label = spec.label ?? spec.entryPoint;
    this.#fields = Object.entries(spec.uniforms);
    this.#storage = Object.keys(spec.storage);
    this.#rewriteUniforms = spec.rewriteUniforms ?? false;
    const code = [
      `struct Args { ${this.#fields.map(([name, type]) => `${name}: ${type}`).join(", ")} }`,
      "@group(0) @binding(0) var<uniform> args: Args;",
      ...Object.entries(spec.storage).map(([name, [access, type]], i) =>
        `@group(0) @binding(${i + 1}) var<storage, ${access}> ${name}: array<${type}>;`
      ),
      spec.code,
    ].join("\n");
    const module = device.createShaderModule({ label: this.#label, code });
    this.#pipeline = device.createComputePipeline({
      label: this.#label,
      layout: "auto",
      compute: { module, entryPoint: spec.entryPoint },
    });
  }

  /** Binds `uniforms` and `buffers` by name and dispatches `grid` workgroups. */
  dispatch(pass: GPUComputePassEncoder, uniforms: UniformValues<S>, buffers: Buffers<S>, grid: readonly number[]) {
    const given = buffers as Record<string, Binding | undefined>;
    for (const name of Object.keys(given)) {
      if (!this.#storage.includes(name)) {
        throw new Error(`${this.#label}: no binding named "${name}" (it has ${this.#storage.join(", ")})`);
      }
    }
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: this.#uniformBuffer(uniforms) } }];
    this.#storage.forEach((name, i) => {
      const binding = given[name];
      if (!binding) throw new Error(`${this.#label}: no buffer given for binding "${name}"`);
      entries.push({ binding: i + 1, resource: binding instanceof GPUBuffer ? { buffer: binding } : binding });
    });
    // The label names the sizes too: a GPU error, or a profile of the dispatches, then says which call it was.
    const label = `${this.#label} ${
      this.#fields.map(([name]) => `${name}=${(uniforms as Record<string, number>)[name]}`).join(" ")
    }`;
    const layout = this.#pipeline.getBindGroupLayout(0);
    const bindGroup = this.#device.createBindGroup({ label, layout, entries });
    pass.setPipeline(this.#pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(grid[0], grid[1] ?? 1, grid[2] ?? 1);
  }

  #uniformBuffer(values: UniformValues<S>): GPUBuffer {
    const words = this.#pack(values);
    const key = this.#rewriteUniforms ? "rewritten" : words.join(",");
    let buffer = this.#uniforms.get(key);
    if (buffer) {
      if (this.#rewriteUniforms) this.#device.queue.writeBuffer(buffer, 0, words);
      return buffer;
    }
    buffer = this.#device.createBuffer({
      label: `${this.#label} args ${key}`,
      size: words.byteLength,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
      mappedAtCreation: true,
    });
    new Uint32Array(buffer.getMappedRange()).set(words);
    buffer.unmap();
    this.#uniforms.set(key, buffer);
    return buffer;
  }

  /** The uniform block's words: u32 fields as they are, f32 fields as the bits of the nearest f32. */
  #pack(values: UniformValues<S>): Uint32Array {
    // Uniform blocks are 16-byte aligned: pad to a multiple of four words.
    const words = new Uint32Array(Math.max(4, Math.ceil(this.#fields.length / 4) * 4));
    const floats = new Float32Array(words.buffer);
    this.#fields.forEach(([name, type], i) => {
      const value = (values as Record<string, number>)[name];
      const fits = type === "f32"
        ? typeof value === "number"
        : Number.isInteger(value) && value >= 0 && value < 2 ** 32;
      if (!fits) throw new Error(`${this.#label}: uniform "${name}" must be a ${type}, got ${value}`);
      if (type === "f32") floats[i] = value;
      else words[i] = value;
    });
    return words;
  }
}
