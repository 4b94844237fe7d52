/**
 * What the data-cleaning stages share about their input and output shards.
 * @module
 */
import type { StageContext } from "../../pipeline/stage.ts";

/** The output name of an input shard: the same path, always gzip-compressed JSONL. */
export function outputName(file: string): string {
  return file.replace(/\.jsonl(\.gz|\.zst)?$/, ".jsonl.gz");
}

/** Checks that no two input shards map to one output name (e.g. `a.jsonl` and `a.jsonl.gz`). */
export function outputNames(inputs: string[]): string[] {
  const seen = new Map<string, string>();
  return inputs.map((file) => {
    const name = outputName(file);
    const other = seen.get(name);
    if (other) throw new Error(`input shards "${other}" and "${file}" would both be written as "${name}"`);
    seen.set(name, file);
    return name;
  });
}

/**
 * Logs each malformed input line with its file and line number, and records the count (and the first
 * thousand, as `file:line: reason`) in the stage's stats.
 */
export function reportBadLines(
  ctx: Pick<StageContext<unknown>, "log" | "stats">,
  inputs: string[],
  results: { badLines: { line: number; reason: string }[]; badLineCount: number }[],
): void {
  let total = 0;
  const listed: string[] = [];
  results.forEach((r, i) => {
    total += r.badLineCount;
    for (const bad of r.badLines) {
      const where = `${inputs[i]}:${bad.line}: ${bad.reason}`;
      ctx.log(`skipped a malformed line: ${where}`);
      listed.push(where);
    }
    if (r.badLineCount > r.badLines.length) {
      ctx.log(`${inputs[i]}: ${r.badLineCount - r.badLines.length} more malformed lines not listed`);
    }
  });
  ctx.stats.set("malformed_lines", total);
  if (listed.length) ctx.stats.set("malformed_line_list", listed.slice(0, 1000));
}
