/**
 * Makes the demo's RLHF data from kiln's checkable task (`chat/task.ts`): problems a program
 * can check, so every label is right by construction and nothing has to be downloaded.
 *
 * - `sft.jsonl`: demonstrations `{prompt, response}` with the right answers.
 * - `prompts.jsonl`: prompts for PPO (disjoint from the demonstrations), with the answer kept in the
 *   row for the checker: `{prompt, answer}`.
 * - `comparisons.jsonl`: `{prompt, responses, scores}` rows for the reward model, K responses per
 *   prompt graded by the task's grader (1 = right; near misses above wild guesses).
 *   - With `--model <sft-model-dir>`: the K responses are SAMPLED FROM THAT SFT MODEL (temperature 1),
 *     as InstructGPT did with its labellers, and ranked by the grader. This is the honest way, once an
 *     SFT model exists. Empty samples are left out and identical ones merged; a prompt whose samples
 *     leave fewer than two distinct answers, or all grade the same (all right, or all equally wrong),
 *     gives no row; a prompt too long for the model's context is not sampled. All of it is counted.
 *     Inside a pipeline the `rewardModel` stage does the same with its `sample` option (both use
 *     `stages/reward_model/sample.ts`), without a second run of this script.
 *   - Without it (the files checked into `examples/data/`, and the tests): there is no SFT model yet, so
 *     the candidates are the right answer plus K−1 corruptions of it (a neighbouring number, one letter
 *     changed, a dropped letter, the wrong case, reversed). Such synthetic negatives are easier to tell
 *     apart than a model's own mistakes; say so when quoting accuracies on them (in kiln's slow test a
 *     reward model at 80 % on held-out corruptions ranks the SFT model's own samples near chance).
 *
 * The three files come from one seeded pool of distinct problems split three ways (demonstrations
 * first, then PPO's prompts, then the comparison prompts), so the same options give the same files,
 * the same `--sft` and `--seed` give the same demonstrations whatever the other counts, and no prompt
 * is in two files.
 *
 * Run: `deno run -A examples/make_rlhf_data.ts [--out examples/data] [--sft 200] [--prompts 100]
 *       [--comparisons 150] [--k 4] [--seed 1] [--model <sft-dir> [--backend cpu] [--max-tokens 16]]`
 * (the defaults remake the checked-in files).
 *
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { Rng } from "../model/rng.ts";
import { GPT } from "../model/gpt.ts";
import { loadModelDir } from "../model/checkpoint.ts";
import { createBackend } from "../kernels/device.ts";
import { loadTokenizer } from "../tokenizer/mod.ts";
import { corruptAnswers, generateTasks, responseScore, type Task } from "../chat/task.ts";
import { loadChatTemplate } from "../chat/template.ts";
import { type CandidateCounts, rankCandidates, sampleResponses } from "../stages/reward_model/sample.ts";

/** Options of {@linkcode makeRlhfData} (the command line's flags). */
export interface RlhfDataOptions {
  /** Directory the three files are written to. */
  out: string;
  /** Rows of each file (comparisons: prompts, before drops). Defaults 200 / 100 / 150. */
  sft?: number;
  prompts?: number;
  comparisons?: number;
  /** Candidates per comparison prompt. Default 4. */
  k?: number;
  seed?: number;
  /** An SFT model directory to sample the candidates from (else synthetic corruptions). */
  model?: string;
  /** Backend to sample on. Default "auto". */
  backend?: "auto" | "cpu" | "webgpu";
  /** Longest sampled response, in tokens. Default 16. */
  maxTokens?: number;
}

/** What {@linkcode makeRlhfData} wrote, and what it left out of `comparisons.jsonl` and why. */
export interface RlhfDataReport extends CandidateCounts {
  sft: number;
  prompts: number;
  /** Rows written to `comparisons.jsonl`. */
  comparisons: number;
}

/**
 * The problems of the three files: one seeded pool of distinct problems, split in order (SFT tasks,
 * then PPO's prompts, then the comparison prompts).
 */
export function rlhfTasks(
  sft: number,
  prompts: number,
  comparisons: number,
  seed: number,
): { sft: Task[]; prompts: Task[]; comparisons: Task[] } {
  const tasks = generateTasks(sft + prompts + comparisons, {
    seed,
    alphabet: "abcdefgh",
    minLength: 2,
    maxLength: 4,
    maxOperand: 20,
  });
  return {
    sft: tasks.slice(0, sft),
    prompts: tasks.slice(sft, sft + prompts),
    comparisons: tasks.slice(sft + prompts),
  };
}

