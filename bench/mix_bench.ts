/**
 * The mix stage's throughput: three sources of made-up prose (1.3 M tokens), GPT-2's tokenizer, mixed by
 * weight and epochs on two workers. Run: deno run -A bench/mix_bench.ts
 * @module
 */
import { pipeline } from "../pipeline/pipeline.ts";
import { mix } from "../stages/mix.ts";
import { texts } from "../tests/fixtures/texts.ts";
const workdir = await Deno.makeTempDir();
const p = pipeline("mixbench", { workdir, workers: 2 })
  .pipe(texts({ prefix: "web", documents: 4000, words: 200, shards: 4 }).as("web"))
  .branch(texts({ prefix: "book", documents: 1000, words: 400, seed: 2, shards: 2 }).as("books"))
  .branch(texts({ prefix: "wiki", documents: 500, words: 200, seed: 3, shards: 1 }).as("wiki"));
await p.execute({ quiet: true });
const t = performance.now();
const r = await p.branch(
  mix({
    tokenizer: "gpt2",
    valFraction: 0.01,
    sources: { web: { weight: 0.6 }, books: { weight: 0.4 }, wiki: { epochs: 3 } },
  }),
).execute({ quiet: true });
const s = (performance.now() - t) / 1000;
const st = r.artifacts.mix.stats as {
  trainTokens: number;
  sources: Record<string, { tokensAvailable: number; share: number }>;
};
const read = Object.values(st.sources).reduce((a, x) => a + x.tokensAvailable, 0);
console.log(
  `mix: ${s.toFixed(1)} s; ${read} source tokens read twice, ${st.trainTokens} written; ${
    (read / s / 1000).toFixed(0)
  }k source tokens/s; shares`,
  Object.fromEntries(Object.entries(st.sources).map(([k, v]) => [k, v.share])),
);
