/**
 * The shape of a GPT: layers, width, heads, context length and vocabulary size. Stored on disk as
 * a Hugging Face GPT-2 `config.json` (`n_layer`, `n_embd`, `n_head`, `n_positions`, `vocab_size`,
 * and the tokenizer's `bos_token_id`/`eos_token_id`/`pad_token_id`), so a checkpoint directory kiln
 * writes loads in `transformers` as it is, and a local GPT-2 download loads here.
 *
 * Reading is strict: every field of a `config.json` is either honoured, checked to hold the one
 * value kiln's GPT implements (`layer_norm_epsilon: 1e-5`, `activation_function: "gelu_new"`,
 * `scale_attn_weights: true`, …), or known to leave the function of the model alone (dropout rates,
 * which kiln trains without; metadata such as `transformers_version`). Anything else is refused by
 * name instead of being silently ignored.
 *
 * @example
 * ```ts
 * import { gptConfig, toHFConfig } from "./config.ts";
 * const config = gptConfig({ layers: 6, dim: 384, heads: 6, context: 256, vocab: 8192 });
 * console.log(JSON.stringify(toHFConfig(config)));
 * ```
 * @module
 */
import { DataError, KilnError } from "../pipeline/errors.ts";

/** The architecture hyperparameters of a GPT-2-style decoder. */
export interface GPTConfig {
  /** Transformer blocks. */
  layers: number;
  /** Model width (channels, `n_embd`). */
  dim: number;
  /** Attention heads; must divide `dim`. */
  heads: number;
  /** Maximum sequence length (learned position embeddings, `n_positions`). */
  context: number;
  /** Vocabulary size (rows of the token embedding, which doubles as the output head). */
  vocab: number;
}

/** Validates a config and returns a normalised copy; the error names the field (`where.field`). */
export function gptConfig(config: GPTConfig, where = "model"): GPTConfig {
  for (const field of ["layers", "dim", "heads", "context", "vocab"] as const) {
    const value = config[field];
    if (!Number.isInteger(value) || value < 1) {
      throw new KilnError(`${where}.${field}: expected a positive integer, got ${JSON.stringify(value)}`);
    }
  }
  if (config.dim % config.heads !== 0) {
    throw new KilnError(
      `${where}.heads: ${config.heads} heads do not divide the width dim=${config.dim}`,
    );
  }
  const { layers, dim, heads, context, vocab } = config;
  return { layers, dim, heads, context, vocab };
}

/** The GPT-2 sizes people know by name. */
export const GPT2_SIZES: Record<string, Omit<GPTConfig, "vocab">> = {
  "gpt2": { layers: 12, dim: 768, heads: 12, context: 1024 },
  "gpt2-medium": { layers: 24, dim: 1024, heads: 16, context: 1024 },
  "gpt2-large": { layers: 36, dim: 1280, heads: 20, context: 1024 },
  "gpt2-xl": { layers: 48, dim: 1600, heads: 25, context: 1024 },
};

/** Number of parameters (tied embeddings counted once). */
export function parameterCount(c: GPTConfig): number {
  const perLayer = 2 * c.dim + (c.dim * 3 * c.dim + 3 * c.dim) + (c.dim * c.dim + c.dim) + 2 * c.dim +
    (c.dim * 4 * c.dim + 4 * c.dim) + (4 * c.dim * c.dim + c.dim);
  return c.vocab * c.dim + c.context * c.dim + c.layers * perLayer + 2 * c.dim;
}

/** Token ids a checkpoint records for `transformers` (from the tokenizer it was trained with). */
export interface SpecialTokenIds {
  /** `bos_token_id` (GPT-2: `<|endoftext|>`). */
  bos?: number;
  /** `eos_token_id` of config.json (GPT-2: `<|endoftext|>`). */
  eos?: number;
  /** `pad_token_id`, only when the tokenizer has a padding token. */
  pad?: number;
  /** The tokens that end a generation (`generation_config.json`'s `eos_token_id`); default `[eos]`. */
  stop?: number[];
}

/** The layer-norm epsilon kiln's kernels use (HF GPT-2's default). */
export const LAYER_NORM_EPSILON = 1e-5;

