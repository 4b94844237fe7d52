/**
 * Tokenizer benchmarks.
 *
 * Encoding, GPT-2 vocabulary, one thread (MB/s per core), kiln against js-tiktoken, gpt-tokenizer and
 * tiktoken (WASM) in the same process, on the Brown corpus and on TypeScript source (zod's):
 *   deno run -A bench/tokenizer_bench.ts encode      # MB/s table (also checks the ids agree)
 *   deno bench -A bench/tokenizer_bench.ts           # the same encoders as Deno.bench cases
 *
 * Pre-tokenisation alone on Brown, cl100k's and o200k's patterns: kiln's scanners, cl100k's pattern
 * on RE2 (re2js, the engine unknown patterns run on), and the JavaScript engine (what kiln used); then a
 * catastrophic-backtracking pattern, `(a+)+$`, on RE2 and on the JavaScript engine:
 *   deno run -A bench/tokenizer_bench.ts pretokenize
 *
 * BPE training time and peak memory (run once per vocabulary size, so peaks do not mix):
 *   deno run -A --v8-flags=--expose-gc bench/tokenizer_bench.ts train 8192 100
 * trains on 100 MB: the Brown corpus, then the JavaScript/TypeScript/Markdown/JSON files of the npm
 * packages in Deno's cache (sorted by path), cycled until the size is reached. A fourth argument
 * `brown` cycles the Brown corpus alone (the same distinct pieces at any size: memory must not grow).
 * @module
 */
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { gpt2Tokenizer } from "../tokenizer/load.ts";
import { CL100K_PATTERN, O200K_PATTERN, pretokenizer } from "../tokenizer/pretokenize.ts";
import { PieceCounter, trainBpe } from "../tokenizer/train.ts";
import { brownTexts } from "../tests/tokenizer_corpus.ts";

const require = createRequire(import.meta.url);

/**
 * zod's TypeScript sources, one string per file, without its tests: `string.test.ts` has a line of
 * 32,000 emoji (one 128 kB pre-token) on which js-tiktoken's merge loop runs for many minutes.
 */
async function typescriptSources(): Promise<string[]> {
  const root = dirname(require.resolve("zod/package.json"));
  const files: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const path = join(dir, e.name);
      if (e.isDirectory && e.name !== "node_modules" && e.name !== "tests") await walk(path);
      else if (e.isFile && e.name.endsWith(".ts") && !e.name.endsWith(".d.ts")) files.push(path);
    }
  };
  await walk(root);
  files.sort();
  return await Promise.all(files.map((f) => Deno.readTextFile(f)));
}

const megabytes = (texts: string[]) =>
  texts.reduce((n, t) => n + new TextEncoder().encode(t).length, 0) / 1e6;

// The peers load lazily, so the training benchmark's memory figures do not include them.
async function encoders() {
  const { getEncoding } = await import("npm:js-tiktoken@^1.0.21");
  const { encode: gptTokenizerEncode } = await import("npm:gpt-tokenizer@^4.0.0/encoding/r50k_base");
  const { get_encoding } = await import("npm:tiktoken@^1.0.22");
  const kiln = await gpt2Tokenizer();
  const js = getEncoding("gpt2");
  const wasm = get_encoding("gpt2");
  return {
    "kiln": (s: string) => kiln.encode(s).length,
    "js-tiktoken": (s: string) => js.encode(s, [], []).length,
    "gpt-tokenizer": (s: string) => gptTokenizerEncode(s, { disallowedSpecial: new Set() }).length,
    "tiktoken (WASM)": (s: string) => wasm.encode_ordinary(s).length,
  } as Record<string, (s: string) => number>;
}

async function benchEncode() {
  const corpora = {
    "Brown": (await brownTexts()).map((d) => d.text),
    "zod TypeScript": await typescriptSources(),
  };
  const all = await encoders();
  console.log("| corpus | MB | encoder | MB/s (best of 3) | tokens |");
  console.log("| --- | --- | --- | --- | --- |");
  for (const [corpus, texts] of Object.entries(corpora)) {
    const mb = megabytes(texts);
    let expected: number | undefined;
    for (const [name, encode] of Object.entries(all)) {
      let best = Infinity, tokens = 0;
      for (let rep = 0; rep < 3; rep++) {
        const t0 = performance.now();
        tokens = 0;
        for (const t of texts) tokens += encode(t);
        best = Math.min(best, (performance.now() - t0) / 1000);
      }
      expected ??= tokens;
      const agree = tokens === expected ? "" : ` (≠ kiln's ${expected})`;
      console.log(
        `| ${corpus} | ${mb.toFixed(2)} | ${name} | ${(mb / best).toFixed(1)} | ${tokens}${agree} |`,
      );
    }
  }
}

