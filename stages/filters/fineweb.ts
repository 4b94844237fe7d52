/**
 * FineWeb's own quality rules (Penedo et al. 2024), with datatrove's `FineWebQualityFilter` defaults:
 * drop when at most 12% of lines end in punctuation, when at least 67% of lines are 30 characters or
 * shorter, when characters in duplicated lines are at least 1% of the text, or when there are more
 * than 0.3 newlines per word (lists).
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { filterModule, ratio, textStep, toggle } from "./filter.ts";
import { findDuplicates, splitIntoWords } from "./text.ts";

/** Thresholds of {@linkcode finewebFilter}. */
export interface FineWebOptions {
  linePunctThr: number;
  linePunctExcludeZero: boolean;
  shortLineThr: number;
  shortLineLength: number;
  charDuplicatesRatio: number;
  newLineRatio: number;
}

export const FINEWEB_DEFAULTS: FineWebOptions = {
  linePunctThr: 0.12,
  linePunctExcludeZero: false,
  shortLineThr: 0.67,
  shortLineLength: 30,
  charDuplicatesRatio: 0.01,
  newLineRatio: 0.3,
};

const STOP_CHARS = [".", "'", '"', "!", "?"];

/** FineWeb's rules; returns the reason to drop, or undefined to keep. */
export function finewebFilter(text: string, o: FineWebOptions = FINEWEB_DEFAULTS): string | undefined {
  const lines = text.split("\n").filter((l) => l.trim() !== "");
  if (lines.length === 0) return "empty";
  const punct = lines.filter((l) => STOP_CHARS.some((c) => l.endsWith(c))).length / lines.length;
  if (punct <= o.linePunctThr && !(punct === 0 && o.linePunctExcludeZero)) return "line_punct_ratio";
  const short = lines.filter((l) => l.length <= o.shortLineLength).length / lines.length;
  if (short >= o.shortLineThr) return "short_line_ratio";
  const dupChars = findDuplicates(lines)[1] / text.replaceAll("\n", "").length;
  if (dupChars >= o.charDuplicatesRatio) return "char_dup_ratio";
  const words = splitIntoWords(text).length;
  const newlines = text.split("\n").length - 1;
  if (newlines / words > o.newLineRatio) return "list_ratio";
  return undefined;
}

/** `fineweb: true` or an object overriding some of {@linkcode FINEWEB_DEFAULTS}; off by default. */
export const finewebModule = filterModule({
  name: "fineweb",
  schema: toggle({
    linePunctThr: ratio,
    linePunctExcludeZero: z.boolean(),
    shortLineThr: ratio,
    shortLineLength: z.number().int().min(0),
    charDuplicatesRatio: ratio,
    newLineRatio: ratio,
  }, false),
  defaults: FINEWEB_DEFAULTS,
  build: (o: FineWebOptions) => textStep("fineweb", (t) => finewebFilter(t, o)),
});
