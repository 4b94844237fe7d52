/**
 * Text helpers shared by the rule filters, after datatrove's: a word tokenizer, duplicate counting,
 * n-grams and sentence splitting.
 * @module
 */

/** Python's `string.punctuation`: tokens made of one of these are not counted as words by Gopher. */
export const PUNCTUATION = new Set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");

// Words (letters, digits and marks, with inner apostrophes, hyphens and dots as in "don't", "e-mail",
// "3.14") or any other single non-space character, close to NLTK's word_tokenize, which datatrove uses.
const WORD = /[\p{L}\p{N}\p{M}]+(?:['’.\-][\p{L}\p{N}\p{M}]+)*|\S/gu;

/** Splits text into word and punctuation tokens. */
export function splitIntoWords(text: string): string[] {
  return text.match(WORD) ?? [];
}

/** datatrove's `find_duplicates`: how many elements repeat an earlier one, and their characters. */
export function findDuplicates(items: string[]): [number, number] {
  const seen = new Set<string>();
  let elements = 0, chars = 0;
  for (const item of items) {
    if (seen.has(item)) {
      elements++;
      chars += item.length;
    } else seen.add(item);
  }
  return [elements, chars];
}

/** The `n`-grams of `words`, each joined with spaces. */
export function nGrams(words: string[], n: number): string[] {
  const out: string[] = [];
  for (let i = 0; i + n <= words.length; i++) out.push(words.slice(i, i + n).join(" "));
  return out;
}

const sentences = new Intl.Segmenter("en", { granularity: "sentence" });

/** Sentences of a line (Unicode sentence boundaries; datatrove uses NLTK's punkt). */
export function splitIntoSentences(text: string): string[] {
  return [...sentences.segment(text)].map((s) => s.segment.trim()).filter(Boolean);
}
