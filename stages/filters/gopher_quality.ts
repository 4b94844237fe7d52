/**
 * Gopher's quality rules (Rae et al. 2021, appendix A), with datatrove's defaults and reason names:
 * document length, mean word length, symbols, bullets, ellipses, letters, stop words.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { filterModule, ratio, textStep, toggle } from "./filter.ts";
import { PUNCTUATION, splitIntoWords } from "./text.ts";

/** Thresholds of {@linkcode gopherQuality} (datatrove's `GopherQualityFilter`). */
export interface GopherQualityOptions {
  minDocWords: number;
  maxDocWords: number;
  minAvgWordLength: number;
  maxAvgWordLength: number;
  /** Most `#` per word, and most ellipses ("..." or "…") per word. */
  maxSymbolWordRatio: number;
  maxBulletLinesRatio: number;
  maxEllipsisLinesRatio: number;
  /** Least fraction of words that contain a letter (datatrove's name for it). */
  maxNonAlphaWordsRatio: number;
  minStopWords: number;
  stopWords: string[];
}

export const GOPHER_QUALITY_DEFAULTS: GopherQualityOptions = {
  minDocWords: 50,
  maxDocWords: 100_000,
  minAvgWordLength: 3,
  maxAvgWordLength: 10,
  maxSymbolWordRatio: 0.1,
  maxBulletLinesRatio: 0.9,
  maxEllipsisLinesRatio: 0.3,
  maxNonAlphaWordsRatio: 0.8,
  minStopWords: 2,
  stopWords: ["the", "be", "to", "of", "and", "that", "have", "with"],
};

function count(text: string, needle: string): number {
  let n = 0;
  for (let at = text.indexOf(needle); at !== -1; at = text.indexOf(needle, at + needle.length)) n++;
  return n;
}

const LETTER = /\p{L}/u;

/** Gopher's quality rules: length, word length, symbols, bullets, ellipses, letters, stop words. */
export function gopherQuality(
  text: string,
  o: GopherQualityOptions = GOPHER_QUALITY_DEFAULTS,
): string | undefined {
  const words = splitIntoWords(text);
  const real = words.filter((w) => !PUNCTUATION.has(w));
  const n = real.length;
  if (n < o.minDocWords) return "gopher_short_doc";
  if (n > o.maxDocWords) return "gopher_long_doc";
  const avg = real.reduce((a, w) => a + w.length, 0) / n;
  if (avg < o.minAvgWordLength) return "gopher_below_avg_threshold";
  if (avg > o.maxAvgWordLength) return "gopher_above_avg_threshold";
  if (count(text, "#") / n > o.maxSymbolWordRatio) return "gopher_too_many_hashes";
  if ((count(text, "...") + count(text, "…")) / n > o.maxSymbolWordRatio) return "gopher_too_many_ellipsis";
  const lines = text.split(/\r\n|\r|\n/);
  const bullets = lines.filter((l) => /^\s*[•\-*]/.test(l)).length;
  if (bullets / lines.length > o.maxBulletLinesRatio) return "gopher_too_many_bullets";
  const ellipsisLines = lines.filter((l) => /(\.\.\.|…)\s*$/.test(l)).length;
  if (ellipsisLines / lines.length > o.maxEllipsisLinesRatio) return "gopher_too_many_end_ellipsis";
  const alpha = words.filter((w) => LETTER.test(w)).length;
  if (alpha / n < o.maxNonAlphaWordsRatio) return "gopher_below_alpha_threshold";
  const stop = new Set(o.stopWords);
  if (words.filter((w) => stop.has(w)).length < o.minStopWords) return "gopher_enough_stop_words";
  return undefined;
}

/** `gopherQuality: true` or an object overriding some of {@linkcode GOPHER_QUALITY_DEFAULTS}; on by default. */
export const gopherQualityModule = filterModule({
  name: "gopherQuality",
  group: "gopher",
  schema: toggle({
    minDocWords: z.number().int().min(0),
    maxDocWords: z.number().int().min(0),
    minAvgWordLength: ratio,
    maxAvgWordLength: ratio,
    maxSymbolWordRatio: ratio,
    maxBulletLinesRatio: ratio,
    maxEllipsisLinesRatio: ratio,
    maxNonAlphaWordsRatio: ratio,
    minStopWords: z.number().int().min(0),
    stopWords: z.array(z.string()),
  }, true),
  defaults: GOPHER_QUALITY_DEFAULTS,
  build: (o: GopherQualityOptions) => textStep("gopher_quality", (t) => gopherQuality(t, o)),
});
