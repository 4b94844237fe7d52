/** Shared helpers of the kernel tests: a seeded PRNG, tolerance checks, finite differences. */
import { AssertionError } from "node:assert";
import type { Backend } from "../kernels/backend.ts";
import { createBackend } from "../kernels/device.ts";

/** mulberry32, so every run draws the same "random" inputs. */
export { mulberry32 as rng } from "../model/rng.ts";

/** `n` uniform floats in [-scale, scale). */
export function randomFloats(random: () => number, n: number, scale = 1): Float32Array {
  return Float32Array.from({ length: n }, () => (2 * random() - 1) * scale);
}

/** `n` integers in [0, max). */
export function randomInts(random: () => number, n: number, max: number): Uint32Array {
  return Uint32Array.from({ length: n }, () => Math.floor(random() * max));
}

/**
 * Asserts |actual - expected| ≤ atol + rtol·|expected| everywhere. NaN never passes (an element the
 * kernel did not write stays NaN from the poisoning).
 */
export function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  what: string,
  rtol = 1e-5,
  atol = 1e-6,
): void {
  if (actual.length !== expected.length) {
    throw new AssertionError({ message: `${what}: length ${actual.length}, expected ${expected.length}` });
  }
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i], e = expected[i];
    if (!(Math.abs(a - e) <= atol + rtol * Math.abs(e))) {
      throw new AssertionError({
        message: `${what}[${i}] = ${a}, expected ${e} (rtol ${rtol}, atol ${atol})`,
      });
    }
  }
}

/** Largest |a − b| over the largest |b|: a relative error that tiny elements cannot blow up. */
export function relativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let diff = 0, scale = 0;
  for (let i = 0; i < b.length; i++) {
    diff = Math.max(diff, Math.abs(a[i] - b[i]));
    scale = Math.max(scale, Math.abs(b[i]));
  }
  return diff / scale;
}

/** Central difference of `loss` with respect to `x[i]` (x is changed and restored). */
export function finiteDifference(
  loss: () => number,
  x: { [i: number]: number },
  i: number,
  h = 1e-6,
): number {
  const saved = x[i];
  x[i] = saved + h;
  const plus = loss();
  x[i] = saved - h;
  const minus = loss();
  x[i] = saved;
  return (plus - minus) / (2 * h);
}

/** The WebGPU backend for tests, or why there is none (those tests then skip, saying so). */
export async function webgpuForTests(): Promise<Backend | string> {
  if (Deno.env.get("KILN_BACKEND") === "cpu") return "KILN_BACKEND=cpu";
  const adapter = await navigator.gpu?.requestAdapter();
  if (!adapter) return "no WebGPU adapter (install Mesa's llvmpipe to run them without a GPU)";
  return await createBackend({ backend: "webgpu", log: () => {} });
}
