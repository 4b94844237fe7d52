import { strict as assert } from "node:assert";
import { join } from "node:path";
import { getEncoding } from "npm:js-tiktoken@^1.0.21";
import {
  byteToUnicode,
  cl100kTokenizer,
  fromGpt2Files,
  fromHuggingFace,
  fromTiktoken,
  gpt2Tokenizer,
  loadTokenizer,
} from "../tokenizer/load.ts";
import { latin1, toBase64, Tokenizer } from "../tokenizer/tokenizer.ts";
import { DataError } from "../pipeline/errors.ts";
import { mergeList, toHuggingFace } from "../tokenizer/export.ts";
import { PieceCounter, trainBpe } from "../tokenizer/train.ts";
import { brownTexts } from "./tokenizer_corpus.ts";

const gpt2 = await gpt2Tokenizer();
const SAMPLE = "The quick brown fox's 1234 jumps —  over\n\nthe lazy dog 😀 中文 e\u0301!!";

/** GPT-2's ids → byte strings, from the tiktoken ranks. */
function ranks(tok: Tokenizer): Uint8Array[] {
  return Array.from({ length: 50256 }, (_, id) => tok.tokenBytes(id));
}

/**
 * The merge list that reproduces rank-ordered BPE: each token, BPE'd with only lower-ranked tokens,
 * ends as exactly two parts (how GPT-2's vocab.bpe relates to tiktoken's ranks).
 */
function mergesFromRanks(tokens: Uint8Array[]): [string, string][] {
  const rank = new Map(tokens.map((t, i) => [latin1(t), i]));
  const merges: [string, string][] = [];
  tokens.forEach((t, id) => {
    if (t.length < 2) return;
    let parts = [...latin1(t)];
    for (;;) {
      let best = -1, at = -1;
      for (let i = 0; i + 1 < parts.length; i++) {
        const r = rank.get(parts[i] + parts[i + 1]);
        if (r !== undefined && r < id && (best < 0 || r < best)) [best, at] = [r, i];
      }
      if (at < 0) break;
      parts = [...parts.slice(0, at), parts[at] + parts[at + 1], ...parts.slice(at + 2)];
    }
    assert.equal(parts.length, 2, `token ${id} is not reachable by merges`);
    merges.push([parts[0], parts[1]]);
  });
  return merges;
}

const byteChar = byteToUnicode();
const printable = (s: string) => [...s].map((c) => byteChar[c.charCodeAt(0)]).join("");
const tokens = ranks(gpt2);
const merges = mergesFromRanks(tokens);
const encoderJson = JSON.stringify({
  ...Object.fromEntries(tokens.map((t, id) => [printable(latin1(t)), id])),
  "<|endoftext|>": 50256,
});
const vocabBpe = "#version: 0.2\n" + merges.map(([a, b]) => `${printable(a)} ${printable(b)}`).join("\n") +
  "\n";

Deno.test("GPT-2's encoder.json + vocab.bpe (merge list) give the ids tiktoken's ranks give", () => {
  const tok = fromGpt2Files(encoderJson, vocabBpe);
  assert.equal(tok.vocabSize, 50257);
  assert.equal(tok.merges!.length, 50000);
  assert.equal(tok.specialId("<|endoftext|>"), 50256);
  assert.deepEqual(tok.encode(SAMPLE), gpt2.encode(SAMPLE));
  assert.deepEqual(
    tok.encode(" ".repeat(500) + "9".repeat(300)),
    gpt2.encode(" ".repeat(500) + "9".repeat(300)),
  );
});

