/** Shapes and a runner shared by the autotuning tests (quick: ../kernels_autotune_test.ts; slow: slow/). */
import type { MatmulOptions } from "../kernels/backend.ts";
import type { WebGpuBackend } from "../kernels/webgpu.ts";
import { randomFloats, rng } from "./kernels_fixtures.ts";

/**
 * The tiles the quick test checks, and the shapes: the 8×8-per-thread tiles (large, deep) take minutes to
 * compile on llvmpipe, so the full cross product runs under `deno task test:slow`
 * (tests/slow/kernels_autotune_slow_test.ts).
 */
export const QUICK_TILES = ["medium", "skinny", "wide", "tall"] as const;

/** Runs one matmul on `backend` over fresh random operands from `seed`; returns the output's bits. */
export async function product(
  backend: WebGpuBackend,
  o: MatmulOptions & { withBias?: boolean },
  seed: number,
) {
  const random = rng(seed), count = o.batch?.count ?? 1;
  const upload = (n: number) => {
    const t = backend.alloc(n);
    backend.upload(t, randomFloats(random, n));
    return t;
  };
  const a = upload(count * o.m * o.k), b = upload(count * o.k * o.n), out = upload(count * o.m * o.n);
  backend.matmul(out, a, b, { ...o, bias: o.withBias ? upload(o.n) : undefined });
  const [result] = await backend.download(out);
  return new Uint32Array(result.buffer);
}

export const SHAPES: [string, MatmulOptions & { withBias?: boolean }][] = [
  ["ragged, bias", { m: 37, n: 70, k: 45, withBias: true }],
  ["transA, accumulate", { m: 64, n: 36, k: 80, transA: true, accumulate: true }],
  ["transB", { m: 130, n: 66, k: 64, transB: true }],
  ["batched", {
    m: 16,
    n: 20,
    k: 24,
    batch: { count: 3, strideA: 16 * 24, strideB: 24 * 20, strideOut: 16 * 20 },
  }],
];
