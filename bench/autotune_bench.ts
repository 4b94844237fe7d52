/**
 * The matmul autotuner's picks on this machine's adapter: the matmul shapes of a GPT training step
 * (forward, input and weight gradients of qkv, fc, fc proj, and the tied head), every candidate timed.
 *
 *   deno run -A bench/autotune_bench.ts               # GPT-2 124M shapes at B8×T1024 on a GPU
 *   deno run -A bench/autotune_bench.ts --small       # 2 layers × 64, B4×T32 shapes (llvmpipe)
 *   deno run -A bench/autotune_bench.ts --small --quick   # only the 4×4 / 4×8 tiles (fast compiles)
 *
 * Nothing is cached (the user's tuning cache is left alone). No npm imports: runs on an offline GPU.
 * @module
 */
import type { MatmulOptions } from "../kernels/backend.ts";
import { createBackend } from "../kernels/device.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../kernels/webgpu.ts";
import { type MatmulTile, TILE_CANDIDATES } from "../kernels/wgsl/matmul.ts";

const small = Deno.args.includes("--small"), quick = Deno.args.includes("--quick");
const [BT, C, V] = small ? [128, 64, 256] : [8192, 768, 50304];
const shapes: [string, MatmulOptions][] = [
  ["qkv", { m: BT, n: 3 * C, k: C }],
  ["qkv dinp", { m: BT, n: C, k: 3 * C, transB: true }],
  ["qkv dW", { m: C, n: 3 * C, k: BT, transA: true }],
  ["fc", { m: BT, n: 4 * C, k: C }],
  ["fc proj", { m: BT, n: C, k: 4 * C }],
  ["lm head", { m: BT, n: V, k: C, transB: true }],
  ["lm head dW", { m: V, n: C, k: BT, transA: true }],
];

const found = await createBackend({ backend: "webgpu", log: () => {} }) as WebGpuBackend;
const candidates =
  (quick ? ["medium", "skinny", "wide", "tall"] : Object.keys(TILE_CANDIDATES)) as MatmulTile[];
const gpu = createWebGpuBackend(found.device, found.description, {
  autotune: { cacheFile: null, candidates },
});
console.log(`# matmul autotuning on ${gpu.description}: ${candidates.join(", ")}`);
for (const [name, o] of shapes) {
  gpu.matmul(gpu.alloc(o.m * o.n), gpu.alloc(o.m * o.k), gpu.alloc(o.k * o.n), o);
  for (const r of await gpu.tuneMatmuls()) {
    const times = Object.entries(r.ms).map(([tile, ms]) => `${tile} ${ms.toFixed(3)}`).join(", ");
    console.log(`${name} ${o.m}×${o.n}×${o.k} (${r.shapeClass}): ${r.chosen}  [ms: ${times}]`);
  }
}
gpu.destroy();
