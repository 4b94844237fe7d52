/**
 * Each rule filter on hand-checked examples just inside and just outside its threshold (datatrove's
 * defaults), plus the small filters and PII masking.
 */
import { strict as assert } from "node:assert";
import {
  buildChain,
  c4Filter,
  finewebFilter,
  gopherQuality,
  gopherRepetition,
  lengthFilter,
  maskPii,
  UrlBlockList,
} from "../stages/filters/mod.ts";

// 50 distinct 5-letter words with "the" and "and" among them: passes every Gopher quality rule.
const WORDS = Array.from(
  { length: 48 },
  (_, i) => "w" + String.fromCharCode(97 + (i % 26)) + "ord" + "abcdefgh"[i >> 3],
);
const prose = (n: number) => ["the", "and", ...WORDS].slice(0, n).join(" ");

Deno.test("gopher quality: 50 words pass, 49 do not; stop words, word length, symbols, bullets, letters", () => {
  assert.equal(gopherQuality(prose(50)), undefined);
  assert.equal(gopherQuality(prose(49)), "gopher_short_doc");
  assert.equal(gopherQuality(prose(50), { ...gopherDefaults(), maxDocWords: 49 }), "gopher_long_doc");
  // Punctuation tokens are not words: 49 words and a full stop is still short.
  assert.equal(gopherQuality(prose(49) + " ."), "gopher_short_doc");
  // Mean word length: "the"/"and" (3) and 48 six-letter words ≈ 5.9; 50 words of 2 letters → 2.
  assert.equal(gopherQuality(Array(50).fill("ab").join(" ") + " the and"), "gopher_below_avg_threshold");
  assert.equal(
    gopherQuality("the and " + Array(50).fill("abcdefghijk").join(" ")),
    "gopher_above_avg_threshold",
  );
  // 5 "#" in 50 words = 0.1 (allowed); 6 → 0.12.
  assert.equal(gopherQuality(prose(50) + " #####"), undefined);
  assert.equal(gopherQuality(prose(50) + " ######"), "gopher_too_many_hashes");
  assert.equal(gopherQuality(prose(50) + " ... ... ... ... ... …"), "gopher_too_many_ellipsis");
  // Only one stop word.
  assert.equal(gopherQuality(["the", ...WORDS, "wordy", "words"].join(" ")), "gopher_enough_stop_words");
  // Bullets: 9 of 10 lines (0.9) pass, 10 of 10 fail.
  const lines = (bullets: number) =>
    Array.from(
      { length: 10 },
      (_, i) => (i < bullets ? "• " : "") + prose(50).split(" ").slice(i * 5, i * 5 + 5).join(" "),
    )
      .join("\n");
  assert.equal(gopherQuality(lines(9)), undefined);
  assert.equal(gopherQuality(lines(10)), "gopher_too_many_bullets");
  // Ellipsis at the end of 3 of 10 lines (0.3) passes, 4 fails.
  const ellipses = (k: number) => lines(0).split("\n").map((l, i) => i < k ? l + "…" : l).join("\n");
  assert.equal(gopherQuality(ellipses(3)), undefined);
  assert.equal(gopherQuality(ellipses(4)), "gopher_too_many_end_ellipsis");
  // Words with a letter: 50 words + 12 numbers = 50/62 = 0.806 pass; + 13 → 50/63 = 0.794 fail.
  assert.equal(gopherQuality(prose(50) + " 1".repeat(12)), undefined);
  assert.equal(gopherQuality(prose(50) + " 1".repeat(13)), "gopher_below_alpha_threshold");
});

