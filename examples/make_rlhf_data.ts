/**
 * Makes the demo's RLHF data from kiln's checkable task (`stages/sft/task.ts`): problems a program
 * can check, so every label is right by construction and nothing has to be downloaded.
 *
 * - `sft.jsonl`: demonstrations `{prompt, response}` with the right answers.
 * - `prompts.jsonl`: prompts for PPO (disjoint from the demonstrations), with the answer kept in the
 *   row for the checker: `{prompt, answer}`.
 * - `comparisons.jsonl`: `{prompt, responses, scores}` rows for the reward model, K responses per
 *   prompt graded by the task's grader (1 = right; near misses above wild guesses).
 *   - With `--model <sft-model-dir>`: the K responses are SAMPLED FROM THAT SFT MODEL (temperature 1),
 *     as InstructGPT did with its labellers, and ranked by the grader. This is the honest way, once an
 *     SFT model exists.
 *   - Without it (the files checked into `examples/data/`, and the tests): there is no SFT model yet, so
 *     the candidates are the right answer plus K−1 corruptions of it (a neighbouring number, one letter
 *     changed, a dropped letter, the wrong case, reversed). Such synthetic negatives are easier to tell
 *     apart than a model's own mistakes; say so when quoting accuracies on them.
 *
 * Run: `deno run -A examples/make_rlhf_data.ts --out examples/data [--sft 400] [--prompts 200]
 *       [--comparisons 300] [--k 4] [--seed 1] [--model <sft-dir>]`
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Rng } from "../model/rng.ts";
import { GPT } from "../model/gpt.ts";
import { generate } from "../model/generate.ts";
import { loadModelDir } from "../model/checkpoint.ts";
import { createBackend } from "../kernels/device.ts";
import { loadTokenizer } from "../tokenizer/mod.ts";
import { corruptAnswers, generateTasks, responseScore, type Task } from "../stages/sft/task.ts";
import { loadChatTemplate } from "../stages/sft/template.ts";
import { rankByChecker } from "../stages/reward_model/data.ts";

const { values } = parseArgs({
  options: {
    out: { type: "string", default: "examples/data" },
    sft: { type: "string", default: "400" },
    prompts: { type: "string", default: "200" },
    comparisons: { type: "string", default: "300" },
    k: { type: "string", default: "4" },
    seed: { type: "string", default: "1" },
    model: { type: "string" },
  },
});
const count = {
  sft: Number(values.sft),
  prompts: Number(values.prompts),
  comparisons: Number(values.comparisons),
};
const K = Number(values.k), seed = Number(values.seed);

// One pool of distinct problems, split three ways so no prompt is in two files.
const tasks = generateTasks(count.sft + count.prompts + count.comparisons, {
  seed,
  alphabet: "abcdefgh",
  minLength: 2,
  maxLength: 4,
  maxOperand: 20,
});
const sftTasks = tasks.slice(0, count.sft);
const promptTasks = tasks.slice(count.sft, count.sft + count.prompts);
const comparisonTasks = tasks.slice(count.sft + count.prompts);

/** K candidate responses per task: sampled from the SFT model, or synthetic corruptions (see the doc). */
async function candidates(list: Task[]): Promise<string[][]> {
  if (!values.model) {
    const rng = new Rng(seed ^ 0xc0ffee);
    return list.map((t) => [t.answer, ...corruptAnswers(t, K - 1, rng)]);
  }
  const dir = values.model;
  const loaded = await loadModelDir(dir);
  const tokenizer = await loadTokenizer(join(dir, "tokenizer.json"));
  const template = await loadChatTemplate(dir, tokenizer);
  const model = new GPT(await createBackend({ log: () => {} }), loaded.layout, loaded.params);
  const out: string[][] = [];
  for (const [i, t] of list.entries()) {
    const prompt = template.prompt([{ role: "user", content: t.prompt }]);
    const samples: string[] = [];
    for (let k = 0; k < K; k++) {
      const { ids } = await generate(model, prompt, {
        maxTokens: 16,
        temperature: 1,
        stop: template.stopIds(),
        seed: seed * 100_003 + i * K + k,
      });
      samples.push(template.answerText(ids));
    }
    out.push(samples);
  }
  model.dispose();
  return out;
}

const rows: string[] = [];
let dropped = 0;
const lists = await candidates(comparisonTasks);
comparisonTasks.forEach((t, i) => {
  const row = rankByChecker(t.prompt, lists[i], (r) => responseScore(t.prompt, r)!);
  if (row) rows.push(JSON.stringify(row));
  else dropped++;
});

const write = (name: string, lines: string[]) =>
  Deno.writeTextFile(join(values.out!, name), lines.join("\n") + "\n");
await Deno.mkdir(values.out!, { recursive: true });
await write("sft.jsonl", sftTasks.map((t) => JSON.stringify({ prompt: t.prompt, response: t.answer })));
await write("prompts.jsonl", promptTasks.map((t) => JSON.stringify({ prompt: t.prompt, answer: t.answer })));
await write("comparisons.jsonl", rows);
console.log(
  `${values.out}: ${sftTasks.length} demonstrations, ${promptTasks.length} prompts, ${rows.length} comparisons ` +
    `(K=${K}, ${values.model ? `sampled from ${values.model}` : "synthetic corruptions"}; ` +
    `${dropped} prompts dropped: fewer than two distinct candidates or all graded the same)`,
);
