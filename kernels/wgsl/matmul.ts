/**
 * Tiled matmul, `out[m, n] (+)= op(a) · op(b) (+ bias)`, generated per variant.
 *
 * The recipe of fast WGSL matmuls: a workgroup computes a BM×BN block of `out`, walking k in steps of
 * BK. Each step it stages a BM×BK tile of A (transposed, so a thread reads 4 rows as one vec4) and a
 * BK×BN tile of B in workgroup memory; each thread then keeps a TM×TN block of outputs in registers
 * and does TM·TN FMAs per loaded column/row pair, unrolled in the generated code.
 * A thread's rows are `TM/4` groups of 4 spread `4·(BM/TM)` apart (likewise columns), so neighbouring
 * threads read neighbouring vec4s of workgroup memory (no bank conflicts) and write coalesced rows.
 *
 * Global loads are vec4 where an operand's contiguous dimension, offset and batch stride are
 * multiples of 4, scalar otherwise; tiles past the matrix edge load zeros and stores are bounds
 * checked, so any shape is correct.
 *
 * The launcher ({@linkcode recordMatmul}) checks the operands and picks the variant; the tile shape
 * comes from the runtime (forced, autotuned or {@linkcode matmulTiles}).
 * @module
 */
import type { TuneShape } from "../autotune.ts";
import { checkTensor, type MatmulOptions, type Tensor } from "../backend.ts";
import { type Kernel, memo, type Recorder } from "./kernel.ts";

/** One generated matmul: tile sizes, operand layouts and load widths. */
export interface MatmulVariant {
  /** Block rows and columns of `out` a workgroup computes, and the k step. */
  BM: number;
  BN: number;
  BK: number;
  /** Outputs a thread computes: TM rows × TN columns (multiples of 4). */
  TM: number;
  TN: number;
  transA: boolean;
  transB: boolean;
  /** Whether A (B) is read as vec4. */
  vecA: boolean;
  vecB: boolean;
  /** Storage type of A and B (f16 where the device has shader-f16). */
  typeA: "f32" | "f16";
  typeB: "f32" | "f16";
}

/** The tile shapes the variants use: big tiles for big matrices, thin ones for few rows. */
export const TILES = {
  large: { BM: 128, BN: 128, BK: 8, TM: 8, TN: 8 },
  medium: { BM: 64, BN: 64, BK: 16, TM: 4, TN: 4 },
  skinny: { BM: 32, BN: 128, BK: 16, TM: 4, TN: 4 },
};

/** A tile shape's name: the heuristic's three, and the extra candidates the autotuner also times. */
export type MatmulTile = keyof typeof TILE_CANDIDATES;

/**
 * Every tile shape the autotuner (`../autotune.ts`) times. All accumulate each output over k in the
 * same order, one FMA a term, so they give bit-identical results; 256 threads a workgroup at most.
 */
export const TILE_CANDIDATES = {
  ...TILES,
  wide: { BM: 64, BN: 128, BK: 16, TM: 4, TN: 8 },
  tall: { BM: 128, BN: 64, BK: 16, TM: 8, TN: 4 },
  deep: { BM: 128, BN: 128, BK: 16, TM: 8, TN: 8 },
};

/** Picks the tile shape: enough workgroups to fill a big GPU (~132 SMs) before using big tiles. */
export function matmulTiles(m: number, n: number, batch: number): keyof typeof TILES {
  if (m <= 32) return "skinny";
  if (Math.ceil(m / 128) * Math.ceil(n / 128) * batch >= 256) return "large";
  return "medium";
}

