/**
 * A small seeded random number generator whose whole state is four 32-bit words, so a training run
 * can save it in a checkpoint and resume with exactly the same draws (weight init, data order,
 * sampling). The algorithm is xoshiro128** (Blackman & Vigna); it is written here rather than taken
 * from npm because what matters is a state that serialises to JSON and restores bit for bit.
 *
 * @example
 * ```ts
 * import { Rng } from "./rng.ts";
 * const rng = new Rng(1337);
 * const saved = rng.state();
 * const a = rng.uniform();
 * console.log(Rng.fromState(saved).uniform() === a); // true
 * ```
 * @module
 */

/** Seeded xoshiro128** generator with a serialisable state. */
export class Rng {
  private s: Uint32Array;

  constructor(seed: number) {
    // splitmix32 spreads the seed over the four state words (never all zero).
    this.s = new Uint32Array(4);
    let x = seed >>> 0;
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b) >>> 0;
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35) >>> 0;
      this.s[i] = (z ^ (z >>> 16)) >>> 0;
    }
  }

  /** A generator continuing from a saved {@linkcode Rng.state}. */
  static fromState(state: number[]): Rng {
    if (!Array.isArray(state) || state.length !== 4 || state.every((w) => w === 0)) {
      throw new Error(`invalid RNG state ${JSON.stringify(state)}`);
    }
    const rng = new Rng(0);
    rng.s.set(state);
    return rng;
  }

  /** The state, as four unsigned 32-bit integers. */
  state(): number[] {
    return Array.from(this.s);
  }

  /** The next 32 random bits as an unsigned integer. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 32 bits of resolution. */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** An integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  /** A standard normal draw (Box–Muller; one draw per call keeps the state easy to reason about). */
  normal(): number {
    const u1 = 1 - this.uniform(); // (0, 1]: log stays finite
    const u2 = this.uniform();
    return Math.sqrt(-2 * Math.log(u1)) * Math.cos(2 * Math.PI * u2);
  }

  /** Shuffles `array` in place (Fisher–Yates). */
  shuffle<T extends { length: number; [i: number]: number }>(array: T): T {
    for (let i = array.length - 1; i > 0; i--) {
      const j = this.below(i + 1);
      const tmp = array[i];
      array[i] = array[j];
      array[j] = tmp;
    }
    return array;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/**
 * mulberry32: a tiny seeded generator of floats in [0, 1), for choices that must replay exactly
 * (data sampling, Pareto keeps, test inputs and kill moments) where {@linkcode Rng}'s state is not needed.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
