/**
 * Pre-tokenisation: splitting text into the pieces BPE merges within (it never merges across them).
 *
 * The references are tiktoken (Rust `fancy-regex`) and Hugging Face tokenizers (Oniguruma). Both
 * read `\s` as Unicode White_Space (U+0009–U+000D, U+0020, U+0085, U+00A0, U+1680, U+2000–U+200A,
 * U+2028, U+2029, U+202F, U+205F, U+3000), whereas a JavaScript regex's `\s` adds U+FEFF and drops
 * U+0085: running these patterns as JavaScript regular expressions (as js-tiktoken does) splits text
 * holding either character differently from the tokenizers the ids come from. So no pattern runs on
 * the JavaScript engine here:
 *
 * - **Known patterns** get a hand-written scanner with the references' classes: GPT-2's (also
 *   r50k/p50k and Hugging Face `ByteLevel`), cl100k's family (cl100k_base, Llama 3; Qwen2's variant
 *   with single digits) and o200k's (GPT-4o), each checked against tiktoken on every code point.
 *   They run as fast as V8's regex engine or faster, which matters: pre-tokenisation is most of the
 *   cost of encoding once pieces are cached.
 * - **Any other pattern** (a Hugging Face `Split` regex) runs on `re2js`, a linear-time engine
 *   (RE2's automata, no backtracking), so no pattern can make encoding hang, whatever the text: a
 *   JavaScript regex such as `(a+)+$` takes exponential time on 35 characters. `\s` and `\S` are
 *   rewritten to White_Space classes first (RE2's are ASCII), and the one lookaround these patterns
 *   use, the trailing `\s+(?!\S)|\s+`, is done by hand. A pattern RE2 cannot run (other lookarounds,
 *   backreferences) is refused with an error saying why. Safe, but slow: re2js runs its NFA for
 *   every piece, 0.3–0.4 MB/s against the scanners' 35–100 MB/s (BENCHMARKS.md), so a pattern in
 *   wide use deserves a scanner here.
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
import { RE2JS } from "npm:re2js@^1.4.0";

/** GPT-2's pre-tokenisation pattern (also r50k/p50k's, and Hugging Face's `ByteLevel`). */
export const GPT2_PATTERN =
  "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** cl100k_base's pattern as tiktoken and Llama 3's `tokenizer.json` write it. */
export const CL100K_PATTERN = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|" +
  " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** o200k_base's pattern (GPT-4o) as tiktoken writes it. */
export const O200K_PATTERN =
  "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+" +
  "(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+" +
  "[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|" +
  "\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";

/** js-tiktoken's spelling of the case-insensitive contractions (JavaScript lacked `(?i:)`). */
const JS_CONTRACTIONS = "'s|'S|'t|'T|'re|'rE|'Re|'RE|'ve|'vE|'Ve|'VE|'m|'M|'ll|'lL|'Ll|'LL|'d|'D";

/**
 * Spellings of the known patterns, each mapped to its scanner: `3` and `1` are the cl100k family's
 * digit-group lengths. js-tiktoken's spelling (ASCII cases only) gets tiktoken's scanner, whose
 * `(?i:)` also folds U+017F ſ to s; tiktoken ≥ 0.7's possessive quantifiers change nothing here.
 */
const KNOWN_PATTERNS = new Map<string, "gpt2" | "o200k" | 3 | 1>([
  [GPT2_PATTERN, "gpt2"],
  [O200K_PATTERN, "o200k"],
  [O200K_PATTERN.replaceAll("(?i:'s|'t|'re|'ve|'m|'ll|'d)?", `(${JS_CONTRACTIONS})?`), "o200k"],
  [CL100K_PATTERN, 3],
  [CL100K_PATTERN.replace("\\p{N}{1,3}", "\\p{N}"), 1], // Qwen2
  [CL100K_PATTERN.replace("(?i:'s|'t|'re|'ve|'m|'ll|'d)", `(${JS_CONTRACTIONS})`), 3],
  [
    "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|" +
    "\\s*[\\r\\n]|\\s+(?!\\S)|\\s+",
    3,
  ],
]);

/** Whether `pattern` has a hand-written scanner (an exact one; others run on RE2). */
export function isKnownPattern(pattern: string): boolean {
  return KNOWN_PATTERNS.has(pattern);
}

/** Calls `onPiece(start, end)` for consecutive pieces covering all of `text`. */
export type Pretokenizer = (text: string, onPiece: (start: number, end: number) => void) => void;

const OTHER = 0, LETTER = 1, NUMBER = 2, SPACE = 3;

