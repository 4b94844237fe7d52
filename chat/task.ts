/**
 * kiln's checkable task: small problems whose answers a program can verify, so demonstrations,
 * preferences and rewards can be made honestly without human labellers or downloads.
 *
 * Four kinds, each a prompt the checker can parse back:
 * - `add`:     `What is 17 + 25?`               → `42`
 * - `upper`:   `Uppercase: cab`                  → `CAB`
 * - `reverse`: `Reverse: cab`                    → `bac`
 * - `count`:   `How many letters are in "cab"?`  → `3`
 *
 * {@linkcode expectedAnswer} recovers the answer from the prompt alone, so any prompt file in this
 * format can be checked; {@linkcode checkResponse} says right or wrong (exact match after trimming),
 * and {@linkcode responseScore} grades a response in [0, 1] (1 only when right; otherwise a
 * character-overlap credit below 0.5), which ranks K candidates into a full preference order.
 *
 * @example
 * ```ts
 * import { checkResponse, generateTasks } from "./task.ts";
 * const [task] = generateTasks(1, { seed: 1, kinds: ["add"] });
 * checkResponse(task.prompt, task.answer); // true
 * checkResponse("What is 2 + 2?", "5"); // false
 * checkResponse("Tell me a joke", "…"); // undefined: not a task prompt
 * ```
 * @module
 */
import { Rng } from "../model/rng.ts";

/** The kinds of problem. */
export const TASK_KINDS = ["add", "upper", "reverse", "count"] as const;
export type TaskKind = typeof TASK_KINDS[number];

/** One problem: the prompt a user asks and the one right answer. */
export interface Task {
  kind: TaskKind;
  prompt: string;
  answer: string;
}

/** Options of {@linkcode generateTasks}. */
export interface TaskOptions {
  seed: number;
  /** Kinds to draw from (uniformly). Default: all. */
  kinds?: readonly TaskKind[];
  /** Letters words are made of. Default `a`–`z`. */
  alphabet?: string;
  /** Word lengths, inclusive. Default 2–5. */
  minLength?: number;
  maxLength?: number;
  /** Largest operand of `add`. Default 50. */
  maxOperand?: number;
}

const PATTERNS: [TaskKind, RegExp][] = [
  ["add", /^What is (\d+) \+ (\d+)\?$/],
  ["upper", /^Uppercase: ([a-z]+)$/],
  ["reverse", /^Reverse: ([a-z]+)$/],
  ["count", /^How many letters are in "([a-z]+)"\?$/],
];

/** The prompt of a problem. */
export function taskPrompt(kind: TaskKind, word: string, a = 0, b = 0): string {
  switch (kind) {
    case "add":
      return `What is ${a} + ${b}?`;
    case "upper":
      return `Uppercase: ${word}`;
    case "reverse":
      return `Reverse: ${word}`;
    case "count":
      return `How many letters are in "${word}"?`;
  }
}

/** The kind and right answer of a task prompt, or undefined when the prompt is not one. */
export function parseTask(prompt: string): Task | undefined {
  const p = prompt.trim();
  for (const [kind, re] of PATTERNS) {
    const m = re.exec(p);
    if (!m) continue;
    const answer = kind === "add"
      ? String(Number(m[1]) + Number(m[2]))
      : kind === "upper"
      ? m[1].toUpperCase()
      : kind === "reverse"
      ? [...m[1]].reverse().join("")
      : String(m[1].length);
    return { kind, prompt: p, answer };
  }
  return undefined;
}

/** The right answer to a task prompt, or undefined when it is not one. */
export function expectedAnswer(prompt: string): string | undefined {
  return parseTask(prompt)?.answer;
}

/** Whether `response` answers the task prompt (exact after trimming); undefined for other prompts. */
export function checkResponse(prompt: string, response: string): boolean | undefined {
  const answer = expectedAnswer(prompt);
  return answer === undefined ? undefined : response.trim() === answer;
}

