/**
 * The comparison data format of the reward model: JSONL, one prompt a line with K ≥ 2 responses and
 * a preference among them, in any of three shapes.
 *
 * ```jsonl
 * {"prompt": "What is 17 + 25?", "chosen": "42", "rejected": "43"}
 * {"prompt": "Reverse: cab", "ranked": ["bac", "bca", "cab", ""]}
 * {"prompt": "Uppercase: cab", "responses": ["CAB", "cab", "CAX"], "scores": [1, 0.2, 0.33]}
 * ```
 *
 * - `chosen` / `rejected`: one pair (K = 2).
 * - `ranked`: K responses, best first (InstructGPT's labellers ranked K = 4…9 samples).
 * - `responses` + `scores`: K responses and a number each, higher is better; equal scores are ties and
 *   give no pair.
 * - The prompt is `prompt` (a user turn, optional `system`) or `messages` (a conversation ending with a
 *   user turn). Other fields are ignored.
 *
 * Every ordered pair (better, worse) of a line is one comparison; InstructGPT trains on all C(K,2) of
 * them as one batch element (`loss.ts`). A line whose responses are fewer than two, duplicated, all
 * tied, or of which any is empty is malformed: an error naming file, line and field, or with
 * `onBadRow: "skip"` a skip counted by reason (`notUtf8`, `notJson`, `missingField`, `badType`,
 * `badRole`, `tooFewResponses`, `duplicateResponse`, `emptyResponse`, `allTied`, `lengthMismatch`).
 *
 * How the demo's comparisons are made honestly (no labellers, no downloads): prompts of the checkable
 * task (`chat/task.ts`), K responses sampled from the SFT model, ranked by the task's grader
 * ({@linkcode rankByChecker}); the `rewardModel` stage does it with its `sample` option (`sample.ts`),
 * `examples/make_rlhf_data.ts --model` outside a pipeline.
 *
 * @module
 */
import { DataError } from "../../pipeline/errors.ts";
import { parseMessages, type Turn } from "../../chat/data.ts";
import { type OnBadRow, parseJsonl, RowError, SkipTally } from "../../chat/jsonl.ts";

/** One prompt's comparisons: its responses and the ordered pairs between them. */
export interface Comparison {
  /** 1-based line in the file. */
  line: number;
  /** The conversation the responses answer (ends with a user turn). */
  prompt: Turn[];
  responses: string[];
  /** `[better, worse]` index pairs into `responses`. */
  pairs: [number, number][];
}

function str(row: Record<string, unknown>, field: string): string {
  const v = row[field];
  if (v === undefined) throw new RowError(field, "missingField", "missing");
  if (typeof v !== "string") throw new RowError(field, "badType", `must be a string, got ${typeof v}`);
  return v;
}

function stringList(row: Record<string, unknown>, field: string): string[] {
  const v = row[field];
  if (!Array.isArray(v)) throw new RowError(field, "badType", "must be a list of strings");
  v.forEach((x, i) => {
    if (typeof x !== "string") throw new RowError(`${field}[${i}]`, "badType", "must be a string");
  });
  return v as string[];
}

/** The prompt turns of a row (`prompt` + optional `system`, or `messages`); see the module doc. */
export function parsePrompt(row: Record<string, unknown>): Turn[] {
  if (row.messages !== undefined) {
    const turns = parseMessages(row.messages);
    if (turns.at(-1)!.role !== "user") {
      throw new RowError("messages", "badRole", "must end with a user turn (the responses answer it)");
    }
    return turns;
  }
  const turns: Turn[] = [{ role: "user", content: str(row, "prompt") }];
  if (row.system !== undefined) turns.unshift({ role: "system", content: str(row, "system") });
  return turns;
}

/** Pairs `[i, j]` with response i better than j, from a best-first order. */
function rankedPairs(K: number): [number, number][] {
  const pairs: [number, number][] = [];
  for (let i = 0; i < K; i++) for (let j = i + 1; j < K; j++) pairs.push([i, j]);
  return pairs;
}

