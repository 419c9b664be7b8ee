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
// K can run over several dispatches, one per piece of B: each carries its accumulators on in a
// scratch buffer, so the sum runs in the same order, and rounds the same, as in one dispatch.
//
// Register-blocked: each thread computes a block of `out`, reading its rows of op(A) and columns of op(B)
// straight from storage. Rows and columns past the edge are clamped to the last one for reading and
// skipped for writing, so any M, N, K works and the inner loop has no branch. Two tiles:
//   square: 4x4 outputs a thread, 16x16 threads, a 64x64 tile;
//   skinny: 16x16 outputs a thread, 8 threads along N, a 16x128 tile, for M <= 16 or K <= 16.
// GPT-2 at batch x sequence 16 has M = 16 in most matmuls (K = 16 in the weight gradients): a 64-row
// tile computed 48 clamped rows for nothing there, and a thread's loop over a short K did too little
// to pay for itself. On llvmpipe, which runs a workgroup 8 threads at a time, each of them walking the
// whole loop, the skinny tile took M = 16 from 0.2 to about 2 GFLOP/s (bench/profile.ts).
// No workgroup memory: on software adapters a barrier costs more than the reuse saves (measured on
// llvmpipe: 5.4 GFLOP/s here against 1.6 for a 64x64x16 shared-memory tiling, which also took 25-50 s
// to compile there).
// Each output is summed by one thread in increasing k, whichever the tile, so results are the same
// run after run, and the same bits in either tile.

import { type Binding, Kernel, type KernelSpec } from "./kernel.ts";

/** Each thread a block of `rows` x 4·`groups` outputs; `threads` along N and M in a workgroup. */
interface Tile {
  name: string;
  rows: number;
  groups: number;
  threads: readonly [number, number];
}
const SQUARE: Tile = { name: "square", rows: 4, groups: 1, threads: [16, 16] };
const SKINNY: Tile = { name: "skinny", rows: 16, groups: 4, threads: [8, 1] };

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

function matmulSpec({ transposeA, transposeB, bias, accumulate, splitK }: MatmulLayout, tile: Tile): MatmulSpec {
  const { rows, groups } = tile;
  const each = (count: number, line: (i: number) => string) =>
    Array.from({ length: count }, (_, i) => line(i)).join("\n  ");
  const aAt = (row: string) =>
    transposeA ? `a[args.a_offset + k * args.a_stride + ${row}]` : `a[args.a_offset + ${row} * args.a_stride + k]`;
  const bAt = (col: string) => transposeB ? `b[${col} * args.k + k]` : `b[k * args.n + ${col}]`;
  // `body` for each output of the thread's block inside out, as `acc` at `row`, `col`.
  const outputs = (body: (acc: string) => string) => /* wgsl */ `
  for (var i = 0u; i < ${rows}u; i++) {
    let row = row0 + i;
    if (row >= args.m) { break; }
    for (var j = 0u; j < 4u; j++) {
      ${
    each(
      groups,
      (g) => `if (col0 + ${4 * g}u + j < args.n) { let col = col0 + ${4 * g}u + j; ${body(`acc${g}[i][j]`)} }`,
    )
  }
    }
  }`;
  return {
    entryPoint: "matmul",
    label: `matmul${transposeA ? "_tA" : ""}${transposeB ? "_tB" : ""}` +
      `${bias ? "_bias" : ""}${accumulate ? "_acc" : ""}${splitK ? "_splitk" : ""}_${tile.name}`,
    uniforms: UNIFORMS,
    storage: {
      out: ["read_write", "f32"],
      a: ["read", "f32"],
      b: ["read", "f32"],
      ...(bias ? { bias: ["read", "f32"] } : {}),
      ...(splitK ? { partial: ["read_write", "f32"] } : {}),
    },
    code: /* wgsl */ `
@compute @workgroup_size(${tile.threads[0]}, ${tile.threads[1]})
fn matmul(@builtin(global_invocation_id) gid: vec3<u32>) {
  let row0 = gid.y * ${rows}u;
  let col0 = gid.x * ${4 * groups}u;
  ${each(rows, (i) => `let r${i} = min(row0 + ${i}u, args.m - 1u);`)}
  ${each(4 * groups, (j) => `let c${j} = min(col0 + ${j}u, args.n - 1u);`)}
  // acc<g>[i][j]: row row0 + i, column col0 + 4g + j
  ${each(groups, (g) => `var acc${g}: array<vec4<f32>, ${rows}>;`)}
  ${splitK ? `if (args.first == 0u) {${outputs((acc) => `${acc} = partial[row * args.n + col];`)}\n  }` : ""}
  for (var k = 0u; k < args.k; k++) {
    ${each(groups, (g) => `let b${g} = vec4<f32>(${[0, 1, 2, 3].map((j) => bAt(`c${4 * g + j}`)).join(", ")});`)}
    ${each(rows, (i) => `let a${i} = ${aAt(`r${i}`)};${each(groups, (g) => ` acc${g}[${i}] += a${i} * b${g};`)}`)}
  }
  ${
      splitK
        ? `if (args.last == 0u) {${outputs((acc) => `partial[row * args.n + col] = ${acc};`)}\n    return;\n  }`
        : ""
    }
  ${
      outputs((acc) =>
        `let at = args.out_offset + row * args.out_stride + col; var value = ${acc};` +
        `${bias ? " value += bias[col];" : ""}${accumulate ? " value += out[at];" : ""} out[at] = value;`
      )
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

/** One matmul layout, compiled once for each tile it is called with. */
export class Matmul {
  readonly #device: GPUDevice;
  readonly #layout: MatmulLayout;
  readonly #kernels = new Map<Tile, Kernel<MatmulSpec>>();

  constructor(device: GPUDevice, layout: MatmulLayout = {}) {
    this.#device = device;
    this.#layout = layout;
  }

  #kernel(tile: Tile): Kernel<MatmulSpec> {
    let kernel = this.#kernels.get(tile);
    if (!kernel) this.#kernels.set(tile, kernel = new Kernel(this.#device, matmulSpec(this.#layout, tile)));
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
    const tile = m <= 16 || k <= 16 ? SKINNY : SQUARE;
    const grid = [Math.ceil(n / (4 * tile.groups * tile.threads[0])), Math.ceil(m / (tile.rows * tile.threads[1]))];
    this.#kernel(tile).dispatch(pass, uniforms, buffers, grid);
  }
}
