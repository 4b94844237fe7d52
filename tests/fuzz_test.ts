// Fuzzing the formats kiln reads from others (issue 14): mutated WARC archives, JSONL and JSONL.gz
// document files, safetensors checkpoints, Hugging Face tokenizer.json files and YAML pipelines. Every
// case must end in a result or a clear kiln error (a KilnError: DataError, ConfigError…), never in
// another exception (a TypeError or RangeError is a crash), never hang, never allocate past a bound.
//
// Each kind runs in a child process (this file, run with `deno run`) with a V8 heap limit; the test
// reads a line per case from it, kills it when one case takes too long, and checks the child's peak
// resident memory after every case. Cases are seeded: a failure names the seed, the kind and the case;
// `KILN_TEST_SEED=<seed> deno test -A tests/fuzz_test.ts` replays them all, and
// `KILN_FUZZ_ONLY=<kind>:<case>` runs just one (`KILN_FUZZ_VERBOSE=1` prints the kiln errors,
// `KILN_FUZZ_SAVE=<folder>` keeps each case's input there). Runs well under a minute on 2 cores.
import { strict as assert } from "node:assert";
import { gunzipSync, gzipSync, zstdCompressSync, zstdDecompressSync } from "node:zlib";
import { join } from "node:path";
import { mulberry32 } from "../model/rng.ts";
import { KilnError } from "../pipeline/errors.ts";
import { OutputWriter } from "../pipeline/workspace.ts";
import { jsonlShard, warcShard } from "../stages/crawl/sources.ts";
import { parseSafetensors, serializeSafetensors } from "../model/safetensors.ts";
import { byteToUnicode, fromHuggingFace } from "../tokenizer/load.ts";
import { loadPipelineYaml } from "../pipeline/yaml.ts";
import { parse as parseYaml, stringify as stringifyYaml } from "npm:yaml@^2.9.1";
import { builtinStage } from "../stages/registry.ts";

const HERE = new URL(".", import.meta.url).pathname;
const EXAMPLES = join(HERE, "../examples/data");
const SHARED_WARC = join(HERE, "../../shared/data/warc");

/** Cases per kind (they share the time budget: the slow kinds get fewer). */
const CASES: Record<string, number> = {
  warc: 100,
  jsonl: 200,
  "jsonl.gz": 200,
  "jsonl.zst": 150,
  safetensors: 800,
  tokenizer: 150,
  yaml: 300,
};
/** A case that runs longer than this hangs (generous: the machine is shared). */
const CASE_TIMEOUT_MS = 10_000;
/** Peak resident memory of a child process, after any case. */
const MAX_RSS_BYTES = 1024 * 1024 * 1024;
const HEAP_LIMIT_MB = 512;
/** A folder to keep the inputs in (to look at a failing case), from KILN_FUZZ_SAVE. */
const SAVE = Deno.env.get("KILN_FUZZ_SAVE");
/** Children started again after one was stopped (past the case that stopped it). */
const MAX_RESTARTS = 2;

// ---------------------------------------------------------------------------------------------------
// Mutations

type Rng = () => number;
const int = (rng: Rng, n: number) => Math.floor(rng() * n);
const pick = <T>(rng: Rng, items: readonly T[]): T => items[int(rng, items.length)];
const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Values that break parsers: boundaries, huge and negative numbers, structure characters. */
const INTERESTING = [
  "0",
  "-1",
  "255",
  "65536",
  "2147483647",
  "4294967296",
  "9007199254740993",
  "18446744073709551615",
  "99999999999999999999999",
  "1e308",
  "-1e308",
  "NaN",
  "null",
  "true",
  '""',
  "[]",
  "{}",
  "\n",
  "\r\n\r\n",
  "\u0000",
  "\uFFFD",
  "\\u0000",
  "\\ud800",
  '"',
  "{",
  "[[[[[[[[[[[[[[[[",
  "*&a",
  "&a [*a,*a,*a,*a,*a,*a,*a,*a,*a]",
  "%00",
  "Content-Length: 99999999999\r\n",
  "Content-Length: -5\r\n",
  "WARC/1.0\r\n",
  "\x1f\x8b\x08\x00\x00\x00\x00\x00",
];

