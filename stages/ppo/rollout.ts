/**
 * The rollout of one PPO iteration ({@linkcode sampleRollouts}: the policy's responses to the next
 * batch of prompts) and its buffer: the responses the policy sampled for a batch of prompts,
 * with everything PPO needs per token (the sampling policy's log-probs, the reference model's, the
 * value estimates) and the reward model's score per response; then the per-token rewards,
 * advantages and returns computed from them, and the minibatches the PPO epochs visit.
 *
 * Sequences are laid out for the networks as rows of `prompt ++ response`, each starting at position
 * 0 (so position embeddings match generation) and padded on the right, where causal attention keeps
 * the padding from affecting any real token. Response token t of a row whose prompt has P tokens is
 * predicted at position P − 1 + t: that is where its log-prob and its state's value are read.
 *
 * @example
 * ```ts
 * import { processRollouts } from "./rollout.ts";
 * const { episodes, stats } = processRollouts([{
 *   prompt: Int32Array.of(5, 6), response: Int32Array.of(7, 0),
 *   logprobs: Float64Array.of(-1, -2), refLogprobs: Float64Array.of(-1, -2.1),
 *   values: Float64Array.of(0.1, 0.2), score: 1,
 * }], { beta: 0.02, gamma: 1, lambda: 0.95, whitenAdvantages: false });
 * console.log(episodes[0].advantages, stats.klMean);
 * ```
 * @module
 */
import type { Rng } from "../../model/rng.ts";
import type { GPT } from "../../model/gpt.ts";
import { generateBatch, type GenerateOptions, type Generation } from "../../model/generate.ts";
import { gae, klPenalisedRewards, meanVar, whiten } from "./math.ts";
import type { Prompt, PromptCursor } from "./prompts.ts";

/**
 * The rollout phase: the next `count` prompts of the cursor and the policy's sampled response to
 * each (every prompt fits T with `maxTokens` after it, or fills the context).
 */
export async function sampleRollouts(
  policy: GPT,
  prompts: Prompt[],
  cursor: PromptCursor,
  count: number,
  sampling: GenerateOptions,
): Promise<{ batch: Prompt[]; generations: Generation[] }> {
  const batch = cursor.take(count).map((i) => prompts[i]);
  const generations = await generateBatch(policy, batch.map((p) => p.tokens), sampling);
  return { batch, generations };
}

/** One sampled response and what the frozen networks said about it. */
export interface Rollout {
  /** Prompt token ids. */
  prompt: Int32Array;
  /** Sampled response token ids (≥ 1; ends with the end-of-text token when the policy stopped). */
  response: Int32Array;
  /** log π_old(y_t): the policy that sampled, re-evaluated by the training forward pass. */
  logprobs: Float64Array;
  /** log π_SFT(y_t) from the frozen reference model. */
  refLogprobs: Float64Array;
  /** V_old(s_t) from the value model before this iteration's updates. */
  values: Float64Array;
  /** The reward model's score for (prompt, response), after any normalisation. */
  score: number;
}

/** A rollout with its per-token rewards, advantages and value targets. */
export interface Episode extends Rollout {
  rewards: Float64Array;
  /** Per-token log π_old − log π_SFT. */
  kl: Float64Array;
  /** Advantages (whitened over the batch when asked). */
  advantages: Float64Array;
  /** Value targets (the λ-returns, never whitened). */
  returns: Float64Array;
}

/** How rewards become advantages. */
export interface AdvantageOptions {
  /** The KL coefficient β of this iteration. */
  beta: number;
  /** Discount γ (1 for RLHF: the episode is one response). */
  gamma: number;
  /** GAE's λ. */
  lambda: number;
  /** Whiten advantages over every token of the batch. */
  whitenAdvantages: boolean;
}

/** Batch-level figures of a processed rollout batch (logged per iteration). */
export interface RolloutStats {
  /** Mean reward-model score (after normalisation, as PPO saw it). */
  scoreMean: number;
  /** Mean over responses of Σ_t (log π − log π_SFT): the KL to the reference per response. */
  klMean: number;
  /** Mean over responses of the summed −β·kl_t. */
  nonScoreReward: number;
  /** Mean return at the first response token (score + non-score reward when γ = 1). */
  returnMean: number;
  /** Mean of the raw (unwhitened) advantages, and the value estimates, over all tokens. */
  advantageMean: number;
  valueMean: number;
  /** Mean response length in tokens. */
  responseLength: number;
}

