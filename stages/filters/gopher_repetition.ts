/**
 * Gopher's repetition rules (Rae et al. 2021, appendix A), with datatrove's defaults and reason names:
 * duplicate lines and paragraphs, the most frequent n-grams, repeated n-grams.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { fmix32 } from "../hashing.ts";
import { filterModule, ratio, textStep, toggle } from "./filter.ts";
import { findDuplicates, splitIntoWords } from "./text.ts";

/** Thresholds of {@linkcode gopherRepetition} (datatrove's `GopherRepetitionFilter`). */
export interface GopherRepetitionOptions {
  dupLineFrac: number;
  dupParaFrac: number;
  dupLineCharFrac: number;
  dupParaCharFrac: number;
  /** `[n, most characters in the most frequent n-gram as a fraction of the text]`. */
  topNGrams: [number, number][];
  /** `[n, most characters in repeated n-grams as a fraction of the text]`. */
  dupNGrams: [number, number][];
}

export const GOPHER_REPETITION_DEFAULTS: GopherRepetitionOptions = {
  dupLineFrac: 0.3,
  dupParaFrac: 0.3,
  dupLineCharFrac: 0.2,
  dupParaCharFrac: 0.2,
  topNGrams: [[2, 0.2], [3, 0.18], [4, 0.16]],
  dupNGrams: [[5, 0.15], [6, 0.14], [7, 0.13], [8, 0.12], [9, 0.11], [10, 0.1]],
};

/**
 * Word n-grams as numbers rather than joined strings (datatrove joins them): the same counts barring a
 * 53-bit hash collision, many times faster. After `extend()` is called n − 1 times, `key(i)` names
 * the n-gram starting at word i and `chars(i)` is its length joined with spaces.
 */
class NGrams {
  readonly #hi: Uint32Array;
  readonly #lo: Uint32Array;
  readonly #prefix: Float64Array; // prefix sums of word lengths
  n = 1;

  constructor(private readonly ids: Uint32Array, words: string[]) {
    this.#hi = ids.map((id) => fmix32(id ^ 0x9e3779b9));
    this.#lo = ids.map((id) => fmix32(id + 0x7f4a7c15));
    this.#prefix = new Float64Array(words.length + 1);
    for (let i = 0; i < words.length; i++) this.#prefix[i + 1] = this.#prefix[i] + words[i].length;
  }

  static of(words: string[]): NGrams {
    const intern = new Map<string, number>();
    const ids = new Uint32Array(words.length);
    for (let i = 0; i < words.length; i++) {
      let id = intern.get(words[i]);
      if (id === undefined) intern.set(words[i], id = intern.size);
      ids[i] = id;
    }
    return new NGrams(ids, words);
  }

  get count(): number {
    return Math.max(0, this.ids.length - this.n + 1);
  }

  extend() {
    for (let i = 0; i + this.n < this.ids.length; i++) {
      const id = this.ids[i + this.n];
      this.#hi[i] = fmix32(Math.imul(this.#hi[i], 0x01000193) ^ id);
      this.#lo[i] = fmix32((this.#lo[i] ^ id) + 0x165667b1);
    }
    this.n++;
  }

  key(i: number): number {
    return (this.#hi[i] >>> 11) * 2 ** 32 + this.#lo[i];
  }

  chars(i: number): number {
    return this.#prefix[i + this.n] - this.#prefix[i] + this.n - 1;
  }
}

/** Characters of the most frequent n-gram (the first seen, on a tie) times its count. */
function topDuplicate(grams: NGrams): number {
  const counts = new Map<number, number>();
  const first = new Map<number, number>();
  for (let i = 0; i < grams.count; i++) {
    const k = grams.key(i);
    const c = counts.get(k);
    if (c === undefined) {
      counts.set(k, 1);
      first.set(k, i);
    } else counts.set(k, c + 1);
  }
  let top = -1, most = 0;
  for (const [k, c] of counts) {
    if (c > most) [top, most] = [k, c];
  }
  return most ? grams.chars(first.get(top)!) * most : 0;
}

/** Characters in n-grams that repeat an earlier one, skipping past each repeat (datatrove's rule). */
function allDuplicates(grams: NGrams): number {
  const seen = new Set<number>();
  let chars = 0;
  for (let i = 0; i < grams.count;) {
    const k = grams.key(i);
    if (seen.has(k)) {
      chars += grams.chars(i);
      i += grams.n;
    } else {
      seen.add(k);
      i++;
    }
  }
  return chars;
}

/** Gopher's repetition rules: duplicate lines and paragraphs, top n-grams, repeated n-grams. */
export function gopherRepetition(
  text: string,
  o: GopherRepetitionOptions = GOPHER_REPETITION_DEFAULTS,
): string | undefined {
  if (text.length === 0) return undefined;
  const paragraphs = text.trim().split(/\n{2,}/);
  const [dupParas, dupParaChars] = findDuplicates(paragraphs);
  if (dupParas / paragraphs.length > o.dupParaFrac) return "dup_para_frac";
  if (dupParaChars / text.length > o.dupParaCharFrac) return "dup_para_char_frac";
  // Runs of newlines split lines (datatrove's `\n+`): blank lines are not duplicate lines.
  const lines = text.split(/\n+/);
  const [dupLines, dupLineChars] = findDuplicates(lines);
  if (dupLines / lines.length > o.dupLineFrac) return "dup_line_frac";
  if (dupLineChars / text.length > o.dupLineCharFrac) return "dup_line_char_frac";
  // Checked in datatrove's order; the n-grams grow one word at a time (rebuilt if n goes down).
  const words = splitIntoWords(text);
  let grams = NGrams.of(words);
  const checks = [
    ...o.topNGrams.map(([n, frac]) => ({ n, frac, top: true })),
    ...o.dupNGrams.map(([n, frac]) => ({ n, frac, top: false })),
  ];
  for (const { n, frac, top } of checks) {
    if (grams.n > n) grams = NGrams.of(words);
    while (grams.n < n) grams.extend();
    if (!grams.count) continue;
    const chars = top ? topDuplicate(grams) : allDuplicates(grams);
    if (chars / text.length > frac) return top ? `top_${n}_gram` : `duplicated_${n}_n_grams`;
  }
  return undefined;
}

/** `gopherRepetition: true` or an object overriding some of {@linkcode GOPHER_REPETITION_DEFAULTS}; on by default. */
export const gopherRepetitionModule = filterModule({
  name: "gopherRepetition",
  group: "gopher",
  schema: toggle({
    dupLineFrac: ratio,
    dupParaFrac: ratio,
    dupLineCharFrac: ratio,
    dupParaCharFrac: ratio,
    topNGrams: z.array(z.tuple([z.number().int().min(1), ratio])),
    dupNGrams: z.array(z.tuple([z.number().int().min(1), ratio])),
  }, true),
  defaults: GOPHER_REPETITION_DEFAULTS,
  build: (o: GopherRepetitionOptions) => textStep("gopher_repetition", (t) => gopherRepetition(t, o)),
});
