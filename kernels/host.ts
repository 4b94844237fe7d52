/**
 * Host-side helpers shared by both backends: the token buckets of the embedding backward and the
 * counter-based RNG of sampling (the WGSL kernels compute the same integers).
 * @module
 */

/**
 * Positions grouped by token, for the deterministic embedding backward: `dwte[token]` becomes one
 * thread's sum over that token's positions, in increasing position order.
 *
 * Layout of `data` (u32): `[token_0 .. token_{n-1}, start_0 .. start_n, positions...]`, where bucket
 * `i` holds the positions `positions[start_i .. start_{i+1})`.
 */
export interface TokenBuckets {
  /** Number of distinct tokens. */
  count: number;
  data: Uint32Array;
}

/**
 * Buckets the positions of `tokens` by token value.
 *
 * @example
 * ```ts
 * import { tokenBuckets } from "./host.ts";
 * const { count, data } = tokenBuckets(new Uint32Array([7, 3, 7]));
 * // count 2: token 3 at [1], token 7 at [0, 2]  ->  data [3, 7, 0, 1, 3, 1, 0, 2]
 * ```
 */
export function tokenBuckets(tokens: Uint32Array): TokenBuckets {
  const positions = new Uint32Array(tokens.length);
  for (let i = 0; i < positions.length; i++) positions[i] = i;
  // Sort by token, then position: within a bucket positions stay increasing (a fixed sum order).
  positions.sort((a, b) => tokens[a] - tokens[b] || a - b);
  const distinct: number[] = [];
  const starts: number[] = [];
  for (let i = 0; i < positions.length; i++) {
    const token = tokens[positions[i]];
    if (i === 0 || token !== distinct[distinct.length - 1]) {
      distinct.push(token);
      starts.push(i);
    }
  }
  starts.push(positions.length);
  const count = distinct.length;
  const data = new Uint32Array(count + count + 1 + positions.length);
  data.set(distinct, 0);
  data.set(starts, count);
  data.set(positions, 2 * count + 1);
  return { count, data };
}

/** PCG hash (O'Neill's permuted congruential step): a good 32-bit mix, cheap in WGSL. */
export function pcgHash(x: number): number {
  const state = (Math.imul(x >>> 0, 747796405) + 2891336453) >>> 0;
  const word = Math.imul(((state >>> ((state >>> 28) + 4)) ^ state) >>> 0, 277803737) >>> 0;
  return ((word >>> 22) ^ word) >>> 0;
}

/** The uniform draw in [0, 1) for one sampled row: a hash of (seed, row, step), 24 bits. */
export function uniformDraw(seed: number, row: number, step: number): number {
  const h = pcgHash(pcgHash(pcgHash(seed >>> 0) ^ row) ^ step);
  return (h >>> 8) / 16777216;
}