Deno.test("Hugging Face tokenizer.json (ByteLevel BPE) gives the same ids", () => {
  const hf = {
    version: "1.0",
    added_tokens: [{ id: 50256, content: "<|endoftext|>", special: true }],
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: {
      type: "BPE",
      vocab: JSON.parse(encoderJson),
      merges: merges.map(([a, b]) => [printable(a), printable(b)]),
    },
  };
  const tok = fromHuggingFace(JSON.stringify(hf));
  assert.deepEqual(tok.encode(SAMPLE), gpt2.encode(SAMPLE));
  assert.equal(tok.specialId("<|endoftext|>"), 50256);
  // The older "a b" string form of merges, and a Split + ByteLevel sequence with GPT-2's regex.
  const older = structuredClone(hf) as Record<string, unknown> & typeof hf;
  (older.model as { merges: unknown }).merges = merges.map(([a, b]) => `${printable(a)} ${printable(b)}`);
  older.pre_tokenizer = {
    type: "Sequence",
    pretokenizers: [
      {
        type: "Split",
        pattern: {
          Regex: "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+",
        },
        behavior: "Isolated",
      },
      { type: "ByteLevel", add_prefix_space: false, use_regex: false },
    ],
  } as unknown as typeof hf.pre_tokenizer;
  assert.deepEqual(fromHuggingFace(JSON.stringify(older)).encode(SAMPLE), gpt2.encode(SAMPLE));
  // Unsupported models say which field.
  const wordpiece = { ...hf, model: { type: "WordPiece", vocab: {} } };
  assert.throws(
    () => fromHuggingFace(JSON.stringify(wordpiece), "bert.json"),
    /bert\.json:model\.type: only BPE/,
  );
  const prefix = { ...hf, pre_tokenizer: { ...hf.pre_tokenizer, add_prefix_space: true } };
  assert.throws(
    () => fromHuggingFace(JSON.stringify(prefix), "t.json"),
    /t\.json:pre_tokenizer\.add_prefix_space/,
  );
});

Deno.test("tiktoken rank files load, and bad lines are named", () => {
  const text = tokens.map((t, id) => `${toBase64(t)} ${id}`).join("\n") + "\n";
  const tok = fromTiktoken(text, { specialTokens: { "<|endoftext|>": 50256 } });
  assert.deepEqual(tok.encode(SAMPLE), gpt2.encode(SAMPLE));
  const broken = text.split("\n");
  broken[41] = "not-a-rank-line";
  assert.throws(() => fromTiktoken(broken.join("\n"), {}, "gpt2.tiktoken"), (e: unknown) => {
    assert.ok(e instanceof DataError);
    assert.match(e.message, /^gpt2\.tiktoken:42: /);
    return true;
  });
});

Deno.test("kiln's tokenizer file round-trips, and loadTokenizer recognises every format by content", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const chat = gpt2.withSpecialTokens(["<|user|>"]);
    await chat.save(join(dir, "kiln.json"));
    const back = await loadTokenizer(join(dir, "kiln.json"));
    assert.equal(back.vocabSize, chat.vocabSize);
    assert.deepEqual(back.specialTokens, chat.specialTokens);
    assert.deepEqual(back.encode(SAMPLE), gpt2.encode(SAMPLE));
    assert.deepEqual(back.toJSON(), chat.toJSON());

    await Deno.writeTextFile(join(dir, "encoder.json"), encoderJson);
    await Deno.writeTextFile(join(dir, "vocab.bpe"), vocabBpe);
    assert.deepEqual((await loadTokenizer(dir)).encode(SAMPLE), gpt2.encode(SAMPLE));
    assert.deepEqual((await loadTokenizer(join(dir, "encoder.json"))).encode(SAMPLE), gpt2.encode(SAMPLE));

    await Deno.writeTextFile(
      join(dir, "r50k.tiktoken"),
      tokens.map((t, id) => `${toBase64(t)} ${id}`).join("\n"),
    );
    assert.deepEqual((await loadTokenizer(join(dir, "r50k.tiktoken"))).encode(SAMPLE), gpt2.encode(SAMPLE));

    await assert.rejects(loadTokenizer(join(dir, "missing.json")), /missing\.json: no such file/);
    await Deno.writeTextFile(join(dir, "bad.json"), '{"format": "kiln-bpe", "version": 9}');
    await assert.rejects(loadTokenizer(join(dir, "bad.json")), /bad\.json:version: unsupported version 9/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a vocabulary without all 256 bytes is refused (not byte-level)", () => {
  assert.throws(() => fromTiktoken("YQ== 0\n", {}, "tiny.tiktoken"), /tiny\.tiktoken: byte 0x0 has no token/);
});

