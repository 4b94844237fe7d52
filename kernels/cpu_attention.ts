/**
 * Causal self-attention on the CPU through the SIMD matmul (`cpu_matmul.ts`): per sequence and head,
 * the scores `S = Q·Kᵀ` as a T×T matrix, a row softmax, then `P·V`; the backward is five such
 * products. The reference (`cpu.ts`) walks pairs (t, s) in float64, which made attention the
 * larger part of a CPU training step once matmuls ran in SIMD; this does ~2× the flops (the masked
 * half of each T×T product) at several times the speed. Float32 sums in a fixed order: deterministic,
 * within float32 rounding of the reference.
 * @module
 */
import type { AttentionOptions } from "./backend.ts";
import { simdMatmul } from "./cpu_matmul.ts";

type Floats = Float32Array | Float64Array | Float16Array;
/** Whether query t of sequence b may attend to key s (s ≤ t is checked separately). */
export type Allowed = (b: number, t: number, s: number) => boolean;

/** Reused work arrays, grown as needed (never used re-entrantly). */
const work: Float32Array[] = [];
function scratch(slot: number, length: number): Float32Array {
  if (!(work[slot]?.length >= length)) work[slot] = new Float32Array(length);
  return work[slot].subarray(0, length);
}

/** Copies head h's `[T, hs]` slice of q, k or v (`which` 0, 1, 2) of sequence b out of `[B, T, 3C]`. */
function gather(dst: Float32Array, src: Floats, b: number, h: number, which: number, T: number, C: number) {
  const hs = dst.length / T;
  for (let t = 0; t < T; t++) {
    const from = (b * T + t) * 3 * C + which * C + h * hs;
    for (let i = 0; i < hs; i++) dst[t * hs + i] = src[from + i];
  }
}

/**
 * Softmax probabilities of head (b, h) into `P [T, T]` (zero where masked) from its scores `S`,
 * scaled: with `lse` given (the backward), `exp(S·scale - lse[t])`; else computed, and saved in `lseOut`.
 */
function probabilities(
  P: Float32Array,
  S: Float32Array,
  T: number,
  scale: number,
  b: number,
  allowed: Allowed | null,
  lseIn: Floats | null,
  lseOut: Floats | null,
  lseAt: number,
) {
  for (let t = 0; t < T; t++) {
    const row = t * T;
    let max = -Infinity;
    if (!lseIn) {
      for (let s = 0; s <= t; s++) if (!allowed || allowed(b, t, s)) max = Math.max(max, S[row + s] * scale);
    }
    let sum = 0;
    const shift = lseIn ? lseIn[lseAt + t] : max;
    for (let s = 0; s < T; s++) {
      const p = s <= t && (!allowed || allowed(b, t, s)) ? Math.exp(S[row + s] * scale - shift) : 0;
      P[row + s] = p;
      sum += p;
    }
    if (lseIn) continue;
    for (let s = 0; s <= t; s++) P[row + s] /= sum;
    lseOut![lseAt + t] = max + Math.log(sum);
  }
}

/** {@linkcode Backend.attentionForward} over f32 storage: out `[B, T, C]`, lse `[B, NH, T]`. */
export function simdAttentionForward(
  out: Floats,
  lse: Floats,
  qkv: Floats,
  { B, T, C, NH }: AttentionOptions,
  allowed: Allowed | null,
  threads: number,
): void {
  const hs = C / NH, scale = 1 / Math.sqrt(hs);
  const q = scratch(0, T * hs), k = scratch(1, T * hs), v = scratch(2, T * hs);
  const S = scratch(3, T * T), P = scratch(4, T * T), y = scratch(5, T * hs);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      gather(q, qkv, b, h, 0, T, C), gather(k, qkv, b, h, 1, T, C), gather(v, qkv, b, h, 2, T, C);
      simdMatmul(S, q, k, null, { m: T, n: T, k: hs, transB: true }, 0, 0, 0, threads);
      probabilities(P, S, T, scale, b, allowed, null, lse, (b * NH + h) * T);
      simdMatmul(y, P, v, null, { m: T, n: hs, k: T }, 0, 0, 0, threads);
      for (let t = 0; t < T; t++) out.set(y.subarray(t * hs, (t + 1) * hs), (b * T + t) * C + h * hs);
    }
  }
}

/** {@linkcode Backend.attentionBackward} over f32 storage: overwrites `dqkv [B, T, 3C]`. */
export function simdAttentionBackward(
  dqkv: Floats,
  dout: Floats,
  qkv: Floats,
  out: Floats,
  lse: Floats,
  { B, T, C, NH }: AttentionOptions,
  allowed: Allowed | null,
  threads: number,
): void {
  const hs = C / NH, scale = 1 / Math.sqrt(hs);
  const q = scratch(0, T * hs), k = scratch(1, T * hs), v = scratch(2, T * hs);
  const S = scratch(3, T * T), P = scratch(4, T * T), dO = scratch(5, T * hs);
  const dP = scratch(6, T * T), dq = scratch(7, T * hs), dk = scratch(8, T * hs), dv = scratch(9, T * hs);
  for (let b = 0; b < B; b++) {
    for (let h = 0; h < NH; h++) {
      gather(q, qkv, b, h, 0, T, C), gather(k, qkv, b, h, 1, T, C), gather(v, qkv, b, h, 2, T, C);
      for (let t = 0; t < T; t++) {
        dO.set(dout.subarray((b * T + t) * C + h * hs, (b * T + t) * C + (h + 1) * hs), t * hs);
      }
      simdMatmul(S, q, k, null, { m: T, n: T, k: hs, transB: true }, 0, 0, 0, threads);
      probabilities(P, S, T, scale, b, allowed, lse, null, (b * NH + h) * T);
      simdMatmul(dP, dO, v, null, { m: T, n: T, k: hs, transB: true }, 0, 0, 0, threads);
      // dS = P ∘ (dP - D_t)·scale, with D_t = dout_t · out_t (the softmax backward's row term); in dP.
      for (let t = 0; t < T; t++) {
        let D = 0;
        for (let i = 0, at = (b * T + t) * C + h * hs; i < hs; i++) D += dout[at + i] * out[at + i];
        for (let s = 0, row = t * T; s < T; s++) dP[row + s] = P[row + s] * (dP[row + s] - D) * scale;
      }
      simdMatmul(dq, dP, k, null, { m: T, n: hs, k: T }, 0, 0, 0, threads);
      simdMatmul(dk, dP, q, null, { m: T, n: hs, k: T, transA: true }, 0, 0, 0, threads);
      simdMatmul(dv, P, dO, null, { m: T, n: hs, k: T, transA: true }, 0, 0, 0, threads);
      for (let t = 0; t < T; t++) {
        const at = (b * T + t) * 3 * C + h * hs;
        dqkv.set(dq.subarray(t * hs, (t + 1) * hs), at);
        dqkv.set(dk.subarray(t * hs, (t + 1) * hs), at + C);
        dqkv.set(dv.subarray(t * hs, (t + 1) * hs), at + 2 * C);
      }
    }
  }
}