/** The Hugging Face GPT-2 `config.json` for a config, with the tokenizer's ids when given. */
export function toHFConfig(c: GPTConfig, tokens: SpecialTokenIds = {}): Record<string, unknown> {
  const ids = [["bos_token_id", tokens.bos], ["eos_token_id", tokens.eos], ["pad_token_id", tokens.pad]];
  for (const [field, id] of [...ids, ...(tokens.stop ?? []).map((id) => ["stop token", id])]) {
    if (id !== undefined && !(Number.isInteger(id) && (id as number) >= 0 && (id as number) < c.vocab)) {
      throw new KilnError(`${field} ${id} is outside the model's vocabulary of ${c.vocab}`);
    }
  }
  return {
    architectures: ["GPT2LMHeadModel"],
    model_type: "gpt2",
    n_layer: c.layers,
    n_embd: c.dim,
    n_head: c.heads,
    n_positions: c.context,
    n_ctx: c.context,
    vocab_size: c.vocab,
    activation_function: "gelu_new",
    layer_norm_epsilon: LAYER_NORM_EPSILON,
    tie_word_embeddings: true,
    n_inner: null,
    // kiln trains without dropout; HF's defaults are 0.1, so say so for anyone fine-tuning there.
    resid_pdrop: 0,
    embd_pdrop: 0,
    attn_pdrop: 0,
    ...(tokens.bos === undefined ? {} : { bos_token_id: tokens.bos }),
    ...(tokens.eos === undefined ? {} : { eos_token_id: tokens.eos }),
    ...(tokens.pad === undefined ? {} : { pad_token_id: tokens.pad }),
  };
}

/**
 * HF `generation_config.json` for a model: its stop tokens as `eos_token_id`, so `generate()` stops
 * where kiln does.
 */
export function toGenerationConfig(tokens: SpecialTokenIds): Record<string, unknown> {
  const stop = tokens.stop ?? (tokens.eos === undefined ? [] : [tokens.eos]);
  return {
    ...(tokens.bos === undefined ? {} : { bos_token_id: tokens.bos }),
    ...(stop.length === 0 ? {} : { eos_token_id: stop.length === 1 ? stop[0] : stop }),
    ...(tokens.pad === undefined ? {} : { pad_token_id: tokens.pad }),
  };
}

/** Fields that must hold the one value kiln implements (HF's default unless noted), and why. */
const FIXED: Record<string, { ok: (v: unknown) => boolean; expected: string }> = {
  model_type: { ok: (v) => v === "gpt2", expected: `"gpt2"` },
  activation_function: {
    ok: (v) => v === "gelu_new" || v === "gelu_pytorch_tanh",
    expected: `"gelu_new" or "gelu_pytorch_tanh" (kiln's GELU is the tanh approximation)`,
  },
  layer_norm_epsilon: {
    ok: (v) => typeof v === "number" && Math.abs(v - LAYER_NORM_EPSILON) <= 1e-12,
    expected: `${LAYER_NORM_EPSILON} (kiln's LayerNorm kernels use it)`,
  },
  scale_attn_weights: {
    ok: (v) => v === true,
    expected: "true (attention scores are scaled by 1/√head_dim)",
  },
  scale_attn_by_inverse_layer_idx: { ok: (v) => v === false, expected: "false" },
  add_cross_attention: { ok: (v) => v === false, expected: "false (a decoder-only model)" },
  is_encoder_decoder: { ok: (v) => v === false, expected: "false (a decoder-only model)" },
  tie_word_embeddings: {
    ok: (v) => typeof v === "boolean",
    expected: "true or false (false needs an lm_head.weight equal to wte.weight; see loadWeights)",
  },
  // Only the f32 upcast of attention, which kiln's kernels always do.
  reorder_and_upcast_attn: { ok: (v) => typeof v === "boolean", expected: "true or false" },
  use_cache: { ok: (v) => typeof v === "boolean", expected: "true or false" },
};

/** Fields that do not change what the model computes (training-time dropout, heads kiln does not build, metadata). */
const INERT = new Set([
  "architectures",
  "resid_pdrop",
  "embd_pdrop",
  "attn_pdrop",
  "summary_type",
  "summary_use_proj",
  "summary_activation",
  "summary_proj_to_labels",
  "summary_first_dropout",
  "initializer_range",
  "bos_token_id",
  "eos_token_id",
  "pad_token_id",
  "task_specific_params",
  "transformers_version",
  "torch_dtype",
  "dtype",
  "_name_or_path",
  "id2label",
  "label2id",
  "_num_labels",
  "num_labels",
  "output_attentions",
  "output_hidden_states",
  "return_dict",
  "tokenizer_class",
]);

