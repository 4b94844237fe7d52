import { strict as assert } from "node:assert";
import { getEncoding } from "npm:js-tiktoken@^1.0.21";
import { cl100kTokenizer, gpt2Tokenizer } from "../tokenizer/load.ts";
import { GPT2_PATTERN, pretokenizer } from "../tokenizer/pretokenize.ts";
import { CHAT_TOKENS, END_OF_TEXT } from "../tokenizer/tokenizer.ts";
import { brownTexts } from "./tokenizer_corpus.ts";

const gpt2 = await gpt2Tokenizer();
const cl100k = await cl100kTokenizer();
const oracles = [
  { name: "gpt2", ours: gpt2, ref: getEncoding("gpt2") },
  { name: "cl100k_base", ours: cl100k, ref: getEncoding("cl100k_base") },
];

/**
 * Strings that break naive tokenizers: each is checked against js-tiktoken, alone and in context.
 * The long runs (over 64 bytes take the heap-based merge) stay short because js-tiktoken's own merge
 * loop is super-quadratic on them.
 */
const ADVERSARIAL = [
  "",
  " ",
  "Hello world",
  "emoji 😀👍🏽👨‍👩‍👧‍👦 and flags 🇫🇷🇯🇵",
  "中文字符和日本語のテキスト、한국어 텍스트",
  "combining: e\u0301 a\u0308\u0323 Z\u0351\u0352\u0353 café",
  " ".repeat(1000),
  "\n".repeat(500) + "x",
  "\t \t \n\r\n  \u00a0\u3000 x  ",
  "1".repeat(1200),
  "3.14159265358979 1,000,000 0x7fffffff 2024-05-20",
  "lone surrogates: \ud800 \udc00x\ud83dy \udfff\ud800",
  "don't I'll we've they're she'd it's 'tis ''s '''",
  "DON'T I'LL WE'VE",
  "<|endoftext|> inside a document <|user|>",
  "a".repeat(600) + "b".repeat(17),
  "function f(x) { return x => x ** 2; } // ~~~!!!@@@###",
  "mixed\u2028line\u2029separators\u0085nel\ufeffbom\u200bzwsp",
  "Ω≈ç√∫˜µ≤≥÷ åß∂ƒ©˙∆˚¬ œ∑´®†¥¨ˆøπ“‘ ¡™£¢∞§¶•ªº–≠",
  "\u0000\u0001\u001f\u007f control",
  "𝕳𝖊𝖑𝖑𝖔 𝟙𝟚𝟛 mathematical alphanumerics",
];

Deno.test("gpt2 and cl100k: the same ids as js-tiktoken on adversarial strings", () => {
  for (const { name, ours, ref } of oracles) {
    for (const s of ADVERSARIAL) {
      for (const text of [s, `Start. ${s} end.`]) {
        assert.deepEqual(
          ours.encode(text),
          ref.encode(text, [], []),
          `${name}: ${JSON.stringify(text.slice(0, 40))}`,
        );
      }
    }
  }
});

Deno.test("gpt2 and cl100k: the same ids as js-tiktoken on the Brown corpus (every 8th sample)", async () => {
  const docs = (await brownTexts()).filter((_, i) => i % 8 === 0);
  assert.ok(docs.length >= 60);
  for (const { name, ours, ref } of oracles) {
    for (const { name: file, text } of docs) {
      const got = ours.encode(text), want = ref.encode(text, [], []);
      assert.equal(got.length, want.length, `${name} ${file}: token count`);
      assert.deepEqual(got, want, `${name} ${file}`);
    }
  }
});

Deno.test("long pieces (the heap-based merge, over 64 bytes) agree with js-tiktoken", () => {
  let seed = 11;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  const alphabets = [
    "etaoinshrdlu",
    "abcdefghijklmnopqrstuvwxyzé",
    "0123456789",
    "!@#$%^&*()-=+[]{};:'\",.<>/?`~",
  ];
  for (let trial = 0; trial < 60; trial++) {
    const alphabet = alphabets[trial % alphabets.length];
    const length = 65 + Math.floor(rand() * 200);
    let piece = "";
    while (piece.length < length) piece += alphabet[Math.floor(rand() * alphabet.length)];
    for (const { name, ours, ref } of oracles) {
      assert.deepEqual(ours.encode(piece), ref.encode(piece, [], []), `${name}: ${piece}`);
    }
  }
});