/** Parses one row (see the module doc); throws {@linkcode RowError} naming the field. */
export function parseComparisonRow(row: Record<string, unknown>): Omit<Comparison, "line"> {
  const prompt = parsePrompt(row);
  let responses: string[], pairs: [number, number][], field: string;
  if (row.chosen !== undefined || row.rejected !== undefined) {
    responses = [str(row, "chosen"), str(row, "rejected")];
    pairs = [[0, 1]];
    field = "rejected";
  } else if (row.ranked !== undefined) {
    responses = stringList(row, "ranked");
    pairs = rankedPairs(responses.length);
    field = "ranked";
  } else if (row.responses !== undefined) {
    responses = stringList(row, "responses");
    if (row.scores === undefined) {
      throw new RowError("scores", "missingField", "missing (one number per response)");
    }
    const scores = row.scores;
    if (!Array.isArray(scores) || scores.some((s) => typeof s !== "number" || !Number.isFinite(s))) {
      throw new RowError("scores", "badType", "must be a list of finite numbers");
    }
    if (scores.length !== responses.length) {
      throw new RowError(
        "scores",
        "lengthMismatch",
        `has ${scores.length} numbers for ${responses.length} responses`,
      );
    }
    pairs = [];
    for (let i = 0; i < responses.length; i++) {
      for (let j = 0; j < responses.length; j++) if (scores[i] > scores[j]) pairs.push([i, j]);
    }
    field = "responses";
  } else {
    throw new RowError(
      undefined,
      "missingField",
      'needs "chosen" and "rejected", "ranked", or "responses" and "scores"',
    );
  }
  if (responses.length < 2) {
    throw new RowError(
      field,
      "tooFewResponses",
      `has ${responses.length} response; a comparison needs K ≥ 2`,
    );
  }
  const empty = responses.findIndex((r) => r.trim() === "");
  if (empty >= 0) {
    throw new RowError(
      field === "rejected" && empty === 0 ? "chosen" : field,
      "emptyResponse",
      `response ${empty} is empty`,
    );
  }
  const seen = new Map<string, number>();
  responses.forEach((r, i) => {
    const first = seen.get(r);
    if (first !== undefined) {
      throw new RowError(field, "duplicateResponse", `responses ${first} and ${i} are the same text`);
    }
    seen.set(r, i);
  });
  if (pairs.length === 0) {
    throw new RowError("scores", "allTied", "all responses score the same: no preference");
  }
  return { prompt, responses, pairs };
}

/** Reads and validates a comparison file; see the module doc. */
export async function readComparisons(
  path: string,
  options: { onBadRow?: OnBadRow } = {},
): Promise<{ comparisons: Comparison[]; skipped: SkipTally }> {
  const skipped = new SkipTally();
  const rows = await parseJsonl(path, parseComparisonRow, options.onBadRow ?? "error", skipped);
  if (rows.length === 0) {
    throw new DataError(
      path,
      undefined,
      skipped.total > 0
        ? `no usable comparisons: all ${skipped.total} rows are malformed (first: ${
          Object.values(skipped.examples)[0]
        })`
        : "no comparisons in the file",
    );
  }
  return { comparisons: rows.map(({ line, row }) => ({ line, ...row })), skipped };
}

/** What {@linkcode rankByChecker} made of K candidates. */
export interface CheckerRanking {
  /** The comparison row, or undefined when the candidates give nothing to learn from. */
  row?: { prompt: string; responses: string[]; scores: number[] };
  /** Candidates identical (after trimming) to an earlier one: merged into it. */
  duplicates: number;
  /** Candidates empty after trimming: left out (the data format rejects empty responses). */
  empty: number;
  /** Why there is no row: fewer than two distinct non-empty candidates, or all graded the same. */
  dropped?: "tooFewResponses" | "allTied";
}

/**
 * A comparison row from K candidate responses graded by a checker (e.g. the task's `responseScore`):
 * candidates are trimmed, empty ones left out and duplicates merged, and the row is
 * `{prompt, responses, scores}` (the third shape of the module doc); no row when fewer than two
 * distinct candidates remain or all grade the same. The counts say what was merged or dropped.
 *
 * @example
 * ```ts
 * import { rankByChecker } from "./data.ts";
 * const grade = (r: string) => (r === "4" ? 1 : 0);
 * rankByChecker("What is 2 + 2?", ["4", "5", " 4", ""], grade);
 * // { row: { prompt: "What is 2 + 2?", responses: ["4", "5"], scores: [1, 0] }, duplicates: 1, empty: 1 }
 * ```
 */
export function rankByChecker(
  prompt: string,
  candidates: readonly string[],
  grade: (response: string) => number,
): CheckerRanking {
  const trimmed = candidates.map((c) => c.trim());
  const nonEmpty = trimmed.filter((c) => c !== "");
  const responses = [...new Set(nonEmpty)];
  const counts = { duplicates: nonEmpty.length - responses.length, empty: trimmed.length - nonEmpty.length };
  if (responses.length < 2) return { ...counts, dropped: "tooFewResponses" };
  const scores = responses.map(grade);
  if (scores.every((s) => s === scores[0])) return { ...counts, dropped: "allTied" };
  return { row: { prompt, responses, scores }, ...counts };
}