/** Per-token rewards, GAE advantages (whitened over the batch if asked) and returns for a batch. */
export function processRollouts(
  rollouts: Rollout[],
  options: AdvantageOptions,
): { episodes: Episode[]; stats: RolloutStats } {
  if (rollouts.length === 0) throw new Error("processRollouts: an empty rollout batch");
  let klSum = 0, nonScore = 0, scoreSum = 0, returnSum = 0, lengthSum = 0;
  const partial = rollouts.map((r) => {
    const n = r.response.length;
    if (r.logprobs.length !== n || r.refLogprobs.length !== n || r.values.length !== n) {
      throw new Error(
        `processRollouts: a response of ${n} tokens has ${r.logprobs.length} log-probs, ` +
          `${r.refLogprobs.length} reference log-probs and ${r.values.length} values`,
      );
    }
    const { rewards, kl, klSum: k, nonScoreReward } = klPenalisedRewards(
      r.logprobs,
      r.refLogprobs,
      r.score,
      options.beta,
    );
    const { advantages, returns } = gae(rewards, r.values, options.gamma, options.lambda);
    klSum += k;
    nonScore += nonScoreReward;
    scoreSum += r.score;
    returnSum += returns[0];
    lengthSum += n;
    return { ...r, rewards, kl, advantages, returns };
  });
  const raw = partial.map((e) => e.advantages);
  const whitened = options.whitenAdvantages ? whiten(raw) : raw;
  const episodes = partial.map((e, i) => ({ ...e, advantages: whitened[i] }));
  const n = rollouts.length;
  return {
    episodes,
    stats: {
      scoreMean: scoreSum / n,
      klMean: klSum / n,
      nonScoreReward: nonScore / n,
      returnMean: returnSum / n,
      advantageMean: meanVar(raw).mean,
      valueMean: meanVar(rollouts.map((r) => r.values)).mean,
      responseLength: lengthSum / n,
    },
  };
}

/**
 * The minibatches of one PPO epoch: a seeded permutation of `0 … n−1` cut into runs of `size`
 * (the last one shorter when `size` does not divide `n`).
 */
export function minibatches(n: number, size: number, rng: Rng): number[][] {
  const order = rng.shuffle(Uint32Array.from({ length: n }, (_, i) => i));
  const out: number[][] = [];
  for (let i = 0; i < n; i += size) out.push(Array.from(order.subarray(i, Math.min(n, i + size))));
  return out;
}

/** Rows of `prompt ++ response` for a forward pass, and where each response's tokens are predicted. */
export interface PackedSequences {
  /** `rows × T` input ids (padded with `pad`). */
  inputs: Int32Array;
  /** `rows × T` next-token targets: `inputs` shifted left by one (padded with `pad`). */
  targets: Int32Array;
  /**
   * Flat index (row·T + position) at which each row's first response token is predicted; its last
   * response token is the input at `responseStart + responseLength`.
   */
  responseStart: number[];
  /** Each row's response length. */
  responseLength: number[];
}

/**
 * Lays `prompt ++ response` sequences into `rows × T` (rows beyond the sequences are all padding).
 * Every token, the last included, is an input: a scalar head (reward model) reads the last one.
 */
export function packSequences(
  sequences: { prompt: ArrayLike<number>; response: ArrayLike<number> }[],
  rows: number,
  T: number,
  pad = 0,
): PackedSequences {
  if (sequences.length > rows) {
    throw new Error(`packSequences: ${sequences.length} sequences for ${rows} rows`);
  }
  const inputs = new Int32Array(rows * T).fill(pad);
  const targets = new Int32Array(rows * T).fill(pad);
  const responseStart: number[] = [];
  const responseLength: number[] = [];
  sequences.forEach((s, row) => {
    const P = s.prompt.length, R = s.response.length;
    if (P < 1 || P + R > T) {
      throw new Error(
        `packSequences: a prompt of ${P} and a response of ${R} tokens do not fit a context of ${T}`,
      );
    }
    const base = row * T;
    for (let i = 0; i < P + R; i++) {
      const token = i < P ? s.prompt[i] : s.response[i - P];
      inputs[base + i] = token;
      if (i > 0) targets[base + i - 1] = token;
    }
    responseStart.push(base + P - 1);
    responseLength.push(R);
  });
  return { inputs, targets, responseStart, responseLength };
}

/** Gathers each row's response values out of a flat `rows × T` per-position array. */
export function gatherResponses(perPosition: ArrayLike<number>, packed: PackedSequences): Float64Array[] {
  return packed.responseStart.map((start, i) => {
    const out = new Float64Array(packed.responseLength[i]);
    for (let t = 0; t < out.length; t++) out[t] = perPosition[start + t];
    return out;
  });
}

/** Scatters per-response vectors back to a flat `rows × T` per-position array (zeros elsewhere). */
export function scatterResponses(
  perResponse: ArrayLike<number>[],
  packed: PackedSequences,
  size: number,
): Float32Array {
  const out = new Float32Array(size);
  perResponse.forEach((v, i) => {
    const start = packed.responseStart[i];
    for (let t = 0; t < v.length; t++) out[start + t] = v[t];
  });
  return out;
}