/** One random change to `bytes`; `text` enables changes that keep text formats mostly readable. */
function mutateOnce(rng: Rng, bytes: Uint8Array, text: boolean): Uint8Array {
  const n = bytes.length;
  const at = int(rng, n + 1);
  const splice = (start: number, remove: number, insert: Uint8Array) => {
    remove = Math.min(remove, n - start);
    const out = new Uint8Array(n - remove + insert.length);
    out.set(bytes.subarray(0, start));
    out.set(insert, start);
    out.set(bytes.subarray(start + remove), start + insert.length);
    return out;
  };
  switch (int(rng, text ? 8 : 6)) {
    case 0: { // flip bits
      const out = bytes.slice();
      for (let k = 1 + int(rng, 8); k > 0 && n; k--) out[int(rng, n)] ^= 1 << int(rng, 8);
      return out;
    }
    case 1: { // random bytes over the data
      const out = bytes.slice();
      for (let k = 1 + int(rng, 16); k > 0 && n; k--) out[int(rng, n)] = int(rng, 256);
      return out;
    }
    case 2: // insert random bytes
      return splice(at, 0, Uint8Array.from({ length: 1 + int(rng, 64) }, () => int(rng, 256)));
    case 3: // delete a range
      return splice(at, Math.min(n - at, 1 + int(rng, 256)), new Uint8Array(0));
    case 4: { // repeat a range
      const start = int(rng, n + 1);
      const piece = bytes.slice(start, start + 1 + int(rng, 512));
      return splice(at, 0, piece.length > 0 ? repeat(piece, 1 + int(rng, 8)) : piece);
    }
    case 5: // truncate
      return bytes.subarray(0, at);
    case 6: // an interesting value inserted
      return splice(at, int(rng, 4), encoder.encode(pick(rng, INTERESTING)));
    default: { // a number replaced by an interesting one
      const s = decoder.decode(bytes);
      const numbers = [...s.matchAll(/-?\d+(\.\d+)?/g)];
      if (!numbers.length) return bytes;
      const m = pick(rng, numbers);
      return encoder.encode(s.slice(0, m.index) + pick(rng, INTERESTING) + s.slice(m.index! + m[0].length));
    }
  }
}

function repeat(piece: Uint8Array, times: number): Uint8Array {
  const out = new Uint8Array(piece.length * times);
  for (let k = 0; k < times; k++) out.set(piece, k * piece.length);
  return out;
}

/** Values a JSON field may be changed into. */
const JSON_VALUES: unknown[] = [
  null,
  true,
  0,
  -1,
  1.5,
  2 ** 31,
  2 ** 53 + 2,
  1e308,
  -1e308,
  "",
  "x",
  "\u0000",
  "\ud800",
  [],
  [[]],
  {},
  [1, 2, 3],
  [-1, 2 ** 40],
  [0, 1e15],
  { type: "BPE" },
  "a".repeat(1000),
];

/**
 * Parses `bytes` as JSON and changes one value somewhere inside it (replaced, dropped, duplicated
 * under another key): valid JSON with unexpected content, which reaches deeper than broken syntax.
 * Leaves the bytes alone when they are not JSON.
 */
function mutateJson(rng: Rng, bytes: Uint8Array): Uint8Array {
  let root: unknown;
  try {
    root = JSON.parse(decoder.decode(bytes));
  } catch {
    return bytes;
  }
  const containers: (Record<string, unknown> | unknown[])[] = [];
  const walk = (v: unknown) => {
    if (v === null || typeof v !== "object") return;
    containers.push(v as Record<string, unknown>);
    for (const child of Object.values(v)) walk(child);
  };
  walk(root);
  if (!containers.length) return encoder.encode(JSON.stringify(pick(rng, JSON_VALUES)));
  const target = pick(rng, containers);
  const keys = Object.keys(target);
  const key = keys.length ? pick(rng, keys) : "0";
  const record = target as Record<string, unknown>;
  switch (int(rng, 4)) {
    case 0:
      delete record[key];
      break;
    case 1:
      record[keys.length ? pick(rng, keys) : "k"] = record[key];
      break;
    case 2:
      if (typeof record[key] === "number") record[key] = -(record[key] as number) || 1e20;
      else record[key] = pick(rng, JSON_VALUES);
      break;
    default:
      record[key] = pick(rng, JSON_VALUES);
  }
  return encoder.encode(JSON.stringify(root));
}

