/**
 * Matmul autotuning on the adapter at hand (llvmpipe without a GPU): every candidate tile gives
 * bit-identical results, tuning times the candidates once per shape class and caches the choice per
 * adapter, and `KILN_AUTOTUNE=0` turns it off. Skipped, with a message, where there is no adapter.
 */
import { deepStrictEqual, ok, strictEqual } from "node:assert";
import { createWebGpuBackend, type WebGpuBackend } from "../kernels/webgpu.ts";
import { webgpuForTests } from "./kernels_fixtures.ts";
import { product, QUICK_TILES, SHAPES } from "./kernels_autotune_fixtures.ts";

const found = await webgpuForTests();
const gpu = typeof found === "string" ? null : found as WebGpuBackend;
if (typeof found === "string") console.warn(`skipping the autotuning tests: ${found}`);
const ignore = gpu === null;

Deno.test({
  name: "autotune: candidate tiles give bit-identical matmul results (4×4 and 4×8 per thread)",
  ignore,
  async fn() {
    for (const [name, opts] of SHAPES.slice(0, 2)) {
      const results = [];
      for (const tile of QUICK_TILES) {
        const backend = createWebGpuBackend(gpu!.device, gpu!.description, { matmulTile: tile });
        results.push({ tile, bits: await product(backend, opts, 7) });
      }
      for (const r of results) {
        deepStrictEqual(r.bits, results[0].bits, `${name}: ${r.tile} differs from ${results[0].tile}`);
      }
    }
  },
});

Deno.test({
  name: "autotune: times each candidate once per shape class, caches the choice per adapter",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    const cacheFile = `${dir}/kiln/matmul-tuning.json`;
    try {
      const first = createWebGpuBackend(gpu!.device, gpu!.description, {
        autotune: { cacheFile, candidates: [...QUICK_TILES] },
      });
      const opts = { m: 48, n: 40, k: 32 };
      const before = await product(createWebGpuBackend(gpu!.device, gpu!.description), opts, 3);
      first.matmul(first.alloc(48 * 40), first.alloc(48 * 32), first.alloc(32 * 40), opts);
      const results = await first.tuneMatmuls();
      strictEqual(results.length, 1);
      deepStrictEqual(Object.keys(results[0].ms).sort(), [...QUICK_TILES].sort());
      ok(Object.values(results[0].ms).every((ms) => ms > 0 && Number.isFinite(ms)), "every candidate timed");
      const cached = JSON.parse(await Deno.readTextFile(cacheFile));
      const [adapter] = Object.keys(cached.adapters);
      ok(adapter.includes(gpu!.description), `cache keyed by the adapter: ${adapter}`);
      strictEqual(cached.adapters[adapter][results[0].shapeClass], results[0].chosen);
      // The tuned backend computes the same bits as an untuned one.
      deepStrictEqual(await product(first, opts, 3), before);

      // A new backend (a new process, in effect) reads the choice: nothing left to tune.
      const second = createWebGpuBackend(gpu!.device, gpu!.description, {
        autotune: { cacheFile, candidates: [...QUICK_TILES] },
      });
      second.matmul(second.alloc(48 * 40), second.alloc(48 * 32), second.alloc(32 * 40), opts);
      deepStrictEqual(await second.tuneMatmuls(), []);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "autotune: KILN_AUTOTUNE=0 turns it off",
  ignore,
  async fn() {
    const dir = await Deno.makeTempDir();
    Deno.env.set("KILN_AUTOTUNE", "0");
    try {
      const backend = createWebGpuBackend(gpu!.device, gpu!.description, {
        autotune: { cacheFile: `${dir}/tuning.json` },
      });
      backend.matmul(backend.alloc(64), backend.alloc(64), backend.alloc(64), { m: 8, n: 8, k: 8 });
      deepStrictEqual(await backend.tuneMatmuls(), []);
      deepStrictEqual([...Deno.readDirSync(dir)], []);
    } finally {
      Deno.env.delete("KILN_AUTOTUNE");
      await Deno.remove(dir, { recursive: true });
    }
  },
});
