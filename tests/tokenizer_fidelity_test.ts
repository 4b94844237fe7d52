/**
 * Fidelity to tiktoken itself (its Rust core, as the `tiktoken` npm package ships it in WASM) on the
 * characters where engines disagree: every White_Space and format code point, U+FEFF and U+0085
 * above all (js-tiktoken, which runs the patterns as JavaScript regexes, splits those differently).
 * Also: patterns from files run in linear time or are refused, naming the file and field.
 */
import { strict as assert } from "node:assert";
import { get_encoding } from "npm:tiktoken@^1.0.22";
import { cl100kTokenizer, fromHuggingFace, gpt2Tokenizer } from "../tokenizer/load.ts";
import {
  CL100K_PATTERN,
  GPT2_PATTERN,
  isKnownPattern,
  O200K_PATTERN,
  pretokenizer,
} from "../tokenizer/pretokenize.ts";
import { fromBase64, Tokenizer } from "../tokenizer/tokenizer.ts";
import { DataError } from "../pipeline/errors.ts";

const gpt2 = await gpt2Tokenizer();
const cl100k = await cl100kTokenizer();
const oracles = [
  { name: "gpt2", ours: gpt2, ref: get_encoding("gpt2") },
  { name: "cl100k_base", ours: cl100k, ref: get_encoding("cl100k_base") },
];

/** Unicode White_Space, what JavaScript's `\s` adds (U+FEFF), and the format (Cf) characters nearby. */
const WHITE_SPACE = [
  ..."\t\n\v\f\r \u0085\u00a0\u1680\u2028\u2029\u202f\u205f\u3000",
  ...Array.from({ length: 11 }, (_, i) => String.fromCharCode(0x2000 + i)),
];
const FORMAT = [..."\ufeff\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2066\u2069\u180e\u00ad\u061c"];
/** Neighbours that pick different alternatives of the patterns. */
const OTHERS = [..."aZé1٣'sStTlLdDmMvVrReEſK!.,-/", "😀", "𝟙", "中", "\ud83d"];

function stressStrings(count: number, seed: number): string[] {
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const pick = <T>(a: T[]) => a[Math.floor(rand() * a.length)];
  const out: string[] = [];
  for (let k = 0; k < count; k++) {
    let s = "";
    const len = 1 + Math.floor(rand() * 16);
    for (let i = 0; i < len; i++) {
      const r = rand();
      s += r < 0.4 ? pick(WHITE_SPACE) : r < 0.6 ? pick(FORMAT) : pick(OTHERS);
    }
    out.push(s);
  }
  return out;
}

Deno.test("the known case: a, space, BOM, b gives tiktoken's ids", () => {
  assert.deepEqual(gpt2.encode("a \ufeffb"), [64, 27332, 119, 123, 65]);
  assert.deepEqual(gpt2.encode("a \u0085b"), [64, 220, 126, 227, 65]);
  assert.deepEqual(cl100k.encode("a \ufeffb"), [64, 76880, 65]);
  assert.deepEqual(cl100k.encode("a \u0085b"), [64, 220, 126, 227, 65]);
  // tiktoken's (?i:) contractions fold U+017F (long s) to s; js-tiktoken's spelled-out cases do not.
  for (const { name, ours, ref } of oracles) {
    for (const text of ["it'ſa", "IT'Sa", "we'Vex", "x'LLy"]) {
      assert.deepEqual(ours.encode(text), Array.from(ref.encode_ordinary(text)), `${name}: ${text}`);
    }
  }
});

Deno.test("gpt2 and cl100k: tiktoken's ids on 3,000 stress strings of whitespace and format characters", () => {
  const strings = stressStrings(3000, 19);
  for (const { name, ours, ref } of oracles) {
    for (const s of strings) {
      for (const text of [s, `x${s}y`, ` ${s} 12`]) {
        assert.deepEqual(
          ours.encode(text),
          Array.from(ref.encode_ordinary(text)),
          `${name}: ${JSON.stringify(text)}`,
        );
      }
    }
  }
});

Deno.test("gpt2 and cl100k: tiktoken's ids with every White_Space and format character in every context", () => {
  for (const { name, ours, ref } of oracles) {
    for (const w of [...WHITE_SPACE, ...FORMAT]) {
      for (const o of OTHERS) {
        for (
          const text of [
            `${o}${w}${o}`,
            `${o} ${w}${o}`,
            `${o}${w}${w}${o}`,
            `${w}${o}`,
            `${o}${w}`,
            `${w}\n${w}${o}`,
          ]
        ) {
          assert.deepEqual(
            ours.encode(text),
            Array.from(ref.encode_ordinary(text)),
            `${name}: ${JSON.stringify(text)}`,
          );
        }
      }
    }
  }
});

Deno.test("text starting with a byte-order mark round-trips (the BOM is text, not dropped)", () => {
  for (const tok of [gpt2, cl100k]) {
    for (const text of ["\ufeffhello", "\ufeff", "\ufeff\ufeffx", " \ufeff"]) {
      assert.equal(tok.decode(tok.encode(text)), text, JSON.stringify(text));
    }
  }
});

