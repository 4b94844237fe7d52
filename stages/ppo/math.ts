/**
 * The arithmetic of PPO for RLHF, as InstructGPT (Ouyang et al. 2022) and Ziegler et al. (2019) use it,
 * written as small pure functions over per-token vectors of one batch of responses. Everything here is
 * float64: the vectors are a few thousand numbers per iteration, so precision costs nothing, and the same
 * inputs always give the same outputs (resume reproduces a run bit for bit).
 *
 * Token `t` of a response is the action; the state is the prompt plus the response's first `t` tokens.
 * `logprobs[t]` is log π(y_t | x, y_<t), `values[t]` the value function's estimate at that state.
 *
 * - {@linkcode klPenalisedRewards}: r_t = −β·(log π_RL − log π_SFT)(y_t), plus RM(x, y) at the last token.
 * - {@linkcode gae}: generalised advantage estimation (Schulman et al. 2016) and the value targets.
 * - {@linkcode whiten}: advantages normalised to mean 0, variance 1 over every token of the batch.
 * - {@linkcode clippedPolicyLoss}, {@linkcode clippedValueLoss}: PPO's clipped surrogate objectives and
 *   their exact gradients with respect to the log-probabilities and values (the networks backpropagate
 *   those per-token numbers).
 * - {@linkcode entropyOfLogits}: entropy of the policy's next-token distribution (logged).
 *
 * @example One response of three tokens, scored 1.0 by the reward model
 * ```ts
 * import { clippedPolicyLoss, gae, klPenalisedRewards, whiten } from "./math.ts";
 * const logprobs = Float64Array.of(-1, -2, -0.5);
 * const ref = Float64Array.of(-1.2, -1.9, -0.7);
 * const { rewards } = klPenalisedRewards(logprobs, ref, 1.0, 0.02);
 * const { advantages } = gae(rewards, Float64Array.of(0.1, 0.2, 0.3), 1, 0.95);
 * const [whitened] = whiten([advantages]);
 * const { loss, grad } = clippedPolicyLoss(logprobs, logprobs, whitened, 0.2); // on-policy: ratio 1
 * ```
 * @module
 */

/** Per-token rewards of one response, and the KL figures they came from. */
export interface PenalisedRewards {
  /** r_t = −β·kl_t, with the reward model's score added at the last token. */
  rewards: Float64Array;
  /** kl_t = log π_RL(y_t) − log π_SFT(y_t): the per-token estimate of KL(π_RL ‖ π_SFT). */
  kl: Float64Array;
  /** Σ_t kl_t: this response's estimate of the sequence-level KL to the reference. */
  klSum: number;
  /** Σ_t −β·kl_t: the part of the return that does not come from the reward model. */
  nonScoreReward: number;
}

/**
 * InstructGPT's reward, spread over the tokens: each token pays −β times its log-ratio to the frozen
 * SFT model, and the reward model's score for the whole response arrives at its last token. Summed,
 * that is RM(x, y) − β·log(π_RL(y|x) / π_SFT(y|x)).
 */
export function klPenalisedRewards(
  logprobs: ArrayLike<number>,
  refLogprobs: ArrayLike<number>,
  score: number,
  beta: number,
): PenalisedRewards {
  const n = logprobs.length;
  if (refLogprobs.length !== n) {
    throw new Error(`klPenalisedRewards: ${n} log-probs but ${refLogprobs.length} reference log-probs`);
  }
  if (n === 0) throw new Error("klPenalisedRewards: an empty response has no token to carry its score");
  const rewards = new Float64Array(n);
  const kl = new Float64Array(n);
  let klSum = 0;
  let nonScoreReward = 0;
  for (let t = 0; t < n; t++) {
    kl[t] = logprobs[t] - refLogprobs[t];
    rewards[t] = -beta * kl[t];
    klSum += kl[t];
    nonScoreReward += rewards[t];
  }
  rewards[n - 1] += score;
  return { rewards, kl, klSum, nonScoreReward };
}

