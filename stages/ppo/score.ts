/**
 * The score phase of a PPO iteration: what the networks say about the responses the policy just
 * sampled (`rollout.ts`). In minibatch-sized rows of `prompt ++ response`: the sampling policy's
 * log-probs (π_old) and entropy, the frozen reference model's log-probs (π_SFT), the value model's
 * estimates and the reward model's score at the last response token, normalised with the reward
 * model's recorded statistics and lowered by `missingEndPenalty` for a response cut without a stop
 * token; then the per-token KL-penalised rewards, advantages and returns of the batch
 * ({@linkcode processRollouts}).
 * @module
 */
import type { Generation } from "../../model/generate.ts";
import type { Policy, ReferenceModel, ScalarModel } from "./networks.ts";
import {
  type AdvantageOptions,
  type Episode,
  gatherResponses,
  packSequences,
  processRollouts,
  type Rollout,
  type RolloutStats,
} from "./rollout.ts";

/** The four networks of PPO. */
export interface PpoNetworks {
  policy: Policy;
  reference: ReferenceModel;
  reward: ScalarModel;
  value: ScalarModel;
}

/** How responses are scored. */
export interface ScoreOptions extends AdvantageOptions {
  /** Rows a network reads at once (the minibatch size) and their length. */
  rows: number;
  T: number;
  /** The reward model's score statistics to normalise with, if any. */
  rewardStats?: { mean: number; std: number };
  /** Subtracted from the score of a response cut at the length limit. */
  missingEndPenalty: number;
}

/** A scored rollout batch. */
export interface ScoredBatch {
  episodes: Episode[];
  stats: RolloutStats;
  /** The reward model's raw score of each response. */
  rawScores: number[];
  /** Entropy (nats) of the policy at each response token, per response. */
  entropies: Float64Array[];
}

/** Scores the sampled responses to `prompts` and turns them into episodes; see the module doc. */
export async function scoreRollouts(
  nets: PpoNetworks,
  prompts: ArrayLike<number>[],
  generations: Generation[],
  opts: ScoreOptions,
): Promise<ScoredBatch> {
  const { rows, T, rewardStats } = opts;
  const rollouts: Rollout[] = [];
  const rawScores: number[] = [];
  const entropies: Float64Array[] = [];
  for (let i = 0; i < prompts.length; i += rows) {
    const chunk = Array.from(prompts).slice(i, i + rows).map((p, j) => ({
      prompt: Int32Array.from(p),
      response: Int32Array.from(generations[i + j].ids),
    }));
    const packed = packSequences(chunk, rows, T);
    const old = gatherResponses(await nets.policy.logprobs(packed), packed);
    entropies.push(...await nets.policy.responseEntropy(packed));
    const ref = gatherResponses(await nets.reference.logprobs(packed), packed);
    const values = gatherResponses(await nets.value.forward(packed), packed);
    const scores = await nets.reward.forward(packed);
    chunk.forEach((s, j) => {
      const raw = scores[packed.responseStart[j] + packed.responseLength[j]];
      rawScores.push(raw);
      const penalty = generations[i + j].finish === "length" ? opts.missingEndPenalty : 0;
      const score = (rewardStats ? (raw - rewardStats.mean) / rewardStats.std : raw) - penalty;
      rollouts.push({ ...s, logprobs: old[j], refLogprobs: ref[j], values: values[j], score });
    });
  }
  const { episodes, stats } = processRollouts(rollouts, opts);
  return { episodes, stats, rawScores, entropies };
}
