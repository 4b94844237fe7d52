/**
 * Reading PPO's upstream artifacts: the SFT model (policy and reference), the reward model (scorer
 * and the value function's initialisation) with its score statistics, and the tokenizer.
 *
 * The reward-model artifact is read as a Hugging Face `GPT2ForSequenceClassification`-style directory:
 * `config.json`, and `model.safetensors` holding the GPT-2 tensors plus the scalar head `score.weight`
 * (`[1, C]`, HF's name) and optionally `score.bias` (`[1]`); the reward mean and standard deviation over
 * its training data come from `reward_stats.json` (`{mean, std}`) or the manifest stats
 * `rewardMean`/`rewardStd`. (Kept here until the reward-model stage exports a loader: see
 * `.notes/requests-from-ppo.md`.)
 *
 * @module
 */
import type { Artifact } from "../../pipeline/artifact.ts";
import { DataError, KilnError } from "../../pipeline/errors.ts";
import { fromHFConfig } from "../../model/config.ts";
import { CONFIG_FILE, type LoadedModel, loadModelDir, MODEL_FILE } from "../../model/checkpoint.ts";
import { type ParamLayout, paramLayout } from "../../model/params.ts";
import { parseSafetensors, type SafeTensors } from "../../model/safetensors.ts";
import { loadTokenizer } from "../../tokenizer/mod.ts";
import type { Tokenizer } from "../../tokenizer/mod.ts";
import type { ScalarHeadWeights } from "./networks.ts";

/** A reward model: trunk weights, the scalar head, and the statistics of its scores. */
export interface RewardModel extends LoadedModel {
  head: ScalarHeadWeights;
  /** Mean and standard deviation of its scores on its training data, when the artifact records them. */
  stats?: { mean: number; std: number };
}

/** The reward model's head tensors (Hugging Face `GPT2ForSequenceClassification` names). */
export const SCORE_WEIGHT = "score.weight";
export const SCORE_BIAS = "score.bias";

/**
 * Copies the GPT tensors of `file` into a flat buffer, ignoring the head. (`model/checkpoint.ts`'s
 * `loadWeights` rejects any tensor that is not part of a GPT, rightly for a language model.)
 */
function trunkWeights(file: SafeTensors, layout: ParamLayout): Float32Array {
  const params = new Float32Array(layout.total);
  for (const entry of layout.entries) {
    const name = file.tensors.has(entry.name) ? entry.name : `transformer.${entry.name}`;
    if (!file.tensors.has(name)) {
      throw new DataError(file.file, entry.name, "tensor missing from the reward model");
    }
    const info = file.info(name);
    if (info.shape.join(",") !== entry.shape.join(",")) {
      throw new DataError(
        file.file,
        name,
        `shape [${info.shape}] does not match the model's [${entry.shape}]`,
      );
    }
    params.set(file.float32(name), entry.offset);
  }
  return params;
}

/** Loads a reward-model artifact (see the module doc for the layout). */
export async function loadRewardModel(artifact: Artifact): Promise<RewardModel> {
  const config = fromHFConfig(await artifact.readJson(CONFIG_FILE), artifact.path(CONFIG_FILE));
  const layout = paramLayout(config);
  const path = artifact.path(MODEL_FILE);
  const file = parseSafetensors(await Deno.readFile(path), path);
  if (!file.tensors.has(SCORE_WEIGHT)) {
    throw new DataError(path, SCORE_WEIGHT, "no scalar head: this is not a reward model");
  }
  const weight = file.float32(SCORE_WEIGHT);
  if (weight.length !== config.dim) {
    throw new DataError(path, SCORE_WEIGHT, `has ${weight.length} values, the model width is ${config.dim}`);
  }
  const bias = file.tensors.has(SCORE_BIAS) ? file.float32(SCORE_BIAS)[0] : 0;
  let stats: RewardModel["stats"];
  if (artifact.files().includes("reward_stats.json")) {
    const s = await artifact.readJson<{ mean: number; std: number }>("reward_stats.json");
    stats = { mean: s.mean, std: s.std };
  } else if (typeof artifact.stats.rewardMean === "number" && typeof artifact.stats.rewardStd === "number") {
    stats = { mean: artifact.stats.rewardMean, std: artifact.stats.rewardStd };
  }
  if (stats && !(Number.isFinite(stats.mean) && stats.std > 0)) {
    throw new DataError(artifact.dir, "reward_stats.json", `invalid statistics ${JSON.stringify(stats)}`);
  }
  return { config, layout, params: trunkWeights(file, layout), head: { weight, bias }, stats };
}

/** Loads the SFT model of a `model` artifact. */
export function loadPolicyModel(artifact: Artifact): Promise<LoadedModel> {
  return loadModelDir(artifact.dir);
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
  throw new KilnError(
    `stage "ppo": no tokenizer.json in the policy model's or the tokens artifact (${
      artifacts.filter((a) => a).map((a) => a!.dir).join(", ")
    })`,
  );
}
