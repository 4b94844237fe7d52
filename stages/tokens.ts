/**
 * What the stages that write token shards share (`tokenize`, and `mix`, which writes them from several
 * datasets): the tokenizer a stage uses (trained once on documents and kept in its checkpoint across a
 * crash, or loaded), the train/validation split by document id, and a growable shard buffer.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import type { StageContext } from "../pipeline/stage.ts";
import { ConfigError, InterruptedError } from "../pipeline/errors.ts";
import { readDocuments } from "./documents.ts";
import { DEFAULT_SPECIAL_TOKENS, END_OF_TEXT, Tokenizer } from "../tokenizer/tokenizer.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { PieceCounter, trainBpe } from "../tokenizer/train.ts";
import { HEADER_BYTES, needsUint32, tokenShardHeader } from "../tokenizer/shards.ts";
import { hashWord } from "./hashing.ts";

/** The settings that choose a tokenizer: train one (`bpe`) or load one (`tokenizer`). */
export const tokenizerSettings = {
  /** Train a tokenizer on the input documents. */
  bpe: z.object({
    /** Ids in the vocabulary, special tokens included. */
    vocabSize: z.number().int().min(256 + DEFAULT_SPECIAL_TOKENS.length).max(1 << 20),
    /** Special tokens (the last ids). Default: `<|endoftext|>`, `<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>`. */
    specialTokens: z.array(z.string().min(1)).optional(),
    /** Pairs seen fewer times than this never merge (the vocabulary may then be smaller). */
    minFrequency: z.number().int().min(1).default(2),
    /** Train on at most this many bytes of text, from the first documents (default 1 GiB). */
    maxTrainBytes: z.number().int().min(1).default(1 << 30),
  }).strict().optional(),
  /**
   * Load a tokenizer instead: `gpt2`, `cl100k_base`, or a path to kiln's tokenizer.json, a Hugging
   * Face tokenizer.json, GPT-2's encoder.json (vocab.bpe beside it) or a tiktoken rank file.
   */
  tokenizer: z.string().min(1).optional(),
  /** Special tokens a loaded tokenizer gets when it lacks them (new ids after its last). */
  specialTokens: z.array(z.string().min(1)).optional(),
  /** Fraction of documents (by id hash) written to `val-*.bin`. */
  valFraction: z.number().min(0).max(1).default(0.01),
};

/** The tokenizer settings, validated. */
export interface TokenizerSettings {
  bpe?: { vocabSize: number; specialTokens?: string[]; minFrequency: number; maxTrainBytes: number };
  tokenizer?: string;
  specialTokens?: string[];
  valFraction: number;
}

/**
 * Whether a document id falls in the validation split: a 32-bit hash of the id (FNV-1a, then
 * MurmurHash3's finaliser, so ids differing in their last character spread over the whole range)
 * below `fraction` · 2^32.
 */
export function isValidation(id: string, fraction: number): boolean {
  return hashWord(id) / 2 ** 32 < fraction;
}

/** A growable buffer of token ids in the shard's width. */
export class TokenBuffer {
  data: Uint16Array | Uint32Array;
  length = 0;
  constructor(readonly uint32: boolean) {
    this.data = uint32 ? new Uint32Array(1 << 16) : new Uint16Array(1 << 16);
  }
  append(ids: number[]): void {
    if (this.length + ids.length > this.data.length) {
      let size = this.data.length * 2;
      while (size < this.length + ids.length) size *= 2;
      const grown = this.uint32 ? new Uint32Array(size) : new Uint16Array(size);
      grown.set(this.data.subarray(0, this.length));
      this.data = grown;
    }
    this.data.set(ids, this.length);
    this.length += ids.length;
  }
  /** The shard file: llm.c header then the tokens (little-endian, as typed arrays are here). */
  file(): Uint8Array {
    const tokens = new Uint8Array(this.data.buffer, 0, this.length * this.data.BYTES_PER_ELEMENT);
    const out = new Uint8Array(HEADER_BYTES + tokens.length);
    out.set(tokenShardHeader(this.length, this.uint32));
    out.set(tokens, HEADER_BYTES);
    return out;
  }
}

// A worker thread encodes many shards with one tokenizer: load it once (keyed by file identity).
const loaded = new Map<string, Promise<Tokenizer>>();
/** The tokenizer in a file, loaded once per thread. */
export async function tokenizerAt(path: string): Promise<Tokenizer> {
  const info = await Deno.stat(path);
  const key = `${path}\0${info.size}\0${info.mtime?.getTime()}`;
  if (!loaded.has(key)) {
    if (loaded.size > 4) loaded.clear();
    loaded.set(key, loadTokenizer(path));
  }
  return await loaded.get(key)!;
}

