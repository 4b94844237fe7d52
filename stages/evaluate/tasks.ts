/**
 * The checker's pass rate on checkable tasks: the model answers each prompt greedily (rendered with
 * the chat template it was trained with, `chat_template.json`, else kiln's default), the answer is
 * cut at the template's stop tokens, and it is graded right or wrong by the row's `answer` field when
 * it has one, else by kiln's task checker (`chat/task.ts`) — the rule the `sft` and `ppo`
 * stages' pass rates use, so the figures compare.
 *
 * Prompts come from a JSONL file in the `ppo` prompt format (`{"prompt": "…", "answer"?: "…"}` or
 * `{"messages": […]}`), or are drawn from kiln's task generator (`generate: {count, seed}`).
 *
 * @example
 * ```ts ignore
 * const prompts = await taskPrompts({ generate: { count: 64, seed: 1 } }, template, { maxTokens: 200 });
 * const { passRate } = await passRate(model, template, prompts, { maxTokens: 16, batch: 16 });
 * ```
 * @module
 */
import { generateBatch } from "../../model/generate.ts";
import type { GPT } from "../../model/gpt.ts";
import { checkAnswer } from "../ppo/evaluate.ts";
import { type Prompt, readPrompts } from "../ppo/prompts.ts";
import { generateTasks, TASK_KINDS, type TaskKind } from "../../chat/task.ts";
import type { ChatTemplate } from "../../chat/template.ts";

/** Where the prompts come from: a file, or kiln's generator. */
export interface TaskSource {
  prompts?: string;
  generate?: { count: number; seed: number; kinds?: TaskKind[] };
}

/** The prompts of a source, rendered; prompts longer than `maxTokens` are skipped and counted. */
export async function taskPrompts(
  source: TaskSource,
  template: ChatTemplate,
  options: { maxTokens: number },
): Promise<{ prompts: Prompt[]; skippedTooLong: number }> {
  if (source.prompts) return await readPrompts(source.prompts, template, options);
  const { count, seed, kinds } = source.generate ?? { count: 64, seed: 1 };
  const prompts: Prompt[] = [];
  let skippedTooLong = 0;
  generateTasks(count, { seed, kinds: kinds ?? TASK_KINDS }).forEach((task, i) => {
    const tokens = template.prompt([{ role: "user", content: task.prompt }]);
    if (tokens.length > options.maxTokens) skippedTooLong++;
    else prompts.push({ line: i + 1, text: task.prompt, tokens, meta: {} });
  });
  return { prompts, skippedTooLong };
}

/** One graded answer (a line of the stage's `answers.jsonl`). */
export interface GradedAnswer {
  prompt: string;
  response: string;
  /** Right or wrong; absent when the prompt is not checkable. */
  pass?: boolean;
  /** The answer hit the token limit before a stop token. */
  truncated?: boolean;
}

/** What {@linkcode passRate} measures. */
export interface PassRateResult {
  /** Fraction of the checkable answers that are right (absent when none is checkable). */
  passRate?: number;
  /** Checkable answers. */
  checked: number;
  answers: GradedAnswer[];
}

/** Answers the prompts greedily, `batch` at a time, and grades them (see the module doc). */
export async function passRate(
  model: GPT,
  template: ChatTemplate,
  prompts: readonly Prompt[],
  options: { maxTokens: number; batch: number; onProgress?: (done: number) => void },
): Promise<PassRateResult> {
  const answers: GradedAnswer[] = [];
  for (let i = 0; i < prompts.length; i += options.batch) {
    const chunk = prompts.slice(i, i + options.batch);
    const rows = await generateBatch(model, chunk.map((p) => p.tokens), {
      maxTokens: options.maxTokens,
      temperature: 0,
      stop: template.stopIds(),
    });
    rows.forEach((row, j) => {
      const response = template.answerText(row.ids);
      const pass = checkAnswer(chunk[j], response);
      answers.push({
        prompt: chunk[j].text,
        response,
        ...(pass === undefined ? {} : { pass }),
        ...(row.finish === "length" ? { truncated: true } : {}),
      });
    });
    options.onProgress?.(Math.min(i + options.batch, prompts.length));
  }
  const checked = answers.filter((a) => a.pass !== undefined);
  return {
    ...(checked.length ? { passRate: checked.filter((a) => a.pass).length / checked.length } : {}),
    checked: checked.length,
    answers,
  };
}
