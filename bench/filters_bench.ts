/**
 * Quality-filter benchmarks (a script: `deno run -A bench/filters_bench.ts`): each filter's throughput
 * in MB/s of document text on one core, over Brown samples and SpamAssassin messages (every filter
 * sees every document, so the figures do not depend on the chain's order).
 * @module
 */
import { buildChain, type ChainOptions, trainClassifier } from "../stages/filters/mod.ts";
import { brownDocuments, mailBody, spamAssassin } from "../tests/dedupe_fixtures.ts";

const brown = (await brownDocuments()).map((d) => d.text);
const mail = (await spamAssassin(["spam-1", "easy-ham-1"])).map((m) => mailBody(m.text));
const texts = [...brown, ...mail];
const bytes = texts.reduce((a, t) => a + new TextEncoder().encode(t).length, 0);

const modelPath = await Deno.makeTempFile({ suffix: ".json" });
await Deno.writeTextFile(modelPath, JSON.stringify(trainClassifier(brown, mail, { holdOut: 0 }).model));

const filters: Record<string, ChainOptions> = {
  gopher_quality: { gopherQuality: {} },
  gopher_repetition: { gopherRepetition: {} },
  c4: { c4: {} },
  fineweb: { fineweb: {} },
  length: { length: { minWords: 50 } },
  urls: { urls: { domains: ["example.com"] } },
  language: { language: { languages: ["en"], minScore: 0.5 } },
  classifier: { classifier: { model: modelPath, mode: "pareto", alpha: 9, threshold: 0.5, seed: 1 } },
  pii: { pii: {} },
};

console.log(`${texts.length} documents, ${(bytes / 1e6).toFixed(1)} MB`);
for (const [name, options] of Object.entries(filters)) {
  const chain = await buildChain(options);
  for (const text of texts.slice(0, 50)) chain.apply({ id: "w", text, url: "https://a.example.org/x" });
  const start = performance.now();
  for (let i = 0; i < texts.length; i++) {
    chain.apply({ id: `d${i}`, text: texts[i], url: "https://a.example.org/x" });
  }
  const s = (performance.now() - start) / 1000;
  console.log(`${name.padEnd(18)} ${(bytes / 1e6 / s).toFixed(1).padStart(7)} MB/s`);
}
await Deno.remove(modelPath);
