/**
 * PPO's held-out evaluation: the policy answers prompts it never trains on (greedily by default),
 * the frozen reward model scores the answers, and where a prompt can be checked the answer is graded
 * right or wrong. Run before the first iteration and every few iterations, it shows what PPO did to
 * the SFT model: the checker's pass rate and the mean reward, before → after.
 *
 * A prompt is checkable when its row has an `answer` field (exact match after trimming both), or
 * when it is a prompt of kiln's checkable task (`chat/task.ts`'s `checkResponse`, which
 * recovers the answer from the prompt text: the same rule the `sft` stage's pass rate uses).
 *
 * @example
 * ```ts ignore
 * const { summary, samples } = await evaluateHeldOut(policy.gpt, reward, heldOut, {
 *   iteration: 0, maxTokens: 48, temperature: 0, seed: 1, rows: 8, T: 64, template,
 * });
 * summary.passRate; // fraction of the checkable answers that are right
 * ```
 * @module
 */
import { generateBatch, type Generation } from "../../model/generate.ts";
import type { GPT } from "../../model/gpt.ts";
import { checkResponse } from "../../chat/task.ts";
import type { ChatTemplate } from "../../chat/template.ts";
import type { ScalarModel } from "./networks.ts";
import type { Prompt } from "./prompts.ts";
import { packSequences } from "./rollout.ts";

/** One held-out answer (a line of the stage's `samples.jsonl`). */
export interface HeldOutSample {
  iteration: number;
  prompt: string;
  response: string;
  /** The reward model's raw score of the answer. */
  reward: number;
  /** Right or wrong, for checkable prompts. */
  pass?: boolean;
  /** The answer ended without a stop token (cut at the length limit). */
  truncated?: boolean;
}

/** The figures of one evaluation (a line of the stage's `metrics.jsonl`). */
export interface HeldOutSummary {
  iteration: number;
  /** Mean raw reward-model score of the held-out answers. */
  heldOutReward: number;
  /** Mean answer length in tokens (stop token included). */
  heldOutLength: number;
  /** Fraction of the checkable answers that are right (absent when none is checkable). */
  passRate?: number;
  /** How many answers were checkable. */
  checked: number;
}

/** Right or wrong: by the row's `answer` when it has one, else by kiln's task checker; undefined otherwise. */
export function checkAnswer(prompt: Prompt, response: string): boolean | undefined {
  const answer = prompt.meta.answer;
  if (typeof answer === "string" || typeof answer === "number") {
    return response.trim() === String(answer).trim();
  }
  return checkResponse(prompt.text, response);
}

/** Options of {@linkcode evaluateHeldOut}. */
export interface EvaluateOptions {
  /** The iteration the policy has completed (0: before training). */
  iteration: number;
  maxTokens: number;
  /** 0: greedy. */
  temperature: number;
  /** Sampling seed (unused when greedy). */
  seed: number;
  /** Rows and positions of the reward model's forward (every prompt plus `maxTokens` fits T, or T is the context). */
  rows: number;
  T: number;
  /** Renders answers as text and says which tokens stop one. */
  template: ChatTemplate;
  chunk?: number;
}

/** Answers `prompts` with `policy`, scores the answers with `reward`, and grades the checkable ones. */
export async function evaluateHeldOut(
  policy: GPT,
  reward: ScalarModel,
  prompts: Prompt[],
  options: EvaluateOptions,
): Promise<{ summary: HeldOutSummary; samples: HeldOutSample[] }> {
  const generations: Generation[] = [];
  // Decoded `rows` prompts at a time; the seed is a function of the iteration, so the evaluation
  // never draws from the training RNG.
  for (let i = 0; i < prompts.length; i += options.rows) {
    generations.push(
      ...await generateBatch(policy, prompts.slice(i, i + options.rows).map((p) => p.tokens), {
        maxTokens: options.maxTokens,
        temperature: options.temperature,
        stop: options.template.stopIds(),
        seed: (options.seed + 7919 * options.iteration + 104_729 * i) >>> 0,
        chunk: options.chunk,
      }),
    );
  }
  const responses = generations.map((g) => Int32Array.from(g.ids));
  const scores: number[] = [];
  for (let i = 0; i < prompts.length; i += options.rows) {
    const chunk = prompts.slice(i, i + options.rows).map((p, j) => ({
      prompt: p.tokens,
      response: responses[i + j],
    }));
    const packed = packSequences(chunk, options.rows, options.T);
    const values = await reward.forward(packed);
    chunk.forEach((_, j) => scores.push(values[packed.responseStart[j] + packed.responseLength[j]]));
  }
  const samples = prompts.map((prompt, i): HeldOutSample => {
    const response = options.template.answerText(Array.from(responses[i]));
    const pass = checkAnswer(prompt, response);
    const truncated = generations[i].finish === "length";
    return {
      iteration: options.iteration,
      prompt: prompt.text,
      response,
      reward: scores[i],
      ...(pass === undefined ? {} : { pass }),
      ...(truncated ? { truncated } : {}),
    };
  });
  const checked = samples.filter((s) => s.pass !== undefined);
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
  return {
    summary: {
      iteration: options.iteration,
      heldOutReward: mean(scores),
      heldOutLength: mean(responses.map((r) => r.length)),
      ...(checked.length ? { passRate: checked.filter((s) => s.pass).length / checked.length } : {}),
      checked: checked.length,
    },
    samples,
  };
}
