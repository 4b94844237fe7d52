/**
 * The MinHash library: normalisation, signatures that estimate Jaccard similarity, LSH bands that
 * catch pairs at the rate `1 − (1 − s^r)^b` predicts, band layouts, and deterministic clusters.
 */
import { strict as assert } from "node:assert";
import { UnionFind } from "../stages/dedupe/buckets.ts";
import {
  bandKeys,
  candidateProbability,
  exactKey,
  MinHasher,
  normalizeText,
} from "../stages/dedupe/minhash.ts";
import { bandLayout, effectiveThreshold } from "../stages/dedupe/params.ts";
import { fmix32, hashWord } from "../stages/hashing.ts";
import { mulberry32 } from "../model/rng.ts";

Deno.test("normalisation: case, punctuation, diacritics, digits and spaces do not matter", () => {
  assert.equal(normalizeText("  Héllo,   WORLD!\n It's 2024… "), "hello world its 0");
  assert.deepEqual(exactKey("Hello, world 42"), exactKey("hello world 7"));
  assert.notDeepEqual(exactKey("hello world"), exactKey("hello word"));
});

/**
 * datatrove's `simplify_text` (datatrove/utils/text.py, default TextNormConfig), written out here a
 * character at a time from its source: lower(); strip() and `\s+` → " "; delete every character of
 * its PUNCTUATION string; NFD, dropping category Mn; `\d+` → "0"; strip(). Python's whitespace is
 * `str.isspace()`; its `\d` is category Nd. Shingles are its word 5-grams (words split at whitespace).
 */
const DATATROVE_PUNCTUATION = new Set([
  ..."!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»",
  ...[[0, 9], [11, 13], [13, 32], [127, 160]].flatMap(([a, b]) =>
    Array.from({ length: b - a }, (_, i) => String.fromCharCode(a + i))
  ),
]);
const PYTHON_SPACE = new Set([
  ..."\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000",
  ...Array.from({ length: 11 }, (_, i) => String.fromCharCode(0x2000 + i)),
]);
function simplifyTextReference(text: string): string {
  const strip = (chars: string[]) => {
    let a = 0, b = chars.length;
    while (a < b && PYTHON_SPACE.has(chars[a])) a++;
    while (b > a && PYTHON_SPACE.has(chars[b - 1])) b--;
    return chars.slice(a, b);
  };
  let chars = strip([...text.toLowerCase()]);
  const collapsed: string[] = [];
  for (const c of chars) {
    if (!PYTHON_SPACE.has(c)) collapsed.push(c);
    else if (collapsed.at(-1) !== " ") collapsed.push(" ");
  }
  chars = collapsed.filter((c) => !DATATROVE_PUNCTUATION.has(c));
  chars = [...chars.join("").normalize("NFD")].filter((c) => !/^\p{Mn}$/u.test(c));
  const isDigit = (c: string | undefined) => c !== undefined && /^\p{Nd}$/u.test(c);
  const digits: string[] = [];
  chars.forEach((c, i) => {
    if (!isDigit(c)) digits.push(c);
    else if (!isDigit(chars[i - 1])) digits.push("0"); // a run of digits → one "0"
  });
  return strip(digits).join("");
}
function referenceShingles(text: string, n: number): Set<number> {
  const words = simplifyTextReference(text).split(" ").filter((w) => w !== "");
  const out = new Set<number>();
  for (let i = 0; i < Math.max(1, words.length - n + 1); i++) {
    let h = 0x2545f491;
    for (const w of words.slice(i, i + n)) h = fmix32(Math.imul(h, 0x01000193) ^ hashWord(w));
    out.add(h);
  }
  return out;
}

Deno.test("normalisation is datatrove's simplify_text: punctuation deleted (not a space), its list only", () => {
  assert.equal(normalizeText("a well-known fact"), "a wellknown fact");
  assert.equal(normalizeText("A - b"), "a  b"); // deleted after the spaces collapsed, as in datatrove
  assert.equal(normalizeText("© 2024 €5 ½ ²"), "© 0 €0 ½ ²"); // symbols and No digits are not on its list
  assert.equal(normalizeText("\ufeffx\u0085y\x1cz"), "\ufeffx y z"); // Python's whitespace, not JavaScript's
  assert.equal(normalizeText("Ça\u0301 va ١٢٣"), "ca va 0");
});

Deno.test("normalisation and shingles agree with datatrove's rule written out, on stress strings", () => {
  const hasher = new MinHasher({ shingleWords: 5, bands: 14, rows: 8, seed: 1 });
  const alphabet = [
    ..."aZé ,.-'’!?()[]{}\\/\"`~@#$%^&*_+=|;:<>",
    ..."\t\n\r\v\f\x1c\x85\xa0\u2003\u3000\ufeff\u200b\x00\x7f\x9f",
    ..."—–…«»“”„、。，！？：；（）％１２〈〉【】《》「」━►∶´．～",
    ..."0١٢½²€©™°•·§¶",
    "e\u0301",
    "\u0903",
    "İ",
    "ΣΑΣ",
  ];
  let seed = 3;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let trial = 0; trial < 2000; trial++) {
    let text = "";
    const len = Math.floor(rand() * 40);
    for (let i = 0; i < len; i++) text += rand() < 0.3 ? " " : alphabet[Math.floor(rand() * alphabet.length)];
    assert.equal(normalizeText(text), simplifyTextReference(text), JSON.stringify(text));
    assert.deepEqual(new Set(hasher.shingles(text)), referenceShingles(text, 5), JSON.stringify(text));
  }
});

