/**
 * Writing tokenizers in other tools' formats, so a vocabulary trained by kiln can leave it: Hugging
 * Face `tokenizer.json` (byte-level BPE; loads in `tokenizers`/`transformers` and back in kiln with
 * `fromHuggingFace`). A tokenizer under tiktoken's ranks rule gets the equivalent merge list first.
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./load.ts";
 * import { toHuggingFace } from "./export.ts";
 * const tok = await loadTokenizer(".kiln/artifacts/tokenize/<key>/tokenizer.json");
 * await Deno.writeTextFile("tokenizer.json", JSON.stringify(toHuggingFace(tok)));
 * ```
 * @module
 */
import { byteToUnicode } from "./load.ts";
import { GPT2_PATTERN } from "./pretokenize.ts";
import type { Tokenizer } from "./tokenizer.ts";

/**
 * The merge list that reproduces a tokenizer's merges: its own list, or, under the ranks rule, for
 * each token in id order the two parts that BPE with only lower-ranked tokens leaves of its bytes
 * (how GPT-2's `vocab.bpe` relates to tiktoken's ranks). Tokens BPE can never produce are left out.
 */
export function mergeList(tok: Tokenizer): [number, number][] {
  if (tok.merges) return tok.merges.map(([a, b]) => [a, b]);
  const merges: [number, number][] = [];
  for (let id = 0; id < tok.vocabSize; id++) {
    if (tok.isSpecial(id)) continue;
    let bytes: Uint8Array;
    try {
      bytes = tok.tokenBytes(id);
    } catch {
      continue; // an unused id
    }
    if (bytes.length < 2) continue;
    // Parts as [start, end) ranges of `bytes`, merged lowest rank (id) first while below `id`.
    const starts = Array.from({ length: bytes.length }, (_, i) => i);
    const ends = Array.from({ length: bytes.length }, (_, i) => i + 1);
    for (;;) {
      let best = id, at = -1;
      for (let i = 0; i + 1 < starts.length; i++) {
        const r = tok.idOf(bytes.subarray(starts[i], ends[i + 1]));
        if (r !== undefined && r < best) [best, at] = [r, i];
      }
      if (at < 0) break;
      ends[at] = ends[at + 1];
      starts.splice(at + 1, 1);
      ends.splice(at + 1, 1);
    }
    if (starts.length !== 2) continue;
    merges.push([tok.idOf(bytes.subarray(0, ends[0]))!, tok.idOf(bytes.subarray(starts[1]))!]);
  }
  return merges;
}

/** A Hugging Face `tokenizer.json` object (byte-level BPE; special tokens as added tokens). */
export function toHuggingFace(tok: Tokenizer): Record<string, unknown> {
  const byteChar = byteToUnicode();
  const text = (id: number) => Array.from(tok.tokenBytes(id), (b) => byteChar[b]).join("");
  const vocab: Record<string, number> = {};
  const added: Record<string, unknown>[] = [];
  for (let id = 0; id < tok.vocabSize; id++) {
    if (tok.isSpecial(id)) {
      const content = new TextDecoder().decode(tok.tokenBytes(id));
      vocab[content] = id;
      added.push({
        id,
        content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      });
      continue;
    }
    try {
      vocab[text(id)] = id;
    } catch {
      // an unused id: not in the vocabulary
    }
  }
  const byteLevel = (useRegex: boolean) => ({
    type: "ByteLevel",
    add_prefix_space: false,
    trim_offsets: true,
    use_regex: useRegex,
  });
  return {
    version: "1.0",
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: tok.pattern === GPT2_PATTERN ? byteLevel(true) : {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: tok.pattern }, behavior: "Isolated", invert: false },
        byteLevel(false),
      ],
    },
    post_processor: { ...byteLevel(true), trim_offsets: false },
    decoder: byteLevel(true),
    model: {
      type: "BPE",
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: tok.ignoreMerges,
      vocab,
      // "a b" strings: byte-level token text has no spaces, and every tokenizers version reads them.
      merges: mergeList(tok).map(([a, b]) => `${text(a)} ${text(b)}`),
    },
  };
}
