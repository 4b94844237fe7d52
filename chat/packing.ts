/**
 * Packing: several short examples share one context row, so a batch holds tokens, not padding.
 *
 * Each example keeps its own segment id; the attention op lets a position attend only to earlier
 * positions of the same segment, so no example sees another (the test compares every packed example's
 * losses with the same example trained alone). An example is never split across rows; the rest of a
 * row that cannot fit the next example is padding (its own segment, loss weight 0).
 *
 * Targets are next tokens inside an example: the last token of an example predicts nothing (weight 0),
 * and the loss weight of position t is the weight of token t+1 (1 on response tokens, see
 * `template.ts`), so the loss covers exactly the response.
 *
 * Positions restart at 0 in every example (`positions`, passed to the model as position ids), so a
 * packed example is trained exactly as if it were alone at the start of a row — the way it is seen
 * when generating or scoring. The test checks that packed and unpacked training give the same
 * per-token losses and gradients.
 *
 * @example
 * ```ts
 * import { batchRows, packRows } from "./packing.ts";
 * const examples = [{ ids: [1, 2, 3], weights: [0, 1, 1] }, { ids: [4, 5], weights: [0, 1] }];
 * const rows = packRows(examples, 8); // [[0, 1]]
 * const batch = batchRows(rows, examples, 1, 8, 0);
 * // inputs [1 2 3 4 5 0 0 0], segments [0 0 0 1 1 2 2 2], positions [0 1 2 0 1 0 1 2]
 * ```
 * @module
 */

/** An encoded example: token ids and per-token loss weights (see `template.ts`). */
export interface Encoded {
  ids: number[];
  weights: number[];
}

/** One context row: the examples it holds, by index into the list given to {@linkcode packRows}. */
export type Row = number[];

/**
 * Packs examples into rows of at most `T` tokens, in the order given (next-fit: an example that does
 * not fit closes the row). With `packing: false`, one example per row. Examples longer than `T` must
 * have been removed before.
 */
export function packRows(examples: readonly Encoded[], T: number, packing = true): Row[] {
  const rows: Row[] = [];
  let current: Row = [], used = 0;
  examples.forEach((ex, i) => {
    const n = ex.ids.length;
    if (n > T) throw new RangeError(`example ${i} has ${n} tokens, more than the row length ${T}`);
    if (current.length > 0 && (!packing || used + n > T)) {
      rows.push(current);
      current = [];
      used = 0;
    }
    current.push(i);
    used += n;
  });
  if (current.length > 0) rows.push(current);
  return rows;
}

/** The model inputs of one batch of `B` rows × `T` positions. */
export interface PackedBatch {
  inputs: Int32Array;
  targets: Int32Array;
  /** Loss weight of each position's target. */
  lossMask: Float32Array;
  /** Segment id of each position (one per example in a row, another for the padding). */
  segments: Int32Array;
  /** Position id of each token within its segment (0 at the start of every example). */
  positions: Int32Array;
  /** Number of positions whose target counts (Σ lossMask). */
  tokens: number;
}

/**
 * Lays out `rows` (at most `B`; missing rows are all padding) of `examples` into a batch. Padding
 * tokens are `pad`, with weight 0 and a segment of their own (its positions also count from 0).
 */
export function batchRows(
  rows: readonly Row[],
  examples: readonly Encoded[],
  B: number,
  T: number,
  pad: number,
): PackedBatch {
  if (rows.length > B) throw new RangeError(`${rows.length} rows do not fit a batch of ${B}`);
  const inputs = new Int32Array(B * T).fill(pad);
  const targets = new Int32Array(B * T).fill(pad);
  const lossMask = new Float32Array(B * T);
  const segments = new Int32Array(B * T);
  const positions = new Int32Array(B * T);
  let tokens = 0;
  for (let b = 0; b < B; b++) {
    const row = rows[b] ?? [];
    let t = b * T;
    row.forEach((index, segment) => {
      const { ids, weights } = examples[index];
      for (let i = 0; i < ids.length; i++, t++) {
        inputs[t] = ids[i];
        segments[t] = segment;
        positions[t] = i;
        if (i + 1 < ids.length) {
          targets[t] = ids[i + 1];
          lossMask[t] = weights[i + 1];
          tokens += weights[i + 1];
        }
      }
    });
    segments.fill(row.length, t, (b + 1) * T);
    for (let i = 0; t < (b + 1) * T; i++, t++) positions[t] = i;
  }
  return { inputs, targets, lossMask, segments, positions, tokens };
}