function gopherDefaults() {
  return {
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
}

// Distinct words ("u0word u1word …"), so that no n-gram repeats unless a test plants one.
const uniq = (n: number, prefix = "u") =>
  Array.from({ length: n }, (_, i) => `${prefix}${i.toString(36)}word`).join(" ");
const FILLER = uniq(150); // 1,163 characters, one line
const LINES = [1, 2, 3, 4, 5, 6].map((i) => uniq(6, `l${i}x`));

Deno.test("gopher repetition: duplicate line and paragraph fractions (0.3) and characters (0.2)", () => {
  // 3 repeated lines of 10 = 0.3 is allowed; 4 of 11 = 0.36 is not.
  const lines = (k: number) => [FILLER, ...LINES, "xx yy", ...Array(k).fill("xx yy")].join("\n");
  assert.equal(gopherRepetition(lines(3)), undefined);
  assert.equal(gopherRepetition(lines(4)), "dup_line_frac");
  // The same with blank lines between: paragraphs, checked first.
  const paras = (k: number) => [FILLER, ...LINES, "xx yy", ...Array(k).fill("xx yy")].join("\n\n");
  assert.equal(gopherRepetition(paras(3)), undefined);
  assert.equal(gopherRepetition(paras(4)), "dup_para_frac");
  // One line repeated once: 495 of 2,479 characters (0.1997) pass, 500 of 2,489 (0.2009) fail.
  const chars = (n: number) => [FILLER, ...LINES, "d".repeat(n), "d".repeat(n)].join("\n");
  assert.equal(gopherRepetition(chars(495)), undefined);
  assert.equal(gopherRepetition(chars(500)), "dup_line_char_frac");
  assert.equal(gopherRepetition(chars(500).replaceAll("\n", "\n\n")), "dup_para_char_frac");
});

Deno.test("gopher repetition: the top 2-gram's characters (0.2) and repeated 5-grams (0.15)", () => {
  // "ab cd" 10 times (50 characters) in 250 characters = 0.2 passes; in 243 (0.2058) it fails.
  const top2 = (f: number) => uniq(f) + Array.from({ length: 10 }, (_, i) => ` ab cd s${i}`).join("");
  assert.equal(top2(23).length, 250);
  assert.equal(gopherRepetition(top2(23)), undefined);
  assert.equal(gopherRepetition(top2(22)), "top_2_gram");
  // A 23-character 5-gram 6 times: 5 repeats = 115 characters; 0.1488 of the text passes, 0.1503 fails.
  const five = (f: number) =>
    uniq(f) + Array.from({ length: 6 }, (_, i) => ` one two three four five q${i}`).join("");
  assert.equal(gopherRepetition(five(81)), undefined);
  assert.equal(gopherRepetition(five(80)), "duplicated_5_n_grams");
});

Deno.test("c4: line rules remove lines, document rules drop documents", () => {
  const s = (i: number) => `This is sentence number ${WORDS[i]} of the text.`;
  const good = [s(0), s(1), s(2), s(3), s(4)].join("\n");
  const kept = c4Filter(good);
  assert.ok("text" in kept && kept.text === good);
  // Four sentences: too few; five: enough.
  assert.deepEqual(c4Filter([s(0), s(1), s(2), s(3)].join("\n")), { reason: "too_few_sentences" });
  // Lines without terminal punctuation, with fewer than 3 words, with "javascript", or a cookie notice go.
  const r = c4Filter(
    [good, "Menu Home About", "Two words.", "Please enable JavaScript to view.", "This site uses cookies."]
      .join("\n"),
  );
  assert.ok("text" in r);
  assert.equal(r.text, good);
  assert.deepEqual(r.removedLines, {
    "line-filter-no_terminal_punc": 1,
    "line-filter-too_few_words": 1,
    "line-filter-javascript": 1,
    "line-filter-policy": 1,
  });
  // Ellipsis endings count as no terminal punctuation; citations are stripped.
  const cited = c4Filter([good, "And so it went on..."].join("\n"));
  assert.ok("text" in cited && cited.removedLines["line-filter-no_terminal_punc"] === 1);
  const c = c4Filter(good.replace("of the text.", "of the text.[12]"));
  assert.ok("text" in c && !c.text.includes("[12]"));
  assert.deepEqual(c4Filter(good + "\nLorem ipsum dolor sit amet."), { reason: "lorem_ipsum" });
  assert.deepEqual(c4Filter(good + "\nfunction f() { return 1; }."), { reason: "curly_bracket" });
  // A 1001-character word removes its line; 1000 is allowed.
  const w1000 = c4Filter(good + `\nA ${"x".repeat(1000)} word.`);
  assert.ok("text" in w1000 && w1000.text.includes("x".repeat(1000)));
  const w1001 = c4Filter(good + `\nA ${"x".repeat(1001)} word.`);
  assert.ok("text" in w1001 && w1001.removedLines["line-filter-too_long_word"] === 1);
});

Deno.test("fineweb: punctuated lines, short lines, duplicated line characters, newlines per word", () => {
  const long = (i: number, end = ".") => `This fairly long line number ${WORDS[i]} talks about things${end}`;
  // 1 of 8 lines punctuated = 0.125 > 0.12: passes that rule; 0 of 8 fails.
  const mixed = (k: number) => Array.from({ length: 8 }, (_, i) => long(i, i < k ? "." : "")).join("\n");
  assert.equal(finewebFilter(mixed(8)), undefined);
  assert.equal(finewebFilter(mixed(1)), undefined);
  assert.equal(finewebFilter(mixed(0)), "line_punct_ratio");
  // Short lines: 2 of 3 (0.667) are below 0.67 and pass; 3 of 4 (0.75) fail.
  assert.equal(finewebFilter([long(0), "Short one.", "Short two."].join("\n")), undefined);
  assert.equal(
    finewebFilter([long(0), "Short one.", "Short two.", "Short three."].join("\n")),
    "short_line_ratio",
  );
  // A repeated line is ≥ 1% of the characters.
  assert.equal(finewebFilter([long(0), long(1), long(0)].join("\n")), "char_dup_ratio");
  // Newlines per word: 3 lines of 9 words → 2/27 fine; one word per line → list.
  assert.equal(
    finewebFilter(["Alpha beta gamma delta epsilon zeta eta theta iota.", long(1), long(2)].join("\n")),
    undefined,
  );
  // Ten distinct 31-character lines: 2 tokens a line gives 9 newlines / 20 tokens (list); 3 gives exactly 0.3.
  const list = (more: string) =>
    Array.from({ length: 10 }, (_, i) => `Item${i}`.padEnd(31, "s") + more + ".").join("\n");
  assert.equal(finewebFilter(list("")), "list_ratio");
  assert.equal(finewebFilter(list(" more")), undefined);
  assert.equal(finewebFilter(""), "empty");
});

Deno.test("length, URL block list and PII masking", () => {
  assert.equal(lengthFilter("abcd", { minChars: 4 }), undefined);
  assert.equal(lengthFilter("abc", { minChars: 4 }), "too_few_chars");
  assert.equal(lengthFilter("a b c", { maxWords: 2 }), "too_many_words");
  const list = new UrlBlockList(UrlBlockList.parseList("# adult\nbad.example\n0.0.0.0 tracker.test\n"), [
    "casino",
  ]);
  assert.equal(list.check("https://bad.example/page"), "blocked_domain");
  assert.equal(list.check("https://www.bad.example/page"), "blocked_domain");
  assert.equal(list.check("https://notbad.example/page"), undefined);
  assert.equal(list.check("http://tracker.test"), "blocked_domain");
  assert.equal(list.check("https://ok.example/online-casino-bonus"), "banned_word_in_url");
  assert.equal(list.check("https://ok.example/casinos"), undefined);
  assert.equal(list.check(undefined), undefined);
  const masked = maskPii(
    "Mail jane.doe+x@mail.example.org or call 10.0.0.1; v6 fe80::1 and 2001:db8:0:0:0:0:2:1. Time 12:30:45, version 1.2.3.",
  );
  assert.equal(
    masked.text,
    "Mail email@example.com or call 0.0.0.0; v6 0.0.0.0 and 0.0.0.0. Time 12:30:45, version 1.2.3.",
  );
  assert.deepEqual([masked.emails, masked.ips], [1, 3]);
  assert.equal(maskPii("not an ip: 256.1.1.1").ips, 0);
});

Deno.test("the chain runs filters in order, stops at the first drop and records changes", async () => {
  const chain = await buildChain({ length: { minChars: 10 }, pii: {} });
  assert.deepEqual(chain.apply({ id: "a", text: "short" }), { filter: "length", drop: "too_few_chars" });
  const seen: string[] = [];
  const v = chain.apply({ id: "b", text: "write to a@b.example now" }, (step) => seen.push(step));
  assert.deepEqual(seen, ["length", "pii"]);
  assert.ok("doc" in v && v.doc.text === "write to email@example.com now");
  const language = await buildChain({ language: { languages: ["en"], minScore: 0.5 } });
  const en = language.apply({
    id: "c",
    text: "The committee said on Friday that the election was conducted fairly.",
  });
  assert.ok("doc" in en && en.doc.meta?.language === "en");
  assert.deepEqual(
    language.apply({
      id: "d",
      text: "Der Ausschuss sagte am Freitag, dass die Wahl fair durchgeführt wurde.",
    }),
    { filter: "language", drop: "language_de" },
  );
});
