// The CPU backend's WebAssembly SIMD matmul against the float64 reference, on fresh random inputs.
import { strict as assert } from "node:assert";
import type { MatmulOptions } from "../kernels/backend.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import { simdSharedProducts } from "../kernels/cpu_matmul.ts";
import { kernelModule } from "../kernels/cpu_simd.ts";

/** Uniform values in [-1, 1) from a fresh seed each run (printed, so a failure can be replayed). */
const seed = Number(Deno.env.get("KILN_TEST_SEED") ?? Math.floor(Math.random() * 2 ** 31));
let state = seed;
function random(): number {
  state = (Math.imul(state, 1664525) + 1013904223) >>> 0;
  return state / 2 ** 31 - 1;
}

const reference = createCpuBackend({ precision: "f64" });

/** A matmul's shape; `bias: true` adds a random bias. */
type Shape = Omit<MatmulOptions, "bias"> & { bias?: boolean };

/** The SIMD result and the float64 reference of one matmul on the same random operands. */
function compare(opts: Shape, threads: number, dtype: "f32" | "f16" = "f32") {
  const simd = createCpuBackend({ threads });
  const { m, n, k } = opts, count = opts.batch?.count ?? 1;
  const a = Float32Array.from({ length: count * m * k }, random);
  const b = Float32Array.from({ length: count * k * n }, random);
  const bias = Float32Array.from({ length: n }, random);
  const start = Float32Array.from({ length: count * m * n }, random);
  const run = (backend: typeof simd) => {
    const t = (data: Float32Array, type: "f32" | "f16" = "f32") => {
      const x = backend.alloc(data.length, type);
      backend.upload(x, data);
      return x;
    };
    const out = t(start);
    backend.matmul(out, t(a, dtype), t(b, dtype), { ...opts, bias: opts.bias ? t(bias) : undefined });
    return Float64Array.from(backend.array(out));
  };
  return { fast: run(simd), exact: run(reference) };
}

/**
 * Operands are uniform in [-1, 1), so an output's terms have magnitude ~√k: float32 sums of k terms
 * stay within ~k·2⁻²⁴ relative to √k + |exact| (a fixed-order sum's worst case, far above the
 * typical error).
 */
function assertClose(fast: Float64Array, exact: Float64Array, k: number, what: string) {
  let worst = 0;
  for (let i = 0; i < exact.length; i++) {
    worst = Math.max(worst, Math.abs(fast[i] - exact[i]) / (Math.sqrt(k) + Math.abs(exact[i])));
  }
  assert.ok(worst < k * 2 ** -24, `${what}: relative error ${worst} over k = ${k} (seed ${seed})`);
  assert.ok(fast.every(Number.isFinite), `${what}: non-finite output (seed ${seed})`);
}

const shapes: [string, Shape][] = [
  ["plain, ragged edges", { m: 37, n: 29, k: 53 }],
  ["bias", { m: 64, n: 72, k: 40, bias: true }],
  ["transA (weight gradient), accumulate", { m: 24, n: 40, k: 75, transA: true, accumulate: true }],
  ["transB (input gradient, tied head), bias", { m: 33, n: 50, k: 48, transB: true, bias: true }],
  ["one row (decode)", { m: 1, n: 70, k: 96, transB: true }],
  ["batched", {
    m: 9,
    n: 13,
    k: 16,
    batch: { count: 3, strideA: 9 * 16, strideB: 16 * 13, strideOut: 9 * 13 },
  }],
  ["k over several 256-term blocks", { m: 21, n: 30, k: 600, transB: true, accumulate: true, bias: true }],
  ["k over several blocks, B as stored", { m: 10, n: 17, k: 520 }],
  ["big enough to share across threads", { m: 96, n: 200, k: 128, bias: true }],
];

for (const [name, opts] of shapes) {
  Deno.test(`simd matmul: ${name} matches the float64 reference within float32 rounding`, () => {
    for (const threads of [1, 2]) {
      const { fast, exact } = compare(opts, threads);
      assertClose(fast, exact, opts.k, `${name}, ${threads} thread(s)`);
    }
  });
}

Deno.test("simd matmul: f16 operands (mixed precision) match the reference on the same f16 values", () => {
  const { fast, exact } = compare({ m: 20, n: 24, k: 64, transB: true }, 1, "f16");
  assertClose(fast, exact, 64, "f16");
});