/** K synthetic candidates per task: the right answer and K−1 corruptions (see the module doc). */
function corruptedCandidates(tasks: readonly Task[], K: number, seed: number): string[][] {
  const rng = new Rng(seed ^ 0xc0ffee);
  return tasks.map((t) => [t.answer, ...corruptAnswers(t, K - 1, rng)]);
}

/**
 * K answers per task sampled at temperature 1 from the SFT model in `dir` (rendered with its chat
 * template, stopping at its end marker), or undefined for a task whose prompt leaves no room in the
 * model's context: `stages/reward_model/sample.ts`'s `sampleResponses`, seeded, so a run is reproducible.
 */
export async function sampleCandidates(
  dir: string,
  tasks: readonly Task[],
  options: { k: number; seed: number; backend?: "auto" | "cpu" | "webgpu"; maxTokens?: number },
): Promise<(string[] | undefined)[]> {
  const loaded = await loadModelDir(dir);
  const tokenizer = await loadTokenizer(join(dir, "tokenizer.json"));
  const template = await loadChatTemplate(dir, tokenizer);
  const backend = await createBackend({ backend: options.backend, log: () => {} });
  const model = new GPT(backend, loaded.layout, loaded.params);
  try {
    return await sampleResponses(model, template, tasks.map((t) => [{ role: "user", content: t.prompt }]), {
      k: options.k,
      seed: options.seed,
      maxTokens: options.maxTokens ?? 16,
    });
  } finally {
    model.dispose();
  }
}

/** Writes the three files (see the module doc) and reports what went into `comparisons.jsonl`. */
export async function makeRlhfData(options: RlhfDataOptions): Promise<RlhfDataReport> {
  const K = options.k ?? 4, seed = options.seed ?? 1;
  if (!Number.isInteger(K) || K < 2) throw new RangeError(`k must be an integer ≥ 2, got ${options.k}`);
  const tasks = rlhfTasks(options.sft ?? 200, options.prompts ?? 100, options.comparisons ?? 150, seed);
  const lists = options.model
    ? await sampleCandidates(options.model, tasks.comparisons, {
      k: K,
      seed,
      backend: options.backend,
      maxTokens: options.maxTokens,
    })
    : corruptedCandidates(tasks.comparisons, K, seed);

  const { rows, counts } = rankCandidates(
    tasks.comparisons.map((t) => t.prompt),
    lists,
    (prompt, r) => responseScore(prompt, r)!,
  );
  const report: RlhfDataReport = {
    sft: tasks.sft.length,
    prompts: tasks.prompts.length,
    comparisons: rows.length,
    ...counts,
  };

  const write = (name: string, lines: string[]) =>
    Deno.writeTextFile(join(options.out, name), lines.map((l) => l + "\n").join(""));
  await Deno.mkdir(options.out, { recursive: true });
  await write("sft.jsonl", tasks.sft.map((t) => JSON.stringify({ prompt: t.prompt, response: t.answer })));
  await write(
    "prompts.jsonl",
    tasks.prompts.map((t) => JSON.stringify({ prompt: t.prompt, answer: t.answer })),
  );
  await write("comparisons.jsonl", rows.map(({ index: _, ...row }) => JSON.stringify(row)));
  return report;
}

if (import.meta.main) {
  const { values } = parseArgs({
    options: {
      out: { type: "string", default: "examples/data" },
      sft: { type: "string", default: "200" },
      prompts: { type: "string", default: "100" },
      comparisons: { type: "string", default: "150" },
      k: { type: "string", default: "4" },
      seed: { type: "string", default: "1" },
      model: { type: "string" },
      backend: { type: "string", default: "auto" },
      "max-tokens": { type: "string", default: "16" },
    },
  });
  const backend = values.backend;
  if (backend !== "auto" && backend !== "cpu" && backend !== "webgpu") {
    throw new Error(`--backend must be auto, cpu or webgpu, got "${backend}"`);
  }
  const r = await makeRlhfData({
    out: values.out,
    sft: Number(values.sft),
    prompts: Number(values.prompts),
    comparisons: Number(values.comparisons),
    k: Number(values.k),
    seed: Number(values.seed),
    model: values.model,
    backend,
    maxTokens: Number(values["max-tokens"]),
  });
  console.log(
    `${values.out}: ${r.sft} demonstrations, ${r.prompts} prompts, ${r.comparisons} comparisons ` +
      `(K=${values.k}, ${values.model ? `sampled from ${values.model}` : "synthetic corruptions"}; ` +
      `${r.candidates} candidates, ${r.duplicates} duplicates merged, ${r.empty} empty left out; ` +
      `prompts dropped: ${r.dropped.tooLong} too long for the context, ${r.dropped.tooFewResponses} with ` +
      `fewer than two distinct candidates, ${r.dropped.allTied} all graded the same)`,
  );
}