/** The architecture fields, by their HF name and kiln's own. */
const SHAPE = [
  ["n_layer", "layers"],
  ["n_embd", "dim"],
  ["n_head", "heads"],
  ["n_positions", "context"],
  ["vocab_size", "vocab"],
] as const;

/**
 * Reads a `config.json`: Hugging Face GPT-2 keys, or kiln's own names (`layers`, `dim`, …). Every
 * field is checked (see the module doc); an error is a {@linkcode DataError} naming `file` and the field.
 */
export function fromHFConfig(json: unknown, file = "config.json"): GPTConfig {
  if (typeof json !== "object" || json === null || Array.isArray(json)) {
    throw new DataError(file, undefined, "not a JSON object");
  }
  const j = json as Record<string, unknown>;
  const shapeFields = new Set<string>(SHAPE.flat());
  for (const [field, value] of Object.entries(j)) {
    const fixed = FIXED[field];
    if (fixed && !fixed.ok(value)) {
      throw new DataError(
        file,
        field,
        `${JSON.stringify(value)} is not supported (kiln needs ${fixed.expected})`,
      );
    }
    if (fixed || INERT.has(field) || shapeFields.has(field) || field === "n_ctx" || field === "n_inner") {
      continue;
    }
    throw new DataError(
      file,
      field,
      `kiln's GPT-2 does not support this config field (it would be ignored, so the model would not be the ` +
        `one this config describes); remove it if it does not matter`,
    );
  }
  const values: Record<string, number> = {};
  for (const [hf, own] of SHAPE) {
    const field = j[hf] !== undefined ? hf : own;
    const value = j[field];
    if (!Number.isSafeInteger(value) || (value as number) < 1) {
      throw new DataError(file, field, `expected a positive integer, got ${JSON.stringify(value)}`);
    }
    values[own] = value as number;
  }
  if (j.n_ctx !== undefined && j.n_ctx !== values.context) {
    throw new DataError(
      file,
      "n_ctx",
      `${JSON.stringify(j.n_ctx)} differs from n_positions ${values.context}`,
    );
  }
  if (j.n_inner !== undefined && j.n_inner !== null && j.n_inner !== 4 * values.dim) {
    throw new DataError(file, "n_inner", `${j.n_inner} is not supported (kiln's MLP is 4 × n_embd)`);
  }
  if (values.dim % values.heads !== 0) {
    throw new DataError(file, "n_head", `${values.heads} heads do not divide n_embd=${values.dim}`);
  }
  return gptConfig(values as unknown as GPTConfig, file);
}

/** Bytes a Float32Array of this model's parameters takes (what loading or training allocates first). */
export function parameterBytes(c: GPTConfig): number {
  return 4 * parameterCount(c);
}

/**
 * Throws a {@linkcode KilnError} when `copies` f32 copies of the model's parameters (weights,
 * gradients, AdamW moments…) would not fit in this machine's available memory, naming `where`
 * (the config file or option that set the size) instead of failing later in an allocation.
 */
export function checkModelFits(c: GPTConfig, where: string, copies = 1, extraBytes = 0): void {
  const need = copies * parameterBytes(c) + extraBytes;
  const available = availableMemory();
  const gib = (n: number) => (n / 2 ** 30).toFixed(n < 2 ** 30 ? 3 : 1);
  if (!Number.isFinite(need) || need > available) {
    throw new KilnError(
      `${where}: a model of ${parameterCount(c).toLocaleString("en")} parameters (n_layer ${c.layers}, ` +
        `n_embd ${c.dim}, n_positions ${c.context}, vocab_size ${c.vocab}) needs ${gib(need)} GiB, ` +
        `more than the ${gib(available)} GiB of memory available`,
    );
  }
}

/** Memory the system still has available (Infinity when it cannot be read: no --allow-sys). */
function availableMemory(): number {
  try {
    return Deno.systemMemoryInfo().available;
  } catch {
    return Infinity;
  }
}
