/**
 * Line-by-line reading of the JSONL files SFT, the reward model and their data tools take, with the
 * problems a line can have (not UTF-8, not JSON, not an object) reported per line instead of thrown,
 * so a caller can name the file, the line and the field, count skips, and go on.
 *
 * Also the tally of skipped rows both stages keep in their stats.
 *
 * @module
 */
import { DataError } from "../pipeline/errors.ts";
import type { Stats } from "../pipeline/stage.ts";
import { Rng } from "../model/rng.ts";

/** One non-blank line: its parsed object, or why it could not be read. */
export type JsonlRow =
  | { line: number; value: Record<string, unknown>; error?: undefined }
  | { line: number; value?: undefined; error: string };

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** Reads a whole JSONL file (the datasets these stages take are small enough to hold). */
export async function readJsonlRows(path: string): Promise<JsonlRow[]> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new DataError(path, undefined, "file not found");
    throw new DataError(path, undefined, `unreadable: ${(e as Error).message}`);
  }
  const rows: JsonlRow[] = [];
  let start = 0;
  for (let line = 1; start < bytes.length; line++) {
    let end = bytes.indexOf(10, start);
    if (end === -1) end = bytes.length;
    const raw = bytes.subarray(start, end);
    start = end + 1;
    let text: string;
    try {
      text = utf8.decode(raw).trim();
    } catch {
      rows.push({ line, error: "not valid UTF-8" });
      continue;
    }
    if (text === "") continue;
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      rows.push({ line, error: `not valid JSON (${(e as Error).message})` });
      continue;
    }
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      rows.push({ line, error: "expected a JSON object" });
      continue;
    }
    rows.push({ line, value: value as Record<string, unknown> });
  }
  return rows;
}

/** A problem with one row: the field it concerns and what is wrong. */
export class RowError extends Error {
  constructor(readonly field: string | undefined, readonly reason: string, detail: string) {
    super(detail);
  }
}

/**
 * Counts skipped rows by reason and keeps the first message of each, so a stage can put
 * `skipped.<reason>` into its stats and log one example line per reason.
 */
export class SkipTally {
  readonly counts: Record<string, number> = {};
  readonly examples: Record<string, string> = {};

  add(reason: string, message: string): void {
    this.counts[reason] = (this.counts[reason] ?? 0) + 1;
    this.examples[reason] ??= message;
  }

  get total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }

  /** Adds another tally's counts (and examples it has and this one lacks). */
  merge(other: SkipTally): void {
    for (const [reason, n] of Object.entries(other.counts)) {
      this.counts[reason] = (this.counts[reason] ?? 0) + n;
      this.examples[reason] ??= other.examples[reason];
    }
  }

  /** Puts `skipped.<reason>` counts into a stage's stats and logs one example line per reason. */
  report(ctx: { stats: Stats; log(message: string): void }): void {
    for (const [reason, count] of Object.entries(this.counts)) {
      ctx.stats.set(`skipped.${reason}`, count);
      ctx.log(`skipped ${count} rows (${reason}), e.g. ${this.examples[reason]}`);
    }
  }
}

/**
 * Holds out a seeded `fraction` of `items` (at least one, when the fraction is positive and there are
 * two or more) for validation; the rest keep their order for training.
 */
export function holdOut<T>(items: T[], fraction: number, seed: number): { train: T[]; val: T[] } {
  if (!(fraction > 0) || items.length < 2) return { train: items, val: [] };
  const order = new Rng(seed ^ 0x7a1).shuffle(Uint32Array.from({ length: items.length }, (_, i) => i));
  const held = new Set(order.subarray(0, Math.max(1, Math.round(items.length * fraction))));
  return { train: items.filter((_, i) => !held.has(i)), val: items.filter((_, i) => held.has(i)) };
}

/** How a reader treats a malformed row: throw a {@linkcode DataError} naming it, or skip and count it. */
export type OnBadRow = "error" | "skip";

/** Applies `parse` to every row; bad rows throw or go into `tally`, per `onBadRow`. */
export async function parseJsonl<T>(
  path: string,
  parse: (row: Record<string, unknown>) => T,
  onBadRow: OnBadRow,
  tally: SkipTally,
): Promise<{ line: number; row: T }[]> {
  const out: { line: number; row: T }[] = [];
  for (const r of await readJsonlRows(path)) {
    let error: DataError;
    let reason: string;
    if (r.error !== undefined) {
      error = new DataError(path, `line ${r.line}`, r.error);
      reason = r.error.startsWith("not valid UTF-8") ? "notUtf8" : "notJson";
    } else {
      try {
        out.push({ line: r.line, row: parse(r.value) });
        continue;
      } catch (e) {
        if (!(e instanceof RowError)) throw e;
        error = new DataError(path, `line ${r.line}${e.field ? `: ${e.field}` : ""}`, e.message);
        reason = e.reason;
      }
    }
    if (onBadRow === "error") throw error;
    tally.add(reason, error.message);
  }
  return out;
}
