/**
 * Comparisons sampled from the SFT model, as InstructGPT made its reward model's data: K responses per
 * prompt sampled from the SFT model, ranked by a labeller. kiln's labeller is a program, the checkable
 * task's grader (`chat/task.ts`'s `responseScore`), so the ranking is right by construction.
 *
 * - {@linkcode sampleResponses}: K answers per prompt from a {@linkcode GPT}, several prompts decoded
 *   together (`generateBatch`), seeded: the same model, prompts and options give the same samples.
 * - {@linkcode rankCandidates}: each prompt's candidates through {@linkcode rankByChecker}, with what
 *   was merged (duplicates), left out (empty) and dropped (too long, fewer than two distinct, all tied)
 *   counted.
 *
 * The `rewardModel` stage's `sample` option and `examples/make_rlhf_data.ts --model` both use them.
 *
 * @example
 * ```ts ignore
 * const samples = await sampleResponses(model, template, [[{ role: "user", content: "Reverse: cab" }]], {
 *   k: 4, seed: 1, maxTokens: 16,
 * });
 * const { rows, counts } = rankCandidates(["Reverse: cab"], samples, responseScore);
 * ```
 * @module
 */
import type { GPT } from "../../model/gpt.ts";
import { generateBatch } from "../../model/generate.ts";
import type { Turn } from "../../chat/data.ts";
import type { ChatTemplate } from "../../chat/template.ts";
import { type CheckerRanking, rankByChecker } from "./data.ts";

/** Options of {@linkcode sampleResponses}. */
export interface SampleOptions {
  /** Responses per prompt (K). */
  k: number;
  seed: number;
  /** Longest response, in tokens. */
  maxTokens: number;
  /** Default 1 (the model's own distribution, as InstructGPT sampled). */
  temperature?: number;
  /** Nucleus sampling (1: off). Default 1. */
  topP?: number;
  /** Prompts decoded together (K rows each). The samples depend on it and the seed. Default 16. */
  batch?: number;
}

/**
 * K answers per prompt sampled from `model` (each prompt rendered with `template`, a response ending at
 * its stop tokens), or undefined for a prompt that leaves no room for an answer in the model's context.
 * The prompts are decoded `batch` at a time, K rows each; the j-th batch is seeded with
 * `seed · 100003 + j`, so a run is reproducible.
 */
export async function sampleResponses(
  model: GPT,
  template: ChatTemplate,
  prompts: readonly (readonly Turn[])[],
  options: SampleOptions,
): Promise<(string[] | undefined)[]> {
  const { k: K, seed } = options;
  const batch = options.batch ?? 16;
  const rendered = prompts.map((turns) => template.prompt(turns));
  // At least one token of answer must fit after the prompt.
  const fits = rendered.flatMap((ids, i) => ids.length < model.config.context ? [i] : []);
  const out: (string[] | undefined)[] = prompts.map(() => undefined);
  for (let j = 0; j * batch < fits.length; j++) {
    const chunk = fits.slice(j * batch, (j + 1) * batch);
    const rows = await generateBatch(
      model,
      chunk.flatMap((i) => Array.from({ length: K }, () => rendered[i])),
      {
        maxTokens: options.maxTokens,
        temperature: options.temperature ?? 1,
        topP: options.topP,
        stop: template.stopIds(),
        seed: seed * 100_003 + j,
      },
    );
    chunk.forEach((i, c) => out[i] = rows.slice(c * K, (c + 1) * K).map((r) => template.answerText(r.ids)));
  }
  return out;
}

/** What {@linkcode rankCandidates} merged, left out and dropped. */
export interface CandidateCounts {
  /** Candidates drawn (prompts not sampled excluded), before merging. */
  candidates: number;
  /** Candidates identical (after trimming) to another of the same prompt: merged. */
  duplicates: number;
  /** Empty candidates: left out. */
  empty: number;
  /** Prompts without a row: not sampled (too long), fewer than two distinct candidates, all tied. */
  dropped: { tooLong: number; tooFewResponses: number; allTied: number };
}

/**
 * One comparison row per prompt whose candidates the grader tells apart ({@linkcode rankByChecker}); a
 * prompt with undefined candidates (not sampled: too long) is counted as `dropped.tooLong`. `index` is
 * the prompt each row belongs to.
 */
export function rankCandidates(
  prompts: readonly string[],
  candidates: readonly (readonly string[] | undefined)[],
  grade: (prompt: string, response: string) => number,
): { rows: (NonNullable<CheckerRanking["row"]> & { index: number })[]; counts: CandidateCounts } {
  const counts: CandidateCounts = {
    candidates: 0,
    duplicates: 0,
    empty: 0,
    dropped: { tooLong: 0, tooFewResponses: 0, allTied: 0 },
  };
  const rows: (NonNullable<CheckerRanking["row"]> & { index: number })[] = [];
  prompts.forEach((prompt, index) => {
    const list = candidates[index];
    if (!list) {
      counts.dropped.tooLong++;
      return;
    }
    counts.candidates += list.length;
    const ranked = rankByChecker(prompt, list, (r) => grade(prompt, r));
    counts.duplicates += ranked.duplicates;
    counts.empty += ranked.empty;
    if (ranked.row) rows.push({ ...ranked.row, index });
    else counts.dropped[ranked.dropped!]++;
  });
  return { rows, counts };
}