Deno.test("Hugging Face export: GPT-2 and cl100k (ranks rule) and a trained tokenizer load back with the same ids", async () => {
  const derived = mergeList(gpt2);
  assert.equal(derived.length, 50000);
  // The first lines of GPT-2's vocab.bpe: "Ġ t", "Ġ a", "h e", "i n".
  assert.deepEqual(derived.slice(0, 4), [[220, 83], [220, 64], [71, 68], [72, 77]]);
  const back = fromHuggingFace(JSON.stringify(toHuggingFace(gpt2)));
  assert.deepEqual(back.encode(SAMPLE), gpt2.encode(SAMPLE));
  assert.equal(back.specialId("<|endoftext|>"), 50256);

  // cl100k goes out as a Split (its regex) + ByteLevel sequence, the layout of Llama 3's tokenizer.json.
  const cl100k = await cl100kTokenizer();
  const clBack = fromHuggingFace(JSON.stringify(toHuggingFace(cl100k)));
  const reference = getEncoding("cl100k_base");
  for (
    const text of [
      SAMPLE,
      "I'LL DON'T 123456 \r\n\n  x",
      ...(await brownTexts()).slice(0, 4).map((d) => d.text),
    ]
  ) {
    assert.deepEqual(clBack.encode(text), reference.encode(text, [], []));
  }

  const counter = new PieceCounter();
  counter.add(SAMPLE.repeat(3) + " the quick brown foxes jumped");
  const trained = trainBpe(counter, { vocabSize: 320 });
  const hf = toHuggingFace(trained);
  const again = fromHuggingFace(JSON.stringify(hf));
  assert.deepEqual(again.toJSON(), trained.toJSON());
  assert.equal((hf.pre_tokenizer as { type: string }).type, "ByteLevel");
});

// Damaged files (found by tests/fuzz_test.ts): each is a DataError naming the file and the field, never
// a TypeError, and an id of 2^31 is refused before anything is allocated for it (it used to hang).

/** `load` throws a DataError whose message (file:field: detail) matches. */
function refuses(load: () => unknown, message: RegExp): void {
  assert.throws(load, (e: unknown) => {
    assert.ok(e instanceof DataError, `not a DataError: ${(e as Error)?.stack ?? e}`);
    assert.match(e.message, message);
    return true;
  });
}

type HfJson = Record<string, unknown> & { model: Record<string, unknown> };

/** The smallest Hugging Face tokenizer.json that loads: 256 byte tokens, one merge, one added token. */
function tinyHf(): HfJson {
  const vocab: Record<string, number> = Object.fromEntries(byteChar.map((c, b) => [c, b]));
  vocab["Ġt"] = 256;
  return {
    added_tokens: [{ id: 257, content: "<|endoftext|>", special: true }],
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, use_regex: true },
    model: { type: "BPE", vocab, merges: ["Ġ t"] },
  };
}

/** Loads tinyHf() as `t.json` after `change`. */
const hfWith = (change: (hf: HfJson) => void) => () => {
  const hf = tinyHf();
  change(hf);
  return fromHuggingFace(JSON.stringify(hf), "t.json");
};