/** Advantages and value targets of one response. */
export interface Advantages {
  /** A_t = Σ_k (γλ)^k δ_{t+k}, with δ_t = r_t + γ·V_{t+1} − V_t and V after the last token 0. */
  advantages: Float64Array;
  /** The value function's targets: A_t + V_t (the λ-return). */
  returns: Float64Array;
}

/**
 * Generalised advantage estimation over one response (an episode that ends at its last token, so the
 * value after it is 0). λ = 1 gives Monte-Carlo returns minus the baseline; λ = 0 the one-step TD error.
 */
export function gae(
  rewards: ArrayLike<number>,
  values: ArrayLike<number>,
  gamma: number,
  lambda: number,
): Advantages {
  const n = rewards.length;
  if (values.length !== n) throw new Error(`gae: ${n} rewards but ${values.length} values`);
  const advantages = new Float64Array(n);
  const returns = new Float64Array(n);
  let next = 0; // A_{t+1}
  for (let t = n - 1; t >= 0; t--) {
    const nextValue = t + 1 < n ? values[t + 1] : 0;
    const delta = rewards[t] + gamma * nextValue - values[t];
    next = delta + gamma * lambda * next;
    advantages[t] = next;
    returns[t] = next + values[t];
  }
  return { advantages, returns };
}

/** Mean and variance (unbiased, n − 1) of every element of several vectors. */
export function meanVar(vectors: ArrayLike<number>[]): { mean: number; variance: number; count: number } {
  let count = 0;
  let sum = 0;
  for (const v of vectors) {
    for (let i = 0; i < v.length; i++) sum += v[i];
    count += v.length;
  }
  if (count === 0) return { mean: 0, variance: 0, count };
  const mean = sum / count;
  let squares = 0;
  for (const v of vectors) for (let i = 0; i < v.length; i++) squares += (v[i] - mean) ** 2;
  return { mean, variance: count > 1 ? squares / (count - 1) : 0, count };
}

/**
 * Normalises every token's value over the whole batch to mean 0 and variance 1: (x − mean)/√(var + 1e-8).
 * With `shiftMean` false the mean is added back (only the scale changes). Returns new vectors.
 */
export function whiten(vectors: ArrayLike<number>[], shiftMean = true): Float64Array[] {
  const { mean, variance } = meanVar(vectors);
  const scale = 1 / Math.sqrt(variance + 1e-8);
  return vectors.map((v) => {
    const out = new Float64Array(v.length);
    for (let i = 0; i < v.length; i++) out[i] = (v[i] - mean) * scale + (shiftMean ? 0 : mean);
    return out;
  });
}

/** PPO's clipped surrogate over the tokens of a minibatch, and its gradient. */
export interface PolicyLoss {
  /** mean_t max(−A_t·ρ_t, −A_t·clip(ρ_t, 1 − ε, 1 + ε)), with ρ_t = exp(log π − log π_old). */
  loss: number;
  /** ∂loss/∂(log π)(y_t): what the policy network backpropagates at each token. */
  grad: Float64Array;
  /** Fraction of tokens where the clipped term won (its gradient is 0 there). */
  clipFraction: number;
  /** ½·mean_t (log π − log π_old)²: how far this update moved the policy from the one that sampled. */
  approxKl: number;
  /** mean_t ρ_t. */
  ratioMean: number;
}

/**
 * The clipped policy loss (PPO's L^CLIP, negated to be minimised), averaged over all `n` tokens.
 * Where the unclipped term is the larger, the gradient is −A_t·ρ_t / n (since ∂ρ/∂log π = ρ); where the
 * clipped term is larger the ratio is outside [1 − ε, 1 + ε] and the gradient is 0.
 */