/** Generates the WGSL of one matmul variant. */
export const matmulKernel = memo((v: MatmulVariant): Kernel => {
  const { BM, BN, BK, TM, TN } = v;
  const WM = BM / TM, WN = BN / TN, THREADS = WM * WN, BM4 = BM / 4, BN4 = BN / 4;
  const name = `matmul_${BM}x${BN}x${BK}_${TM}x${TN}_${v.transA ? "t" : "n"}${v.transB ? "t" : "n"}_` +
    `${v.vecA ? "v" : "s"}${v.vecB ? "v" : "s"}_${v.typeA}${v.typeB}`;

  // Loads of one k-step's tiles into workgroup memory: `count` loads spread over the threads.
  const loads = (count: number, body: string) =>
    `for (var l = 0u; l < ${Math.ceil(count / THREADS)}u; l++) {
    let idx = lid + l * ${THREADS}u;
    if (idx < ${count}u) {${body}
    }
  }`;
  const scalarA = v.typeA === "f32" ? "a[i]" : "f32(a[i])";
  const vectorA = v.typeA === "f32" ? "a[i]" : "vec4<f32>(a[i])";
  const scalarB = v.typeB === "f32" ? "b[i]" : "f32(b[i])";
  const vectorB = v.typeB === "f32" ? "b[i]" : "vec4<f32>(b[i])";
  let loadA: string, loadB: string;
  if (!v.transA && v.vecA) { // A [m, k]: a vec4 holds 4 depths of one row; store them transposed
    loadA = loads(
      BM * BK / 4,
      `
      let r = idx / ${BK / 4}u; let c = (idx % ${BK / 4}u) * 4u;
      let row = m0 + r; let depth = k0 + c;
      var x = vec4<f32>(0.0);
      if (row < P.m && depth < P.k) { let i = a_base + (row * P.k + depth) / 4u; x = ${vectorA}; }
      for (var e = 0u; e < 4u; e++) { As[(c + e) * ${BM4}u + r / 4u][r % 4u] = x[e]; }`,
    );
  } else if (!v.transA) {
    loadA = loads(
      BM * BK,
      `
      let r = idx / ${BK}u; let c = idx % ${BK}u;
      let row = m0 + r; let depth = k0 + c;
      var x = 0.0;
      if (row < P.m && depth < P.k) { let i = a_base + row * P.k + depth; x = ${scalarA}; }
      As[c * ${BM4}u + r / 4u][r % 4u] = x;`,
    );
  } else if (v.vecA) { // A stored [k, m]: a vec4 holds 4 rows of one depth, already transposed
    loadA = loads(
      BM * BK / 4,
      `
      let c = idx / ${BM4}u; let r4 = idx % ${BM4}u;
      let row = m0 + r4 * 4u; let depth = k0 + c;
      var x = vec4<f32>(0.0);
      if (row < P.m && depth < P.k) { let i = a_base + (depth * P.m + row) / 4u; x = ${vectorA}; }
      As[c * ${BM4}u + r4] = x;`,
    );
  } else {
    loadA = loads(
      BM * BK,
      `
      let c = idx / ${BM}u; let r = idx % ${BM}u;
      let row = m0 + r; let depth = k0 + c;
      var x = 0.0;
      if (row < P.m && depth < P.k) { let i = a_base + depth * P.m + row; x = ${scalarA}; }
      As[c * ${BM4}u + r / 4u][r % 4u] = x;`,
    );
  }
  if (!v.transB && v.vecB) { // B [k, n]: a vec4 holds 4 columns of one depth
    loadB = loads(
      BK * BN / 4,
      `
      let c = idx / ${BN4}u; let j4 = idx % ${BN4}u;
      let col = n0 + j4 * 4u; let depth = k0 + c;
      var x = vec4<f32>(0.0);
      if (col < P.n && depth < P.k) { let i = b_base + (depth * P.n + col) / 4u; x = ${vectorB}; }
      Bs[c * ${BN4}u + j4] = x;`,
    );
  } else if (!v.transB) {
    loadB = loads(
      BK * BN,
      `
      let c = idx / ${BN}u; let j = idx % ${BN}u;
      let col = n0 + j; let depth = k0 + c;
      var x = 0.0;
      if (col < P.n && depth < P.k) { let i = b_base + depth * P.n + col; x = ${scalarB}; }
      Bs[c * ${BN4}u + j / 4u][j % 4u] = x;`,
    );
  } else if (v.vecB) { // B stored [n, k]: a vec4 holds 4 depths of one column; store transposed
    loadB = loads(
      BK * BN / 4,
      `
      let j = idx / ${BK / 4}u; let c = (idx % ${BK / 4}u) * 4u;
      let col = n0 + j; let depth = k0 + c;
      var x = vec4<f32>(0.0);
      if (col < P.n && depth < P.k) { let i = b_base + (col * P.k + depth) / 4u; x = ${vectorB}; }
      for (var e = 0u; e < 4u; e++) { Bs[(c + e) * ${BN4}u + j / 4u][j % 4u] = x[e]; }`,
    );
  } else {
    loadB = loads(
      BK * BN,
      `
      let j = idx / ${BK}u; let c = idx % ${BK}u;
      let col = n0 + j; let depth = k0 + c;
      var x = 0.0;
      if (col < P.n && depth < P.k) { let i = b_base + col * P.k + depth; x = ${scalarB}; }
      Bs[c * ${BN4}u + j / 4u][j % 4u] = x;`,
    );
  }

  // One depth of the k step: TM/4 vec4s of A and TN/4 of B, then TM·TN/4 vec4 FMAs, written out
  // unrolled; the BK depths are a constant-trip loop, which GPU compilers unroll (and which keeps
  // the shader small enough for software adapters to compile in reasonable time).
  const step: string[] = [];
  for (let g = 0; g < TM / 4; g++) step.push(`a${g} = As[kk * ${BM4}u + ${g * WM}u + ty];`);
  for (let h = 0; h < TN / 4; h++) step.push(`b${h} = Bs[kk * ${BN4}u + ${h * WN}u + tx];`);
  for (let g = 0; g < TM / 4; g++) {
    for (let e = 0; e < 4; e++) {
      for (let h = 0; h < TN / 4; h++) {
        const acc = `acc[${(g * 4 + e) * (TN / 4) + h}]`;
        step.push(`${acc} = fma(vec4<f32>(a${g}[${e}]), b${h}, ${acc});`);
      }
    }
  }
  const stores: string[] = [];
  for (let g = 0; g < TM / 4; g++) {
    for (let e = 0; e < 4; e++) {
      for (let h = 0; h < TN / 4; h++) {
        stores.push(
          `store(m0 + ${g * WM * 4 + e}u + ty * 4u, n0 + ${h * WN * 4}u + tx * 4u, out_base, ` +
            `acc[${(g * 4 + e) * (TN / 4) + h}]);`,
        );
      }
    }
  }
  const vecName = (vec: boolean, type: string) => (vec ? `vec4<${type}>` : type) as "f32";
  return {
    name,
    tensors: [["out", "f32"], ["a", vecName(v.vecA, v.typeA)], ["b", vecName(v.vecB, v.typeB)], [
      "bias",
      "f32",
    ]],
    params: [
      ["m", "u32"],
      ["n", "u32"],
      ["k", "u32"],
      ["stride_a", "u32"],
      ["stride_b", "u32"],
      ["stride_out", "u32"],
      ["has_bias", "u32"],
      ["accumulate", "u32"],
    ],
    sizes: ({ n, has_bias }) => ({ bias: has_bias ? n : 0 }),
    code: `
var<workgroup> As: array<vec4<f32>, ${BK * BM4}>;
var<workgroup> Bs: array<vec4<f32>, ${BK * BN4}>;

fn store(row: u32, col: u32, out_base: u32, value: vec4<f32>) {
  if (row >= P.m) { return; }
  for (var c = 0u; c < 4u; c++) {
    if (col + c < P.n) {
      let i = out_base + row * P.n + col + c;
      var x = value[c];
      if (P.has_bias != 0u) { x += bias[P.bias + col + c]; }
      if (P.accumulate != 0u) { x += out[i]; }
      out[i] = x;
    }
  }
}

@compute @workgroup_size(${THREADS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let tx = lid % ${WN}u;
  let ty = lid / ${WN}u;
  let m0 = wid.y * ${BM}u;
  let n0 = wid.x * ${BN}u;
  // Offsets of this batch entry, in elements (or vec4s for vec4 operands).
  let a_base = P.a + wid.z * P.stride_a;
  let b_base = P.b + wid.z * P.stride_b;
  let out_base = P.out + wid.z * P.stride_out;
  var acc: array<vec4<f32>, ${TM * TN / 4}>;
  ${Array.from({ length: TM / 4 }, (_, g) => `var a${g}: vec4<f32>;`).join(" ")}
  ${Array.from({ length: TN / 4 }, (_, h) => `var b${h}: vec4<f32>;`).join(" ")}
  for (var k0 = 0u; k0 < P.k; k0 += ${BK}u) {
    ${loadA}
    ${loadB}
    workgroupBarrier();
    for (var kk = 0u; kk < ${BK}u; kk++) {
      ${step.join("\n      ")}
    }
    workgroupBarrier();
  }
  ${stores.join("\n  ")}
}`,
  };
});

