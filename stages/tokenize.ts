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
import { defineStage, localPaths } from "../pipeline/stage.ts";
import type { ShardEnv, ShardWorker } from "../pipeline/pool.ts";
import { documentShards, readDocuments } from "./documents.ts";
import { END_OF_TEXT } from "../tokenizer/tokenizer.ts";
import { needsUint32 } from "../tokenizer/shards.ts";
import { isValidation, prepareTokenizer, TokenBuffer, tokenizerAt, tokenizerSettings } from "./tokens.ts";

export { isValidation };

const schema = z.object(tokenizerSettings).strict();

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
    const shards = documentShards(ctx.input);
    const { path: tokenizerPath } = await prepareTokenizer(
      ctx,
      "tokenize",
      config,
      shards.map((f) => ctx.input.path(f)),
    );

    const tasks = shards.map((file, i) => ({
      id: file,
      args: {
        input: ctx.input.path(file),
        tokenizer: tokenizerPath,
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