/** Two random shingle sets with exactly `intersection` of `union` hashes in common. */
function pair(random: () => number, union: number, intersection: number): [Uint32Array, Uint32Array] {
  const draw = () => Math.floor(random() * 2 ** 32);
  const common = Array.from({ length: intersection }, draw);
  const only = (union - intersection) / 2;
  return [
    Uint32Array.from([...common, ...Array.from({ length: only }, draw)]),
    Uint32Array.from([...common, ...Array.from({ length: only }, draw)]),
  ];
}

Deno.test("LSH: pairs of known Jaccard similarity become candidates at the rate 1 − (1 − s^8)^14 predicts", () => {
  // 400 pairs per similarity; each rate must lie within 4 binomial standard errors of the formula
  // (the test is seeded, so it is deterministic; 4σ leaves room for the hash family's own bias).
  const hasher = new MinHasher({ shingleWords: 5, bands: 14, rows: 8, seed: 7 });
  const random = mulberry32(42);
  const trials = 400;
  const union = 200;
  for (const s of [0.5, 0.6, 0.7, 0.72, 0.8, 0.9]) {
    let intersection = Math.round(s * union);
    if ((union - intersection) % 2) intersection++;
    const jaccard = intersection / union;
    let caught = 0, agreeing = 0;
    for (let t = 0; t < trials; t++) {
      const [a, b] = pair(random, union, intersection);
      const sa = hasher.signatureOf(a), sb = hasher.signatureOf(b);
      for (let i = 0; i < sa.length; i++) if (sa[i] === sb[i]) agreeing++;
      const ka = bandKeys(sa, 14, 8), kb = bandKeys(sb, 14, 8);
      let shared = false;
      for (let band = 0; band < 14; band++) {
        if (ka[2 * band] === kb[2 * band] && ka[2 * band + 1] === kb[2 * band + 1]) shared = true;
      }
      if (shared) caught++;
    }
    const p = candidateProbability(jaccard, 14, 8);
    const rate = caught / trials;
    const sd = Math.sqrt(p * (1 - p) / trials);
    assert.ok(
      Math.abs(rate - p) <= 4 * sd + 1e-9,
      `s=${jaccard}: caught ${rate}, predicted ${p.toFixed(3)} ± ${(4 * sd).toFixed(3)}`,
    );
    // Each hash function agrees with probability s (the MinHash property).
    const agreement = agreeing / (trials * 112);
    assert.ok(Math.abs(agreement - jaccard) < 0.01, `s=${jaccard}: hashes agree ${agreement.toFixed(4)}`);
  }
});

Deno.test("MinHash on text: a one-word edit is caught, an unrelated text is not", () => {
  const hasher = new MinHasher({ shingleWords: 5, bands: 14, rows: 8, seed: 1 });
  // Letters only: normalisation turns every digit run into "0".
  const letters = (n: number) => n.toString(26).replace(/\d/g, (d) => "qrstuvwxyz"[+d]);
  const words = Array.from({ length: 300 }, (_, i) => `w${letters((i * 7919) % 1000)}`);
  const a = words.join(" ");
  const b = words.map((w, i) => i === 150 ? "changed" : w).join(" ");
  const c = words.slice().reverse().join(" ");
  const share = (x: string, y: string) => {
    const kx = bandKeys(hasher.signature(x), 14, 8), ky = bandKeys(hasher.signature(y), 14, 8);
    return Array.from({ length: 14 }, (_, i) => kx[2 * i] === ky[2 * i] && kx[2 * i + 1] === ky[2 * i + 1])
      .some(Boolean);
  };
  assert.ok(share(a, b));
  assert.ok(!share(a, c));
  assert.deepEqual(hasher.signature("Short text"), hasher.signature("short, TEXT!"));
});

Deno.test("band layout: datatrove's 14 × 8 has threshold ≈ 0.72; a threshold picks a layout near it", () => {
  assert.equal(effectiveThreshold(14, 8).toFixed(2), "0.72");
  for (const threshold of [0.5, 0.7, 0.8, 0.9]) {
    const { bands, rows } = bandLayout(threshold, 112);
    assert.ok(bands * rows <= 112);
    assert.ok(Math.abs(effectiveThreshold(bands, rows) - threshold) < 0.08, `${threshold}: ${bands}×${rows}`);
  }
});

Deno.test("union-find: each component's root is its smallest member, whatever the pair order", () => {
  const pairs = [[5, 9], [9, 2], [7, 8], [2, 11], [8, 3]];
  for (const order of [pairs, pairs.slice().reverse()]) {
    const uf = new UnionFind();
    for (const [a, b] of order) uf.union(a, b);
    assert.deepEqual([5, 9, 2, 11].map((x) => uf.find(x)), [2, 2, 2, 2]);
    assert.deepEqual([7, 8, 3].map((x) => uf.find(x)), [3, 3, 3]);
  }
});
