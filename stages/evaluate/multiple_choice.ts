/**
 * Multiple-choice accuracy on HellaSwag-format JSONL, scored as llm.c's `dev/data/hellaswag.py` and
 * its C evaluation do: each line is `{"ctx": "…", "endings": ["…", …], "label": i}` (other fields,
 * such as HellaSwag's `activity_label`, `ctx_a`, `split`, are ignored). Each candidate is the
 * context's tokens followed by the tokens of `" " + ending`; the model's −log p of the ending tokens
 * alone is summed, and
 * - `accuracy`: the candidate with the lowest sum is the prediction (`acc`);
 * - `accuracyNorm`: the candidate with the lowest mean per ending token is (`acc_norm`, the figure
 *   llm.c and GPT-3 report for HellaSwag).
 *
 * A candidate longer than the model's context keeps its last `context + 1` tokens (the context is
 * cut from the left; the count is reported as `truncated`).
 *
 * @example
 * ```ts ignore
 * const examples = await readMultipleChoice("data/hellaswag_val.jsonl");
 * const { accuracyNorm } = await multipleChoice(model, tokenizer, examples, { batch: 8 });
 * ```
 * @module
 */
import { DataError } from "../../pipeline/errors.ts";
import type { GPT } from "../../model/gpt.ts";
import type { Tokenizer } from "../../tokenizer/tokenizer.ts";
import { sequenceLosses } from "./loglik.ts";

/** One question: a context, its candidate endings and the index of the right one. */
export interface ChoiceExample {
  /** 1-based line in the file. */
  line: number;
  ctx: string;
  endings: string[];
  label: number;
}

/**
 * Reads a HellaSwag-format JSONL file (blank lines skipped), at most `limit` examples. A malformed
 * line is a {@linkcode DataError} naming the file, the line and the field.
 */
export async function readMultipleChoice(path: string, limit = Infinity): Promise<ChoiceExample[]> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new DataError(path, undefined, "file not found");
    throw new DataError(path, undefined, `unreadable: ${(e as Error).message}`);
  }
  const examples: ChoiceExample[] = [];
  const lines = text.split("\n");
  for (let i = 0; i < lines.length && examples.length < limit; i++) {
    if (lines[i].trim() === "") continue;
    const where = (field?: string) => `line ${i + 1}${field ? `: field "${field}"` : ""}`;
    let row: Record<string, unknown>;
    try {
      row = JSON.parse(lines[i]);
    } catch (e) {
      throw new DataError(path, where(), `not valid JSON (${(e as Error).message})`);
    }
    if (typeof row !== "object" || row === null || Array.isArray(row)) {
      throw new DataError(path, where(), "expected a JSON object {ctx, endings, label}");
    }
    const { ctx, endings, label } = row;
    if (typeof ctx !== "string") throw new DataError(path, where("ctx"), "expected a string");
    if (!Array.isArray(endings) || endings.length < 2 || !endings.every((e) => typeof e === "string")) {
      throw new DataError(path, where("endings"), "expected a list of at least 2 strings");
    }
    if (!Number.isInteger(label) || (label as number) < 0 || (label as number) >= endings.length) {
      throw new DataError(
        path,
        where("label"),
        `expected the index of the right ending (0 to ${endings.length - 1}), got ${JSON.stringify(label)}`,
      );
    }
    examples.push({ line: i + 1, ctx, endings: endings as string[], label: label as number });
  }
  if (examples.length === 0) throw new DataError(path, undefined, "no examples");
  return examples;
}

/** One scored example (a line of the stage's `multiple_choice.jsonl`). */
export interface ChoiceScore {
  line: number;
  label: number;
  /** Prediction by the summed loss of each ending. */
  pred: number;
  /** Prediction by the mean loss per ending token. */
  predNorm: number;
  /** Summed −log p of each ending's tokens. */
  losses: number[];
  /** Ending tokens of each candidate. */
  lengths: number[];
}

/** What {@linkcode multipleChoice} measures. */
export interface ChoiceResult {
  examples: number;
  /** Fraction right by summed loss (llm.c's `acc`). */
  accuracy: number;
  /** Fraction right by mean loss per ending token (llm.c's `acc_norm`). */
  accuracyNorm: number;
  /** Candidates whose context was cut to fit the model's context. */
  truncated: number;
  scores: ChoiceScore[];
}

/** Scores every example's endings with `model` (see the module doc). */
export async function multipleChoice(
  model: GPT,
  tokenizer: Tokenizer,
  examples: readonly ChoiceExample[],
  options: { batch: number; file?: string; onProgress?: (candidates: number) => void },
): Promise<ChoiceResult> {
  const limit = model.config.context + 1;
  const sequences: number[][] = [];
  const endingLengths: number[] = [];
  let truncated = 0;
  for (const ex of examples) {
    const ctx = tokenizer.encode(ex.ctx);
    for (const ending of ex.endings) {
      const end = tokenizer.encode(" " + ending);
      let seq = [...ctx, ...end];
      if (seq.length > limit) {
        seq = seq.slice(seq.length - limit);
        truncated++;
      }
      if (ctx.length === 0 || end.length === 0) {
        throw new DataError(
          options.file ?? "multiple-choice data",
          `line ${ex.line}`,
          `the ${ctx.length === 0 ? "context" : "ending"} encodes to no tokens`,
        );
      }
      // The first token is never predicted, so an ending is scored on at most limit − 1 tokens.
      endingLengths.push(Math.min(end.length, seq.length - 1));
      sequences.push(seq);
    }
  }
  const losses = await sequenceLosses(model, sequences, {
    batch: options.batch,
    onBatch: options.onProgress,
  });
  const scores: ChoiceScore[] = [];
  let k = 0, right = 0, rightNorm = 0;
  for (const ex of examples) {
    const sums: number[] = [], lengths: number[] = [];
    for (let j = 0; j < ex.endings.length; j++, k++) {
      const l = losses[k], n = endingLengths[k];
      let sum = 0;
      for (let t = l.length - n; t < l.length; t++) sum += l[t];
      sums.push(sum);
      lengths.push(n);
    }
    const argmin = (xs: number[]) => xs.reduce((best, x, i) => (x < xs[best] ? i : best), 0);
    const pred = argmin(sums), predNorm = argmin(sums.map((s, j) => s / lengths[j]));
    if (pred === ex.label) right++;
    if (predNorm === ex.label) rightNorm++;
    scores.push({ line: ex.line, label: ex.label, pred, predNorm, losses: sums, lengths });
  }
  const n = Math.max(1, examples.length);
  return { examples: examples.length, accuracy: right / n, accuracyNorm: rightNorm / n, truncated, scores };
}
