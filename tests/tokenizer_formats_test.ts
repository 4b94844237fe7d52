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
import { latin1, toBase64, type Tokenizer } from "../tokenizer/tokenizer.ts";
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
