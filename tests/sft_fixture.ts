/**
 * A tiny SFT → reward-model pipeline for the stage tests: a "pretrained" model (seeded GPT-2 init with
 * a byte-level tokenizer), demonstrations and comparisons of the checkable task, then `sft` and
 * `rewardModel` on the CPU backend.
 *
 * Run as a script it executes the pipeline in a workdir, so a test can kill it mid-run:
 * `deno run -A tests/sft_fixture.ts <workdir> <datadir> '<sft config JSON>' '<rm config JSON>'`.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { join } from "node:path";
import { defineStage } from "../pipeline/stage.ts";
import { pipeline } from "../pipeline/pipeline.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { serializeConfig, serializeModel } from "../model/checkpoint.ts";
import { PieceCounter, trainBpe } from "../tokenizer/mod.ts";
import { Rng } from "../model/rng.ts";
import { corruptAnswers, generateTasks } from "../chat/task.ts";
import { sft } from "../stages/sft.ts";
import { rewardModel } from "../stages/reward_model.ts";

export const TINY = { layers: 1, dim: 16, heads: 2, context: 32 } as const;

/** SFT and reward-model settings for the stage tests on {@linkcode TINY} (seconds on the CPU). */
export const STAGE_TEST = {
  sft: {
    epochs: 2,
    batch: 4,
    lr: 1e-2,
    warmup: 2,
    logEvery: 2,
    sample: { count: 3, maxTokens: 4 },
    checkpointEvery: 2,
    backend: "cpu" as const,
  },
  rewardModel: {
    epochs: 2,
    batch: 4,
    lr: 1e-2,
    warmup: 2,
    logEvery: 2,
    checkpointEvery: 2,
    backend: "cpu" as const,
  },
};

/** SFT settings that make a model worth sampling comparisons from (the sampled-comparisons tests). */
export const SAMPLING_SFT = {
  epochs: 12,
  batch: 8,
  lr: 1e-2,
  warmup: 2,
  sample: { count: 0 },
  backend: "cpu" as const,
};

/**
 * A setup where the checkable task is learned in a few minutes on a 2-core CPU
 * (`tests/slow/sft_learning_test.ts`, figures in BENCHMARKS.md; PPO's demo builds on it): a 2×64 GPT from
 * scratch with the byte-level tokenizer, `makeRlhfData({ out, ...LEARNING.data })` for the data, SFT with
 * `LEARNING.sft` (plus `data`), the reward model with `LEARNING.rewardModel` (plus `data`).
 */
export const LEARNING = {
  base: { layers: 2, dim: 64, heads: 4, context: 48 },
  data: { sft: 1000, prompts: 200, comparisons: 1000 },
  sft: {
    epochs: 12,
    batch: 8,
    lr: 3e-3,
    warmup: 10,
    logEvery: 100,
    sample: { count: 60, maxTokens: 6 },
    val: { fraction: 0.1 },
    checkpointEvery: 1000,
    backend: "cpu" as const,
  },
  rewardModel: {
    epochs: 2,
    batch: 8,
    lr: 1e-3,
    warmup: 5,
    logEvery: 50,
    val: { fraction: 0.2 },
    checkpointEvery: 1000,
    backend: "cpu" as const,
  },
};

/** The base model: GPT-2 init and a byte-level tokenizer (256 bytes + the 5 special tokens). */
export const base = defineStage({
  name: "tiny-base",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "model",
  schema: z.object({
    seed: z.number().default(1),
    layers: z.number().default(TINY.layers),
    dim: z.number().default(TINY.dim),
    heads: z.number().default(TINY.heads),
    context: z.number().default(TINY.context),
  }),
  async run(ctx) {
    const { seed: _, ...shape } = ctx.config;
    const tokenizer = trainBpe(new PieceCounter(), { vocabSize: 261 });
    const layout = paramLayout(gptConfig({ ...TINY, ...shape, vocab: tokenizer.vocabSize }));
    await ctx.out.writeFile("model.safetensors", serializeModel(layout, initParams(layout, ctx.config.seed)));
    await ctx.out.writeFile("config.json", serializeConfig(layout.config));
    await ctx.out.writeText("tokenizer.json", JSON.stringify(tokenizer.toJSON()));
  },
});

/** Writes `sft.jsonl` and `comparisons.jsonl` of the uppercase task into `dir`. */
export async function writeData(
  dir: string,
  count = 40,
  task = { alphabet: "abcdef", minLength: 1, maxLength: 3 },
): Promise<{ sft: string; comparisons: string }> {
  const tasks = generateTasks(count, { seed: 2, kinds: ["upper"], ...task });
  const rng = new Rng(3);
  const sftPath = join(dir, "sft.jsonl"), cmpPath = join(dir, "comparisons.jsonl");
  await Deno.writeTextFile(
    sftPath,
    tasks.map((t) => JSON.stringify({ prompt: t.prompt, response: t.answer })).join("\n") + "\n",
  );
  await Deno.writeTextFile(
    cmpPath,
    tasks.map((t) => JSON.stringify({ prompt: t.prompt, ranked: [t.answer, ...corruptAnswers(t, 2, rng)] }))
      .join("\n") + "\n",
  );
  return { sft: sftPath, comparisons: cmpPath };
}

/** The tiny pipeline: base → sft → rewardModel. */
export function tinyPipeline(
  workdir: string,
  sftConfig: Parameters<typeof sft>[0],
  rmConfig: Parameters<typeof rewardModel>[0],
  baseConfig: Parameters<typeof base>[0] = {},
) {
  return pipeline("tiny-rlhf", { workdir, workers: 1 })
    .pipe(base(baseConfig))
    .pipe(sft(sftConfig))
    .pipe(rewardModel(rmConfig));
}

if (import.meta.main) {
  const [workdir, sftJson, rmJson] = Deno.args;
  await tinyPipeline(workdir, JSON.parse(sftJson), JSON.parse(rmJson)).execute({
    command: "run",
    quiet: true,
  });
}
