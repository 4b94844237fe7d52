/**
 * Stage `tokenize` (documents → tokens): trains a byte-level BPE tokenizer on the documents, or loads
 * one, then encodes every document shard on the worker pool into llm.c `.bin` token shards.
 *
 * The artifact holds:
 * - `tokenizer.json`: kiln's tokenizer file (see `tokenizer/tokenizer.ts`), for training and generation;
 * - `train-NNNNN.bin`, `val-NNNNN.bin`: the tokens of input document shard NNNNN (in sorted file
 *   order), each document preceded by `<|endoftext|>` as in llm.c's and nanoGPT's data scripts;
 *   uint16 tokens, or uint32 when the vocabulary has more than 65,536 ids. A shard with no tokens
 *   is not written. Read them with `readTokenShard` from `tokenizer/shards.ts`.
 *
 * The split is by document: a document goes to validation when a hash of its id, as a fraction of
 * 2^32, is below `valFraction` (see {@linkcode isValidation}); so it does not depend on sharding,
 * order or worker count. A trained tokenizer sees only the training documents. Each shard is
 * resumable (done-markers), and the output is byte-identical with any number of workers.
 *
 * Training counts pieces on the main thread, streaming the documents (`bpe.maxTrainBytes` caps the
 * text used), then merges; the trained tokenizer is checkpointed, so a crash during encoding does not
 * retrain. A loaded tokenizer file is named by path in the config: editing the file in place does
 * not invalidate the cached artifact (use a new path, or `--force tokenize`).
 *
 * @example
 * ```ts
 * import { tokenize } from "./tokenize.ts";
 * tokenize({ bpe: { vocabSize: 8192 } });           // train on the input
 * tokenize({ tokenizer: "gpt2", valFraction: 0.05 }); // GPT-2's vocabulary (+ chat tokens)
 * tokenize({ tokenizer: "models/tokenizer.json" });  // kiln, Hugging Face, GPT-2 or tiktoken file
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { defineStage, localPaths, type StageContext } from "../pipeline/stage.ts";
import type { ShardEnv, ShardWorker } from "../pipeline/pool.ts";
import { ConfigError, InterruptedError } from "../pipeline/errors.ts";
import { documentShards, readDocuments } from "./documents.ts";
import { DEFAULT_SPECIAL_TOKENS, END_OF_TEXT, Tokenizer } from "../tokenizer/tokenizer.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { PieceCounter, trainBpe } from "../tokenizer/train.ts";
import { HEADER_BYTES, needsUint32, tokenShardHeader } from "../tokenizer/shards.ts";

const schema = z.object({
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
}).strict();

/** The config of {@linkcode tokenize}. */
export type TokenizeConfig = z.output<typeof schema>;

/** Arguments of {@linkcode encodeShard}, one task per input document shard. */
export interface EncodeShardArgs {
  /** Absolute path of the document shard. */
  input: string;
  /** Absolute path of the tokenizer file to use. */
  tokenizer: string;
  /** Output name stem: `train-${stem}.bin`, `val-${stem}.bin`. */
  stem: string;
  valFraction: number;
}

/** What one shard reports back (summed into the stage's stats). */
export interface EncodeShardResult {
  documents: number;
  valDocuments: number;
  trainTokens: number;
  valTokens: number;
  /** UTF-8 bytes of document text. */
  textBytes: number;
  badLines: number;
  /** The first few malformed lines, `file:line: reason`. */
  badLineSamples: string[];
}

/**
 * Whether a document id falls in the validation split: a 32-bit hash of the id (FNV-1a, then
 * MurmurHash3's finaliser, so ids differing in their last character spread over the whole range)
 * below `fraction` · 2^32.
 */
export function isValidation(id: string, fraction: number): boolean {
  let h = 0x811c9dc5;
  for (let i = 0; i < id.length; i++) h = Math.imul(h ^ id.charCodeAt(i), 0x01000193);
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  h ^= h >>> 16;
  return (h >>> 0) / 2 ** 32 < fraction;
}

