/**
 * InstructGPT's reward-model loss, as pure functions of the rewards.
 *
 * For one prompt with K ranked responses and rewards r, every ordered pair (w better than l) is a
 * comparison, and all C(K,2) of them form ONE batch element (InstructGPT: treating each pair as its own
 * element overfits, since each response would be seen K−1 times per epoch):
 *
 *     loss(prompt) = −1/P · Σ_{(w,l)} log σ(r_w − r_l − m)          P = number of pairs, m = margin ≥ 0
 *     ∂loss/∂r_w  += −σ(−(r_w − r_l − m)) / P,   ∂loss/∂r_l += +σ(−(r_w − r_l − m)) / P
 *
 * A batch of prompts averages their losses (each prompt weighs the same, whatever its K).
 *
 * @example
 * ```ts
 * import { pairwiseLoss } from "./loss.ts";
 * const { loss, grad, accuracy } = pairwiseLoss([2, 1, 0], [[0, 1], [0, 2], [1, 2]]);
 * // loss = mean of −log σ(1), −log σ(2), −log σ(1); accuracy 1
 * ```
 * @module
 */

/** log σ(x), stable for large |x|. */
export function logSigmoid(x: number): number {
  return x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x));
}

/** σ(x), stable for large |x|. */
export function sigmoid(x: number): number {
  if (x >= 0) return 1 / (1 + Math.exp(-x));
  const e = Math.exp(x);
  return e / (1 + e);
}

/** The loss of one prompt's comparisons, its gradient with respect to each reward, and its accuracy. */
export interface PairwiseResult {
  loss: number;
  /** ∂loss/∂r, one per response. */
  grad: Float64Array;
  /** Fraction of pairs the rewards order correctly (r_w > r_l). */
  accuracy: number;
  pairs: number;
}

/** The pairwise loss of one prompt: `rewards[i]` of response i, `pairs` as `[better, worse]`. */
export function pairwiseLoss(
  rewards: ArrayLike<number>,
  pairs: readonly (readonly [number, number])[],
  margin = 0,
): PairwiseResult {
  const grad = new Float64Array(rewards.length);
  if (pairs.length === 0) throw new RangeError("pairwiseLoss: no pairs");
  let loss = 0, correct = 0;
  const P = pairs.length;
  for (const [w, l] of pairs) {
    const d = rewards[w] - rewards[l] - margin;
    loss -= logSigmoid(d);
    const g = sigmoid(-d) / P;
    grad[w] -= g;
    grad[l] += g;
    if (rewards[w] > rewards[l]) correct++;
  }
  return { loss: loss / P, grad, accuracy: correct / P, pairs: P };
}

/**
 * The loss of a batch of prompts: the mean of their {@linkcode pairwiseLoss}es, and each reward's
 * gradient (already divided by the number of prompts).
 */
export function batchPairwiseLoss(
  groups: readonly { rewards: ArrayLike<number>; pairs: readonly (readonly [number, number])[] }[],
  margin = 0,
): { loss: number; grads: Float64Array[]; correct: number; pairs: number } {
  let loss = 0, correct = 0, pairs = 0;
  const grads = groups.map((g) => {
    const r = pairwiseLoss(g.rewards, g.pairs, margin);
    loss += r.loss / groups.length;
    correct += r.accuracy * r.pairs;
    pairs += r.pairs;
    return r.grad.map((x) => x / groups.length);
  });
  return { loss, grads, correct: Math.round(correct), pairs };
}