/**
 * Records `out (+)= op(a) · op(b) (+ bias)` ({@linkcode Backend.matmul}) with the tile shape `tile`
 * picks for its shape class.
 */
export function recordMatmul(
  gpu: Recorder,
  out: Tensor,
  a: Tensor,
  b: Tensor,
  o: MatmulOptions,
  tile: (shape: TuneShape) => MatmulTile,
): void {
  const { m, n, k } = o;
  const batch = o.batch ?? { count: 1, strideA: 0, strideB: 0, strideOut: 0 };
  checkTensor("matmul", "out", out, (batch.count - 1) * batch.strideOut + m * n);
  checkTensor("matmul", "a", a, (batch.count - 1) * batch.strideA + m * k, a.dtype);
  checkTensor("matmul", "b", b, (batch.count - 1) * batch.strideB + k * n, b.dtype);
  if (a.dtype === "u32" || b.dtype === "u32") throw new Error("matmul: operands must be f32 or f16");
  // vec4 loads need the operand's contiguous dimension, offset and batch stride in multiples of 4.
  const vecA = a.offset % 4 === 0 && (o.transA ? m : k) % 4 === 0 && batch.strideA % 4 === 0;
  const vecB = b.offset % 4 === 0 && (o.transB ? k : n) % 4 === 0 && batch.strideB % 4 === 0;
  const shape: TuneShape = {
    m,
    n,
    k,
    batch: batch.count,
    transA: o.transA === true,
    transB: o.transB === true,
    typeA: a.dtype as "f32" | "f16",
    typeB: b.dtype as "f32" | "f16",
  };
  const tiles = TILE_CANDIDATES[tile(shape)];
  const kernel = matmulKernel({
    ...tiles,
    transA: o.transA === true,
    transB: o.transB === true,
    vecA,
    vecB,
    typeA: a.dtype as "f32" | "f16",
    typeB: b.dtype as "f32" | "f16",
  });
  gpu.run(
    kernel,
    { out, a, b, bias: o.bias ?? gpu.none("f32") },
    {
      m,
      n,
      k,
      stride_a: vecA ? batch.strideA / 4 : batch.strideA,
      stride_b: vecB ? batch.strideB / 4 : batch.strideB,
      stride_out: batch.strideOut,
      has_bias: o.bias ? 1 : 0,
      accumulate: o.accumulate ? 1 : 0,
    },
    [Math.ceil(n / tiles.BN), Math.ceil(m / tiles.BM), batch.count],
  );
}
