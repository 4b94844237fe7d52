/**
 * The language filter: keeps documents whose detected language is one of `languages` with at least
 * `minScore`, and records `meta.language` and `meta.language_score`.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { filterModule, optional, round } from "./filter.ts";

/** A language detector: the best language and its score. */
export type LanguageDetector = (text: string) => { language: string; score: number };

/**
 * The ELD detector (npm `eld`, n-gram based, 60 languages), loaded on first use. Its scores are
 * n-gram match ratios, not probabilities: clean English prose scores about 0.7–0.8.
 */
export async function eldDetector(): Promise<LanguageDetector> {
  const { eld } = await import("npm:eld@^2.1.0/medium");
  return (text) => {
    // ELD reads the first few thousand characters well; longer input only costs time.
    const result = eld.detect(text.slice(0, 4000));
    const scores = result.getScores() as Record<string, number>;
    return { language: result.language, score: scores[result.language] ?? 0 };
  };
}

/** Settings of the language filter. */
export interface LanguageOptions {
  languages: string[];
  minScore: number;
}

/** `language: { languages, minScore }`; off by default. */
export const languageModule = filterModule({
  name: "language",
  schema: optional(z.strictObject({
    languages: z.array(z.string()).min(1).default(["en"]),
    /** ELD's score for the detected language (clean prose scores ≈ 0.7–0.8). */
    minScore: z.number().min(0).max(1).default(0.5),
  })),
  defaults: { languages: ["en"], minScore: 0.5 } as LanguageOptions,
  build: async (o: LanguageOptions) => {
    const detect = await eldDetector();
    const wanted = new Set(o.languages);
    return {
      name: "language",
      apply: (doc) => {
        const { language, score } = detect(doc.text);
        if (!wanted.has(language)) return { drop: `language_${language || "unknown"}` };
        if (score < o.minScore) return { drop: "language_score_below_threshold" };
        return { doc: { ...doc, meta: { ...doc.meta, language, language_score: round(score) } } };
      },
    };
  },
});
