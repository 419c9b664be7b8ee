// Matrix multiply with optional bias, in the layouts a GPT-2 forward and backward need.
//   out[M,N] (+)= op(A)[M,K] · op(B)[K,N] (+ bias[N])
// A is stored [M,K], or [K,M] when transposeA; B is stored [K,N], or [N,K] when transposeB.
// The layer y = x·W + b (W stored [in,out], GPT-2's Conv1D) uses:
//   forward   y  = x·W + b           (no transposes, bias)
//   backward  dx += dy·Wᵀ            (transposeB, accumulate)
//             dW += xᵀ·dy            (transposeA, accumulate; the sum over B·T rows is the K loop)
// and the tied lm_head, logits = x·wteᵀ with wte stored [V,C], uses transposeB.
// wte may be stored in pieces of rows (when it is bigger than one storage binding), so A and out can be
// a block of columns of a wider matrix (a row stride and a first column), and with `splitK` the sum over
// K can run over several dispatches, one per piece of B: each carries its 4x4 accumulators on in a
// scratch buffer, so the sum runs in the same order, and rounds the same, as in one dispatch.
//
// Register-blocked: each thread computes a 4x4 block of `out` (a 16x16 workgroup a 64x64 tile), reading
// its four rows of op(A) and four columns of op(B) straight from storage. Rows and columns past the edge
// are clamped to the last one for reading and skipped for writing, so any M, N, K works and the inner
// loop has no branch. A GPT-2 step at batch x sequence 16 has M = 16 in most of its matmuls (and M = 1
// in the bias gradients): there a 64-row tile would compute 48 clamped rows for nothing, so a small M
// gets a workgroup of 16 x 4 (or 16 x 1) threads, a 64x16 (or 64x4) tile, with the same code per thread. No workgroup memory: on software adapters a barrier costs more than the reuse
// saves (measured on llvmpipe: 5.4 GFLOP/s here against 1.6 for a 64x64x16 shared-memory tiling,
// which also took 25-50 s to compile there).
// Each output is summed by one thread in increasing k, so results are the same run after run.

import { type Binding, Kernel, type KernelSpec } from "./kernel.ts";

const TILE_COLUMNS = 64; // outputs per workgroup along N: 16 threads of 4 columns
// Threads per workgroup along M (4 rows each), the fewest that cover M: a tile of 4, 16 or 64 rows.
const ROW_THREADS = [1, 4, 16] as const;
type RowThreads = typeof ROW_THREADS[number];

export interface MatmulLayout {
  transposeA?: boolean;
  transposeB?: boolean;
  /** Add a bias[N] to every row. */
  bias?: boolean;
  /** out += the product (gradients accumulate, as in llm.c) instead of out = the product. */
  accumulate?: boolean;
  /** The K loop may be split over dispatches, carried on through a `partial` [M,N] scratch buffer. */
  splitK?: boolean;
}

const UNIFORMS = {
  m: "u32",
  n: "u32",
  k: "u32",
  a_stride: "u32",
  a_offset: "u32",
  out_stride: "u32",
  out_offset: "u32",
  first: "u32",
  last: "u32",
} as const;

/** The kernel of one layout; `bias` and `partial` are bound only in the layouts that use them. */
interface MatmulSpec extends KernelSpec {
  uniforms: typeof UNIFORMS;
  storage: {
    out: ["read_write", "f32"];
    a: ["read", "f32"];
    b: ["read", "f32"];
    bias?: ["read", "f32"];
    partial?: ["read_write", "f32"];
  };
}