Deno.test("RE2 runs a pattern the scanners know with the same pieces (the \\s+(?!\\S) tail by hand)", () => {
  // A copy that misses the known-pattern table (an extra empty alternative) runs on RE2.
  for (const pattern of [GPT2_PATTERN, CL100K_PATTERN]) {
    const scanner = pretokenizer(pattern), re2 = pretokenizer(`(?:)${pattern}`);
    for (const s of [...stressStrings(1500, 5), "don't  stop\r\n\r\n  now 12345 !!\n", "a \ufeffb", "   "]) {
      const a: string[] = [], b: string[] = [];
      scanner(s, (i, j) => a.push(s.slice(i, j)));
      re2(s, (i, j) => b.push(s.slice(i, j)));
      assert.deepEqual(b, a, `${pattern.slice(0, 12)}: ${JSON.stringify(s)}`);
    }
  }
});

Deno.test("o200k: the scanner, and the same pattern on RE2, give tiktoken's o200k_base ids", async () => {
  const { default: ranks } = await import("npm:js-tiktoken@^1.0.21/ranks/o200k_base");
  assert.ok(isKnownPattern(ranks.pat_str), "js-tiktoken's spelling maps to the scanner");
  const tokens: Uint8Array[] = [];
  for (const line of ranks.bpe_ranks.split("\n")) {
    if (!line) continue;
    const [, first, ...b64] = line.split(" ");
    b64.forEach((t: string, i: number) => (tokens[Number(first) + i] = fromBase64(t)));
  }
  const scanned = new Tokenizer({ tokens: Array.from(tokens, (t) => t ?? null), pattern: O200K_PATTERN });
  const ref = get_encoding("o200k_base");
  // Titlecase, modifier letters, marks and slashes exercise o200k's upper/lower classes and `[\r\n/]*`.
  const extra = ["ǅ", "ʰ", "\u0301", "\u0903", "ⅷ", "Ⅻ", "É", "/", "ᾈ", "A", "b"];
  let seed = 23;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const texts = stressStrings(3000, 29).map((s) =>
    s.replace(/[a1]/g, () => extra[Math.floor(rand() * extra.length)])
  );
  const re2 = pretokenizer(`(?:)${O200K_PATTERN}`), scanner = pretokenizer(O200K_PATTERN);
  for (const text of texts) {
    assert.deepEqual(scanned.encode(text), Array.from(ref.encode_ordinary(text)), JSON.stringify(text));
    const a: string[] = [], b: string[] = [];
    scanner(text, (i, j) => a.push(text.slice(i, j)));
    re2(text, (i, j) => b.push(text.slice(i, j)));
    assert.deepEqual(b, a, JSON.stringify(text));
  }
  for (const name of ["gpt2", "cl100k_base"] as const) {
    const { default: r } = await import(`npm:js-tiktoken@^1.0.21/ranks/${name}`);
    assert.ok(isKnownPattern(r.pat_str), `${name}: js-tiktoken's spelling maps to the scanner`);
  }
});

/** A Hugging Face tokenizer.json: GPT-2's vocabulary, byte-level, with a `Split` regex of our choice. */
function hfWithSplit(regex: string): string {
  const json = JSON.parse(hfGpt2);
  json.pre_tokenizer = {
    type: "Sequence",
    pretokenizers: [
      { type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false },
      { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
    ],
  };
  return JSON.stringify(json);
}
const { toHuggingFace } = await import("../tokenizer/export.ts");
const hfGpt2 = JSON.stringify(toHuggingFace(gpt2));

Deno.test("a catastrophic-backtracking pattern from tokenizer.json runs in linear time on RE2", () => {
  // (a+)+$ on a JavaScript regex: 35 a's and a non-match took over 30 s; RE2 has no backtracking.
  const tok = fromHuggingFace(hfWithSplit("(a+)+$"), "evil/tokenizer.json");
  const text = "a".repeat(100_000) + "!";
  const ids = tok.encode(text);
  assert.equal(tok.decode(ids), text);
  // No match (the "!" breaks $): the whole text is one unmatched piece, as Hugging Face isolates it.
  assert.deepEqual(tok.encode("aaa!"), gpt2.encode("aaa!"));
});

Deno.test("patterns RE2 cannot run are refused, naming the file and the field", () => {
  for (const regex of ["(a)\\1", "(?<=x)y", "a(?=b)"]) {
    assert.throws(() => fromHuggingFace(hfWithSplit(regex), "m/tokenizer.json"), (e: unknown) => {
      assert.ok(e instanceof DataError);
      assert.match(e.message, /^m\/tokenizer\.json:pre_tokenizer\.pretokenizers\[0\]\.pattern\.Regex: /);
      assert.match(e.message, /RE2/);
      return true;
    });
  }
  const file = { ...gpt2.toJSON(), pattern: "(x)\\1" };
  assert.throws(
    () => Tokenizer.fromJSON(file, "kiln/tokenizer.json"),
    (e: unknown) =>
      e instanceof DataError && /^kiln\/tokenizer\.json:pattern: .*backreference/.test(e.message),
  );
});