export function clippedPolicyLoss(
  logprobs: ArrayLike<number>,
  oldLogprobs: ArrayLike<number>,
  advantages: ArrayLike<number>,
  clip: number,
): PolicyLoss {
  const n = logprobs.length;
  if (oldLogprobs.length !== n || advantages.length !== n) {
    throw new Error(
      `clippedPolicyLoss: lengths differ (${n} log-probs, ${oldLogprobs.length} old, ${advantages.length} advantages)`,
    );
  }
  const grad = new Float64Array(n);
  if (n === 0) return { loss: 0, grad, clipFraction: 0, approxKl: 0, ratioMean: 0 };
  let loss = 0, clipped = 0, approxKl = 0, ratioSum = 0;
  for (let t = 0; t < n; t++) {
    const logRatio = logprobs[t] - oldLogprobs[t];
    const ratio = Math.exp(logRatio);
    const a = advantages[t];
    const unclipped = -a * ratio;
    const clippedTerm = -a * Math.min(Math.max(ratio, 1 - clip), 1 + clip);
    if (unclipped >= clippedTerm) {
      loss += unclipped;
      grad[t] = -a * ratio / n;
    } else {
      loss += clippedTerm;
      clipped++;
    }
    approxKl += 0.5 * logRatio * logRatio;
    ratioSum += ratio;
  }
  return { loss: loss / n, grad, clipFraction: clipped / n, approxKl: approxKl / n, ratioMean: ratioSum / n };
}

/** The clipped value loss over the tokens of a minibatch, and its gradient. */
export interface ValueLoss {
  /** ½·mean_t max((V_t − R_t)², (V_old + clip(V_t − V_old, ±ε) − R_t)²). */
  loss: number;
  /** ∂loss/∂V_t. */
  grad: Float64Array;
  /** Fraction of tokens where the clipped term won. */
  clipFraction: number;
}

/**
 * PPO's clipped value loss (as in OpenAI's baselines and Ziegler et al.): the value may not move more
 * than ε from the estimate it had when the rollout was taken, unless that moves it closer to the
 * return. The gradient is (V_t − R_t)/n where the unclipped term is the larger, else 0.
 */
export function clippedValueLoss(
  values: ArrayLike<number>,
  oldValues: ArrayLike<number>,
  returns: ArrayLike<number>,
  clip: number,
): ValueLoss {
  const n = values.length;
  if (oldValues.length !== n || returns.length !== n) {
    throw new Error(
      `clippedValueLoss: lengths differ (${n} values, ${oldValues.length} old, ${returns.length} returns)`,
    );
  }
  const grad = new Float64Array(n);
  if (n === 0) return { loss: 0, grad, clipFraction: 0 };
  let loss = 0, clipped = 0;
  for (let t = 0; t < n; t++) {
    const v = values[t];
    const vClipped = oldValues[t] + Math.min(Math.max(v - oldValues[t], -clip), clip);
    const unclipped = (v - returns[t]) ** 2;
    const clippedTerm = (vClipped - returns[t]) ** 2;
    if (unclipped >= clippedTerm) {
      loss += unclipped;
      grad[t] = (v - returns[t]) / n;
    } else {
      loss += clippedTerm;
      clipped++;
    }
  }
  return { loss: 0.5 * loss / n, grad, clipFraction: clipped / n };
}

/**
 * Entropy (nats) of the softmax of one row of logits, `logits[offset .. offset + size)`:
 * H = logsumexp(z) − Σ softmax(z)·z, computed stably around the row's maximum.
 */
export function entropyOfLogits(
  logits: ArrayLike<number>,
  offset = 0,
  size = logits.length - offset,
): number {
  let max = -Infinity;
  for (let i = 0; i < size; i++) max = Math.max(max, logits[offset + i]);
  let sum = 0, weighted = 0;
  for (let i = 0; i < size; i++) {
    const z = logits[offset + i] - max;
    const e = Math.exp(z);
    sum += e;
    weighted += e * z;
  }
  return Math.log(sum) - weighted / sum;
}

/** Mean of all elements of several vectors (0 when there are none). */
export function meanOf(vectors: ArrayLike<number>[]): number {
  return meanVar(vectors).mean;
}