/** A growable buffer of token ids in the shard's width. */
class TokenBuffer {
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

// A worker thread encodes many shards with one tokenizer: load it once (keyed by file identity, as
// in-process runs reuse this module across stages).
const loaded = new Map<string, Promise<Tokenizer>>();
async function tokenizerAt(path: string): Promise<Tokenizer> {
  const info = await Deno.stat(path);
  const key = `${path}\0${info.size}\0${info.mtime?.getTime()}`;
  if (!loaded.has(key)) {
    if (loaded.size > 4) loaded.clear();
    loaded.set(key, loadTokenizer(path));
  }
  return await loaded.get(key)!;
}

/** Shard worker: encodes one document shard into its train and validation token shards. */
export async function encodeShard(args: EncodeShardArgs, env: ShardEnv): Promise<EncodeShardResult> {
  const tok = await tokenizerAt(args.tokenizer);
  const eot = tok.specialId(END_OF_TEXT);
  const uint32 = needsUint32(tok.vocabSize);
  const train = new TokenBuffer(uint32), val = new TokenBuffer(uint32);
  const result: EncodeShardResult = {
    documents: 0,
    valDocuments: 0,
    trainTokens: 0,
    valTokens: 0,
    textBytes: 0,
    badLines: 0,
    badLineSamples: [],
  };
  const ids: number[] = [];
  const utf8 = new TextEncoder();
  const onBadLine = (line: number, reason: string) => {
    result.badLines++;
    if (result.badLineSamples.length < 5) result.badLineSamples.push(`${args.input}:${line}: ${reason}`);
  };
  for await (const { doc } of readDocuments(args.input, { onBadLine })) {
    ids.length = 0;
    ids.push(eot);
    tok.encodeInto(doc.text, ids);
    const isVal = isValidation(doc.id, args.valFraction);
    (isVal ? val : train).append(ids);
    result.documents++;
    if (isVal) result.valDocuments++;
    result.textBytes += utf8.encode(doc.text).length;
  }
  result.trainTokens = train.length;
  result.valTokens = val.length;
  if (train.length) await env.out.writeFile(`train-${args.stem}.bin`, train.file());
  if (val.length) await env.out.writeFile(`val-${args.stem}.bin`, val.file());
  return result;
}

const worker: ShardWorker = { module: import.meta.url, fn: "encodeShard" };

/** The tokenize stage. */
export const tokenize = defineStage({
  name: "tokenize",
  version: 1,
  module: import.meta.url,
  input: "documents",
  output: "tokens",
  schema,
  permissions: (config) => ({ read: localPaths(config.tokenizer) }),
  description: "Train or load a byte-level BPE tokenizer and write llm.c token shards (train/val)",
  async run(ctx) {
    const { config } = ctx;
    if (!config.bpe === !config.tokenizer) {
      throw new ConfigError(
        "tokenize",
        [config.bpe ? "tokenizer" : "bpe"],
        config.bpe
          ? "give either bpe (train a tokenizer) or tokenizer (load one), not both"
          : 'give bpe: { vocabSize } to train a tokenizer, or tokenizer: "gpt2" or a path to load one',
      );
    }
    if (config.bpe?.specialTokens && !config.bpe.specialTokens.includes(END_OF_TEXT)) {
      throw new ConfigError(
        "tokenize",
        ["bpe", "specialTokens"],
        `must include ${END_OF_TEXT} (it separates documents)`,
      );
    }
    const shards = documentShards(ctx.input);

    // The tokenizer: trained once (kept in the checkpoint across a crash) or loaded.
    let tok: Tokenizer;
    const saved = await ctx.checkpoint.readFile("tokenizer.json");
    if (saved) {
      tok = Tokenizer.fromJSON(JSON.parse(new TextDecoder().decode(saved)), "checkpoint tokenizer.json");
    } else if (config.bpe) {
      tok = await train(ctx, shards, config.bpe, config.valFraction);
      await ctx.checkpoint.writeFile(
        "tokenizer.json",
        new TextEncoder().encode(JSON.stringify(tok.toJSON())),
      );
    } else {
      tok = (await loadTokenizer(config.tokenizer!)).withSpecialTokens(
        config.specialTokens ?? DEFAULT_SPECIAL_TOKENS,
      );
    }
    if (tok.specialTokens[END_OF_TEXT] === undefined) {
      throw new ConfigError(
        "tokenize",
        ["specialTokens"],
        `must include ${END_OF_TEXT} (it separates documents)`,
      );
    }
    await ctx.out.writeText("tokenizer.json", JSON.stringify(tok.toJSON()) + "\n");
    ctx.stats.set("vocabSize", tok.vocabSize);
    ctx.stats.set("tokenWidth", needsUint32(tok.vocabSize) ? "uint32" : "uint16");

    const tasks = shards.map((file, i) => ({
      id: file,
      args: {
        input: ctx.input.path(file),
        tokenizer: ctx.out.path("tokenizer.json"),
        stem: String(i).padStart(5, "0"),
        valFraction: config.valFraction,
      } satisfies EncodeShardArgs,
    }));
    const results = await ctx.runShards<EncodeShardArgs, EncodeShardResult>(worker, tasks);
    const total = { documents: 0, valDocuments: 0, trainTokens: 0, valTokens: 0, textBytes: 0, badLines: 0 };
    for (const r of results) {
      for (const k of Object.keys(total) as (keyof typeof total)[]) total[k] += r[k];
      for (const line of r.badLineSamples) ctx.log(`skipped ${line}`);
    }
    const tokens = total.trainTokens + total.valTokens;
    ctx.stats.set("documents", total.documents);
    ctx.stats.set("trainDocuments", total.documents - total.valDocuments);
    ctx.stats.set("valDocuments", total.valDocuments);
    ctx.stats.set("tokens", tokens);
    ctx.stats.set("trainTokens", total.trainTokens);
    ctx.stats.set("valTokens", total.valTokens);
    ctx.stats.set("textBytes", total.textBytes);
    ctx.stats.set("badLines", total.badLines);
    // Separators excluded: bytes of text per token of text, the figure tokenizers are compared by.
    const textTokens = tokens - total.documents;
    ctx.stats.set("bytesPerToken", textTokens ? Math.round((total.textBytes / textTokens) * 1000) / 1000 : 0);
  },
});

async function train(
  ctx: StageContext<TokenizeConfig, "documents">,
  shards: string[],
  bpe: NonNullable<TokenizeConfig["bpe"]>,
  valFraction: number,
): Promise<Tokenizer> {
  const counter = new PieceCounter();
  const utf8 = new TextEncoder();
  let bytes = 0, documents = 0;
  outer: for (const file of shards) {
    for await (const { doc } of readDocuments(ctx.input.path(file))) {
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
