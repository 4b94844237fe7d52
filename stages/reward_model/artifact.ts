/**
 * The `reward-model` artifact: a Hugging Face `GPT2ForSequenceClassification`-style directory —
 * `config.json`, `model.safetensors` (the GPT-2 tensors plus `score.weight` `[1, C]`), `tokenizer.json`,
 * `chat_template.json`, and `reward_stats.json` `{mean, std, count}`: the reward's mean and standard
 * deviation over the responses it was trained on, so PPO can normalise rewards. Writing and reading it.
 * @module
 */
import { type LoadedModel, MODEL_FILE, readModelConfig } from "../../model/checkpoint.ts";
import { type ParamLayout, paramLayout } from "../../model/params.ts";
import { parseSafetensors, type SafeTensors, serializeSafetensors } from "../../model/safetensors.ts";
import { DataError } from "../../pipeline/errors.ts";
import { join } from "node:path";

/** The scalar head's tensor (Hugging Face's name). */
export const SCORE_WEIGHT = "score.weight";
/** The reward statistics file. */
export const REWARD_STATS_FILE = "reward_stats.json";

/** Mean and standard deviation of the rewards of the training responses. */
export interface RewardStats {
  mean: number;
  std: number;
  count: number;
}

/** A reward model read from disk. */
export interface LoadedRewardModel extends LoadedModel {
  /** `[C]`: the scalar head. */
  head: Float32Array;
  stats?: RewardStats;
}

/** The bytes of a reward model's `model.safetensors`: the GPT-2 tensors and `score.weight`. */
export function serializeRewardModel(
  layout: ParamLayout,
  params: Float32Array,
  head: Float32Array,
): Uint8Array {
  const tensors = layout.entries.map((e) => ({
    name: e.name,
    shape: e.shape,
    data: params.subarray(e.offset, e.offset + e.size),
  }));
  tensors.push({ name: SCORE_WEIGHT, shape: [1, head.length], data: head });
  return serializeSafetensors(tensors, { format: "pt" });
}

/** The trunk's flat weights from a reward model file (also accepts HF's `transformer.` prefix). */
function trunkWeights(file: SafeTensors, layout: ParamLayout): Float32Array {
  const params = new Float32Array(layout.total);
  for (const entry of layout.entries) {
    const name = file.tensors.has(entry.name) ? entry.name : `transformer.${entry.name}`;
    if (!file.tensors.has(name)) {
      throw new DataError(file.file, entry.name, "tensor missing from the reward model");
    }
    const shape = file.info(name).shape;
    if (shape.join(",") !== entry.shape.join(",")) {
      throw new DataError(file.file, name, `shape [${shape}] does not match the model's [${entry.shape}]`);
    }
    params.set(file.float32(name), entry.offset);
  }
  return params;
}

/** Loads a reward-model directory (see the module doc). */
export async function loadRewardModel(dir: string): Promise<LoadedRewardModel> {
  const { config } = await readModelConfig(dir, "reward-model");
  const layout = paramLayout(config);
  const path = join(dir, MODEL_FILE);
  const file = parseSafetensors(await Deno.readFile(path), path);
  if (!file.tensors.has(SCORE_WEIGHT)) {
    throw new DataError(path, SCORE_WEIGHT, "no scalar head: this is not a reward model");
  }
  const head = file.float32(SCORE_WEIGHT);
  if (head.length !== config.dim) {
    throw new DataError(path, SCORE_WEIGHT, `has ${head.length} values, the model width is ${config.dim}`);
  }
  let stats: RewardStats | undefined;
  try {
    stats = JSON.parse(await Deno.readTextFile(join(dir, REWARD_STATS_FILE)));
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound)) {
      throw new DataError(join(dir, REWARD_STATS_FILE), undefined, (e as Error).message);
    }
  }
  return { config, layout, params: trunkWeights(file, layout), head, stats };
}
