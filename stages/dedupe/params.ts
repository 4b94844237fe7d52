/**
 * Choosing the LSH band layout. With `b` bands of `r` rows, a pair of Jaccard similarity `s` becomes a
 * candidate with probability `1 − (1 − s^r)^b`, an S-curve whose midpoint is near `(1/b)^(1/r)`.
 * Given a threshold, {@linkcode bandLayout} picks the `(b, r)` with `b·r ≤ hashes` that minimises the
 * area of false positives below the threshold plus false negatives above it (datasketch's rule).
 * @module
 */
import { candidateProbability } from "./minhash.ts";

function integrate(f: (s: number) => number, a: number, b: number, steps = 200): number {
  const h = (b - a) / steps;
  let sum = 0;
  for (let i = 0; i < steps; i++) sum += f(a + (i + 0.5) * h) * h;
  return sum;
}

/** The band layout for a similarity threshold, using at most `hashes` hash functions. */
export function bandLayout(threshold: number, hashes: number): { bands: number; rows: number } {
  let best = { bands: 1, rows: 1, error: Infinity };
  for (let bands = 1; bands <= hashes; bands++) {
    for (let rows = 1; bands * rows <= hashes; rows++) {
      const fp = integrate((s) => candidateProbability(s, bands, rows), 0, threshold);
      const fn = integrate((s) => 1 - candidateProbability(s, bands, rows), threshold, 1);
      if (fp + fn < best.error) best = { bands, rows, error: fp + fn };
    }
  }
  return { bands: best.bands, rows: best.rows };
}

/** The similarity at which a pair is a candidate about half the time: `(1/b)^(1/r)`. */
export function effectiveThreshold(bands: number, rows: number): number {
  return Math.pow(1 / bands, 1 / rows);
}
