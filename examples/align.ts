/**
 * InstructGPT's three steps on kiln's checkable task, small enough for a laptop CPU in about three
 * minutes: a tiny GPT is pretrained on task-like text, fine-tuned on demonstrations (SFT), a reward
 * model is trained on ranked answers, and PPO tunes the SFT model against the reward model. Every
 * answer can be checked by a program (`chat/task.ts`), so the run measures what each step did:
 * the checker's pass rate and the reward on held-out prompts before and after PPO, and the reward,
 * the KL to the SFT model and β per PPO iteration (`.kiln/report-align.html`).
 *
 *   deno run -A examples/align.ts            # run it (again: every stage is cached)
 *   deno run -A examples/align.ts report     # .kiln/report-align.html: every stage's stats and curves
 *
 * The task is the `count` problems (`How many letters are in "fbhe"?` → `4`), words of 1–6 letters
 * from `a`–`h`. The data is made here from one seeded pool of distinct problems, split so that no
 * prompt is in two sets, and written to `.kiln/data/align/`:
 * - the pretraining text: 400 problems with their answers as plain text;
 * - 128 demonstrations for SFT (few, as demonstrations are the expensive data);
 * - 300 prompts for the reward model, and two kinds of comparisons on them, which it trains on together:
 *   synthetic ones (the right answer and three other counts, ranked by the checker: three pairs a
 *   prompt), and K = 4 answers per prompt sampled from the SFT model at temperature 1 inside the
 *   `rewardModel` stage, ranked by the checker (InstructGPT's recipe; the rows are in the stage's
 *   `comparisons.sampled.jsonl`). The SFT model's own samples teach the reward model about its typical
 *   mistakes, the synthetic ones give a wide margin to every wrong count: on the synthetic comparisons
 *   alone PPO stops at 81 % held-out, on the samples alone it does not improve on SFT at all (the
 *   samples agree on the SFT model's confident mistakes, so few pairs contradict them);
 * - 200 prompts for PPO (their answers are in the file for the logged pass rate, never trained on);
 * - 64 held-out prompts: SFT's validation set and PPO's evaluation.
 *
 * Both SFT's and PPO's held-out answers are greedy, so the `sft` stage's `passRate` and the `ppo`
 * stage's `passRateBefore` are the same figure; PPO's rollouts sample at temperature 1.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { join } from "node:path";
import { defineStage, DocumentWriter, pipeline, ppo, pretrain, rewardModel, sft, tokenize } from "../mod.ts";
import { Rng } from "../model/rng.ts";
import { generateTasks, responseScore, type Task } from "../chat/task.ts";

const workdir = ".kiln";
// The CPU backend keeps the run reproducible to the bit (and its time predictable without a GPU).
const backend = "cpu";
const problems = { kinds: ["count"] as const, alphabet: "abcdefgh", minLength: 1, maxLength: 6 };
const model = { layers: 2, dim: 64, heads: 4, context: 40 };

const sizes = { pretrain: 400, sft: 128, comparisons: 300, prompts: 200, eval: 64 };
const pool = generateTasks(Object.values(sizes).reduce((a, b) => a + b, 0), { seed: 1, ...problems });
const sets = {} as Record<keyof typeof sizes, Task[]>;
let at = 0;
for (const [name, n] of Object.entries(sizes) as [keyof typeof sizes, number][]) {
  sets[name] = pool.slice(at, at += n);
}

/** Writes a JSONL file only when its content changed (file mtimes are part of the stage cache keys). */
async function writeData(name: string, rows: unknown[]): Promise<string> {
  const dir = join(workdir, "data", "align");
  await Deno.mkdir(dir, { recursive: true });
  const path = join(dir, name);
  const text = rows.map((r) => JSON.stringify(r)).join("\n") + "\n";
  if (await Deno.readTextFile(path).catch(() => "") !== text) await Deno.writeTextFile(path, text);
  return path;
}

/** `count` wrong answers to a counting problem: other lengths in the task's range. */
function wrongCounts(task: Task, count: number, rng: Rng): string[] {
  const wrong = new Set<string>();
  while (wrong.size < count) {
    const n = String(problems.minLength + rng.below(problems.maxLength - problems.minLength + 1));
    if (n !== task.answer) wrong.add(n);
  }
  return [...wrong];
}

