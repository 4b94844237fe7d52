/**
 * kiln's tokenizer library: byte-level BPE encoding and decoding, training, the formats tokenizers
 * come in (kiln's JSON, GPT-2's files, tiktoken ranks, Hugging Face `tokenizer.json`; export to Hugging
 * Face), and llm.c token shards.
 *
 * It lives at the top level rather than in `stages/` because it is not a stage: the `tokenize` stage
 * uses it, and so do SFT and PPO (chat formatting with the special tokens), the reward model and
 * generation (decoding samples), and users scripting outside a pipeline.
 *
 * @example
 * ```ts
 * import { CHAT_TOKENS, loadTokenizer, PieceCounter, readTokenShard, trainBpe } from "./mod.ts";
 *
 * const gpt2 = await loadTokenizer("gpt2");
 * gpt2.encode("Hello world"); // [15496, 995]
 *
 * const counter = new PieceCounter();
 * counter.add("the quick brown fox jumps over the lazy dog");
 * const mine = trainBpe(counter, { vocabSize: 300 });
 * const user = mine.specialId(CHAT_TOKENS.user);
 *
 * const tokens = await readTokenShard(".kiln/artifacts/tokenize/<key>/train-00000.bin");
 * ```
 * @module
 */
export {
  CHAT_TOKENS,
  DEFAULT_SPECIAL_TOKENS,
  type EncodeOptions,
  END_OF_TEXT,
  Tokenizer,
  type TokenizerFile,
  type TokenizerSpec,
} from "./tokenizer.ts";
export {
  byteToUnicode,
  cl100kTokenizer,
  fromGpt2Files,
  fromHuggingFace,
  fromTiktoken,
  gpt2Tokenizer,
  loadTokenizer,
  NAMED_TOKENIZERS,
  type RankFileOptions,
} from "./load.ts";
export { mergeList, toHuggingFace } from "./export.ts";
export { PieceCounter, trainBpe, type TrainOptions } from "./train.ts";
export {
  CL100K_PATTERN,
  GPT2_PATTERN,
  isKnownPattern,
  O200K_PATTERN,
  type Pretokenizer,
  pretokenizer,
} from "./pretokenize.ts";
export {
  encodeTokenShard,
  HEADER_BYTES,
  MAGIC_U16,
  MAGIC_U32,
  needsUint32,
  parseTokenShard,
  readTokenShard,
  tokenShardHeader,
  VERSION_U16,
  VERSION_U32,
} from "./shards.ts";
