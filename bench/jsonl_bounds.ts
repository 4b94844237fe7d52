/**
 * A JSONL source with one 52 MB line (issue 14): time and peak memory of the crawl's JSONL shard
 * with the default `maxBytes` (16 MiB). Run: `deno run -A bench/jsonl_bounds.ts` (Linux: peak
 * memory from /proc/self/status).
 * @module
 */
import { join } from "node:path";
import { jsonlShard } from "../stages/crawl/sources.ts";
import { OutputWriter } from "../pipeline/workspace.ts";

const dir = await Deno.makeTempDir();
const path = join(dir, "big.jsonl");
{ // written in pieces, so that making the file does not raise the peak measured below
  using file = await Deno.open(path, { write: true, create: true });
  const enc = new TextEncoder();
  await file.write(enc.encode('{"id":"big","text":"'));
  const mb = enc.encode("x".repeat(1_000_000));
  for (let i = 0; i < 52; i++) await file.write(mb);
  await file.write(enc.encode('"}\n{"id":"after","text":"kept"}\n'));
}
const hwm = () => Number(/VmHWM:\s+(\d+)/.exec(Deno.readTextFileSync("/proc/self/status"))?.[1]) / 1024;
const before = hwm();
const start = performance.now();
const result = await jsonlShard(
  {
    path,
    shard: "out.jsonl.gz",
    opts: { contentTypes: ["text/plain"], maxBytes: 16 * 2 ** 20, minChars: 1 },
  },
  { id: "bench", out: new OutputWriter(join(dir, "out"), join(dir, "tmp")) },
);
console.log(
  `52 MB line: ${(performance.now() - start).toFixed(0)} ms, peak RSS ${hwm().toFixed(0)} MiB ` +
    `(${before.toFixed(0)} MiB before), stats ${JSON.stringify(result.stats)}`,
);
await Deno.remove(dir, { recursive: true });