Deno.test("Hugging Face tokenizer.json: values of the wrong type are refused, naming the field", () => {
  const tok = hfWith(() => {})();
  assert.deepEqual(tok.encode(" t t"), [256, 256]);
  assert.equal(tok.specialId("<|endoftext|>"), 257);

  refuses(() => fromHuggingFace("null", "t.json"), /^t\.json: not a JSON object/);
  refuses(hfWith((hf) => hf.model = "BPE" as unknown as HfJson["model"]), /^t\.json:model: missing or not/);
  refuses(hfWith((hf) => hf.model.vocab = [1, 2]), /^t\.json:model\.vocab: not an object/);
  refuses(hfWith((hf) => hf.model.ignore_merges = "yes"), /^t\.json:model\.ignore_merges: not true or false/);
  refuses(hfWith((hf) => hf.pre_tokenizer = 5), /^t\.json:pre_tokenizer: not an object/);
  // added_tokens not an array (was: TypeError: ….map is not a function), or holding null (was: reading
  // 'content' of null), an empty content, or an id another token has.
  refuses(hfWith((hf) => hf.added_tokens = { id: 257 }), /^t\.json:added_tokens: not an array/);
  refuses(hfWith((hf) => hf.added_tokens = [null]), /^t\.json:added_tokens\[0\]: not an object: null/);
  refuses(
    hfWith((hf) => hf.added_tokens = [{ id: 257, content: "" }]),
    /^t\.json:added_tokens\[0\]\.content: not a non-empty string/,
  );
  refuses(
    hfWith((hf) => hf.added_tokens = [{ id: 256, content: "<|x|>" }]),
    /^t\.json:added_tokens\[0\]\.id: id 256 is taken by model\.vocab\["Ġt"\]/,
  );
  refuses(
    hfWith((hf) => hf.added_tokens = [{ id: 257, content: "<|x|>" }, { id: 257, content: "<|y|>" }]),
    /^t\.json:added_tokens\[1\]\.id: id 257 is taken by added_tokens\[0\]/,
  );
  // A merge that is a number, null or {} (was: "is not iterable"); merges not an array (was:
  // lines.forEach is not a function).
  for (const merge of [7, null, {}, ["Ġ"], "Ġ t x"]) {
    refuses(
      hfWith((hf) => hf.model.merges = ["Ġ t", merge]),
      /^t\.json:model\.merges\[1\]: expected a merge "a b" or \["a", "b"\]/,
    );
  }
  for (const merges of [{ 0: "Ġ t" }, "Ġ t"]) {
    refuses(hfWith((hf) => hf.model.merges = merges), /^t\.json:model\.merges: not an array/);
  }
  // pretokenizers holding null (was: reading 'type' of null), or not an array (was: seq is not iterable).
  const sequence = (pretokenizers: unknown) =>
    hfWith((hf) => hf.pre_tokenizer = { type: "Sequence", pretokenizers });
  refuses(
    sequence([null, { type: "ByteLevel", use_regex: false }]),
    /^t\.json:pre_tokenizer\.pretokenizers\[0\]: not an object: null/,
  );
  refuses(sequence({ type: "Split" }), /^t\.json:pre_tokenizer\.pretokenizers: not an array/);
  refuses(
    sequence([{ type: "Split", pattern: "x", behavior: "Isolated" }, {
      type: "ByteLevel",
      use_regex: false,
    }]),
    /^t\.json:pre_tokenizer\.pretokenizers\[0\]: only an Isolated Regex split/,
  );
  refuses(
    sequence([{ type: "ByteLevel", use_regex: false }, { type: "Digits" }]),
    /^t\.json:pre_tokenizer\.pretokenizers: only \[Split, ByteLevel without regex\] is supported, not \["ByteLevel","Digits"\]/,
  );
});

Deno.test("Hugging Face tokenizer.json: huge, duplicate and non-integer ids are refused before allocating", () => {
  // 2^31 made kiln walk 2^31 array slots (a hang, then out of memory).
  for (const id of [2 ** 31, 2 ** 53 + 2, 1e308]) {
    refuses(
      hfWith((hf) => (hf.model.vocab as Record<string, number>)["Ġt"] = id),
      /^t\.json:model\.vocab\["Ġt"\]: id .* is past the largest vocabulary kiln supports \(4194304 ids\)/,
    );
  }
  refuses(
    hfWith((hf) => hf.added_tokens = [{ id: 2 ** 31, content: "<|endoftext|>" }]),
    /^t\.json:added_tokens\[0\]\.id: id 2147483648 is past the largest vocabulary/,
  );
  for (const id of [-1, 1.5, "3", null]) {
    refuses(
      hfWith((hf) => (hf.model.vocab as Record<string, unknown>)["Ġt"] = id),
      /^t\.json:model\.vocab\["Ġt"\]: id .* is not a non-negative integer/,
    );
  }
  // Two tokens with one id: the first would silently vanish from the vocabulary.
  refuses(
    hfWith((hf) => (hf.model.vocab as Record<string, number>)["Ġt"] = 65),
    /^t\.json:model\.vocab\["Ġt"\]: id 65 is taken by model\.vocab\["A"\]/,
  );
  // An added token also in the vocabulary must have the same id there.
  refuses(
    hfWith((hf) => (hf.model.vocab as Record<string, number>)["<|endoftext|>"] = 258),
    /^t\.json:added_tokens\[0\]\.id: 257, but model\.vocab gives "<\|endoftext\|>" id 258/,
  );
});