async function benchPretokenize() {
  const texts = (await brownTexts()).map((d) => d.text);
  const mb = megabytes(texts);
  const jsRegex = (pattern: string) => {
    const re = new RegExp(pattern, "gu");
    return (text: string, onPiece: (i: number, j: number) => void) => {
      for (const m of text.matchAll(re)) onPiece(m.index, m.index + m[0].length);
    };
  };
  const splitters = {
    "cl100k, kiln scanner": pretokenizer(CL100K_PATTERN),
    // An empty group in front misses the known-pattern table: the pattern runs on RE2.
    "cl100k, re2js (RE2)": pretokenizer(`(?:)${CL100K_PATTERN}`),
    "cl100k, JavaScript RegExp": jsRegex(CL100K_PATTERN),
    "o200k, kiln scanner": pretokenizer(O200K_PATTERN),
    "o200k, JavaScript RegExp": jsRegex(O200K_PATTERN),
  };
  console.log(`Pre-tokenisation, Brown (${mb.toFixed(2)} MB)`);
  console.log("| pattern, splitter | MB/s (best of 3) | pieces |");
  console.log("| --- | --- | --- |");
  for (const [name, split] of Object.entries(splitters)) {
    let best = Infinity, pieces = 0;
    for (let rep = 0; rep < 3; rep++) {
      const t0 = performance.now();
      pieces = 0;
      for (const t of texts) split(t, () => pieces++);
      best = Math.min(best, (performance.now() - t0) / 1000);
    }
    console.log(`| ${name} | ${(mb / best).toFixed(1)} | ${pieces} |`);
  }
  console.log("\n`(a+)+$` over n × 'a' then '!' (no match)");
  console.log("| engine | n | ms |");
  console.log("| --- | --- | --- |");
  const re2 = pretokenizer("(a+)+$");
  for (const n of [35, 1_000_000]) {
    const text = "a".repeat(n) + "!";
    const t0 = performance.now();
    re2(text, () => {});
    console.log(`| re2js | ${n} | ${(performance.now() - t0).toFixed(1)} |`);
  }
  const js = new RegExp("(a+)+$", "u");
  for (const n of [20, 22, 24, 26]) {
    const t0 = performance.now();
    js.test("a".repeat(n) + "!");
    console.log(`| JavaScript RegExp | ${n} | ${(performance.now() - t0).toFixed(1)} |`);
  }
}

/**
 * Brown, then the npm cache's source and text files (sorted), cycled to `bytes`; read one file at a
 * time, so the corpus is never all in memory (as in the tokenize stage, which streams documents).
 */
async function* trainingCorpus(bytes: number, brownOnly: boolean): AsyncGenerator<string> {
  const brown = (await brownTexts()).map((d) => d.text);
  if (brownOnly) {
    for (let size = 0;;) {
      for (const text of brown) {
        yield text;
        if ((size += text.length) >= bytes) return;
      }
    }
  }
  const cache = dirname(dirname(dirname(require.resolve("zod/package.json"))));
  const files: string[] = [];
  const walk = async (dir: string) => {
    for await (const e of Deno.readDir(dir)) {
      const path = join(dir, e.name);
      if (e.isDirectory) await walk(path);
      else if (e.isFile && /\.(m?[jt]s|cjs|md|json)$/.test(e.name)) files.push(path);
    }
  };
  await walk(cache);
  files.sort();
  let size = 0;
  for (;;) {
    for (const text of brown) {
      yield text;
      if ((size += text.length) >= bytes) return;
    }
    for (const f of files) {
      const text = await Deno.readTextFile(f);
      yield text;
      if ((size += text.length) >= bytes) return;
    }
  }
}

async function benchTrain(vocabSize: number, mb: number, brownOnly: boolean) {
  const baseline = Deno.memoryUsage().rss;
  let peak = baseline, corpusBytes = 0;
  // Live memory: with --v8-flags=--expose-gc, the heap after a full collection at each sample.
  const gc = (globalThis as { gc?: () => void }).gc;
  let livePeak = 0;
  const sample = () => {
    peak = Math.max(peak, Deno.memoryUsage().rss);
    if (gc) {
      gc();
      const { heapUsed, external } = Deno.memoryUsage(); // typed arrays are external
      livePeak = Math.max(livePeak, heapUsed + external);
    }
  };
  const t0 = performance.now();
  const counter = new PieceCounter();
  let n = 0;
  for await (const text of trainingCorpus(mb * 1e6, brownOnly)) {
    counter.add(text);
    corpusBytes += new TextEncoder().encode(text).length;
    if (++n % 500 === 0) sample();
  }
  sample();
  const t1 = performance.now();
  const counted = Deno.memoryUsage().rss;
  let symbols = 0;
  for (const [piece] of counter.entries()) symbols += new TextEncoder().encode(piece).length;
  const tok = trainBpe(counter, { vocabSize, onProgress: sample });
  sample();
  const t2 = performance.now();
  console.log(
    `vocab ${vocabSize} (${tok.merges!.length} merges) on ${(corpusBytes / 1e6).toFixed(1)} MB ` +
      `(${counter.size} distinct pieces of ${(symbols / 1e6).toFixed(1)} MB in all): ` +
      `counting ${((t1 - t0) / 1000).toFixed(1)} s, merging ${((t2 - t1) / 1000).toFixed(1)} s; ` +
      `peak RSS ${(peak / 1e6).toFixed(0)} MB (${(baseline / 1e6).toFixed(0)} MB before counting, ` +
      `${(counted / 1e6).toFixed(0)} MB after)` +
      (gc ? `; peak live memory ${(livePeak / 1e6).toFixed(0)} MB` : ""),
  );
}

if (import.meta.main) {
  const [mode = "encode", vocab = "8192", mb = "100", corpus = "mixed"] = Deno.args;
  if (mode === "train") await benchTrain(Number(vocab), Number(mb), corpus === "brown");
  else if (mode === "pretokenize") await benchPretokenize();
  else await benchEncode();
} else {
  const brown = (await brownTexts()).map((d) => d.text).join("\n\n");
  const code = (await typescriptSources()).join("\n");
  // Few iterations: js-tiktoken needs seconds for one pass over Brown.
  for (const [name, encode] of Object.entries(await encoders())) {
    const mb = (s: string) => megabytes([s]).toFixed(1);
    Deno.bench({
      name: `${name}: Brown (${mb(brown)} MB)`,
      group: "brown",
      n: 3,
      warmup: 1,
      fn: () => void encode(brown),
    });
    Deno.bench({
      name: `${name}: zod TS (${mb(code)} MB)`,
      group: "code",
      n: 3,
      warmup: 1,
      fn: () => void encode(code),
    });
  }
}