/**
 * The data files, written into the workdir. Only when this module is the program: each stage's process
 * imports it to find the task-text stage, and must not write anything.
 */
async function writeAllData() {
  const rng = new Rng(2);
  return {
    sft: await writeData("sft.jsonl", sets.sft.map((t) => ({ prompt: t.prompt, response: t.answer }))),
    comparisons: await writeData(
      "comparisons.jsonl",
      sets.comparisons.map((t) => {
        const responses = [t.answer, ...wrongCounts(t, 3, rng)];
        return { prompt: t.prompt, responses, scores: responses.map((r) => responseScore(t.prompt, r)) };
      }),
    ),
    rmPrompts: await writeData("rm-prompts.jsonl", sets.comparisons.map((t) => ({ prompt: t.prompt }))),
    prompts: await writeData(
      "prompts.jsonl",
      sets.prompts.map((t) => ({ prompt: t.prompt, answer: t.answer })),
    ),
    eval: await writeData("eval.jsonl", sets.eval.map((t) => ({ prompt: t.prompt, response: t.answer }))),
  };
}

/** Task-like text to pretrain on: a problem and its answer per document. */
const taskText = defineStage({
  name: "task-text",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema: z.object({}),
  description: "The align example's pretraining text: count problems with their answers",
  async run(ctx) {
    const writer = new DocumentWriter(await ctx.out.create("docs-00000.jsonl"), false);
    for (const [i, t] of sets.pretrain.entries()) {
      await writer.write({ id: `task-${i}`, text: `${t.prompt}\n${t.answer}\n` });
    }
    await writer.close();
    ctx.stats.set("documents", writer.count);
  },
});

if (import.meta.main) {
  const data = await writeAllData();
  await pipeline("align", { workdir })
    .pipe(taskText({}))
    // No merges: one token per character.
    .pipe(tokenize({ bpe: { vocabSize: 261 }, valFraction: 0.1 }))
    .pipe(pretrain({
      model,
      steps: 150,
      batch: 16,
      lr: 3e-3,
      warmup: 20,
      logEvery: 25,
      eval: { every: 50, batches: 4 },
      sample: { every: 0, maxTokens: 16, prompt: "", temperature: 1, topK: 40 },
      checkpointEvery: 50,
      backend,
    }))
    .pipe(sft({
      data: data.sft,
      val: { data: data.eval, fraction: 0 },
      epochs: 8,
      batch: 16,
      lr: 2e-3,
      warmup: 5,
      packing: false,
      logEvery: 8,
      sample: { count: sizes.eval, every: 0, maxTokens: 4, temperature: 0 },
      checkpointEvery: 16,
      backend,
    }))
    .pipe(rewardModel({
      // The synthetic comparisons, and K = 4 answers per prompt sampled from the SFT model at temperature 1
      // and ranked by the checker (InstructGPT's data, the checker as labeller). Either alone does worse:
      // see the module doc.
      data: data.comparisons,
      sample: { prompts: data.rmPrompts, k: 4, temperature: 1, maxTokens: 4 },
      epochs: 4,
      batch: 8,
      lr: 1e-3,
      warmup: 5,
      logEvery: 17,
      checkpointEvery: 34,
      backend,
    }))
    .pipe(ppo({
      prompts: data.prompts,
      eval: { prompts: data.eval, count: sizes.eval, every: 10, temperature: 0 },
      iterations: 20,
      batch: 32,
      minibatch: 16,
      ppoEpochs: 4,
      maxTokens: 4,
      // 2e-4 since the CPU backend's float32 SIMD products (3e-4 let the KL to the SFT model spike to 4.3
      // nats at iteration 3; the float64 reference it was tuned on stayed under 1.3).
      lr: 2e-4,
      valueLr: 1e-3,
      kl: { beta: 0.02 }, // InstructGPT's β
      missingEndPenalty: 1,
      ptx: { coef: 0 }, // plain PPO; PPO-ptx mixes in the pretraining loss (InstructGPT: coef 27.8)
      checkpointEvery: 5,
      backend,
    }))
    .run();
}
