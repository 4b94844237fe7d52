/**
 * Next-token losses of token sequences under a GPT: the one primitive perplexity and multiple-choice
 * scoring share. Sequences are sorted by length and run `batch` at a time through the model's
 * training forward with targets (the fused softmax cross-entropy gives −log p of every next token),
 * each batch padded to its longest sequence; causal attention keeps the padding from reaching the
 * real positions, and its losses are dropped.
 *
 * @example
 * ```ts ignore
 * const losses = await sequenceLosses(model, [[5, 6, 7], [5, 9]], { batch: 8 });
 * losses[0]; // Float64Array [−log p(6 | 5), −log p(7 | 5 6)]
 * ```
 * @module
 */
import type { Activations, GPT } from "../../model/gpt.ts";

/** Options of {@linkcode sequenceLosses}. */
export interface LossOptions {
  /** Sequences per forward. */
  batch: number;
  /** Called after each forward with the number of sequences done. */
  onBatch?: (done: number) => void;
}

/**
 * For each sequence s (2 ≤ length ≤ context + 1), `−log p(s[i+1] | s[0..i])` for every i, in float64.
 */
export async function sequenceLosses(
  model: GPT,
  sequences: readonly (readonly number[])[],
  options: LossOptions,
): Promise<Float64Array[]> {
  const { context, vocab } = model.config;
  sequences.forEach((s, i) => {
    if (s.length < 2 || s.length > context + 1) {
      throw new RangeError(`sequence ${i} has ${s.length} tokens; it needs 2 to ${context + 1}`);
    }
    if (s.some((t) => !Number.isInteger(t) || t < 0 || t >= vocab)) {
      throw new RangeError(`sequence ${i} has a token outside the vocabulary of ${vocab}`);
    }
  });
  const order = sequences.map((_, i) => i).sort((a, b) => sequences[a].length - sequences[b].length || a - b);
  const out: Float64Array[] = new Array(sequences.length);
  // Activations are kept per shape: windows of one length reuse one set.
  const shapes = new Map<string, Activations>();
  try {
    for (let start = 0; start < order.length; start += options.batch) {
      const rows = order.slice(start, start + options.batch);
      const B = rows.length;
      const T = sequences[rows[B - 1]].length - 1;
      const key = `${B}x${T}`;
      let acts = shapes.get(key);
      if (!acts) {
        acts = model.activations(B, T);
        shapes.set(key, acts);
      }
      const inputs = new Int32Array(B * T), targets = new Int32Array(B * T);
      rows.forEach((r, b) => {
        const s = sequences[r];
        for (let t = 0; t < s.length - 1; t++) {
          inputs[b * T + t] = s[t];
          targets[b * T + t] = s[t + 1];
        }
      });
      model.forward(acts, inputs, { targets });
      const [losses] = await model.backend.download(acts.losses);
      rows.forEach((r, b) => {
        out[r] = Float64Array.from(losses.subarray(b * T, b * T + sequences[r].length - 1));
      });
      options.onBatch?.(Math.min(start + B, order.length));
    }
  } finally {
    for (const acts of shapes.values()) model.freeActivations(acts);
  }
  return out;
}
