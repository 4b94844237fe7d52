/**
 * The SFT data format: JSONL, one demonstration a line, in either of two shapes.
 *
 * ```jsonl
 * {"prompt": "What is 17 + 25?", "response": "42"}
 * {"prompt": "Reverse: cab", "response": "bac", "system": "Answer tersely."}
 * {"messages": [{"role": "system", "content": "Answer tersely."},
 *               {"role": "user", "content": "Uppercase: cab"}, {"role": "assistant", "content": "CAB"}]}
 * ```
 *
 * - `{prompt, response}` (optional `system`): one user turn and the assistant's answer.
 * - `{messages: [{role, content}…]}`: roles `system`, `user`, `assistant`; the loss covers every
 *   assistant turn (multi-turn demonstrations teach every answer in them).
 * - Other fields are ignored (ids, sources, answers for a checker).
 *
 * A malformed row — not UTF-8, not JSON, a missing or mistyped field, an unknown role, an empty
 * response, no assistant turn — is reported as `file:line N: field: what is wrong`. With
 * `onBadRow: "skip"` it is skipped instead and counted by reason (`notUtf8`, `notJson`, `missingField`,
 * `badType`, `badRole`, `emptyResponse`, `noAssistant`), which the `sft` stage puts in its stats.
 *
 * @example
 * ```ts ignore
 * const { examples, skipped } = await readSftData("data/sft.jsonl", { onBadRow: "skip" });
 * examples[0].turns; // [{ role: "user", content: "What is 17 + 25?" }, { role: "assistant", content: "42" }]
 * ```
 * @module
 */
import { DataError } from "../pipeline/errors.ts";
import { type OnBadRow, parseJsonl, RowError, SkipTally } from "./jsonl.ts";

/** A chat role. */
export type Role = "system" | "user" | "assistant";

/** One turn of a conversation. */
export interface Turn {
  role: Role;
  content: string;
}

/** A demonstration: the conversation and the line it came from. */
export interface SftExample {
  /** 1-based line in the file. */
  line: number;
  turns: Turn[];
}

const ROLES: readonly Role[] = ["system", "user", "assistant"];

function requireString(row: Record<string, unknown>, field: string): string {
  const value = row[field];
  if (value === undefined) throw new RowError(field, "missingField", "missing");
  if (typeof value !== "string") {
    throw new RowError(field, "badType", `must be a string, got ${typeof value}`);
  }
  return value;
}

/** Parses the conversation of a `messages` list (also used for comparison prompts). */
export function parseMessages(value: unknown, field = "messages"): Turn[] {
  if (!Array.isArray(value)) throw new RowError(field, "badType", "must be a list of {role, content}");
  if (value.length === 0) throw new RowError(field, "missingField", "is empty");
  return value.map((m, i) => {
    const where = `${field}[${i}]`;
    if (typeof m !== "object" || m === null || Array.isArray(m)) {
      throw new RowError(where, "badType", "must be an object {role, content}");
    }
    const { role, content } = m as Record<string, unknown>;
    if (role === undefined) throw new RowError(`${where}.role`, "missingField", "missing");
    if (typeof role !== "string" || !ROLES.includes(role as Role)) {
      throw new RowError(
        `${where}.role`,
        "badRole",
        `must be system, user or assistant, got ${JSON.stringify(role)}`,
      );
    }
    if (content === undefined) throw new RowError(`${where}.content`, "missingField", "missing");
    if (typeof content !== "string") throw new RowError(`${where}.content`, "badType", "must be a string");
    return { role: role as Role, content };
  });
}

/** Parses one row (see the module doc); throws {@linkcode RowError} naming the field. */
export function parseSftRow(row: Record<string, unknown>): Turn[] {
  let turns: Turn[];
  if (row.messages !== undefined) {
    turns = parseMessages(row.messages);
  } else if (row.prompt !== undefined || row.response !== undefined) {
    const prompt = requireString(row, "prompt");
    const response = requireString(row, "response");
    if (response.trim() === "") throw new RowError("response", "emptyResponse", "is empty");
    turns = [{ role: "user", content: prompt }, { role: "assistant", content: response }];
    if (row.system !== undefined) turns.unshift({ role: "system", content: requireString(row, "system") });
    return turns;
  } else {
    throw new RowError(undefined, "missingField", 'needs "prompt" and "response", or "messages"');
  }
  const answers = turns.filter((t) => t.role === "assistant");
  if (answers.length === 0) {
    throw new RowError("messages", "noAssistant", "has no assistant turn to learn from");
  }
  const empty = turns.findIndex((t) => t.role === "assistant" && t.content.trim() === "");
  if (empty >= 0) {
    throw new RowError(`messages[${empty}].content`, "emptyResponse", "is an empty assistant turn");
  }
  return turns;
}

/** Reads and validates an SFT file; see the module doc. */
export async function readSftData(
  path: string,
  options: { onBadRow?: OnBadRow } = {},
): Promise<{ examples: SftExample[]; skipped: SkipTally }> {
  const skipped = new SkipTally();
  const rows = await parseJsonl(path, parseSftRow, options.onBadRow ?? "error", skipped);
  if (rows.length === 0) {
    throw new DataError(
      path,
      undefined,
      skipped.total > 0
        ? `no usable demonstrations: all ${skipped.total} rows are malformed (first: ${
          Object.values(skipped.examples)[0]
        })`
        : "no demonstrations in the file",
    );
  }
  return { examples: rows.map(({ line, row }) => ({ line, turns: row })), skipped };
}
