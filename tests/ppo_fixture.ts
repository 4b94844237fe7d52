/**
 * A tiny, self-contained PPO pipeline for the PPO tests: a tokens source (a small BPE and a token
 * shard for ptx), an "SFT" model (a seeded random GPT), a reward model built by hand, and the `ppo`
 * stage. The reward model is the SFT trunk with a head that scores how close the last response token
 * is to one chosen token's embedding: a smooth reward a policy can raise quickly.
 *
 * Run as a script it executes the pipeline in a workdir, so a test can kill it mid-run:
 * `deno run -A tests/ppo_fixture.ts <workdir> '<ppo config JSON>'`.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { join } from "node:path";
import { defineStage } from "../pipeline/stage.ts";
import { pipeline } from "../pipeline/pipeline.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, type ParamLayout, paramLayout } from "../model/params.ts";
import { serializeConfig, serializeModel } from "../model/checkpoint.ts";
import { serializeSafetensors } from "../model/safetensors.ts";
import { encodeTokenShard, PieceCounter, trainBpe } from "../tokenizer/mod.ts";
import { ppo } from "../stages/ppo.ts";

const CORPUS = [
  "the cat sat on the mat and the dog sat on the log",
  "add two and three to get five; add one and one to get two",
  "a quick brown fox jumps over the lazy dog again and again",
  "numbers: one two three four five six seven eight nine ten",
];

export const PROMPTS = [
  "add two and three",
  "what did the cat do",
  "count to five",
  "name an animal",
  "say something",
  "the quick fox",
  "one and one",
  "where is the dog",
];

/** The tiny GPT of every PPO test. */
export const TINY = { layers: 1, dim: 32, heads: 2, context: 32 } as const;
const SEED = 7;

/**
 * The "SFT" weights: GPT-2's init with the token embeddings 10× larger, so the policy has clear
 * preferences (entropy below uniform) and its logits respond to updates as a trained model's do.
 */
function sftParams(layout: ParamLayout): Float32Array {
  const params = initParams(layout, SEED);
  const wte = layout.wte;
  for (let i = wte.offset; i < wte.offset + wte.size; i++) params[i] *= 10;
  return params;
}

const tinyTokens = defineStage({
  name: "tiny-tokens",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "tokens",
  schema: z.object({}),
  async run(ctx) {
    const counter = new PieceCounter();
    for (const line of CORPUS) counter.add(line);
    const tokenizer = trainBpe(counter, { vocabSize: 300 });
    const ids = CORPUS.flatMap((line) => tokenizer.encode(line + "\n"));
    const tokens = Array.from({ length: 20 }, () => ids).flat();
    await ctx.out.writeFile("train-00000.bin", encodeTokenShard(tokens, tokenizer.vocabSize));
    await ctx.out.writeText("tokenizer.json", JSON.stringify(tokenizer.toJSON()));
  },
});

const tinySft = defineStage({
  name: "tiny-sft",
  version: 1,
  module: import.meta.url,
  input: "tokens",
  output: "model",
  schema: z.object({}),
  async run(ctx) {
    const layout = paramLayout(gptConfig({ ...TINY, vocab: 300 }));
    await ctx.out.writeFile("model.safetensors", serializeModel(layout, sftParams(layout)));
    await ctx.out.writeFile("config.json", serializeConfig(layout.config));
    await ctx.out.writeFile("tokenizer.json", await Deno.readFile(ctx.input.path("tokenizer.json")));
  },
});

const tinyRewardModel = defineStage({
  name: "tiny-rm",
  version: 1,
  module: import.meta.url,
  input: "model",
  output: "reward-model",
  schema: z.object({ goodToken: z.number().int().default(101) }),
  async run(ctx) {
    const layout = paramLayout(gptConfig({ ...TINY, vocab: 300 }));
    const params = sftParams(layout);
    // Score = ⟨lnf(h_last), ê_good⟩·4: high when the last token's embedding points like the good token's.
    const C = TINY.dim, wte = layout.wte.offset, good = ctx.config.goodToken;
    const direction = params.slice(wte + good * C, wte + (good + 1) * C);
    const norm = Math.hypot(...direction);
    const score = direction.map((x) => 4 * x / norm);
    const tensors = layout.entries.map((e) => ({
      name: e.name,
      shape: e.shape,
      data: params.subarray(e.offset, e.offset + e.size),
    }));
    tensors.push({ name: "score.weight", shape: [1, C], data: score });
    await ctx.out.writeFile("model.safetensors", serializeSafetensors(tensors, { format: "pt" }));
    await ctx.out.writeFile("config.json", serializeConfig(layout.config));
    await ctx.out.writeJson("reward_stats.json", { mean: 0, std: 2 });
  },
});

/** Writes the prompt file into `dir` and returns its path. */
export async function writePrompts(dir: string): Promise<string> {
  const path = join(dir, "prompts.jsonl");
  await Deno.writeTextFile(
    path,
    // Every row has an answer for the checker (the tiny models never give it: pass rates stay 0).
    PROMPTS.map((prompt, i) => JSON.stringify({ prompt, id: i, answer: "seven" })).join("\n") + "\n",
  );
  return path;
}

/** The tiny pipeline ending in `ppo(config)`. */
export function tinyPpoPipeline(workdir: string, config: Parameters<typeof ppo>[0]) {
  return pipeline("tiny-ppo", { workdir, workers: 1 })
    .pipe(tinyTokens({}))
    .pipe(tinySft({}))
    .pipe(tinyRewardModel({}))
    .pipe(ppo(config));
}

if (import.meta.main) {
  const [workdir, config] = Deno.args;
  await tinyPpoPipeline(workdir, JSON.parse(config)).execute({ quiet: true });
}
