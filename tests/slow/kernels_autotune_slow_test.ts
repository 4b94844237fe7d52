/**
 * Every matmul tile the autotuner may pick gives bit-identical results, on every layout: the full
 * cross product of tests/kernels_autotune_test.ts (the 8×8-per-thread tiles compile for minutes on
 * llvmpipe). Runs under `deno task test:slow` (KILN_SLOW=1); skipped without a WebGPU adapter.
 */
import { deepStrictEqual } from "node:assert";
import { createWebGpuBackend, type WebGpuBackend } from "../../kernels/webgpu.ts";
import { TILE_CANDIDATES } from "../../kernels/wgsl/matmul.ts";
import { webgpuForTests } from "../kernels_fixtures.ts";
import { product, SHAPES } from "../kernels_autotune_fixtures.ts";

const found = Deno.env.get("KILN_SLOW") === "1" ? await webgpuForTests() : "KILN_SLOW is not 1";
const gpu = typeof found === "string" ? null : found as WebGpuBackend;

Deno.test({
  name: "autotune: every candidate tile gives bit-identical results on every layout",
  ignore: gpu === null,
  async fn() {
    for (const [name, opts] of SHAPES) {
      const results = [];
      for (const tile of Object.keys(TILE_CANDIDATES) as (keyof typeof TILE_CANDIDATES)[]) {
        const backend = createWebGpuBackend(gpu!.device, gpu!.description, { matmulTile: tile });
        results.push({ tile, bits: await product(backend, opts, 7) });
      }
      for (const r of results) {
        deepStrictEqual(r.bits, results[0].bits, `${name}: ${r.tile} differs from ${results[0].tile}`);
      }
    }
  },
});
