/**
 * Reading a reward model and scoring (prompt, response) pairs with it: the API, and the function
 * behind `kiln score`.
 *
 * The `reward-model` artifact is a Hugging Face `GPT2ForSequenceClassification`-style directory:
 * `config.json`, `model.safetensors` (the GPT-2 tensors plus `score.weight` `[1, C]`), `tokenizer.json`,
 * `chat_template.json`, and `reward_stats.json` `{mean, std, count}`: the reward's mean and standard
 * deviation over the responses it was trained on, so PPO can normalise rewards.
 *
 * @example
 * ```ts ignore
 * const scorer = await RewardScorer.load(".kiln/artifacts/reward-model/<key>");
 * await scorer.score("What is 2 + 2?", "4"); // higher is better
 * await scorer.scoreMany([{ prompt: "Reverse: ab", response: "ba" }, { prompt: "Reverse: ab", response: "ab" }]);
 * scorer.close();
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { DataError, KilnError } from "../../pipeline/errors.ts";
import { createBackend } from "../../kernels/device.ts";
import type { Backend } from "../../kernels/backend.ts";
import { fromHFConfig } from "../../model/config.ts";
import { CONFIG_FILE, type LoadedModel, MODEL_FILE } from "../../model/checkpoint.ts";
import { type ParamLayout, paramLayout } from "../../model/params.ts";
import { parseSafetensors, type SafeTensors, serializeSafetensors } from "../../model/safetensors.ts";
import { loadTokenizer, type Tokenizer } from "../../tokenizer/mod.ts";
import type { Turn } from "../sft/data.ts";
import { readJsonlRows } from "../sft/jsonl.ts";
import { type ChatTemplate, loadChatTemplate } from "../sft/template.ts";
import { packSequences, RewardNetwork } from "./network.ts";

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
  const configPath = join(dir, CONFIG_FILE);
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(configPath));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new KilnError(`${dir}: not a reward-model directory (no ${CONFIG_FILE})`);
    }
    throw new DataError(configPath, undefined, `not valid JSON (${(e as Error).message})`);
  }
  const config = fromHFConfig(json, configPath);
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

/** A (prompt, response) pair to score; the prompt is a user message or a conversation. */
export interface ScoreItem {
  prompt: string | Turn[];
  response: string;
}

/** Scores responses with a reward model on a backend. */
export class RewardScorer {
  private constructor(
    readonly model: LoadedRewardModel,
    readonly template: ChatTemplate,
    private readonly network: RewardNetwork,
  ) {}

  /** Loads a reward-model directory with its tokenizer and chat template. */
  static async load(
    dir: string,
    options: { backend?: Backend; tokenizer?: Tokenizer } = {},
  ): Promise<RewardScorer> {
    const model = await loadRewardModel(dir);
    const tokenizer = options.tokenizer ?? await loadTokenizer(join(dir, "tokenizer.json"));
    const template = await loadChatTemplate(dir, tokenizer);
    const backend = options.backend ?? await createBackend({ log: () => {} });
    return new RewardScorer(
      model,
      template,
      new RewardNetwork(backend, model.layout, model.params, model.head, model.config.context),
    );
  }

  /** The token sequence a pair is scored on (prompt in the chat template, response, end marker). */
  tokens(item: ScoreItem): number[] {
    const turns: Turn[] = typeof item.prompt === "string"
      ? [{ role: "user", content: item.prompt }]
      : item.prompt;
    return this.template.promptAndResponse(turns, item.response).ids;
  }

  /** The rewards of many pairs, packed into rows. A pair longer than the context is an error. */
  async scoreMany(items: readonly ScoreItem[]): Promise<number[]> {
    const T = this.model.config.context;
    const sequences = items.map((item, i) => {
      const ids = this.tokens(item);
      if (ids.length > T) {
        throw new KilnError(`score: pair ${i} has ${ids.length} tokens, the model's context is ${T}`);
      }
      return ids;
    });
    const out: number[] = [];
    // A few dozen rows at a time keeps the activations small.
    for (let i = 0; i < sequences.length; i += 64) {
      const packed = packSequences(sequences.slice(i, i + 64), T, this.padId());
      out.push(...await this.network.rewards(packed));
    }
    return out;
  }

  /** The reward of one response. */
  async score(prompt: string | Turn[], response: string): Promise<number> {
    return (await this.scoreMany([{ prompt, response }]))[0];
  }

  private padId(): number {
    return this.template.tokenizer.specialTokens["<|endoftext|>"] ?? 0;
  }

  /** Frees the device buffers. */
  close(): void {
    this.network.dispose();
  }
}

/** Usage text of `kiln score`. */
export const SCORE_USAGE = `kiln score <reward-model-dir> [options]

Scores responses with a trained reward model (higher is better).

Options:
  --prompt TEXT      the user's message
  --response TEXT    the response to score (repeat to score several against one prompt)
  --file PATH        JSONL of {"prompt", "response"} rows instead; prints each row with its "reward"
  --normalize        print (reward - mean) / std with the statistics stored in the model
  --backend B        auto, webgpu or cpu (default auto)`;

/**
 * Runs `kiln score` with the arguments after `score`; writes one line per scored response to `write`
 * (default stdout) and returns the rewards.
 */
export async function scoreCommand(
  args: string[],
  write: (text: string) => void = (text) => console.log(text),
): Promise<number[]> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      prompt: { type: "string" },
      response: { type: "string", multiple: true },
      file: { type: "string" },
      normalize: { type: "boolean", default: false },
      backend: { type: "string", default: "auto" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    write(SCORE_USAGE);
    return [];
  }
  if (positionals.length !== 1) {
    throw new KilnError(`kiln score: expected one reward-model directory\n\n${SCORE_USAGE}`);
  }
  const backendName = values.backend;
  if (backendName !== "auto" && backendName !== "cpu" && backendName !== "webgpu") {
    throw new KilnError(`kiln score: --backend must be auto, webgpu or cpu, got "${backendName}"`);
  }
  let items: (ScoreItem & Record<string, unknown>)[];
  if (values.file) {
    items = (await readJsonlRows(values.file)).map((r) => {
      if (r.error !== undefined) throw new DataError(values.file!, `line ${r.line}`, r.error);
      const { prompt, response } = r.value;
      if (typeof prompt !== "string") {
        throw new DataError(values.file!, `line ${r.line}: prompt`, "must be a string");
      }
      if (typeof response !== "string") {
        throw new DataError(values.file!, `line ${r.line}: response`, "must be a string");
      }
      return { ...r.value, prompt, response };
    });
  } else {
    if (values.prompt === undefined || !values.response?.length) {
      throw new KilnError(`kiln score: give --prompt and --response, or --file\n\n${SCORE_USAGE}`);
    }
    items = values.response.map((response) => ({ prompt: values.prompt!, response }));
  }
  const backend = await createBackend({ backend: backendName, log: () => {} });
  const scorer = await RewardScorer.load(positionals[0], { backend });
  try {
    let rewards = await scorer.scoreMany(items);
    if (values.normalize) {
      const s = scorer.model.stats;
      if (!s) {
        throw new KilnError(`kiln score: ${positionals[0]} has no ${REWARD_STATS_FILE} to normalise with`);
      }
      rewards = rewards.map((r) => (r - s.mean) / s.std);
    }
    items.forEach((item, i) => {
      if (values.file) write(JSON.stringify({ ...item, reward: rewards[i] }));
      else write(`${rewards[i].toFixed(4)}\t${JSON.stringify(item.response)}`);
    });
    return rewards;
  } finally {
    scorer.close();
  }
}
