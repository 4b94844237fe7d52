/**
 * The shape of a GPT: layers, width, heads, context length and vocabulary size. Stored on disk as
 * a Hugging Face GPT-2 `config.json` (`n_layer`, `n_embd`, `n_head`, `n_positions`, `vocab_size`),
 * so a checkpoint directory kiln writes loads in `transformers`, and a local GPT-2 download loads here.
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

/** The Hugging Face GPT-2 `config.json` for a config. */
export function toHFConfig(c: GPTConfig): Record<string, unknown> {
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
    layer_norm_epsilon: 1e-5,
    tie_word_embeddings: true,
    n_inner: null,
  };
}

/**
 * Reads a `config.json`: Hugging Face GPT-2 keys, or kiln's own names (`layers`, `dim`, …).
 * `file` names the file in errors.
 */
export function fromHFConfig(json: unknown, file = "config.json"): GPTConfig {
  if (typeof json !== "object" || json === null) throw new DataError(file, undefined, "not a JSON object");
  const j = json as Record<string, unknown>;
  if (j.model_type !== undefined && j.model_type !== "gpt2") {
    throw new DataError(file, "model_type", `"${j.model_type}" is not supported (only "gpt2")`);
  }
  if (j.n_inner !== undefined && j.n_inner !== null && j.n_inner !== 4 * Number(j.n_embd)) {
    throw new DataError(file, "n_inner", `${j.n_inner} is not supported (the MLP is 4 × n_embd)`);
  }
  const activation = j.activation_function;
  if (activation !== undefined && activation !== "gelu_new" && activation !== "gelu_pytorch_tanh") {
    throw new DataError(file, "activation_function", `"${activation}" is not supported (tanh GELU only)`);
  }
  const pick = (hf: string, own: keyof GPTConfig) => (j[hf] ?? j[own]) as number;
  return gptConfig({
    layers: pick("n_layer", "layers"),
    dim: pick("n_embd", "dim"),
    heads: pick("n_head", "heads"),
    context: pick("n_positions", "context"),
    vocab: pick("vocab_size", "vocab"),
  }, file);
}
