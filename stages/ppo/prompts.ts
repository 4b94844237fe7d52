/**
 * The PPO prompt set: a JSONL file, one prompt a line, either `{"prompt": "…"}` or a conversation
 * `{"messages": [{"role": "system"|"user"|"assistant", "content": "…"}, …]}` ending with a user turn.
 * Other fields (an `answer` for the checker, an id) are kept in `meta`. Each prompt is rendered with
 * the chat template the SFT model was trained with (`chat/template.ts`; kiln's default is
 * `<|user|>…<|end|><|assistant|>`) and the policy continues it; a response ends at the template's
 * stop tokens (`<|end|>`, `<|endoftext|>`).
 *
 * Every epoch over the prompt set visits each prompt once in an order drawn from the seed and the
 * epoch number; the position in that order is the cursor a checkpoint saves.
 *
 * @example
 * ```ts ignore
 * const template = await loadChatTemplate(sftModelDir, tokenizer);
 * const { prompts, skippedTooLong } = await readPrompts("data/prompts.jsonl", template, { maxTokens: 96 });
 * const cursor = new PromptCursor(prompts.length, 1337);
 * const batch = cursor.take(32).map((i) => prompts[i]);
 * ```
 * @module
 */
import { DataError } from "../../pipeline/errors.ts";
import { Rng } from "../../model/rng.ts";
import type { Role } from "../../chat/data.ts";
import type { ChatTemplate } from "../../chat/template.ts";

/** One prompt of the set. */
export interface Prompt {
  /** 1-based line in the file. */
  line: number;
  /** The prompt as the user wrote it (the last user turn). */
  text: string;
  /** The rendered chat prefix, tokenised: what the policy continues. */
  tokens: number[];
  /** The row's other fields (e.g. the answer a checker compares with). */
  meta: Record<string, unknown>;
}

const ROLES = new Set(["system", "user", "assistant"]);

/**
 * Reads and validates a prompt file. A malformed line is a {@linkcode DataError} naming the file, the
 * line and the field; prompts whose rendering exceeds `maxTokens` are skipped and counted.
 */
export async function readPrompts(
  path: string,
  template: ChatTemplate,
  options: { maxTokens: number },
): Promise<{ prompts: Prompt[]; skippedTooLong: number }> {
  let text: string;
  try {
    text = await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new DataError(path, undefined, "prompt file not found");
    throw new DataError(path, undefined, `unreadable: ${(e as Error).message}`);
  }
  const prompts: Prompt[] = [];
  let skippedTooLong = 0;
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const raw = lines[i].trim();
    if (raw === "") continue;
    const where = `line ${i + 1}`;
    let row: unknown;
    try {
      row = JSON.parse(raw);
    } catch (e) {
      throw new DataError(path, where, `not valid JSON (${(e as Error).message})`);
    }
    if (typeof row !== "object" || row === null || Array.isArray(row)) {
      throw new DataError(path, where, "expected a JSON object with a prompt or messages field");
    }
    const { prompt, messages, ...meta } = row as Record<string, unknown>;
    let turns: { role: Role; content: string }[];
    if (typeof prompt === "string") {
      turns = [{ role: "user", content: prompt }];
    } else if (prompt !== undefined) {
      throw new DataError(path, `${where}: prompt`, "must be a string");
    } else if (Array.isArray(messages)) {
      turns = messages.map((m, j) => {
        const field = `${where}: messages[${j}]`;
        if (typeof m !== "object" || m === null) throw new DataError(path, field, "expected {role, content}");
        const { role, content } = m as Record<string, unknown>;
        if (typeof role !== "string" || !ROLES.has(role)) {
          throw new DataError(
            path,
            `${field}.role`,
            `expected system, user or assistant, got ${JSON.stringify(role)}`,
          );
        }
        if (typeof content !== "string") throw new DataError(path, `${field}.content`, "must be a string");
        return { role: role as Role, content };
      });
      if (turns.at(-1)?.role !== "user") {
        throw new DataError(
          path,
          `${where}: messages`,
          "the last turn must be the user's (the policy answers it)",
        );
      }
    } else {
      throw new DataError(path, where, 'needs a "prompt" string or a "messages" list');
    }
    const last = turns.at(-1)!.content;
    if (last.trim() === "") throw new DataError(path, where, "the prompt is empty");
    const tokens = template.prompt(turns);
    if (tokens.length > options.maxTokens) {
      skippedTooLong++;
      continue;
    }
    prompts.push({ line: i + 1, text: last, tokens, meta });
  }
  if (prompts.length === 0) {
    throw new DataError(
      path,
      undefined,
      skippedTooLong > 0
        ? `all ${skippedTooLong} prompts are longer than ${options.maxTokens} tokens (raise maxPromptTokens)`
        : "no prompts in the file",
    );
  }
  return { prompts, skippedTooLong };
}

/** Where a {@linkcode PromptCursor} is: saved in checkpoints. */
export interface PromptCursorState {
  epoch: number;
  index: number;
}

/** Seeded epochs over `n` prompts, each a fresh permutation, with a saveable position. */
export class PromptCursor {
  private order: Uint32Array = new Uint32Array(0);
  private orderEpoch = -1;
  private epoch = 0;
  private index = 0;

  constructor(readonly n: number, readonly seed: number) {}

  /** The position of the next prompt. */
  state(): PromptCursorState {
    return { epoch: this.epoch, index: this.index };
  }

  /** Moves to a saved position. */
  seek(state: PromptCursorState): void {
    this.epoch = state.epoch;
    this.index = state.index;
  }

  /** The next `count` prompt indices (wrapping into the next epoch). */
  take(count: number): number[] {
    const out: number[] = [];
    while (out.length < count) {
      if (this.index >= this.n) {
        this.epoch++;
        this.index = 0;
      }
      if (this.orderEpoch !== this.epoch) {
        this.order = new Rng((this.seed * 1_000_003 + this.epoch) >>> 0).shuffle(
          Uint32Array.from({ length: this.n }, (_, i) => i),
        );
        this.orderEpoch = this.epoch;
      }
      out.push(this.order[this.index++]);
    }
    return out;
  }
}
