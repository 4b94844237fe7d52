/**
 * C4's cleaning rules (Raffel et al. 2020), as datatrove's `C4QualityFilter` applies them: line rules
 * remove lines (no terminal punctuation, fewer than 3 words, "javascript", cookie and policy notices,
 * words over 1000 characters; citation marks are stripped), document rules drop the document
 * ("lorem ipsum", a "{", fewer than 5 sentences in what is left).
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { filterModule, toggle } from "./filter.ts";
import { splitIntoSentences } from "./text.ts";

/** Options of {@linkcode c4Filter}, datatrove's defaults in {@linkcode C4_DEFAULTS}. */
export interface C4Options {
  filterNoTerminalPunct: boolean;
  minWordsPerLine: number;
  maxWordLength: number;
  minSentences: number;
  filterLoremIpsum: boolean;
  filterJavascript: boolean;
  filterCurlyBracket: boolean;
  filterPolicy: boolean;
  removeCitations: boolean;
}

export const C4_DEFAULTS: C4Options = {
  filterNoTerminalPunct: true,
  minWordsPerLine: 3,
  maxWordLength: 1000,
  minSentences: 5,
  filterLoremIpsum: true,
  filterJavascript: true,
  filterCurlyBracket: true,
  filterPolicy: true,
  removeCitations: true,
};

const END_PUNCTUATION = [".", "?", "!", '"', "'"];
const CITATION = /\[\d*\]|\[edit\]|\[citation needed\]/gi;
const POLICY = [
  "terms of use",
  "privacy policy",
  "cookie policy",
  "uses cookies",
  "use of cookies",
  "use cookies",
];

/** The outcome of {@linkcode c4Filter}: dropped with a reason, or kept with the cleaned text. */
export type C4Result = { reason: string } | { text: string; removedLines: Record<string, number> };

/** Applies C4's line and document rules. */
export function c4Filter(text: string, o: C4Options = C4_DEFAULTS): C4Result {
  const kept: string[] = [];
  const removedLines: Record<string, number> = {};
  const remove = (why: string) => removedLines[why] = (removedLines[why] ?? 0) + 1;
  let sentences = 0;
  for (const raw of text.split(/\r\n|\r|\n/)) {
    let line = raw.trim();
    if (!line) continue;
    const words = line.split(/\s+/);
    if (words.some((w) => w.length > o.maxWordLength)) {
      remove("line-filter-too_long_word");
      continue;
    }
    if (o.removeCitations) line = line.replace(CITATION, "");
    if (o.filterNoTerminalPunct && (!END_PUNCTUATION.some((p) => line.endsWith(p)) || line.endsWith("..."))) {
      remove("line-filter-no_terminal_punc");
      continue;
    }
    if (words.length < o.minWordsPerLine) {
      remove("line-filter-too_few_words");
      continue;
    }
    const lower = line.toLowerCase();
    if (o.filterLoremIpsum && lower.includes("lorem ipsum")) return { reason: "lorem_ipsum" };
    if (o.filterJavascript && lower.includes("javascript")) {
      remove("line-filter-javascript");
      continue;
    }
    if (o.filterCurlyBracket && line.includes("{")) return { reason: "curly_bracket" };
    if (o.filterPolicy && POLICY.some((p) => lower.includes(p))) {
      remove("line-filter-policy");
      continue;
    }
    sentences += splitIntoSentences(line).length;
    kept.push(line);
  }
  if (sentences < o.minSentences) return { reason: "too_few_sentences" };
  return { text: kept.join("\n").trim(), removedLines };
}

/** `c4: true` or an object overriding some of {@linkcode C4_DEFAULTS}; off by default. */
export const c4Module = filterModule({
  name: "c4",
  schema: toggle({
    filterNoTerminalPunct: z.boolean(),
    minWordsPerLine: z.number().int().min(0),
    maxWordLength: z.number().int().min(1),
    minSentences: z.number().int().min(0),
    filterLoremIpsum: z.boolean(),
    filterJavascript: z.boolean(),
    filterCurlyBracket: z.boolean(),
    filterPolicy: z.boolean(),
    removeCitations: z.boolean(),
  }, false),
  defaults: C4_DEFAULTS,
  build: (o: C4Options) => ({
    name: "c4",
    apply: (doc) => {
      const r = c4Filter(doc.text, o);
      if ("reason" in r) return { drop: r.reason };
      return { doc: r.text === doc.text ? doc : { ...doc, text: r.text }, changes: r.removedLines };
    },
  }),
});
