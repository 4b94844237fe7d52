/**
 * `attentionDecode` (single-query attention against a `[B, Tmax, 3C]` key/value cache): the CPU
 * reference equals the last row of the full causal `attentionForward` over each sequence's prefix
 * (all of length T, or per-row `lengths`); the WebGPU kernel equals the CPU (NaN-poisoned outputs at
 * an unaligned view, bit-identical twice). With `append`, the new rows are written into the cache first.
 * WebGPU cases are skipped, with a message, without an adapter or with `KILN_BACKEND=cpu`.
 */
import { deepStrictEqual, throws } from "node:assert";
import type { AttentionDecodeOptions, Backend } from "../kernels/backend.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import { assertClose, randomFloats, rng, webgpuForTests } from "./kernels_fixtures.ts";

const found = await webgpuForTests();
const gpu = typeof found === "string" ? null : found;
if (typeof found === "string") console.warn(`skipping the WebGPU decode tests: ${found}`);
const cpu = createCpuBackend();

interface Shape {
  B: number;
  T: number;
  Tmax: number;
  C: number;
  NH: number;
  /** Per-row cached lengths (the `lengths` option), each ≤ T. */
  lengths?: number[];
}

// Odd lengths (one key, a partial chunk of 64, several chunks), odd head sizes (5, 3) and one
// above the 64 threads of a workgroup (72: a thread owns two value dimensions).
const SHAPES: Shape[] = [
  { B: 1, T: 1, Tmax: 4, C: 15, NH: 3 },
  { B: 3, T: 7, Tmax: 9, C: 15, NH: 3 },
  { B: 2, T: 67, Tmax: 67, C: 9, NH: 3 },
  { B: 2, T: 131, Tmax: 140, C: 144, NH: 2 },
  // Prompts of different lengths in one batch: one key, a partial chunk, T itself, past a chunk.
  { B: 4, T: 70, Tmax: 72, C: 15, NH: 3, lengths: [1, 37, 70, 65] },
];

function cache(shape: Shape, seed: number): Float32Array {
  return randomFloats(rng(seed), shape.B * shape.Tmax * 3 * shape.C, 2);
}

/** `attentionDecode` on a backend, the output a view at an odd offset poisoned with NaN. */
async function decode(bk: Backend, shape: Shape, data: Float32Array): Promise<Float32Array> {
  const { B, C } = shape, pad = 3;
  const qkv = bk.view(bk.alloc(data.length + 2 * pad), pad, data.length);
  bk.upload(qkv, data);
  const out = bk.view(bk.alloc(B * C + 2 * pad), pad, B * C);
  bk.fill(out, NaN);
  let lengths;
  if (shape.lengths) {
    lengths = bk.view(bk.alloc(B + 1, "u32"), 1, B);
    bk.upload(lengths, shape.lengths);
  }
  bk.attentionDecode(out, qkv, { ...shape, lengths });
  const [result] = await bk.download(out);
  return result as Float32Array; // an f32 tensor downloads as Float32Array
}

for (const shape of SHAPES) {
  const { B, T, Tmax, C, NH } = shape;
  const label = `B${B} T${T} Tmax${Tmax} C${C} NH${NH}${shape.lengths ? ` lengths ${shape.lengths}` : ""}`;

  Deno.test(`cpu: attentionDecode equals the last row of attentionForward (${label})`, async () => {
    const data = cache(shape, T * 31 + C);
    const actual = await decode(cpu, shape, data);
    const expected = new Float32Array(B * C);
    for (let b = 0; b < B; b++) {
      const L = shape.lengths?.[b] ?? T;
      const prefix = cpu.alloc(L * 3 * C);
      cpu.upload(prefix, data.subarray(b * Tmax * 3 * C, (b * Tmax + L) * 3 * C));
      const out = cpu.alloc(L * C), lse = cpu.alloc(NH * L);
      cpu.attentionForward(out, lse, prefix, { B: 1, T: L, C, NH });
      const [full] = await cpu.download(out);
      expected.set(full.subarray((L - 1) * C, L * C), b * C);
    }
    assertClose(actual, expected, "out", 1e-5, 1e-6);
  });

  Deno.test({
    name: `webgpu: attentionDecode equals the CPU, deterministically (${label})`,
    ignore: gpu === null,
    sanitizeResources: false,
    sanitizeOps: false,
    fn: async () => {
      const data = cache(shape, T * 17 + C);
      const expected = await decode(cpu, shape, data);
      const actual = await decode(gpu!, shape, data);
      const again = await decode(gpu!, shape, data);
      assertClose(actual, expected, "out", 1e-4, 1e-5);
      deepStrictEqual(new Uint32Array(again.buffer), new Uint32Array(actual.buffer), "deterministic");
    },
  });
}

