/**
 * Text normalisation, exact hashes and MinHash signatures for near-duplicate detection, with
 * datatrove's defaults: 5-word shingles over its normalised text (`simplify_text`), 112 hash functions read as 14 bands of
 * 8 rows. Two documents with Jaccard similarity `s` between their shingle sets share at least one
 * band with probability `1 − (1 − s^r)^b` (≈ 0.5 at s = 0.72 for r = 8, b = 14).
 *
 * Written here rather than taken from npm: the MinHash packages there keep signatures as arrays of
 * boxed numbers per object and use `Math.random` seeds, while this step must be fast over typed
 * arrays and give bit-identical signatures in every worker, on every run, and on every machine.
 *
 * @example
 * ```ts
 * import { bandKeys, MinHasher } from "./minhash.ts";
 * const hasher = new MinHasher({ shingleWords: 5, bands: 14, rows: 8, seed: 1 });
 * const sig = hasher.signature("The quick brown fox jumps over the lazy dog.");
 * const keys = bandKeys(sig, 14, 8); // 14 band keys, two uint32 each
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { fmix32, hashWord } from "../hashing.ts";

/**
 * Python's whitespace (`str.isspace`, and `\s` of its `re` on str patterns), which datatrove's
 * normalisation strips and collapses: JavaScript's `\s` lacks U+001C–U+001F and U+0085 and adds U+FEFF.
 */
const PY_SPACE = "\t\n\v\f\r\x1c-\x1f \x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000";
const PY_SPACE_RUN = new RegExp(`[${PY_SPACE}]+`, "g");
const IS_PY_SPACE = new RegExp(`[${PY_SPACE}]`);

/** Python's `str.strip()`. */
function pyStrip(s: string): string {
  let a = 0, b = s.length;
  while (a < b && IS_PY_SPACE.test(s[a])) a++;
  while (b > a && IS_PY_SPACE.test(s[b - 1])) b--;
  return a === 0 && b === s.length ? s : s.slice(a, b);
}

/**
 * datatrove's `PUNCTUATION` (`datatrove/utils/text.py`): the characters its normalisation deletes. A
 * fixed list, not a Unicode category: ASCII punctuation, some CJK and typographic marks (and, as
 * there, the fullwidth digit one), and the C0/C1 control characters other than tab and newline.
 */
const PUNCTUATION = new RegExp(
  "[!/—”:％１〈&(、━\\\\【#%「」，】；+^\\]~“《„';’{|∶´\\[=\\-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" +
    "\\x00-\\x08\\x0b\\x0c\\x0d-\\x1f\\x7f-\\x9f]",
  "g", // every character listed is one UTF-16 unit: no `u` flag needed
);

/**
 * datatrove's `simplify_text` with its default `TextNormConfig`, step for step: lower case; strip,
 * and every whitespace run → one space; delete its punctuation list (deleted, not replaced by a
 * space: "well-known" → "wellknown", "a - b" → "a  b"); NFD and drop nonspacing marks (Mn); runs of
 * decimal digits (Nd) → "0"; strip. Exact and near dedupe both hash this form, so "Hello, World!" and
 * "hello world" are the same text.
 */
export function normalizeText(text: string): string {
  const simplified = pyStrip(text.toLowerCase())
    .replace(PY_SPACE_RUN, " ")
    .replace(PUNCTUATION, "")
    .normalize("NFD")
    .replace(/\p{Mn}+/gu, "")
    .replace(/\p{Nd}+/gu, "0");
  return pyStrip(simplified);
}

/**
 * The words shingles are made of: the normalised text split at whitespace. (datatrove splits it with
 * a language's word tokenizer, NLTK's for English; on text without its punctuation that is the same
 * split except around the symbols the list keeps, such as "©" or "€", which NLTK may cut off a word.)
 */
function shingleWords(text: string): string[] {
  return normalizeText(text).split(PY_SPACE_RUN).filter((w) => w.length > 0);
}

/** 64-bit exact hash of the normalised text, as two uint32 (SHA-1's first 8 bytes, like datatrove). */
export function exactKey(text: string): [number, number] {
  const digest = createHash("sha1").update(normalizeText(text)).digest();
  return [digest.readUInt32BE(0), digest.readUInt32BE(4)];
}