/** Unicode White_Space: `\s` in tiktoken (Rust regex) and Hugging Face tokenizers (Oniguruma). */
const WHITE_SPACE = [
  [0x09, 0x0d],
  [0x20, 0x20],
  [0x85, 0x85],
  [0xa0, 0xa0],
  [0x1680, 0x1680],
  [0x2000, 0x200a],
  [0x2028, 0x2029],
  [0x202f, 0x202f],
  [0x205f, 0x205f],
  [0x3000, 0x3000],
] as const;

/** Class of every BMP code unit (surrogates are OTHER: a lone surrogate is neither L, N nor \s). */
const CLASS = buildClassTable();

function buildClassTable(): Uint8Array {
  const table = new Uint8Array(0x10000);
  // Letters and numbers from the engine's Unicode tables, found a run at a time.
  const mark = (from: number, to: number) => {
    let s = "";
    for (let c = from; c < to; c++) s += String.fromCharCode(c);
    for (const [re, k] of [[/\p{L}+/gu, LETTER], [/\p{N}+/gu, NUMBER]] as const) {
      for (const m of s.matchAll(re)) table.fill(k, from + m.index, from + m.index + m[0].length);
    }
  };
  mark(0, 0xd800);
  mark(0xe000, 0x10000);
  for (const [from, to] of WHITE_SPACE) table.fill(SPACE, from, to + 1);
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

/** UTF-16 units of the code point at `i`. */
function widthAt(t: string, i: number, n: number): number {
  const c = t.charCodeAt(i);
  if (c < 0xd800 || c >= 0xdc00 || i + 1 >= n) return 1;
  const d = t.charCodeAt(i + 1);
  return d >= 0xdc00 && d < 0xe000 ? 2 : 1;
}

/** `\s+(?!\S)|\s+` at a space: the run, less its last space when a non-space follows it. */
function spaceRunEnd(t: string, i: number, n: number): number {
  const j = runEnd(t, i, n, SPACE);
  return j === n || j - 1 === i ? j : j - 1;
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
  return spaceRunEnd(t, i, n);
}

/** ASCII lower case, and U+017F (long s), which case-folds to `s` in `(?i:)`. */
function folded(c: number): number {
  return c === 0x17f ? 115 : c >= 65 && c <= 90 ? c + 32 : c;
}

/**
 * Where the piece of the cl100k family's pattern starting at `i` ends (`i < n`), `digits` being the
 * longest digit group. Mirrors the alternatives in order:
 * `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|`
 * `\s*[\r\n]+|\s+(?!\S)|\s+`.
 */
function cl100kPieceEnd(t: string, i: number, n: number, digits: number): number {
  const c = t.charCodeAt(i);
  if (c === 39 && i + 1 < n) {
    const d = folded(t.charCodeAt(i + 1));
    if (d === 115 || d === 116 || d === 109 || d === 100) return i + 2;
    if (i + 2 < n) {
      const e = folded(t.charCodeAt(i + 2));
      if ((e === 101 && (d === 114 || d === 118)) || (d === 108 && e === 108)) return i + 3;
    }
  }
  const k = classAt(t, i, n);
  if (k === LETTER) return runEnd(t, i, n, LETTER);
  const w = widthAt(t, i, n);
  if (k !== NUMBER && c !== 10 && c !== 13 && i + w < n && classAt(t, i + w, n) === LETTER) {
    return runEnd(t, i + w, n, LETTER);
  }
  if (k === NUMBER) {
    let j = i;
    for (let m = 0; m < digits && j < n && classAt(t, j, n) === NUMBER; m++) j += widthAt(t, j, n);
    return j;
  }
  let from = -1;
  if (k === OTHER) from = i;
  else if (c === 32 && i + 1 < n && classAt(t, i + 1, n) === OTHER) from = i + 1;
  if (from >= 0) {
    let j = runEnd(t, from, n, OTHER);
    while (j < n && (t.charCodeAt(j) === 10 || t.charCodeAt(j) === 13)) j++;
    return j;
  }
  return spaceOrLineBreakEnd(t, i, n);
}

/** o200k's letter classes: bit 1 "upper" `[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]`, bit 2 "lower" `[\p{Ll}\p{Lm}\p{Lo}\p{M}]`. */
const UPPER = 1, LOWER = 2;
const UPPER_RE = /[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]/u, LOWER_RE = /[\p{Ll}\p{Lm}\p{Lo}\p{M}]/u;
let caseTable: Uint8Array | undefined; // built with the first o200k scanner: only it needs the table
const astralCases = new Map<number, number>();

function caseAt(t: string, i: number, n: number): number {
  const c = t.charCodeAt(i);
  if (c < 0xd800 || c >= 0xe000) return caseTable![c];
  const d = c < 0xdc00 && i + 1 < n ? t.charCodeAt(i + 1) : 0;
  if (d < 0xdc00 || d >= 0xe000) return 0; // a lone surrogate
  const cp = ((c - 0xd800) << 10) + (d - 0xdc00) + 0x10000;
  let k = astralCases.get(cp);
  if (k === undefined) {
    const ch = String.fromCodePoint(cp);
    k = (UPPER_RE.test(ch) ? UPPER : 0) | (LOWER_RE.test(ch) ? LOWER : 0);
    astralCases.set(cp, k);
  }
  return k;
}

function buildCaseTable(): Uint8Array {
  const table = new Uint8Array(0x10000);
  for (let u = 0; u < 0x10000; u++) {
    if (u >= 0xd800 && u < 0xe000) continue;
    const ch = String.fromCharCode(u);
    table[u] = (UPPER_RE.test(ch) ? UPPER : 0) | (LOWER_RE.test(ch) ? LOWER : 0);
  }
  return table;
}

/** End of the run of code points having `bit` from `j`. */
function caseRunEnd(t: string, j: number, n: number, bit: number): number {
  while (j < n && caseAt(t, j, n) & bit) j += widthAt(t, j, n);
  return j;
}

/**
 * `upper* lower+` from `j` as the backtracking engine finds it: the longest upper run, then a lower
 * run after it; failing that, the run given back to its last character that is also lower (Lm, Lo,
 * M). -1 when neither.
 */
function upperThenLower(t: string, j: number, n: number): number {
  let k = j, lastLower = -1;
  while (k < n) {
    const b = caseAt(t, k, n);
    if (!(b & UPPER)) break;
    k += widthAt(t, k, n);
    if (b & LOWER) lastLower = k;
  }
  if (k < n && caseAt(t, k, n) & LOWER) return caseRunEnd(t, k, n, LOWER);
  return lastLower;
}

/** `upper+ lower*` from `j`; -1 when no upper character starts it. */
function upperRunThenLower(t: string, j: number, n: number): number {
  const k = caseRunEnd(t, j, n, UPPER);
  return k === j ? -1 : caseRunEnd(t, k, n, LOWER);
}

/** `(?i:'s|'t|'re|'ve|'m|'ll|'d)?` at `e`. */
function contractionEnd(t: string, e: number, n: number): number {
  if (t.charCodeAt(e) !== 39 || e + 1 >= n) return e;
  const d = folded(t.charCodeAt(e + 1));
  if (d === 115 || d === 116 || d === 109 || d === 100) return e + 2;
  if (e + 2 < n) {
    const f = folded(t.charCodeAt(e + 2));
    if ((f === 101 && (d === 114 || d === 118)) || (d === 108 && f === 108)) return e + 3;
  }
  return e;
}

/**
 * Where the o200k piece starting at `i` ends (`i < n`). Its first two alternatives are
 * `[^\r\n\p{L}\p{N}]?upper*lower+'s?` and `[^\r\n\p{L}\p{N}]?upper+lower*'s?` (`'s` standing for the
 * contractions); the rest are cl100k's with `[\r\n/]*` after punctuation.
 */
function o200kPieceEnd(t: string, i: number, n: number): number {
  const c = t.charCodeAt(i);
  const k = classAt(t, i, n);
  const w = widthAt(t, i, n);
  const prefix = k !== LETTER && k !== NUMBER && c !== 10 && c !== 13;
  let e = prefix ? upperThenLower(t, i + w, n) : -1;
  if (e < 0) e = upperThenLower(t, i, n);
  if (e < 0 && prefix) e = upperRunThenLower(t, i + w, n);
  if (e < 0) e = upperRunThenLower(t, i, n);
  if (e >= 0) return contractionEnd(t, e, n);
  if (k === NUMBER) {
    let j = i;
    for (let m = 0; m < 3 && j < n && classAt(t, j, n) === NUMBER; m++) j += widthAt(t, j, n);
    return j;
  }
  let from = -1;
  if (k === OTHER) from = i;
  else if (c === 32 && i + 1 < n && classAt(t, i + 1, n) === OTHER) from = i + 1;
  if (from >= 0) {
    let j = runEnd(t, from, n, OTHER);
    while (j < n) { // [\r\n/]*
      const b = t.charCodeAt(j);
      if (b !== 10 && b !== 13 && b !== 47) break;
      j++;
    }
    return j;
  }
  return spaceOrLineBreakEnd(t, i, n);
}

/** `\s*[\r\n]+|\s+(?!\S)|\s+` at a space: through the run's last line break, else as GPT-2. */
function spaceOrLineBreakEnd(t: string, i: number, n: number): number {
  const j = runEnd(t, i, n, SPACE);
  for (let p = j - 1; p >= i; p--) {
    const b = t.charCodeAt(p);
    if (b === 10 || b === 13) return p + 1;
  }
  return j === n || j - 1 === i ? j : j - 1;
}

function scanner(pieceEnd: (t: string, i: number, n: number) => number): Pretokenizer {
  return (text, onPiece) => {
    const n = text.length;
    for (let i = 0; i < n;) {
      const j = pieceEnd(text, i, n);
      onPiece(i, j);
      i = j;
    }
  };
}

/**
 * A pre-tokenizer for a pattern: a known one's scanner, or the pattern on RE2. Text the pattern does
 * not match becomes pieces of its own (Hugging Face's "Isolated" split behaviour). Throws when RE2
 * cannot run the pattern, saying why.
 */
export function pretokenizer(pattern: string): Pretokenizer {
  const known = KNOWN_PATTERNS.get(pattern);
  if (known === "gpt2") return scanner(gpt2PieceEnd);
  if (known === "o200k") {
    caseTable ??= buildCaseTable();
    return scanner(o200kPieceEnd);
  }
  if (known !== undefined) return scanner((t, i, n) => cl100kPieceEnd(t, i, n, known));
  return re2Pretokenizer(pattern);
}

/** The trailing alternatives of every byte-level pattern; RE2 has no lookahead, so done by hand. */
const SPACE_TAIL = "|\\s+(?!\\S)|\\s+";

function re2Pretokenizer(pattern: string): Pretokenizer {
  const tail = pattern.endsWith(SPACE_TAIL);
  const head = tail ? pattern.slice(0, -SPACE_TAIL.length) : pattern;
  let re: RE2JS;
  let spaceGroup = -1;
  try {
    const translated = toRe2Syntax(head);
    if (tail) {
      spaceGroup = RE2JS.compile(translated).groupCount() + 1;
      re = RE2JS.compile(`${translated}|(${toRe2Syntax("\\s+")})`);
    } else re = RE2JS.compile(translated);
  } catch (e) {
    const why = (e as Error).message;
    const lookaround = /\(\?<?[=!]/.test(head) ? " (lookarounds other than a final `\\s+(?!\\S)|\\s+`)" : "";
    throw new Error(
      `pattern ${JSON.stringify(pattern)} is not supported${lookaround}: ${why}. Patterns run on RE2 ` +
        "(linear time), so backreferences and lookarounds are refused",
    );
  }
  return (text, onPiece) => {
    const n = text.length;
    const m = re.matcher(text);
    let i = 0, from = 0;
    while (from <= n && m.find(from)) {
      const start = m.start();
      let end = m.end();
      if (end === start) { // an empty match is no piece: look again one code point on
        if (start >= n) break;
        from = start + widthAt(text, start, n);
        continue;
      }
      if (spaceGroup > 0 && m.start(spaceGroup) >= 0 && end < n && end - 1 > start) {
        end--; // (?!\S): the run's last space goes with what follows it
      }
      if (start > i) onPiece(i, start);
      onPiece(start, end);
      i = from = end;
    }
    if (i < n) onPiece(i, n);
  };
}

/** White_Space as the inside of a character class, in RE2 syntax. */
const WHITE_SPACE_RE2 = WHITE_SPACE.map(([a, b]) => (a === b ? hex(a) : `${hex(a)}-${hex(b)}`)).join("");
function hex(c: number): string {
  return `\\x{${c.toString(16)}}`;
}

/**
 * A JavaScript/Oniguruma pattern in RE2 syntax: `\s`/`\S` become White_Space classes (RE2's are
 * ASCII) and `\uXXXX`/`\u{…}` become `\x{…}`. `\d`, `\w` and `\b` are refused: they are ASCII in RE2
 * and Unicode in the references, with no class to stand in for all three engines.
 */
function toRe2Syntax(pattern: string): string {
  let out = "", inClass = false;
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === "\\") {
      const e = pattern[i + 1];
      i++;
      if (e === "s") out += inClass ? WHITE_SPACE_RE2 : `[${WHITE_SPACE_RE2}]`;
      else if (e === "S" && !inClass) out += `[^${WHITE_SPACE_RE2}]`;
      else if (e === "S" || e === "d" || e === "D" || e === "w" || e === "W" || e === "b" || e === "B") {
        throw new Error(`\\${e} has no exact RE2 equivalent${inClass ? " inside a class" : ""}`);
      } else if (e === "u" && pattern[i + 1] === "{") {
        const close = pattern.indexOf("}", i);
        out += `\\x${pattern.slice(i + 1, close + 1)}`;
        i = close;
      } else if (e === "u") {
        out += `\\x{${pattern.slice(i + 1, i + 5)}}`;
        i += 4;
      } else out += c + (e ?? "");
    } else {
      if (c === "[" && !inClass) {
        inClass = true;
        out += c;
        if (pattern[i + 1] === "^") out += pattern[++i];
        if (pattern[i + 1] === "]") out += pattern[++i]; // a leading ] is literal
        continue;
      }
      if (c === "]" && inClass) inClass = false;
      out += c;
    }
  }
  return out;
}
