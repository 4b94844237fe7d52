/**
 * Perplexity and bits per byte of a model on held-out text: JSONL documents (kiln's documents format,
 * tokenised here with the model's tokenizer) or llm.c token shards (`.bin`).
 *
 * The text becomes one token stream, as training sees it: each document is `<|endoftext|>` followed
 * by its tokens (token shards already are such streams). The stream is cut into windows of
 * `seqLen + 1` tokens starting every `seqLen` tokens, so every token after the first is predicted
 * exactly once, from up to `seqLen` tokens of context (the non-overlapping evaluation of GPT-2's
 * paper and nanoGPT). Over the N predicted tokens, with L the sum of their −ln p:
 * - `loss` = L / N (nats per token), `perplexity` = e^loss;
 * - `bitsPerByte` = L / ln 2 / B, B the UTF-8 bytes of the predicted tokens (special tokens count 0
 *   bytes; their loss still counts), which compares models with different tokenizers.
 *
 * @example
 * ```ts ignore
 * const stream = await documentStream(["data/heldout.jsonl"], tokenizer, { maxTokens: 100_000 });
 * const result = await perplexity(model, stream, { seqLen: 256, batch: 4, tokenizer });
 * result.perplexity; result.bitsPerByte;
 * ```
 * @module
 */
import { DataError } from "../../pipeline/errors.ts";
import type { GPT } from "../../model/gpt.ts";
import { SHARD_HEADER_BYTES, tokenShardInfo } from "../../model/data.ts";
import { END_OF_TEXT, type Tokenizer } from "../../tokenizer/tokenizer.ts";
import { readDocuments } from "../documents.ts";
import { sequenceLosses } from "./loglik.ts";

/** A token stream and where it came from. */
export interface TokenStream {
  tokens: number[];
  /** Documents read (0 for token shards). */
  documents: number;
  /** True when `maxTokens` cut the text short. */
  truncated: boolean;
}

/**
 * The documents of JSONL shards as one stream (`<|endoftext|>` before each), at most `maxTokens`
 * tokens. A malformed line is a {@linkcode DataError} naming the file and line.
 */
export async function documentStream(
  files: string[],
  tokenizer: Tokenizer,
  options: { maxTokens: number },
): Promise<TokenStream> {
  const eot = tokenizer.specialTokens[END_OF_TEXT];
  const tokens: number[] = [];
  let documents = 0;
  for (const file of files) {
    const onBadLine = (line: number, reason: string) => {
      throw new DataError(file, `line ${line}`, reason);
    };
    for await (const { doc } of readDocuments(file, { onBadLine })) {
      if (tokens.length >= options.maxTokens) return { tokens, documents, truncated: true };
      if (eot !== undefined) tokens.push(eot);
      for (const t of tokenizer.encode(doc.text)) tokens.push(t);
      documents++;
      if (tokens.length > options.maxTokens) {
        tokens.length = options.maxTokens;
        return { tokens, documents, truncated: true };
      }
    }
  }
  return { tokens, documents, truncated: false };
}

/** The tokens of llm.c token shards as one stream, at most `maxTokens`. */
export async function shardStream(files: string[], options: { maxTokens: number }): Promise<TokenStream> {
  const tokens: number[] = [];
  for (const file of files) {
    const info = tokenShardInfo(file);
    const take = Math.min(info.count, options.maxTokens - tokens.length);
    const bytes = await Deno.readFile(file);
    const view = new DataView(bytes.buffer, bytes.byteOffset + SHARD_HEADER_BYTES, take * info.bytesPerToken);
    for (let i = 0; i < take; i++) {
      tokens.push(info.bytesPerToken === 2 ? view.getUint16(2 * i, true) : view.getUint32(4 * i, true));
    }
    if (tokens.length >= options.maxTokens) return { tokens, documents: 0, truncated: true };
  }
  return { tokens, documents: 0, truncated: false };
}

/** What {@linkcode perplexity} measures. */
export interface PerplexityResult {
  /** Tokens predicted. */
  tokens: number;
  /** Mean −ln p per predicted token. */
  loss: number;
  perplexity: number;
  /** UTF-8 bytes of the predicted tokens (absent without a tokenizer). */
  bytes?: number;
  bitsPerByte?: number;
}

/** Perplexity of `model` on a token stream (see the module doc); bits per byte need the tokenizer. */
export async function perplexity(
  model: GPT,
  stream: readonly number[],
  options: { seqLen: number; batch: number; tokenizer?: Tokenizer; onProgress?: (tokens: number) => void },
): Promise<PerplexityResult> {
  const { seqLen } = options;
  const vocab = model.config.vocab;
  const bad = stream.findIndex((t) => t >= vocab);
  if (bad >= 0) {
    throw new DataError(
      "evaluation text",
      `token ${bad}`,
      `id ${stream[bad]} is outside the model's vocabulary of ${vocab} (is it the model's tokenizer?)`,
    );
  }
  const windows: number[][] = [];
  for (let start = 0; start + 1 < stream.length; start += seqLen) {
    windows.push(stream.slice(start, Math.min(start + seqLen + 1, stream.length)));
  }
  const losses = await sequenceLosses(model, windows, {
    batch: options.batch,
    onBatch: (done) => options.onProgress?.(Math.min(done * seqLen, stream.length - 1)),
  });
  let sum = 0, tokens = 0;
  for (const l of losses) {
    for (const x of l) sum += x;
    tokens += l.length;
  }
  const loss = sum / Math.max(1, tokens);
  const result: PerplexityResult = { tokens, loss, perplexity: Math.exp(loss) };
  const tk = options.tokenizer;
  if (tk) {
    let bytes = 0;
    for (let i = 1; i < stream.length; i++) {
      if (!tk.isSpecial(stream[i])) bytes += tk.tokenBytes(stream[i]).length;
    }
    result.bytes = bytes;
    if (bytes > 0) result.bitsPerByte = sum / Math.LN2 / bytes;
  }
  return result;
}