/**
 * The stage's tokenizer: trained on the training documents of `files` (once: it is kept in the
 * checkpoint, so a crash while encoding does not retrain) or loaded, then written to the artifact as
 * `tokenizer.json`; returns it with that file's path. Errors name the stage's fields.
 */
export async function prepareTokenizer(
  // deno-lint-ignore no-explicit-any
  ctx: StageContext<any, any>,
  stage: string,
  config: TokenizerSettings,
  files: string[],
): Promise<{ tokenizer: Tokenizer; path: string }> {
  if (!config.bpe === !config.tokenizer) {
    throw new ConfigError(
      stage,
      [config.bpe ? "tokenizer" : "bpe"],
      config.bpe
        ? "give either bpe (train a tokenizer) or tokenizer (load one), not both"
        : 'give bpe: { vocabSize } to train a tokenizer, or tokenizer: "gpt2" or a path to load one',
    );
  }
  if (config.bpe?.specialTokens && !config.bpe.specialTokens.includes(END_OF_TEXT)) {
    throw new ConfigError(
      stage,
      ["bpe", "specialTokens"],
      `must include ${END_OF_TEXT} (it separates documents)`,
    );
  }
  let tok: Tokenizer;
  const saved = await ctx.checkpoint.readFile("tokenizer.json");
  if (saved) {
    tok = Tokenizer.fromJSON(JSON.parse(new TextDecoder().decode(saved)), "checkpoint tokenizer.json");
  } else if (config.bpe) {
    tok = await trainOnDocuments(ctx, files, config.bpe, config.valFraction);
    await ctx.checkpoint.writeFile("tokenizer.json", new TextEncoder().encode(JSON.stringify(tok.toJSON())));
  } else {
    tok = (await loadTokenizer(config.tokenizer!)).withSpecialTokens(
      config.specialTokens ?? DEFAULT_SPECIAL_TOKENS,
    );
  }
  if (tok.specialTokens[END_OF_TEXT] === undefined) {
    throw new ConfigError(stage, ["specialTokens"], `must include ${END_OF_TEXT} (it separates documents)`);
  }
  await ctx.out.writeText("tokenizer.json", JSON.stringify(tok.toJSON()) + "\n");
  ctx.stats.set("vocabSize", tok.vocabSize);
  ctx.stats.set("tokenWidth", needsUint32(tok.vocabSize) ? "uint32" : "uint16");
  return { tokenizer: tok, path: ctx.out.path("tokenizer.json") };
}

/** Trains a byte-level BPE on the training documents of `files`, in order, up to `maxTrainBytes`. */
async function trainOnDocuments(
  // deno-lint-ignore no-explicit-any
  ctx: StageContext<any, any>,
  files: string[],
  bpe: NonNullable<TokenizerSettings["bpe"]>,
  valFraction: number,
): Promise<Tokenizer> {
  const counter = new PieceCounter();
  const utf8 = new TextEncoder();
  let bytes = 0, documents = 0;
  outer: for (const file of files) {
    for await (const { doc } of readDocuments(file)) {
      if (ctx.signal.aborted) throw new InterruptedError("interrupted while counting pieces");
      if (isValidation(doc.id, valFraction)) continue; // validation text stays unseen
      counter.add(doc.text);
      bytes += utf8.encode(doc.text).length;
      documents++;
      if (documents % 1000 === 0) ctx.progress({ done: bytes, total: bpe.maxTrainBytes, unit: "bytes" });
      if (bytes >= bpe.maxTrainBytes) break outer;
    }
  }
  ctx.log(`training BPE on ${documents} documents (${bytes} bytes, ${counter.size} distinct pieces)`);
  const started = performance.now();
  const tok = trainBpe(counter, {
    vocabSize: bpe.vocabSize,
    specialTokens: bpe.specialTokens,
    minFrequency: bpe.minFrequency,
    onProgress: (done, total) => ctx.progress({ done, total, unit: "merges" }),
  });
  ctx.stats.set("bpeDocuments", documents);
  ctx.stats.set("bpeBytes", bytes);
  ctx.stats.set("bpeDistinctPieces", counter.size);
  ctx.stats.set("bpeSeconds", Math.round(performance.now() - started) / 1000);
  return tok;
}
