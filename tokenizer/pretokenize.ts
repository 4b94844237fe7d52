/**
 * Pre-tokenisation: splitting text into the pieces BPE merges within (it never merges across them).
 *
 * GPT-2's pattern gets a hand-written scanner that returns exactly what the regular expression
 * `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+` (JavaScript `u`
 * semantics, as js-tiktoken and gpt-tokenizer use) returns, several times faster than the regex
 * engine: pre-tokenisation is most of the cost of encoding once pieces are cached. Any other pattern
 * (cl100k's, a Hugging Face `Split` regex) runs on the regex engine.
 *
 * Character classes follow JavaScript: `\s` includes U+FEFF and excludes U+0085, whereas the Rust
 * `regex` crate (tiktoken's core, Hugging Face tokenizers) uses Unicode White_Space, the other way
 * round. Text with those two characters can therefore split differently from the Rust tokenizers.
 *
 * @example
 * ```ts
 * import { GPT2_PATTERN, pretokenizer } from "./pretokenize.ts";
 * const split = pretokenizer(GPT2_PATTERN);
 * const text = "Hello world's  end";
 * const pieces: string[] = [];
 * split(text, (start, end) => pieces.push(text.slice(start, end)));
 * console.log(pieces); // ["Hello", " world", "'s", " ", " end"]
 * ```
 * @module
 */

/** GPT-2's pre-tokenisation pattern (also r50k/p50k's). */
export const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** Calls `onPiece(start, end)` for consecutive pieces covering all of `text`. */
export type Pretokenizer = (text: string, onPiece: (start: number, end: number) => void) => void;

const OTHER = 0, LETTER = 1, NUMBER = 2, SPACE = 3;

/** Class of every BMP code unit (surrogates are OTHER: a lone surrogate is neither L, N nor \s). */
const CLASS = buildClassTable();

function buildClassTable(): Uint8Array {
  const table = new Uint8Array(0x10000);
  // Mark runs found by the regex engine itself, so the table agrees with it by construction.
  const mark = (from: number, to: number) => {
    let s = "";
    for (let c = from; c < to; c++) s += String.fromCharCode(c);
    for (const [re, k] of [[/\p{L}+/gu, LETTER], [/\p{N}+/gu, NUMBER], [/\s+/gu, SPACE]] as const) {
      for (const m of s.matchAll(re)) table.fill(k, from + m.index, from + m.index + m[0].length);
    }
  };
  mark(0, 0xd800);
  mark(0xe000, 0x10000);
  return table;
}

const astralClasses = new Map<number, number>();
function astralClass(cp: number): number {
  let k = astralClasses.get(cp);
  if (k === undefined) {
    const s = String.fromCodePoint(cp);
    k = /\p{L}/u.test(s) ? LETTER : /\p{N}/u.test(s) ? NUMBER : OTHER;
    astralClasses.set(cp, k);
  }
  return k;
}

/** End of the run of class `k` starting at `j` (code points; surrogate pairs are one). */
function runEnd(t: string, j: number, n: number, k: number): number {
  while (j < n) {
    const c = t.charCodeAt(j);
    if (c < 0xd800 || c >= 0xe000) {
      if (CLASS[c] !== k) break;
      j++;
    } else {
      const d = c < 0xdc00 && j + 1 < n ? t.charCodeAt(j + 1) : 0;
      if (d >= 0xdc00 && d < 0xe000) {
        if (astralClass(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000) !== k) break;
        j += 2;
      } else {
        if (k !== OTHER) break; // a lone surrogate
        j++;
      }
    }
  }
  return j;
}

function classAt(t: string, i: number, n: number): number {
  const c = t.charCodeAt(i);
  if (c < 0xd800 || c >= 0xe000) return CLASS[c];
  const d = c < 0xdc00 && i + 1 < n ? t.charCodeAt(i + 1) : 0;
  if (d >= 0xdc00 && d < 0xe000) return astralClass(((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000);
  return OTHER;
}

/** Where the GPT-2 piece starting at `i` ends (`i < n`). Mirrors the pattern's alternatives in order. */
export function gpt2PieceEnd(t: string, i: number, n: number): number {
  const c = t.charCodeAt(i);
  if (c === 39 && i + 1 < n) { // contractions: 's 't 'm 'd 're 've 'll
    const d = t.charCodeAt(i + 1);
    if (d === 115 || d === 116 || d === 109 || d === 100) return i + 2;
    if (i + 2 < n) {
      const e = t.charCodeAt(i + 2);
      if ((e === 101 && (d === 114 || d === 118)) || (d === 108 && e === 108)) return i + 3;
    }
  }
  if (c === 32 && i + 1 < n) { // " ?X+" with the optional space
    const k = classAt(t, i + 1, n);
    if (k !== SPACE) return runEnd(t, i + 1, n, k);
  }
  const k = classAt(t, i, n);
  if (k !== SPACE) return runEnd(t, i, n, k);
  // \s+(?!\S) keeps the last space of a run for the word after it; \s+ takes a lone one.
  const j = runEnd(t, i, n, SPACE);
  return j === n || j - 1 === i ? j : j - 1;
}

function gpt2Split(text: string, onPiece: (start: number, end: number) => void): void {
  const n = text.length;
  for (let i = 0; i < n;) {
    const j = gpt2PieceEnd(text, i, n);
    onPiece(i, j);
    i = j;
  }
}

/**
 * A pre-tokenizer for a regex pattern (JavaScript syntax, run with the `u` flag). Text the pattern
 * does not match becomes pieces of its own (Hugging Face's "Isolated" split behaviour).
 */
export function pretokenizer(pattern: string): Pretokenizer {
  if (pattern === GPT2_PATTERN) return gpt2Split;
  const sticky = new RegExp(pattern, "uy");
  const global = new RegExp(pattern, "ug");
  return (text, onPiece) => {
    const n = text.length;
    for (let i = 0; i < n;) {
      sticky.lastIndex = i;
      const m = sticky.exec(text);
      let j: number;
      if (m && m[0].length > 0) j = i + m[0].length;
      else {
        global.lastIndex = i + 1;
        const next = global.exec(text);
        j = next ? next.index : n;
      }
      onPiece(i, j);
      i = j;
    }
  };
}
