/**
 * Dedupe benchmarks (a script: `deno run -A bench/dedupe_bench.ts [--gpu] [docs…]`):
 * - MinHash signatures (normalise, 5-word shingles, 112 hashes, 14 band keys) in MB/s on one core;
 *   with `--gpu`, also with the hash functions applied on the WebGPU device (shingles still hashed
 *   on the CPU), end to end and for the GPU part alone, checked equal to the CPU's;
 * - the whole dedupe stage (signatures → pairs → clusters → filter) in documents/s with 2 workers,
 *   and the process's peak resident memory, at three corpus sizes.
 * Corpus: Brown samples and SpamAssassin messages, cut into ~2 KB documents, repeated with one word
 * in twenty changed per copy (so a third of the documents are near duplicates).
 * @module
 */
import { pipeline } from "../pipeline/pipeline.ts";
import { dedupe } from "../stages/dedupe.ts";
import { bandKeys, MinHasher } from "../stages/dedupe/minhash.ts";
import { BATCH_DOCS, GpuMinHasher } from "../stages/dedupe/minhash_gpu.ts";
import { mulberry32 } from "../model/rng.ts";
import { brownDocuments, mailBody, spamAssassin } from "../tests/dedupe_fixtures.ts";
import { z } from "npm:zod@^4.6.7";
import { defineStage } from "../pipeline/stage.ts";
import { DocumentWriter } from "../stages/documents.ts";

async function baseTexts(): Promise<string[]> {
  const texts = [
    ...(await brownDocuments()).map((d) => d.text),
    ...(await spamAssassin(["spam-1", "spam-2", "easy-ham-1"])).map((m) => mailBody(m.text)),
  ];
  const out: string[] = [];
  for (const t of texts) for (let i = 0; i < t.length; i += 2000) out.push(t.slice(i, i + 2000));
  return out;
}

const base = await baseTexts();

/** The i-th document of the synthetic corpus (deterministic). */
function documentText(i: number): string {
  const text = base[i % base.length];
  const copy = Math.floor(i / base.length);
  if (copy === 0 || copy % 3 !== 0) {
    // Distinct: prefix a copy number so copies of one base text are different documents.
    return copy === 0
      ? text
      : `copy ${copy.toString(26).replace(/\d/g, (d) => "qrstuvwxyz"[+d])} ${
        text.split(" ").reverse().join(" ")
      }`;
  }
  const random = mulberry32(i);
  return text.split(" ").map((w) => random() < 0.05 ? "changed" : w).join(" ");
}

const synthetic = defineStage({
  name: "synthetic",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema: z.object({ docs: z.number().int(), shards: z.number().int() }),
  async run(ctx) {
    for (let s = 0; s < ctx.config.shards; s++) {
      const w = new DocumentWriter(await ctx.out.create(`part-${String(s).padStart(5, "0")}.jsonl.gz`), true);
      for (let i = s; i < ctx.config.docs; i += ctx.config.shards) {
        await w.write({ id: `d${i}`, text: documentText(i) });
      }
      await w.close();
    }
  },
});

// 1. Signatures on one core.
{
  const hasher = new MinHasher({ shingleWords: 5, bands: 14, rows: 8, seed: 1 });
  const texts = base.slice(0, 4000);
  const bytes = texts.reduce((a, t) => a + new TextEncoder().encode(t).length, 0);
  for (const t of texts.slice(0, 200)) bandKeys(hasher.signature(t), 14, 8); // warm up
  const start = performance.now();
  for (const t of texts) bandKeys(hasher.signature(t), 14, 8);
  const s = (performance.now() - start) / 1000;
  console.log(
    `minhash signatures: ${(bytes / 1e6 / s).toFixed(2)} MB/s on one core (${texts.length} docs, ${
      (bytes / 1e6).toFixed(1)
    } MB)`,
  );
}

// 1b. Signatures with the hash functions on the GPU (--gpu).
const args = Deno.args.filter((a) => a !== "--gpu");
if (args.length !== Deno.args.length) {
  const hasher = new MinHasher({ shingleWords: 5, bands: 14, rows: 8, seed: 1 });
  const gpu = await GpuMinHasher.create(hasher);
  if (typeof gpu === "string") console.log(`minhash signatures on the GPU: not run (${gpu})`);
  else {
    const texts = base.slice(0, 4000);
    const bytes = texts.reduce((a, t) => a + new TextEncoder().encode(t).length, 0);
    await gpu.signatures(texts.slice(0, 200).map((t) => hasher.shingles(t))); // warm up
    let kernel = 0;
    const start = performance.now();
    const sigs: Uint32Array[] = [];
    for (let i = 0; i < texts.length; i += BATCH_DOCS) {
      const shingles = texts.slice(i, i + BATCH_DOCS).map((t) => hasher.shingles(t));
      const k = performance.now();
      const batch = await gpu.signatures(shingles);
      kernel += performance.now() - k;
      for (let d = 0; d < shingles.length; d++) {
        const sig = batch.subarray(d * 112, (d + 1) * 112);
        bandKeys(sig, 14, 8);
        sigs.push(sig);
      }
    }
    const s = (performance.now() - start) / 1000;
    const same = texts.every((t, i) => hasher.signature(t).every((v, j) => v === sigs[i][j]));
    console.log(
      `minhash signatures, hashes on ${gpu.description}: ${(bytes / 1e6 / s).toFixed(2)} MB/s end to end, ${
        (bytes / 1e6 / (kernel / 1000)).toFixed(2)
      } MB/s for the upload + kernel + readback alone; equal to the CPU's: ${same}`,
    );
    gpu.destroy();
  }
}

// 2. The whole stage, 2 workers, three sizes.
const sizes = args.length ? args.map(Number) : [10_000, 40_000, 160_000];
for (const docs of sizes) {
  const workdir = await Deno.makeTempDir({ prefix: "kiln-dedupe-bench-" });
  const source = synthetic({ docs, shards: Math.max(4, Math.ceil(docs / 5000)) });
  await pipeline("bench", { workdir, workers: 2 }).pipe(source).execute({ command: "run", quiet: true });
  let peak = 0;
  const timer = setInterval(() => peak = Math.max(peak, Deno.memoryUsage().rss), 50);
  const start = performance.now();
  const result = await pipeline("bench", { workdir, workers: 2 }).pipe(source).pipe(dedupe({}))
    .execute({ command: "run", quiet: true });
  const s = (performance.now() - start) / 1000;
  clearInterval(timer);
  // deno-lint-ignore no-explicit-any -- stats are free-form JSON
  const stats = result.artifacts["dedupe"].stats as Record<string, any>;
  console.log(
    `dedupe ${docs} docs: ${(docs / s).toFixed(0)} docs/s on 2 workers (${s.toFixed(1)} s), peak RSS ${
      (peak / 2 ** 20).toFixed(0)
    } MiB; removed ${stats.dropped["exact-duplicate"].documents} exact + ${
      stats.dropped["near-duplicate"].documents
    } near`,
  );
  await Deno.remove(workdir, { recursive: true });
}