Deno.test("cpu: attentionDecode rejects bad shapes with a message naming the problem", () => {
  const qkv = cpu.alloc(2 * 4 * 24);
  const bad = (opts: AttentionDecodeOptions, pattern: RegExp, out = cpu.alloc(16)) =>
    throws(() => cpu.attentionDecode(out, qkv, opts), pattern);
  bad({ C: 8, NH: 3, T: 2 }, /multiple of NH/);
  bad({ C: 8, NH: 2, T: 5, Tmax: 4 }, /T \(5\) must be an integer in 1\.\.Tmax \(4\)/);
  bad({ C: 8, NH: 2, T: 0 }, /T \(0\)/);
  bad({ B: 2, C: 8, NH: 2, T: 4, Tmax: 5 }, /qkv has 192 elements, needs 216/);
  bad({ B: 2, C: 8, NH: 2, T: 2, Tmax: 2 }, /out has 8 elements, needs 16/, cpu.alloc(8));
  const lengths = (data: number[]) => {
    const t = cpu.alloc(data.length, "u32");
    cpu.upload(t, data);
    return t;
  };
  bad({ B: 2, C: 8, NH: 2, T: 4, lengths: lengths([4]) }, /lengths has 1 elements, needs 2/);
  bad(
    { B: 2, C: 8, NH: 2, T: 3, Tmax: 4, lengths: lengths([3, 4]) },
    /lengths\[1\] = 4 is outside 1\.\.T \(3\)/,
  );
  bad({ B: 2, C: 8, NH: 2, T: 4, lengths: lengths([0, 4]) }, /lengths\[0\] = 0/);
});

/** `attentionDecode` with `append` (views at odd offsets): the output and the whole cache after it. */
async function decodeAppending(bk: Backend, append: boolean): Promise<[Float32Array, Float32Array]> {
  const r = rng(29), B = 3, T = 70, Tmax = 72, C = 15, NH = 3, lengths = [1, 37, 70], pad = 1;
  const view = (n: number, dtype: "f32" | "u32" = "f32") => bk.view(bk.alloc(n + 2 * pad, dtype), pad, n);
  const cache = view(B * Tmax * 3 * C), fresh = view(B * 3 * C), out = view(B * C), lens = view(B, "u32");
  const data = randomFloats(r, B * Tmax * 3 * C, 2), rows = randomFloats(r, B * 3 * C, 2);
  if (!append) {
    lengths.forEach((L, b) =>
      data.set(rows.subarray(b * 3 * C, (b + 1) * 3 * C), (b * Tmax + L - 1) * 3 * C)
    );
  }
  bk.upload(cache, data);
  bk.upload(fresh, rows);
  bk.upload(lens, lengths);
  bk.fill(out, NaN);
  bk.attentionDecode(out, cache, { B, T, Tmax, C, NH, lengths: lens, append: append ? fresh : undefined });
  return await bk.download(out, cache) as [Float32Array, Float32Array];
}

Deno.test("cpu: attentionDecode with append equals writing the rows into the cache first", async () => {
  deepStrictEqual(await decodeAppending(cpu, true), await decodeAppending(cpu, false));
});

Deno.test({
  name: "webgpu: attentionDecode with append equals the CPU (cache bit-exact), deterministically",
  ignore: gpu === null,
  sanitizeResources: false,
  sanitizeOps: false,
  fn: async () => {
    const [out, cache] = await decodeAppending(gpu!, true),
      [expected, expectedCache] = await decodeAppending(cpu, true);
    assertClose(out, expected, "out", 1e-4, 1e-5);
    deepStrictEqual(cache, expectedCache, "cache");
    deepStrictEqual(
      new Uint32Array((await decodeAppending(gpu!, true))[0].buffer),
      new Uint32Array(out.buffer),
    );
  },
});
