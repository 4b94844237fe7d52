/**
 * The length filter: drops documents outside bounds on characters and on whitespace-separated words.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { filterModule, optional, textStep } from "./filter.ts";

/** Bounds of {@linkcode lengthFilter}; any may be left out. */
export interface LengthOptions {
  minChars?: number;
  maxChars?: number;
  minWords?: number;
  maxWords?: number;
}

/** Drops documents outside the character and word bounds. */
export function lengthFilter(text: string, o: LengthOptions): string | undefined {
  if (o.minChars !== undefined && text.length < o.minChars) return "too_few_chars";
  if (o.maxChars !== undefined && text.length > o.maxChars) return "too_many_chars";
  if (o.minWords !== undefined || o.maxWords !== undefined) {
    const words = text.split(/\s+/).filter(Boolean).length;
    if (o.minWords !== undefined && words < o.minWords) return "too_few_words";
    if (o.maxWords !== undefined && words > o.maxWords) return "too_many_words";
  }
  return undefined;
}

/** `length: { minChars, maxChars, minWords, maxWords }`; off by default. */
export const lengthModule = filterModule({
  name: "length",
  schema: optional(z.strictObject({
    minChars: z.number().int().min(0).optional(),
    maxChars: z.number().int().min(0).optional(),
    minWords: z.number().int().min(0).optional(),
    maxWords: z.number().int().min(0).optional(),
  })),
  defaults: {} as LengthOptions,
  build: (o: LengthOptions) => textStep("length", (t) => lengthFilter(t, o)),
});