/** MinHash parameters; part of the signature files' header, which must match to compare datasets. */
export interface MinHashParams {
  /** Words per shingle (default 5). */
  shingleWords: number;
  bands: number;
  rows: number;
  /** Seed of the hash family; datasets compared against each other must use the same one. */
  seed: number;
}

/** Computes MinHash signatures: `bands × rows` minima of seeded permutations of the shingle hashes. */
export class MinHasher {
  readonly params: MinHashParams;
  readonly #seeds: Uint32Array;

  constructor(params: MinHashParams) {
    this.params = params;
    const n = params.bands * params.rows;
    this.#seeds = new Uint32Array(n);
    // One permutation per hash function: x ↦ fmix32(x ⊕ seedᵢ) is a bijection of uint32 for every
    // seed, and distinct seeds give unrelated orders, which is what min-wise hashing needs.
    let s = fmix32(params.seed ^ 0x9e3779b9);
    for (let i = 0; i < n; i++) {
      s = fmix32(s + 0x6d2b79f5);
      this.#seeds[i] = s;
    }
  }

  /** The per-hash-function seeds (`bands × rows` of them); the GPU kernel applies the same ones. */
  get seeds(): Uint32Array {
    return this.#seeds.slice();
  }

  /** The 32-bit hashes of the text's word shingles (normalised text; one shingle if it is short). */
  shingles(text: string): Uint32Array {
    const wordHashes = shingleWords(text).map(hashWord);
    const n = this.params.shingleWords;
    const count = Math.max(1, wordHashes.length - n + 1);
    const out = new Uint32Array(count);
    for (let i = 0; i < count; i++) {
      let h = 0x2545f491;
      const end = Math.min(i + n, wordHashes.length);
      for (let j = i; j < end; j++) h = fmix32(Math.imul(h, 0x01000193) ^ wordHashes[j]);
      out[i] = h;
    }
    return out;
  }

  /** The signature of a text: for each hash function, the smallest permuted shingle hash. */
  signature(text: string): Uint32Array {
    return this.signatureOf(this.shingles(text));
  }

  /** The signature of a set of shingle hashes. */
  signatureOf(shingles: Uint32Array): Uint32Array {
    const seeds = this.#seeds;
    const sig = new Uint32Array(seeds.length).fill(0xffffffff);
    for (const x of shingles) {
      for (let i = 0; i < seeds.length; i++) {
        // fmix32 inlined: this loop is the stage's hot path.
        let h = x ^ seeds[i];
        h ^= h >>> 16;
        h = Math.imul(h, 0x85ebca6b);
        h ^= h >>> 13;
        h = Math.imul(h, 0xc2b2ae35);
        h ^= h >>> 16;
        h >>>= 0;
        if (h < sig[i]) sig[i] = h;
      }
    }
    return sig;
  }
}

/**
 * Each band's key: the band's `rows` minima hashed to 64 bits (two uint32, `[hi0, lo0, hi1, lo1, …]`).
 * Two documents are candidate duplicates when any band key is equal.
 */
export function bandKeys(sig: Uint32Array, bands: number, rows: number): Uint32Array {
  const keys = new Uint32Array(bands * 2);
  for (let b = 0; b < bands; b++) {
    let hi = 0x9e3779b9 ^ b;
    let lo = 0x7f4a7c15 ^ Math.imul(b, 0x01000193);
    for (let r = 0; r < rows; r++) {
      const v = sig[b * rows + r];
      hi = fmix32(Math.imul(hi, 31) ^ v);
      lo = fmix32(Math.imul(lo ^ v, 0x5bd1e995) + 0x165667b1);
    }
    keys[2 * b] = hi;
    keys[2 * b + 1] = lo;
  }
  return keys;
}

/** The probability that a pair of Jaccard similarity `s` shares a band: `1 − (1 − s^r)^b`. */
export function candidateProbability(s: number, bands: number, rows: number): number {
  return 1 - Math.pow(1 - Math.pow(s, rows), bands);
}