/** Levenshtein distance (short strings: the O(n·m) table is fine). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    }
    prev = row;
  }
  return prev[b.length];
}

/**
 * A grade in [0, 1]: 1 for the right answer, else `0.5 · (1 − distance / max length)`, so a near miss
 * outranks a wild guess and an empty answer scores 0. Undefined for prompts that are not tasks.
 */
export function responseScore(prompt: string, response: string): number | undefined {
  const answer = expectedAnswer(prompt);
  if (answer === undefined) return undefined;
  const r = response.trim();
  if (r === answer) return 1;
  if (r === "") return 0;
  return 0.5 * (1 - editDistance(r, answer) / Math.max(r.length, answer.length));
}

/**
 * `count` distinct problems drawn from the seed (fewer if the options allow fewer distinct prompts
 * than asked for). The same options give the same list.
 */
export function generateTasks(count: number, options: TaskOptions): Task[] {
  const rng = new Rng(options.seed);
  const kinds = options.kinds ?? TASK_KINDS;
  const alphabet = options.alphabet ?? "abcdefghijklmnopqrstuvwxyz";
  const minLength = options.minLength ?? 2, maxLength = options.maxLength ?? 5;
  const maxOperand = options.maxOperand ?? 50;
  if (!/^[a-z]+$/.test(alphabet)) throw new RangeError(`alphabet must be lowercase letters a-z`);
  if (minLength < 1 || maxLength < minLength) throw new RangeError(`need 1 ≤ minLength ≤ maxLength`);
  const seen = new Set<string>();
  const tasks: Task[] = [];
  // Give up after many repeats in a row: the option space is smaller than `count`.
  for (let misses = 0; tasks.length < count && misses < 1000;) {
    const kind = kinds[rng.below(kinds.length)];
    const length = minLength + rng.below(maxLength - minLength + 1);
    const word = Array.from({ length }, () => alphabet[rng.below(alphabet.length)]).join("");
    const prompt = taskPrompt(kind, word, rng.below(maxOperand + 1), rng.below(maxOperand + 1));
    if (seen.has(prompt)) {
      misses++;
      continue;
    }
    misses = 0;
    seen.add(prompt);
    tasks.push(parseTask(prompt)!);
  }
  return tasks;
}

/**
 * Wrong answers made by corrupting the right one (for tests and demos before an SFT model exists to
 * sample from; the real comparisons rank the SFT model's own samples, see `stages/reward_model/data.ts`):
 * a neighbouring number, one letter changed, a letter dropped, the wrong case, the input echoed back.
 * Returns up to `count` distinct responses, none equal to the answer.
 */
export function corruptAnswers(task: Task, count: number, rng: Rng): string[] {
  const { answer } = task;
  const letters = "abcdefghijklmnopqrstuvwxyz";
  const candidates: string[] = [];
  const numeric = /^\d+$/.test(answer);
  for (let tries = 0; candidates.length < count && tries < 50; tries++) {
    let wrong: string;
    const pick = rng.below(4);
    if (numeric) {
      const n = Number(answer);
      wrong = pick === 0
        ? String(n + 1 + rng.below(3))
        : pick === 1
        ? String(Math.max(0, n - 1 - rng.below(3)))
        : pick === 2
        ? String(n * 10 + rng.below(10))
        : answer.split("").reverse().join("");
    } else if (pick === 0) {
      const i = rng.below(answer.length);
      let c = letters[rng.below(26)];
      if (answer === answer.toUpperCase()) c = c.toUpperCase();
      wrong = answer.slice(0, i) + c + answer.slice(i + 1);
    } else if (pick === 1) {
      wrong = answer.length > 1 ? answer.slice(0, -1) : answer + answer;
    } else if (pick === 2) {
      wrong = answer === answer.toUpperCase() ? answer.toLowerCase() : answer.toUpperCase();
    } else {
      wrong = [...answer].reverse().join("");
    }
    if (wrong !== answer && wrong !== "" && !candidates.includes(wrong)) candidates.push(wrong);
  }
  return candidates;
}
