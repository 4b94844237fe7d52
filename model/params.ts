/**
 * Where every weight of a GPT lives in one flat `Float32Array`. Each tensor has its Hugging Face
 * GPT-2 name and shape (`h.3.attn.c_attn.weight` is `[C, 3C]`: HF's Conv1D keeps weights as
 * `[in, out]`), so saving a checkpoint is a copy per tensor and a GPT-2 download loads unchanged.
 *
 * Tensors that take weight decay (matmul weights and embeddings) come first and the rest (biases,
 * LayerNorm gains) after them, so AdamW runs over two contiguous ranges of the same buffer. Every
 * tensor starts at a multiple of {@linkcode PARAM_ALIGN} elements (256 bytes: WebGPU's storage
 * buffer offset alignment), so a backend can bind any single tensor directly.
 *
 * @example
 * ```ts
 * import { gptConfig } from "./config.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * const layout = paramLayout(gptConfig({ layers: 2, dim: 64, heads: 4, context: 32, vocab: 256 }));
 * const params = initParams(layout, 1337);
 * const wte = layout.get("wte.weight");
 * console.log(wte.shape, params.subarray(wte.offset, wte.offset + wte.size).length);
 * ```
 * @module
 */
import type { GPTConfig } from "./config.ts";
import { Rng } from "./rng.ts";

/** Alignment of every tensor in the flat buffer, in elements (64 × 4 bytes = 256 bytes). */
export const PARAM_ALIGN = 64;

/** How a tensor is initialised (GPT-2's scheme). */
export type Init = "normal" | "residual" | "zeros" | "ones";

/** One tensor of the flat parameter buffer. */
export interface ParamEntry {
  /** Hugging Face GPT-2 name, without the `transformer.` prefix. */
  name: string;
  shape: number[];
  /** Element offset in the flat buffer. */
  offset: number;
  /** Number of elements. */
  size: number;
  /** Whether AdamW applies weight decay to it (2-D weights: yes; biases and LayerNorm: no). */
  decay: boolean;
  init: Init;
}

/** The per-layer tensors' offsets, as the forward and backward passes use them. */
export interface LayerParams {
  ln1w: ParamEntry;
  ln1b: ParamEntry;
  qkvw: ParamEntry;
  qkvb: ParamEntry;
  attprojw: ParamEntry;
  attprojb: ParamEntry;
  ln2w: ParamEntry;
  ln2b: ParamEntry;
  fcw: ParamEntry;
  fcb: ParamEntry;
  fcprojw: ParamEntry;
  fcprojb: ParamEntry;
}

/** The whole layout. */
export interface ParamLayout {
  config: GPTConfig;
  /** Every tensor, in buffer order. */
  entries: ParamEntry[];
  /** Length of the flat buffer (includes alignment padding). */
  total: number;
  /** `[0, decayEnd)` takes weight decay, `[decayEnd, total)` does not. */
  decayEnd: number;
  wte: ParamEntry;
  wpe: ParamEntry;
  layers: LayerParams[];
  lnfw: ParamEntry;
  lnfb: ParamEntry;
  /** The entry of a name; throws if the model has no such tensor. */
  get(name: string): ParamEntry;
}

const align = (n: number) => Math.ceil(n / PARAM_ALIGN) * PARAM_ALIGN;

/** Lays out the parameters of `config` in one flat buffer. */
export function paramLayout(config: GPTConfig): ParamLayout {
  const { layers: L, dim: C, context: T, vocab: V } = config;
  const entries: ParamEntry[] = [];
  const byName = new Map<string, ParamEntry>();
  let offset = 0;
  const add = (name: string, shape: number[], decay: boolean, init: Init) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const entry = { name, shape, offset, size, decay, init };
    entries.push(entry);
    byName.set(name, entry);
    offset = align(offset + size);
    return entry;
  };
  // Decayed tensors first (one contiguous AdamW range), then biases and LayerNorm parameters.
  const wte = add("wte.weight", [V, C], true, "normal");
  const wpe = add("wpe.weight", [T, C], true, "normal");
  const weights = Array.from({ length: L }, (_, i) => ({
    qkvw: add(`h.${i}.attn.c_attn.weight`, [C, 3 * C], true, "normal"),
    attprojw: add(`h.${i}.attn.c_proj.weight`, [C, C], true, "residual"),
    fcw: add(`h.${i}.mlp.c_fc.weight`, [C, 4 * C], true, "normal"),
    fcprojw: add(`h.${i}.mlp.c_proj.weight`, [4 * C, C], true, "residual"),
  }));
  const decayEnd = offset;
  const layers = weights.map((w, i) => ({
    ...w,
    ln1w: add(`h.${i}.ln_1.weight`, [C], false, "ones"),
    ln1b: add(`h.${i}.ln_1.bias`, [C], false, "zeros"),
    qkvb: add(`h.${i}.attn.c_attn.bias`, [3 * C], false, "zeros"),
    attprojb: add(`h.${i}.attn.c_proj.bias`, [C], false, "zeros"),
    ln2w: add(`h.${i}.ln_2.weight`, [C], false, "ones"),
    ln2b: add(`h.${i}.ln_2.bias`, [C], false, "zeros"),
    fcb: add(`h.${i}.mlp.c_fc.bias`, [4 * C], false, "zeros"),
    fcprojb: add(`h.${i}.mlp.c_proj.bias`, [C], false, "zeros"),
  }));
  const lnfw = add("ln_f.weight", [C], false, "ones");
  const lnfb = add("ln_f.bias", [C], false, "zeros");
  return {
    config,
    entries,
    total: offset,
    decayEnd,
    wte,
    wpe,
    layers,
    lnfw,
    lnfb,
    get(name: string) {
      const entry = byName.get(name);
      if (!entry) throw new Error(`GPT has no parameter "${name}"`);
      return entry;
    },
  };
}

/**
 * GPT-2 initialisation: weights N(0, 0.02), the two residual projections of each block
 * N(0, 0.02/√(2·layers)) so the residual stream's variance does not grow with depth, biases 0,
 * LayerNorm gains 1. Draws come from a seeded {@linkcode Rng} in buffer order, so a seed fixes the init.
 */
export function initParams(layout: ParamLayout, seed: number): Float32Array {
  const params = new Float32Array(layout.total);
  const rng = new Rng(seed);
  const residualStd = 0.02 / Math.sqrt(2 * layout.config.layers);
  for (const e of layout.entries) {
    const view = params.subarray(e.offset, e.offset + e.size);
    if (e.init === "ones") view.fill(1);
    else if (e.init === "normal" || e.init === "residual") {
      const std = e.init === "normal" ? 0.02 : residualStd;
      for (let i = 0; i < view.length; i++) view[i] = std * rng.normal();
    }
  }
  return params;
}
