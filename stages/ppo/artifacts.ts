/**
 * Reading PPO's upstream artifacts: the SFT model (policy and reference) with its chat template, the
 * reward model (scorer and the value function's initialisation) with its score statistics, and the
 * tokenizer. The formats are the `sft` and `rewardModel` stages' (their loaders are used here).
 *
 * @module
 */
import type { Artifact } from "../../pipeline/artifact.ts";
import { DataError, StageError } from "../../pipeline/errors.ts";
import { type LoadedModel, loadModelDir } from "../../model/checkpoint.ts";
import { loadTokenizer, type Tokenizer } from "../../tokenizer/mod.ts";
import { loadRewardModel, REWARD_STATS_FILE } from "../reward_model/artifact.ts";
import { type ChatTemplate, loadChatTemplate } from "../../chat/template.ts";
import type { ScalarHeadWeights } from "../../model/scalar_head.ts";

/** A reward model: trunk weights, the scalar head, and the statistics of its scores. */
export interface RewardModel extends LoadedModel {
  head: ScalarHeadWeights;
  /** Mean and standard deviation of its scores on its training data, when the artifact records them. */
  stats?: { mean: number; std: number };
}

/** Loads a `reward-model` artifact (`stages/reward_model/artifact.ts`'s format). */
export async function readRewardModel(artifact: Artifact): Promise<RewardModel> {
  const rm = await loadRewardModel(artifact.dir);
  const stats = rm.stats && { mean: rm.stats.mean, std: rm.stats.std };
  if (stats && !(Number.isFinite(stats.mean) && stats.std > 0)) {
    throw new DataError(
      artifact.path(REWARD_STATS_FILE),
      undefined,
      `invalid statistics ${JSON.stringify(stats)}`,
    );
  }
  // The pairwise loss cannot train a bias, so the reward model has none.
  return {
    config: rm.config,
    layout: rm.layout,
    params: rm.params,
    head: { weight: rm.head, bias: 0 },
    stats,
  };
}

/** The SFT model of a `model` artifact and the chat template it was trained with (kiln's default if none). */
export async function readPolicyModel(
  artifact: Artifact,
  tokenizer: Tokenizer,
): Promise<LoadedModel & { template: ChatTemplate }> {
  return { ...await loadModelDir(artifact.dir), template: await loadChatTemplate(artifact.dir, tokenizer) };
}

/** The tokenizer and its file: the policy artifact's `tokenizer.json`, else the tokens artifact's. */
export async function findTokenizer(
  ...artifacts: (Artifact | undefined)[]
): Promise<{ tokenizer: Tokenizer; file: string }> {
  for (const a of artifacts) {
    if (a?.files().includes("tokenizer.json")) {
      const file = a.path("tokenizer.json");
      return { tokenizer: await loadTokenizer(file), file };
    }
  }
  throw new StageError(
    "ppo",
    `no tokenizer.json in the policy model's or the tokens artifact (${
      artifacts.filter((a) => a).map((a) => a!.dir).join(", ")
    })`,
  );
}
