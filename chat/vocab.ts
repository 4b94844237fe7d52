/**
 * Fitting a starting model to kiln's chat template when its tokenizer lacks the chat tokens (a local
 * GPT-2, or a model pretrained on GPT-2's tokenizer): the template's role tokens (`<|system|>`,
 * `<|user|>`, `<|assistant|>`, `<|end|>`) are added to the tokenizer as special tokens after its last
 * id ({@linkcode withChatTokens}), and the token embedding grows to match ({@linkcode fitVocab}).
 *
 * A new row starts as the mean of the model's other rows (Hugging Face `resize_token_embeddings` with
 * mean-resizing): the embedding doubles as the output head, so a random row could be the most likely
 * next token anywhere, while the mean row changes no logit of an existing token and gives the new
 * tokens an unremarkable probability until fine-tuning teaches them. A model whose vocabulary is
 * padded past its tokenizer (llm.c's 50,304 rows for GPT-2's 50,257 ids) gives the new tokens padding
 * rows first, set to the mean the same way, and grows only if they do not fit.
 *
 * @example
 * ```ts ignore
 * const { tokenizer, added } = withChatTokens(await loadTokenizer("models/gpt2/tokenizer.json"), {});
 * const fit = fitVocab("sft", await loadModelDir("models/gpt2"), tokenizer, added);
 * fit.model.config.vocab; // 50261: GPT-2's 50257 + the four chat tokens
 * ```
 * @module
 */
import { CHAT_TOKENS, type Tokenizer } from "../tokenizer/mod.ts";
import { StageError } from "../pipeline/errors.ts";
import type { LoadedModel } from "../model/checkpoint.ts";
import { gptConfig } from "../model/config.ts";
import { paramLayout } from "../model/params.ts";
import { type ChatMarkers, DEFAULT_MARKERS } from "./template.ts";

/**
 * The tokenizer with kiln's chat tokens that `markers` use (defaults included) and it lacks added as
 * special tokens, in `CHAT_TOKENS` order; `added` lists them (empty: the tokenizer is returned as is).
 * Markers that are other text stay text.
 */
export function withChatTokens(
  tokenizer: Tokenizer,
  markers: Partial<ChatMarkers>,
): { tokenizer: Tokenizer; added: string[] } {
  const used = new Set(Object.values({ ...DEFAULT_MARKERS, ...markers }));
  const added = Object.values(CHAT_TOKENS).filter((t) =>
    used.has(t) && tokenizer.specialTokens[t] === undefined
  );
  return { tokenizer: tokenizer.withSpecialTokens(added), added };
}

/** A model fitted to a tokenizer; `note` says what changed (undefined: nothing did). */
export interface FittedModel {
  model: LoadedModel;
  /** Rows of the token embedding set to the mean of the others, ascending. */
  rows: number[];
  note?: string;
}

/**
 * Fits `model` to `tokenizer`, whose ids past the model's vocabulary must all be special tokens:
 * the embedding grows to the tokenizer's size, and those rows and the rows of the `added` tokens (when
 * they landed in padding) are set to the mean of the other rows. Every other weight is copied as is.
 * Ordinary tokens past the vocabulary mean the tokenizer is not the model's: a {@linkcode KilnError}
 * naming both sizes. A tokenizer with fewer ids than the model (a padded vocabulary) is fine.
 */
export function fitVocab(
  stage: string,
  model: LoadedModel,
  tokenizer: Tokenizer,
  added: readonly string[],
): FittedModel {
  const V = model.config.vocab, N = tokenizer.vocabSize;
  for (let id = V; id < N; id++) {
    if (tokenizer.isSpecial(id)) continue;
    // (The chat tokens are added after the last id: the tokenizer as given had N - added.length.)
    const withAdded = added.length ? ` (${N} with the ${added.length} chat tokens added)` : "";
    throw new StageError(
      stage,
      `the tokenizer has ${N - added.length} ids${withAdded} but the model's ` +
        `vocabulary only ${V}, and id ${id} ` +
        `is an ordinary token, not a special token the embedding could grow for: the tokenizer is not ` +
        `the model's (use the model's own tokenizer.json, or set the "tokenizer" option to it)`,
    );
  }
  const rows = new Set(added.map((t) => tokenizer.specialId(t)));
  for (let id = V; id < N; id++) rows.add(id);
  if (rows.size === 0) return { model, rows: [] };

  const config = gptConfig({ ...model.config, vocab: Math.max(V, N) });
  const layout = paramLayout(config);
  const params = new Float32Array(layout.total);
  for (const from of model.layout.entries) {
    params.set(
      model.params.subarray(from.offset, from.offset + from.size),
      layout.get(from.name).offset,
    );
  }
  // The mean of the rows that stay, in f64 so 50k rows add up exactly enough.
  const C = config.dim, wte = layout.wte.offset;
  const mean = new Float64Array(C);
  let kept = 0;
  for (let id = 0; id < V; id++) {
    if (rows.has(id)) continue;
    for (let c = 0; c < C; c++) mean[c] += params[wte + id * C + c];
    kept++;
  }
  const sorted = [...rows].sort((a, b) => a - b);
  for (const id of sorted) {
    for (let c = 0; c < C; c++) params[wte + id * C + c] = mean[c] / kept;
  }

  const grown = config.vocab - V, padding = sorted.length - grown;
  const parts = [
    ...(added.length ? [`added ${added.length} chat tokens to the tokenizer (${added.join(" ")})`] : []),
    grown ? `grew the token embedding by ${grown} rows (${V} → ${config.vocab})` : "",
    padding ? `gave them ${padding} unused padding rows of the embedding` : "",
  ].filter(Boolean);
  return {
    model: { config, layout, params },
    rows: sorted,
    note: `${parts.join("; ")}; each of those ${sorted.length} rows starts as the mean of the other ${kept}`,
  };
}