Deno.test("GPT-2 encoder.json / vocab.bpe and tiktoken ranks: wrong types, huge and duplicate ids are named", () => {
  const encoder = Object.fromEntries(byteChar.map((c, b) => [c, b]));
  const files = { encoder: "e.json", vocab: "v.bpe" };
  const gpt2Files = (enc: unknown, bpe = "#version: 0.2\n") => () =>
    fromGpt2Files(JSON.stringify(enc), bpe, files);
  assert.equal(gpt2Files({ ...encoder, "Ġt": 256 }, "#version: 0.2\r\nĠ t\r\n")().encode(" t")[0], 256);
  refuses(gpt2Files([1, 2]), /^e\.json: not a JSON object/);
  refuses(gpt2Files(null), /^e\.json: not a JSON object/);
  refuses(
    gpt2Files({ ...encoder, "Ġt": 2 ** 31 }),
    /^e\.json:"Ġt": id 2147483648 is past the largest vocabulary/,
  );
  refuses(gpt2Files({ ...encoder, "Ġt": "256" }), /^e\.json:"Ġt": id "256" is not a non-negative integer/);
  refuses(gpt2Files({ ...encoder, "<|endoftext|>": 0 }), /^e\.json:"<\|endoftext\|>": id 0 is taken by "Ā"/);
  refuses(gpt2Files({ ...encoder, "Ġt": 256 }, "Ġ t x\n"), /^v\.bpe:1: expected a merge "a b"/);

  const ranks = byteChar.map((_, b) => `${toBase64(Uint8Array.of(b))} ${b}`);
  assert.equal(fromTiktoken(ranks.join("\n")).vocabSize, 256);
  refuses(
    () => fromTiktoken([...ranks, "dA== 2147483648"].join("\n"), {}, "r.tiktoken"),
    /^r\.tiktoken:257: id 2147483648 is past/,
  );
  refuses(
    () => fromTiktoken([...ranks, "dA== 3"].join("\n"), {}, "r.tiktoken"),
    /^r\.tiktoken:257: id 3 is taken by line 4/,
  );
  for (const rank of ["1e3", "-1", "0x10", "2.5"]) {
    refuses(
      () => fromTiktoken([...ranks, `dA== ${rank}`].join("\n"), {}, "r.tiktoken"),
      /^r\.tiktoken:257: expected/,
    );
  }
  // Special token ids from the options are checked too.
  refuses(
    () => fromTiktoken(ranks.join("\n"), { specialTokens: { "<|e|>": 2 ** 31 } }, "r.tiktoken"),
    /^r\.tiktoken: special token <\|e\|> has id 2147483648/,
  );
});

Deno.test("kiln's tokenizer file: wrong types, huge and duplicate special ids are named", () => {
  const file = (change: Record<string, unknown>) => () =>
    Tokenizer.fromJSON({
      format: "kiln-bpe",
      version: 1,
      pattern: "gpt2",
      tokens: byteChar.map((_, b) => toBase64(Uint8Array.of(b))),
      specialTokens: { "<|endoftext|>": 256 },
      ...change,
    }, "k.json");
  assert.equal(file({})().vocabSize, 257);
  // A special id of 2^31 made the constructor fill 2^31 slots (a hang, then out of memory).
  refuses(
    file({ specialTokens: { "<|x|>": 2 ** 31 } }),
    /^k\.json:specialTokens\["<\|x\|>"\]: id 2147483648 is not an integer from 0 below 4194304/,
  );
  refuses(file({ specialTokens: { "<|x|>": "5" } }), /^k\.json:specialTokens\["<\|x\|>"\]: id "5"/);
  refuses(file({ specialTokens: ["<|x|>"] }), /^k\.json:specialTokens: not an object/);
  refuses(
    file({ specialTokens: { "<|a|>": 300, "<|b|>": 300 } }),
    /^k\.json: special tokens <\|a\|> and <\|b\|> share id 300/,
  );
  refuses(file({ specialTokens: { "": 300 } }), /^k\.json: a special token is empty/);
  refuses(file({ tokens: [5] }), /^k\.json:tokens\[0\]: not base64 text or null/);
  refuses(file({ tokens: ["!!"] }), /^k\.json:tokens\[0\]: not base64 text or null/);
  refuses(file({ merges: [[0, 1], [2]] }), /^k\.json:merges\[1\]: not a pair of ids/);
  refuses(file({ merges: [null] }), /^k\.json:merges\[0\]: not a pair of ids/);
  refuses(file({ ignoreMerges: "yes" }), /^k\.json:ignoreMerges: not true or false/);
});