/** Mutates JSON (or JSON lines) half the time by value, otherwise by bytes. */
function mutateJsonText(rng: Rng, bytes: Uint8Array): Uint8Array {
  if (rng() < 0.5) return mutate(rng, bytes, true);
  const text = decoder.decode(bytes);
  if (!text.trimEnd().includes("\n")) return mutateJson(rng, bytes);
  const lines = text.split("\n");
  const i = int(rng, lines.length);
  lines[i] = decoder.decode(mutateJson(rng, encoder.encode(lines[i])));
  return encoder.encode(lines.join("\n"));
}

function mutate(rng: Rng, bytes: Uint8Array, text: boolean): Uint8Array {
  for (let k = 1 + int(rng, 3); k > 0; k--) bytes = mutateOnce(rng, bytes, text);
  return bytes;
}

// ---------------------------------------------------------------------------------------------------
// Seeds and targets, one per kind. A target gets a case's input and a scratch folder.

interface Kind {
  seeds(): Promise<Uint8Array[]>;
  /** The case's input from a seed. */
  input(rng: Rng, seed: Uint8Array): Uint8Array;
  /** Runs kiln on the input; throws what kiln throws. */
  run(input: Uint8Array, dir: string): Promise<unknown>;
}

const shardOpts = { contentTypes: ["text/html", "text/plain"], maxBytes: 1 << 20, minChars: 1 };
const shardEnv = (dir: string) => ({ id: "fuzz", out: new OutputWriter(join(dir, "out"), join(dir, "tmp")) });

async function readAll(paths: string[]): Promise<Uint8Array[]> {
  return await Promise.all(paths.map((p) => Deno.readFile(p)));
}