Deno.test("simd matmul: bit-identical run to run and whatever the thread count", async () => {
  const opts: MatmulOptions = { m: 128, n: 256, k: 192 }; // 12.6 MFLOP: shared once workers are up
  const results: Float32Array[] = [];
  const sharedBefore = simdSharedProducts();
  for (const threads of [1, 2, 2, 3]) {
    const backend = createCpuBackend({ threads });
    state = seed;
    const a = backend.alloc(opts.m * opts.k),
      b = backend.alloc(opts.k * opts.n),
      out = backend.alloc(opts.m * opts.n);
    backend.upload(a, Float32Array.from({ length: a.length }, random));
    backend.upload(b, Float32Array.from({ length: b.length }, random));
    for (let i = 0; i < 3; i++) {
      backend.matmul(out, a, b, opts);
      results.push(Float32Array.from(backend.array(out)));
      // Workers start on the first shared product and serve once ready: give them the time to.
      for (let wait = 0; wait < 40 && simdSharedProducts() === sharedBefore && threads > 1; wait++) {
        await new Promise((resolve) => setTimeout(resolve, 50));
        backend.matmul(out, a, b, opts);
        results.push(Float32Array.from(backend.array(out)));
      }
    }
  }
  assert.ok(simdSharedProducts() > sharedBefore, "no product was shared with a worker thread");
  for (const r of results) assert.deepEqual(r, results[0]);
});

Deno.test("simd matmul: it is the default for f32 storage, and the reference stays selectable", () => {
  assert.match(createCpuBackend().description, /SIMD/);
  assert.doesNotMatch(createCpuBackend({ matmul: "reference" }).description, /SIMD/);
  assert.doesNotMatch(createCpuBackend({ precision: "f64" }).description, /SIMD/);
});

/** max |fast - exact| / (1 + max |exact|) over a buffer. */
function relativeToMax(fast: ArrayLike<number>, exact: ArrayLike<number>): number {
  let worst = 0, scale = 0;
  for (let i = 0; i < exact.length; i++) scale = Math.max(scale, Math.abs(exact[i]));
  for (let i = 0; i < exact.length; i++) worst = Math.max(worst, Math.abs(fast[i] - exact[i]));
  return worst / (1 + scale);
}

for (const segmented of [false, true]) {
  const name = `simd attention${segmented ? " with segment ids" : ""}`;
  Deno.test(`${name}: forward, lse and backward match the reference`, () => {
    const B = 2, T = 19, C = 24, NH = 3;
    const qkv = Float32Array.from({ length: B * T * 3 * C }, () => 2 * random());
    const dout = Float32Array.from({ length: B * T * C }, random);
    const segments = Uint32Array.from({ length: B * T }, (_, i) => Math.floor((i % T) / 7));
    const run = (backend: ReturnType<typeof createCpuBackend>) => {
      const t = (data: Float32Array | Uint32Array, dtype: "f32" | "u32" = "f32") => {
        const x = backend.alloc(data.length, dtype);
        backend.upload(x, data);
        return x;
      };
      const opts = { B, T, C, NH, segments: segmented ? t(segments, "u32") : undefined };
      const out = backend.alloc(B * T * C),
        lse = backend.alloc(B * NH * T),
        dqkv = backend.alloc(B * T * 3 * C);
      const q = t(qkv);
      backend.attentionForward(out, lse, q, opts);
      backend.attentionBackward(dqkv, t(dout), q, out, lse, opts);
      return [out, lse, dqkv].map((x) => Float64Array.from(backend.array(x)));
    };
    const fast = run(createCpuBackend({ threads: 2 })), exact = run(reference);
    ["out", "lse", "dqkv"].forEach((name, i) => {
      const err = relativeToMax(fast[i], exact[i]);
      assert.ok(err < 1e-5, `${name}: relative error ${err} (seed ${seed})`);
    });
  });
}

Deno.test("simd kernels: both builds validate (fused multiply-add, and mul + add without relaxed SIMD)", () => {
  for (const fused of [true, false]) {
    const module = new WebAssembly.Module(kernelModule(16, fused));
    const names = WebAssembly.Module.exports(module).map((e) => e.name).sort();
    assert.deepEqual(names, ["gemm", "packPanels"]);
  }
});