Deno.test("a 200,000-character run encodes (no quadratic merge) and round-trips", () => {
  // What js-tiktoken gives on 300-character runs; a long run must repeat the same token.
  for (const [unit, token, perToken] of [[" ", 220, 1], ["7", 3324, 2], ["ab", 397, 2]] as const) {
    assert.deepEqual(gpt2.encode(unit.repeat(300 / unit.length)), new Array(300 / perToken).fill(token));
    const run = unit.repeat(200_000 / unit.length);
    const ids = gpt2.encode(run);
    assert.equal(ids.length, 200_000 / perToken);
    assert.ok(ids.every((id) => id === token));
    assert.equal(gpt2.decode(ids), run);
  }
});

Deno.test("known GPT-2 ids", () => {
  assert.deepEqual(gpt2.encode("Hello world"), [15496, 995]);
  assert.equal(gpt2.vocabSize, 50257);
  assert.equal(gpt2.specialId(END_OF_TEXT), 50256);
});

Deno.test("the GPT-2 scanner splits exactly as the GPT-2 regex does", () => {
  const scanner = pretokenizer(GPT2_PATTERN);
  const regex = new RegExp(GPT2_PATTERN, "gu");
  const alphabet = [
    "a",
    "Z",
    "é",
    "1",
    "٣",
    " ",
    " ",
    "\n",
    "\t",
    "'",
    "s",
    "l",
    "!",
    "😀",
    "𝟙",
    "中",
    "\ud800",
    "\u00a0",
  ];
  let seed = 7;
  const rand = () => (seed = (Math.imul(seed, 1103515245) + 12345) >>> 0) / 2 ** 32;
  for (let trial = 0; trial < 3000; trial++) {
    let text = "";
    const len = Math.floor(rand() * 24);
    for (let i = 0; i < len; i++) text += alphabet[Math.floor(rand() * alphabet.length)];
    const pieces: string[] = [];
    scanner(text, (i, j) => pieces.push(text.slice(i, j)));
    assert.deepEqual(pieces, text.match(regex) ?? [], JSON.stringify(text));
  }
});

Deno.test("special tokens: ordinary text unless allowed", () => {
  const text = `a${END_OF_TEXT}b`;
  assert.ok(!gpt2.encode(text).includes(50256), "not recognised by default");
  assert.deepEqual(gpt2.encode(text, { allowedSpecial: "all" }), [
    ...gpt2.encode("a"),
    50256,
    ...gpt2.encode("b"),
  ]);
  assert.deepEqual(
    gpt2.encode(text, { allowedSpecial: [END_OF_TEXT] }),
    gpt2.encode(text, { allowedSpecial: "all" }),
  );
  assert.throws(() => gpt2.encode(text, { allowedSpecial: ["<|nope|>"] }), /no special token <\|nope\|>/);
});

Deno.test("withSpecialTokens adds the chat tokens after GPT-2's vocabulary", () => {
  const chat = gpt2.withSpecialTokens([END_OF_TEXT, ...Object.values(CHAT_TOKENS)]);
  assert.equal(chat.specialId(END_OF_TEXT), 50256);
  assert.deepEqual(Object.values(CHAT_TOKENS).map((t) => chat.specialId(t)), [50257, 50258, 50259, 50260]);
  assert.equal(chat.vocabSize, 50261);
  const text = `${CHAT_TOKENS.user}Hi${CHAT_TOKENS.end}`;
  const ids = chat.encode(text, { allowedSpecial: "all" });
  assert.deepEqual(ids, [50258, ...gpt2.encode("Hi"), 50260]);
  assert.equal(chat.decode(ids), text);
  assert.deepEqual(chat.encode("Hello world"), gpt2.encode("Hello world"));
});

Deno.test("decoding round-trips text, and any id sequence to its bytes", () => {
  for (const tok of [gpt2, cl100k]) {
    for (const s of ADVERSARIAL) {
      // Lone surrogates are not encodable as UTF-8: they come back as U+FFFD, like TextEncoder does.
      const wellFormed = new TextDecoder().decode(new TextEncoder().encode(s));
      assert.equal(tok.decode(tok.encode(s)), wellFormed);
      assert.deepEqual(tok.decodeBytes(tok.encode(s)), new TextEncoder().encode(s));
    }
  }
  // Random ids (single tokens can be partial UTF-8 sequences): bytes are the concatenation, text is
  // what a replacing UTF-8 decoder makes of them.
  let seed = 1;
  for (let trial = 0; trial < 200; trial++) {
    const ids = Array.from({ length: 1 + (trial % 13) }, () => (seed = (seed * 48271) % 2147483647) % 50256);
    const bytes = gpt2.decodeBytes(ids);
    const parts = ids.map((id) => gpt2.tokenBytes(id));
    assert.deepEqual(bytes, new Uint8Array(parts.flatMap((p) => [...p])));
    assert.equal(gpt2.decode(ids), new TextDecoder().decode(bytes));
  }
  assert.throws(() => gpt2.decode([50257]), /token id 50257 is not in the vocabulary/);
});