/** Documents as JSONL, with what trips readers: escapes, non-ASCII, nested meta, numbers as ids. */
function documentsJsonl(): Uint8Array {
  const lines = [
    { id: "a", text: "Kilns fire clay into pottery.", url: "https://example.org/a" },
    {
      id: 7,
      text: "Ein Text über Öfen und Keramik, mit Umlauten.",
      meta: { lang: "de", n: [1, 2, { x: null }] },
    },
    { id: "c", text: 'Line one\nline two\ttabbed "quoted" \\ back\u2028sep', meta: {} },
    { id: "d", text: "日本語の文章です。陶器と窯について。" },
    { id: "e", text: "emoji 🔥🏺 and a lone \ud83d surrogate", meta: { score: 1e-7 } },
    { id: "f", text: "" },
    { id: "g", text: "<p>html &amp; entities</p>".repeat(20) },
  ];
  return encoder.encode(lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
}

function safetensorsSeeds(): Uint8Array[] {
  const f32 = (n: number) => Float32Array.from({ length: n }, (_, i) => i / 7 - 1);
  const plain = serializeSafetensors([
    { name: "wte.weight", shape: [4, 3], data: f32(12) },
    { name: "h.0.ln_1.bias", shape: [3], data: f32(3) },
    { name: "scalar", shape: [], data: f32(1) },
  ], { format: "pt" });
  // Other dtypes, written by hand: F16, BF16, F64, I64, U8, and an empty tensor.
  const header = JSON.stringify({
    __metadata__: { note: "mixed" },
    half: { dtype: "F16", shape: [2], data_offsets: [0, 4] },
    brain: { dtype: "BF16", shape: [2], data_offsets: [4, 8] },
    double: { dtype: "F64", shape: [1], data_offsets: [8, 16] },
    long: { dtype: "I64", shape: [1, 1], data_offsets: [16, 24] },
    bytes: { dtype: "U8", shape: [8], data_offsets: [24, 32] },
    empty: { dtype: "F32", shape: [0, 5], data_offsets: [32, 32] },
  });
  const head = encoder.encode(header);
  const mixed = new Uint8Array(8 + head.length + 32);
  new DataView(mixed.buffer).setBigUint64(0, BigInt(head.length), true);
  mixed.set(head, 8);
  mixed.set(Uint8Array.from({ length: 32 }, (_, i) => i * 37), 8 + head.length);
  return [plain, mixed];
}

/** Mutates a safetensors file: the length prefix, the header as text (prefix kept right), or raw. */
function safetensorsInput(rng: Rng, seed: Uint8Array): Uint8Array {
  const choice = int(rng, 3);
  if (choice === 0) return mutate(rng, seed, false);
  const length = Number(new DataView(seed.buffer, seed.byteOffset).getBigUint64(0, true));
  if (choice === 1) {
    const out = seed.slice();
    const values = [0n, 1n, 7n, BigInt(length - 1), BigInt(length + 1), 2n ** 32n, 2n ** 53n, 2n ** 64n - 1n];
    new DataView(out.buffer).setBigUint64(0, pick(rng, values), true);
    return out;
  }
  const head = mutateJsonText(rng, seed.subarray(8, 8 + length));
  const out = new Uint8Array(8 + head.length + seed.length - 8 - length);
  new DataView(out.buffer).setBigUint64(0, BigInt(head.length), true);
  out.set(head, 8);
  out.set(seed.subarray(8 + length), 8 + head.length);
  return out;
}

/** A small byte-level BPE tokenizer.json (GPT-2 style), and one with a Split regex pre-tokenizer. */
function tokenizerSeeds(): Uint8Array[] {
  const chars = byteToUnicode();
  const vocab: Record<string, number> = {};
  chars.forEach((c, i) => vocab[c] = i);
  const merges: string[] = [];
  for (const word of ["Ġthe", "Ġkiln", "Ġclay", "ing", "er", "Ġfire"]) {
    let token = word[0];
    for (const ch of word.slice(1)) {
      merges.push(`${token} ${ch}`);
      token += ch;
      vocab[token] ??= Object.keys(vocab).length;
    }
  }
  const added = [{ id: Object.keys(vocab).length, content: "<|endoftext|>", special: true }];
  vocab["<|endoftext|>"] = added[0].id;
  const gpt2 = {
    version: "1.0",
    added_tokens: added,
    normalizer: null,
    pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
    model: { type: "BPE", vocab, merges },
  };
  const splitBy = (regex: string) => ({
    ...gpt2,
    pre_tokenizer: {
      type: "Sequence",
      pretokenizers: [
        { type: "Split", pattern: { Regex: regex }, behavior: "Isolated", invert: false },
        { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: false },
      ],
    },
  });
  const split = splitBy(
    "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+",
  );
  // A pattern that backtracks exponentially in a backtracking engine: must run in linear time.
  const hostile = splitBy("(a+)+$");
  return [gpt2, split, hostile].map((t) => encoder.encode(JSON.stringify(t)));
}

const YAML_SEEDS = [
  `name: fuzz
workdir: .kiln
workers: 2
stages:
  - stage: crawl
    config:
      warc: [data/*.warc.gz]
      maxBytes: 1000000
      urls: { seeds: ["https://example.org/"], maxPages: 10, delayMs: 0 }
  - stage: dedupe
    id: dedupe-exact
    config: { exact: true, minhash: { threshold: 0.8 } }
`,
  `name: anchors
stages:
  - &crawl
    stage: crawl
    config: &cfg
      files: ["pages/**/*.html"]
      minChars: 10
  - stage: dedupe
    config: { exact: true }
  - stage: tokenize
    config: { bpe: { vocabSize: 300 } }
`,
  // An alias bomb ("billion laughs"): must be refused, not expanded.
  `name: bomb
stages:
  - stage: crawl
    config:
      a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
      g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]
      files: *g
`,
];

let yamlCase = 0;

const KINDS: Record<string, Kind> = {
  warc: {
    async seeds() {
      const paths = [join(EXAMPLES, "warcio-example.warc.gz"), join(EXAMPLES, "IAH-urls-wget.warc.gz")];
      try {
        for await (const e of Deno.readDir(SHARED_WARC)) {
          if (/\.(warc|arc)(\.gz)?$/.test(e.name)) paths.push(join(SHARED_WARC, e.name));
        }
      } catch {
        console.error(`fuzz: ${SHARED_WARC} is absent: fuzzing the WARC examples of examples/data only`);
      }
      return await readAll(paths.sort());
    },
    input(rng, seed) {
      const gzipped = seed[0] === 0x1f && seed[1] === 0x8b;
      if (!gzipped || rng() < 0.5) return mutate(rng, seed, false); // raw bytes (gzip members and all)
      const plain = mutate(rng, new Uint8Array(gunzipSync(seed)), true); // the records themselves
      return rng() < 0.5 ? plain : new Uint8Array(gzipSync(plain));
    },
    async run(input, dir) {
      const path = join(dir, input[0] === 0x1f ? "in.warc.gz" : "in.warc");
      await Deno.writeFile(path, input);
      return await warcShard({ location: path, shard: "out.jsonl.gz", opts: shardOpts }, shardEnv(dir));
    },
  },
  jsonl: {
    seeds: () => Promise.resolve([documentsJsonl()]),
    input: mutateJsonText,
    async run(input, dir) {
      const path = join(dir, "in.jsonl");
      await Deno.writeFile(path, input);
      return await jsonlShard({ path, shard: "out.jsonl.gz", opts: shardOpts }, shardEnv(dir));
    },
  },
  "jsonl.gz": {
    seeds: () => Promise.resolve([new Uint8Array(gzipSync(documentsJsonl()))]),
    input: (rng, seed) =>
      rng() < 0.5
        ? mutate(rng, seed, false) // damaged compressed data
        : new Uint8Array(gzipSync(mutateJsonText(rng, new Uint8Array(gunzipSync(seed))))),
    async run(input, dir) {
      const path = join(dir, "in.jsonl.gz");
      await Deno.writeFile(path, input);
      return await jsonlShard({ path, shard: "out.jsonl.gz", opts: shardOpts }, shardEnv(dir));
    },
  },
  "jsonl.zst": {
    seeds: () => Promise.resolve([new Uint8Array(zstdCompressSync(documentsJsonl()))]),
    input: (rng, seed) =>
      rng() < 0.5
        ? mutate(rng, seed, false) // damaged compressed data, frame headers included
        : new Uint8Array(zstdCompressSync(mutateJsonText(rng, new Uint8Array(zstdDecompressSync(seed))))),
    async run(input, dir) {
      const path = join(dir, "in.jsonl.zst");
      await Deno.writeFile(path, input);
      return await jsonlShard({ path, shard: "out.jsonl.gz", opts: shardOpts }, shardEnv(dir));
    },
  },
  safetensors: {
    seeds: () => Promise.resolve(safetensorsSeeds()),
    input: safetensorsInput,
    run(input) {
      const file = parseSafetensors(input, "fuzz.safetensors");
      let total = 0;
      for (const name of file.names()) {
        const { dtype } = file.info(name);
        if (["F32", "F16", "BF16", "F64"].includes(dtype)) total += file.float32(name).length;
      }
      return Promise.resolve(total);
    },
  },
  tokenizer: {
    seeds: () => Promise.resolve(tokenizerSeeds()),
    input: mutateJsonText,
    run(input) {
      const tokenizer = fromHuggingFace(decoder.decode(input), "fuzz-tokenizer.json");
      const text =
        "The kiln's clay is firing: 1234 times!\n\n  aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa!";
      const ids = tokenizer.encode(text);
      return Promise.resolve(tokenizer.decode(ids).length);
    },
  },
  yaml: {
    seeds: () => Promise.resolve(YAML_SEEDS.map((s) => encoder.encode(s))),
    input(rng, seed) {
      let value: unknown;
      try {
        value = parseYaml(decoder.decode(seed)); // the alias bomb throws here
      } catch {
        return mutate(rng, seed, true);
      }
      if (rng() < 0.5) return mutate(rng, seed, true);
      // Valid YAML with unexpected values: reaches the stages' config validation.
      const changed = mutateJson(rng, encoder.encode(JSON.stringify(value)));
      return encoder.encode(stringifyYaml(JSON.parse(decoder.decode(changed))));
    },
    async run(input, dir) {
      // A new name each case: a stage module it names by path is imported once per process.
      const path = join(dir, `pipeline-${yamlCase++}.yaml`);
      await Deno.writeFile(path, input);
      return (await loadPipelineYaml(path, builtinStage)).toString().length;
    },
  },
};

// ---------------------------------------------------------------------------------------------------
// The child: runs the cases of one kind, a JSON line before and after each.

/** A case's own random stream: any case replays alone from (seed, kind, case). */
function caseRng(seed: number, kind: string, index: number): Rng {
  let h = seed >>> 0;
  for (const ch of `${kind}#${index}`) h = Math.imul(h ^ ch.charCodeAt(0), 0x01000193) >>> 0;
  return mulberry32(h);
}

function peakRss(): number | undefined {
  try {
    const status = Deno.readTextFileSync("/proc/self/status");
    const kb = /VmHWM:\s+(\d+) kB/.exec(status);
    return kb ? Number(kb[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

async function child(kind: string, seed: number, from: number, to: number, dir: string) {
  const target = KINDS[kind];
  const seeds = await target.seeds();
  const write = (value: unknown) => Deno.stdout.writeSync(encoder.encode(JSON.stringify(value) + "\n"));
  for (let i = from; i < to; i++) {
    const rng = caseRng(seed, kind, i);
    const input = target.input(rng, pick(rng, seeds));
    const caseDir = join(dir, String(i));
    await Deno.mkdir(caseDir, { recursive: true });
    if (SAVE) await Deno.writeFile(join(SAVE, `${kind}-${seed}-${i}.input`), input);
    write({ start: i, bytes: input.length });
    let outcome: { case: number; ok?: true; error?: string; crash?: string };
    try {
      await target.run(input, caseDir);
      outcome = { case: i, ok: true };
    } catch (e) {
      const err = e as Error;
      outcome = e instanceof KilnError
        ? { case: i, error: `${err.name}: ${err.message.slice(0, 200)}` }
        : { case: i, crash: String(err?.stack ?? err).split("\n").slice(0, 6).join("\n") };
    }
    await Deno.remove(caseDir, { recursive: true });
    write({ ...outcome, rss: peakRss() });
  }
}

if (import.meta.main) {
  const [kind, seed, from, to, dir] = Deno.args;
  await child(kind, Number(seed), Number(from), Number(to), dir);
}

// ---------------------------------------------------------------------------------------------------
// The test: one child per kind; a case that crashes, hangs or allocates too much fails it.

interface Report {
  counts: { ok: number; error: number };
  failures: string[];
}

/** Runs cases `from`…`to` of `kind`; a crash, hang or memory overrun stops the child and restarts it past that case. */
async function fuzzKind(kind: string, seed: number, from: number, to: number): Promise<Report> {
  const report: Report = { counts: { ok: 0, error: 0 }, failures: [] };
  for (let restarts = 0; from < to && restarts <= MAX_RESTARTS; restarts++) {
    const stopped = await runChild(kind, seed, from, to, report);
    if (stopped === undefined) break;
    from = stopped + 1;
  }
  return report;
}

/** One child process from case `from`: returns the case it was stopped at, if it was. */
async function runChild(
  kind: string,
  seed: number,
  from: number,
  to: number,
  report: Report,
): Promise<number | undefined> {
  const dir = await Deno.makeTempDir({ prefix: `kiln-fuzz-${kind}-` });
  const command = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      `--v8-flags=--max-old-space-size=${HEAP_LIMIT_MB}`,
      "--allow-read",
      `--allow-write=${[dir, ...SAVE ? [SAVE] : []].join(",")}`,
      "--allow-env",
      new URL(import.meta.url).pathname,
      kind,
      String(seed),
      String(from),
      String(to),
      dir,
    ],
    stdout: "piped",
    stderr: "piped",
  });
  const process = command.spawn();
  const stderr = new Response(process.stderr).text();
  const where = (i: number) => `${kind} case ${i} (KILN_TEST_SEED=${seed} KILN_FUZZ_ONLY=${kind}:${i})`;
  let running: number | undefined;
  let next = from; // the case whose input is being made while none runs
  let timer: ReturnType<typeof setTimeout> | undefined;
  let stopped: number | undefined; // the case this test stopped the child at, already reported
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      stopped = running ?? next;
      report.failures.push(
        running === undefined
          ? `${where(next)}: no input after ${CASE_TIMEOUT_MS} ms (loading, or making the input)`
          : `${where(running)}: still running after ${CASE_TIMEOUT_MS} ms`,
      );
      process.kill("SIGKILL");
    }, CASE_TIMEOUT_MS);
  };
  arm(); // loading the modules and the seeds counts as a case
  let rest = "";
  try {
    for await (const chunk of process.stdout.pipeThrough(new TextDecoderStream())) {
      const lines = (rest + chunk).split("\n");
      rest = lines.pop()!;
      for (const line of lines) {
        const event = JSON.parse(line);
        if ("start" in event) {
          running = event.start;
          arm();
          continue;
        }
        running = undefined;
        next = event.case + 1;
        arm();
        if (event.ok) report.counts.ok++;
        else if (event.error) {
          report.counts.error++;
          if (Deno.env.get("KILN_FUZZ_VERBOSE")) console.log(`${kind} ${event.case}: ${event.error}`);
        } else report.failures.push(`${where(event.case)}: not a kiln error:\n${event.crash}`);
        if (event.rss > MAX_RSS_BYTES) {
          report.failures.push(`${where(event.case)}: peak memory ${Math.round(event.rss / 2 ** 20)} MiB`);
          stopped = event.case;
          process.kill("SIGKILL");
        }
      }
    }
  } finally {
    clearTimeout(timer);
    const status = await process.status;
    const err = await stderr;
    if (!status.success && stopped === undefined) {
      const tail = err.trim().split("\n").slice(-8).join("\n");
      if (running === undefined) {
        report.failures.push(`${kind}: the child failed (exit ${status.code}):\n${tail}`);
        stopped = to; // not a case's doing: no restart
      } else {
        report.failures.push(
          `${where(running)}: the process died (exit ${status.code}; out of memory?):\n${tail}`,
        );
        stopped = running;
      }
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return stopped;
}

const SEED = Number(Deno.env.get("KILN_TEST_SEED") ?? Math.floor(Math.random() * 2 ** 31));
const ONLY = Deno.env.get("KILN_FUZZ_ONLY"); // "<kind>" or "<kind>:<case>"

Deno.test(`fuzz: mutated inputs end in a result or a clear kiln error (KILN_TEST_SEED=${SEED})`, async () => {
  const [onlyKind, onlyCase] = ONLY?.split(":") ?? [];
  const kinds = Object.keys(KINDS).filter((k) => !onlyKind || k === onlyKind);
  assert.ok(kinds.length, `KILN_FUZZ_ONLY=${ONLY}: no such kind (${Object.keys(KINDS).join(", ")})`);
  const failures: string[] = [];
  const summary: string[] = [];
  // Two children at a time: the machine has two cores.
  const queue = [...kinds];
  await Promise.all([0, 1].map(async () => {
    for (let kind = queue.shift(); kind; kind = queue.shift()) {
      const from = onlyCase === undefined ? 0 : Number(onlyCase);
      const to = onlyCase === undefined ? CASES[kind] : from + 1;
      const report = await fuzzKind(kind, SEED, from, to);
      summary.push(`${kind}: ${report.counts.ok} results, ${report.counts.error} kiln errors`);
      failures.push(...report.failures);
    }
  }));
  console.log(`fuzz (KILN_TEST_SEED=${SEED}): ${summary.sort().join("; ")}`);
  assert.deepEqual(failures, [], failures.join("\n\n"));
});

Deno.test("fuzz: the unmutated seeds of every kind load (so the mutations test something)", async () => {
  for (const [kind, target] of Object.entries(KINDS)) {
    for (const [i, seed] of (await target.seeds()).entries()) {
      if (kind === "yaml" && i === 2) continue; // the alias bomb: refused, see below
      if (kind === "tokenizer" && i === 2) continue; // the hostile pattern: only with a time bound
      const dir = await Deno.makeTempDir();
      try {
        await target.run(seed, dir);
      } catch (e) {
        assert.fail(`${kind} seed ${i}: ${(e as Error).stack}`);
      } finally {
        await Deno.remove(dir, { recursive: true });
      }
    }
  }
});

// Found by this fuzz test and fixed; kept as plain regression tests.

Deno.test("YAML: aliases resolve across stages; circular aliases and alias bombs are refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(join(dir, "page.html"), "<p>A page about kilns.</p>");
    const path = join(dir, "pipeline.yaml");
    await Deno.writeTextFile(
      path,
      `name: alias
stages:
  - stage: crawl
    config: { files: &pages ["${dir}/*.html"], minChars: &min 3 }
  - stage: dedupe
    config: { exact: true }
  - stage: crawl
    id: again
    config: { files: *pages, minChars: *min }
`,
    );
    // The third stage starts a second branch; the aliases gave it the first one's values.
    const again = (await loadPipelineYaml(path, builtinStage)).stages.find((s) => s.id === "again");
    const config = again?.config as { files?: string[]; minChars?: number } | undefined;
    assert.deepEqual([config?.files, config?.minChars], [[`${dir}/*.html`], 3]);
    // Found by the fuzz (KILN_TEST_SEED=10, yaml case 55): an alias inside its own anchor.
    await Deno.writeTextFile(
      path,
      `name: loop\nstages:\n  - stage: crawl\n    config:\n      urls: { seeds: ["https://example.org/"], maxPages: &a [*a] }\n`,
    );
    await assert.rejects(
      loadPipelineYaml(path, builtinStage),
      (e) =>
        e instanceof KilnError &&
        /pipeline\.yaml:5:7: config holds a value that contains itself/.test(e.message),
    );
    await Deno.writeTextFile(path, YAML_SEEDS[2]);
    await assert.rejects(
      loadPipelineYaml(path, builtinStage),
      (e) => e instanceof KilnError && /Excessive alias count/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("safetensors: dtype names from Object.prototype and metadata that is not text are refused", () => {
  const file = (header: unknown, data = 0) => {
    const head = encoder.encode(JSON.stringify(header));
    const bytes = new Uint8Array(8 + head.length + data);
    new DataView(bytes.buffer).setBigUint64(0, BigInt(head.length), true);
    bytes.set(head, 8);
    return bytes;
  };
  for (const dtype of ["__proto__", "constructor", "toString"]) {
    assert.throws(
      () => parseSafetensors(file({ w: { dtype, shape: [1], data_offsets: [0, 4] } }, 4), "x.safetensors"),
      (e) => e instanceof KilnError && /x\.safetensors:w: unknown dtype/.test(e.message),
    );
  }
  assert.throws(
    () => parseSafetensors(file({ __metadata__: { "kiln.sha256": 5 } }), "x.safetensors"),
    (e) => e instanceof KilnError && /__metadata__: .*metadata must map names to strings/.test(e.message),
  );
});
