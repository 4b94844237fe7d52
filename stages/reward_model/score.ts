/**
 * Scoring (prompt, response) pairs with a reward model (`kiln score`'s command line is in
 * `score_cli.ts`).
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
import { join } from "node:path";
import { KilnError } from "../../pipeline/errors.ts";
import { createBackend } from "../../kernels/device.ts";
import type { Backend } from "../../kernels/backend.ts";
import { loadTokenizer, type Tokenizer } from "../../tokenizer/mod.ts";
import type { Turn } from "../../chat/data.ts";
import { type ChatTemplate, loadChatTemplate } from "../../chat/template.ts";
import { packSequences, RewardNetwork } from "./network.ts";
import { type LoadedRewardModel, loadRewardModel } from "./artifact.ts";

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