function matmulSpec({ transposeA, transposeB, bias, accumulate, splitK }: MatmulLayout, rows: RowThreads): MatmulSpec {
  const aAt = (row: string) =>
    transposeA ? `a[args.a_offset + k * args.a_stride + ${row}]` : `a[args.a_offset + ${row} * args.a_stride + k]`;
  const bAt = (col: string) => transposeB ? `b[${col} * args.k + k]` : `b[k * args.n + ${col}]`;
  const tile = (body: string) => /* wgsl */ `
  for (var i = 0u; i < 4u; i++) {
    let row = row0 + i;
    if (row >= args.m) { break; }
    for (var j = 0u; j < 4u; j++) {
      let col = col0 + j;
      if (col >= args.n) { break; }
      ${body}
    }
  }`;
  return {
    entryPoint: "matmul",
    label: `matmul${transposeA ? "_tA" : ""}${transposeB ? "_tB" : ""}` +
      `${bias ? "_bias" : ""}${accumulate ? "_acc" : ""}${splitK ? "_splitk" : ""}_${4 * rows}rows`,
    uniforms: UNIFORMS,
    storage: {
      out: ["read_write", "f32"],
      a: ["read", "f32"],
      b: ["read", "f32"],
      ...(bias ? { bias: ["read", "f32"] } : {}),
      ...(splitK ? { partial: ["read_write", "f32"] } : {}),
    },
    code: /* wgsl */ `
@compute @workgroup_size(16, ${rows})
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * 4u;
  let col0 = gid.x * 4u;
  let r0 = min(row0, args.m - 1u);
  let r1 = min(row0 + 1u, args.m - 1u);
  let r2 = min(row0 + 2u, args.m - 1u);
  let r3 = min(row0 + 3u, args.m - 1u);
  let c0 = min(col0, args.n - 1u);
  let c1 = min(col0 + 1u, args.n - 1u);
  let c2 = min(col0 + 2u, args.n - 1u);
  let c3 = min(col0 + 3u, args.n - 1u);
  var acc: array<vec4<f32>, 4>;  // acc[i][j]: row row0 + i, column col0 + j
  ${
      splitK
        ? `if (args.first == 0u) {${tile("acc[i][j] = partial[row * args.n + col];")}
  }`
        : ""
    }
  for (var k = 0u; k < args.k; k++) {
    let av = vec4<f32>(${aAt("r0")}, ${aAt("r1")}, ${aAt("r2")}, ${aAt("r3")});
    let bv = vec4<f32>(${bAt("c0")}, ${bAt("c1")}, ${bAt("c2")}, ${bAt("c3")});
    acc[0] += av.x * bv;
    acc[1] += av.y * bv;
    acc[2] += av.z * bv;
    acc[3] += av.w * bv;
  }
  ${
      splitK
        ? `if (args.last == 0u) {${tile("partial[row * args.n + col] = acc[i][j];")}
    return;
  }`
        : ""
    }
  ${
      tile(`let at = args.out_offset + row * args.out_stride + col;
      var value = acc[i][j];
      ${bias ? "value += bias[col];" : ""}
      ${accumulate ? "value += out[at];" : ""}
      out[at] = value;`)
    }
}
`,
  };
}

/**
 * Where op(A) and out sit when they are blocks of wider matrices, and which share of a split K loop a
 * dispatch runs; by default dense and whole.
 */
export interface MatmulView {
  /** Floats from one row of A (one row of Aᵀ with transposeA) to the next, and the first one used. */
  aStride?: number;
  aOffset?: number;
  /** Floats from one row of out to the next, and the first column written. */
  outStride?: number;
  outOffset?: number;
  /** With `splitK`: the scratch [M,N] the accumulators are carried in, and whether this is the first or last share. */
  partial?: Binding;
  first?: boolean;
  last?: boolean;
}

/** One matmul layout, compiled once for each tile height it is called with. */
export class Matmul {
  readonly #device: GPUDevice;
  readonly #layout: MatmulLayout;
  readonly #kernels = new Map<RowThreads, Kernel<MatmulSpec>>();

  constructor(device: GPUDevice, layout: MatmulLayout = {}) {
    this.#device = device;
    this.#layout = layout;
  }

  #kernel(rows: RowThreads): Kernel<MatmulSpec> {
    let kernel = this.#kernels.get(rows);
    if (!kernel) this.#kernels.set(rows, kernel = new Kernel(this.#device, matmulSpec(this.#layout, rows)));
    return kernel;
  }

  /** out[M,N] (+)= op(A)·op(B) (+ bias), sizes M, N and K as in the header. */
  encode(
    pass: GPUComputePassEncoder,
    out: Binding,
    a: Binding,
    b: Binding,
    bias: Binding | null,
    m: number,
    n: number,
    k: number,
    view: MatmulView = {},
  ) {
    const { partial, first = true, last = true } = view;
    const uniforms = {
      m,
      n,
      k,
      a_stride: view.aStride ?? (this.#layout.transposeA ? m : k),
      a_offset: view.aOffset ?? 0,
      out_stride: view.outStride ?? n,
      out_offset: view.outOffset ?? 0,
      first: first ? 1 : 0,
      last: last ? 1 : 0,
    };
    const buffers = { out, a, b, ...(bias ? { bias } : {}), ...(partial ? { partial } : {}) };
    const rows = ROW_THREADS.find((threads) => 4 * threads >= m) ?? ROW_THREADS.at(-1)!;
    this.#kernel(rows).dispatch(pass, uniforms, buffers, [Math.ceil(n / TILE_COLUMNS), Math.ceil(m / (4 * rows))]);
  }
}
