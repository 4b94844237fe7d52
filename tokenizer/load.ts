/**
 * Loading tokenizers from the formats the field uses: kiln's own JSON, GPT-2's `encoder.json` +
 * `vocab.bpe`, tiktoken rank files (`<base64 token> <rank>` lines), and Hugging Face `tokenizer.json`
 * (BPE models with byte-level pre-tokenisation). `gpt2` and `cl100k_base` load by name from the
 * ranks that `npm:js-tiktoken` ships. Errors name the file and the field or line at fault.
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./load.ts";
 * const gpt2 = await loadTokenizer("gpt2");
 * const mine = await loadTokenizer(".kiln/artifacts/tokenize/tokenizer.json");
 * const hf = await loadTokenizer("models/gpt2/tokenizer.json");
 * ```
 * @module
 */
import { DataError } from "../pipeline/errors.ts";
import { fromBase64, MAX_VOCAB_SIZE, Tokenizer } from "./tokenizer.ts";
import { CL100K_PATTERN, GPT2_PATTERN, isKnownPattern, pretokenizer } from "./pretokenize.ts";

/** Tokenizers loadable by name (from `npm:js-tiktoken`'s ranks). */
export const NAMED_TOKENIZERS = ["gpt2", "cl100k_base"] as const;

/** js-tiktoken's packed rank format: lines of `<tag> <first rank> <base64 token>…`. */
interface PackedRanks {
  pat_str: string;
  special_tokens: Record<string, number>;
  bpe_ranks: string;
}

function fromPackedRanks(ranks: PackedRanks, pattern: string): Tokenizer {
  const tokens: Uint8Array[] = [];
  for (const line of ranks.bpe_ranks.split("\n")) {
    if (!line) continue;
    const [, offset, ...b64] = line.split(" ");
    const first = Number.parseInt(offset, 10);
    b64.forEach((t, i) => (tokens[first + i] = fromBase64(t)));
  }
  return new Tokenizer({
    tokens,
    pattern,
    specialTokens: ranks.special_tokens,
  });
}

/** GPT-2's tokenizer (r50k_base: 50,257 ids, `<|endoftext|>` = 50256). */
export async function gpt2Tokenizer(): Promise<Tokenizer> {
  const { default: ranks } = await import("npm:js-tiktoken@^1.0.21/ranks/gpt2");
  return fromPackedRanks(ranks, GPT2_PATTERN);
}

/** GPT-3.5/4's cl100k_base (100,277 ids). */
export async function cl100kTokenizer(): Promise<Tokenizer> {
  const { default: ranks } = await import("npm:js-tiktoken@^1.0.21/ranks/cl100k_base");
  // tiktoken's spelling of the pattern (js-tiktoken's spells out the case-insensitive contractions).
  return fromPackedRanks(ranks, CL100K_PATTERN);
}

/** Options for formats that do not carry a pattern or special tokens themselves. */
export interface RankFileOptions {
  /** Pre-tokenisation regex; default GPT-2's. */
  pattern?: string;
  /** Special tokens and their ids; default none. */
  specialTokens?: Record<string, number>;
}

/** Parses a tiktoken rank file (`<base64 token> <rank>` per line); `file` names it in errors. */
export function fromTiktoken(text: string, opts: RankFileOptions = {}, file = "ranks.tiktoken"): Tokenizer {
  if (opts.pattern !== undefined) checkPattern(opts.pattern, file, "pattern (option)");
  const tokens: Uint8Array[] = [];
  const owners = new Map<number, string>();
  const lines = text.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i].trim();
    if (!line) continue;
    const [b64, rank, extra] = line.split(" ");
    if (extra !== undefined || rank === undefined || !/^\d+$/.test(rank)) {
      throw new DataError(file, `${i + 1}`, 'expected "<base64 token> <rank>"');
    }
    const id = checkId(Number(rank), owners, `line ${i + 1}`, file, `${i + 1}`);
    try {
      tokens[id] = fromBase64(b64);
    } catch {
      throw new DataError(file, `${i + 1}`, `invalid base64 ${show(b64)}`);
    }
  }
  return build(file, { tokens: Array.from(tokens, (t) => t ?? null), ...opts });
}

/** GPT-2's byte ↔ printable-character map used by `encoder.json`, `vocab.bpe` and HF byte-level BPE. */
export function byteToUnicode(): string[] {
  const printable = (b: number) => (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
  const map: string[] = [];
  let n = 0;
  for (let b = 0; b < 256; b++) map[b] = String.fromCharCode(printable(b) ? b : 256 + n++);
  return map;
}

function unicodeDecoder(file: string): (token: string, where: string) => Uint8Array {
  const toByte = new Map(byteToUnicode().map((c, b) => [c, b]));
  return (token, where) => {
    const out = new Uint8Array(token.length);
    for (let i = 0; i < token.length; i++) {
      const b = toByte.get(token[i]);
      if (b === undefined) {
        throw new DataError(file, where, `token "${token}" has a character outside the byte map`);
      }
      out[i] = b;
    }
    return out;
  };
}

/**
 * GPT-2's original files: `encoder.json` (token → id) and `vocab.bpe` (one merge `a b` a line after a
 * `#version` line). `<|endoftext|>` becomes a special token when the encoder has it.
 */
export function fromGpt2Files(
  encoderJson: string,
  vocabBpe: string,
  files = { encoder: "encoder.json", vocab: "vocab.bpe" },
): Tokenizer {
  let encoder: unknown;
  try {
    encoder = JSON.parse(encoderJson);
  } catch (e) {
    throw new DataError(files.encoder, undefined, `not JSON (${(e as Error).message})`);
  }
  if (!isObject(encoder)) throw new DataError(files.encoder, undefined, "not a JSON object (token → id)");
  const toBytes = unicodeDecoder(files.encoder);
  const tokens: (Uint8Array | null)[] = [];
  const specialTokens: [string, number][] = [];
  const ids = new Map<string, number>();
  const owners = new Map<number, string>();
  for (const [token, value] of Object.entries(encoder)) {
    const where = JSON.stringify(token);
    const id = checkId(value, owners, where, files.encoder, where);
    if (/^<\|.*\|>$/.test(token)) specialTokens.push([token, id]);
    else tokens[id] = toBytes(token, where);
    ids.set(token, id);
  }
  const merges = parseMerges(vocabBpe.split(/\r?\n/), ids, files.vocab, (i) => `${i + 1}`);
  return build(files.encoder, {
    tokens: Array.from(tokens, (t) => t ?? null),
    merges,
    specialTokens: Object.fromEntries(specialTokens),
  });
}

/** Merges as `"a b"` strings (`vocab.bpe`, older tokenizer.json) or `["a", "b"]` pairs, to id pairs. */
function parseMerges(
  lines: unknown[],
  ids: Map<string, number>,
  file: string,
  where: (index: number) => string,
): [number, number][] {
  const merges: [number, number][] = [];
  lines.forEach((line, i) => {
    if (typeof line === "string" && (line.startsWith("#version") || line.trim() === "")) return;
    const pair = typeof line === "string" ? line.split(" ") : line;
    if (
      !Array.isArray(pair) || pair.length !== 2 || typeof pair[0] !== "string" || typeof pair[1] !== "string"
    ) {
      throw new DataError(file, where(i), `expected a merge "a b" or ["a", "b"], not ${show(line)}`);
    }
    const [a, b] = pair;
    const left = ids.get(a), right = ids.get(b);
    if (left === undefined || right === undefined) {
      throw new DataError(file, where(i), `merge "${a} ${b}" names a token not in the vocabulary`);
    }
    merges.push([left, right]);
  });
  return merges;
}

/**
 * A Hugging Face `tokenizer.json` with a BPE model and byte-level pre-tokenisation: `ByteLevel`
 * (GPT-2's pattern) or a `Sequence` of one `Split` regex (Isolated) and `ByteLevel` without regex
 * (Llama 3, Qwen). Added tokens become special tokens. Other models, prefix spaces and normalizers
 * that change text are refused with the field that is not supported; so is every value of the wrong
 * type, and ids that are not unique integers below {@linkcode MAX_VOCAB_SIZE}.
 */
export function fromHuggingFace(jsonText: string, file = "tokenizer.json"): Tokenizer {
  let json: unknown;
  try {
    json = JSON.parse(jsonText);
  } catch (e) {
    throw new DataError(file, undefined, `not JSON (${(e as Error).message})`);
  }
  if (!isObject(json)) throw new DataError(file, undefined, "not a JSON object");
  const model = json.model;
  if (!isObject(model)) throw new DataError(file, "model", "missing or not an object");
  if (model.type !== "BPE" && !(model.type === undefined && model.merges)) {
    throw new DataError(file, "model.type", `only BPE models are supported, not ${show(model.type)}`);
  }
  const { vocab, merges } = model;
  if (vocab === undefined || merges === undefined) {
    throw new DataError(file, "model", "missing vocab or merges");
  }
  if (!isObject(vocab)) throw new DataError(file, "model.vocab", "not an object (token → id)");
  if (!Array.isArray(merges)) throw new DataError(file, "model.merges", "not an array");
  if (model.ignore_merges !== undefined && typeof model.ignore_merges !== "boolean") {
    throw new DataError(file, "model.ignore_merges", `not true or false: ${show(model.ignore_merges)}`);
  }
  if (json.normalizer) {
    const type = isObject(json.normalizer) ? json.normalizer.type : json.normalizer;
    throw new DataError(file, "normalizer", `normalizer ${show(type)} is not supported (byte-level BPE)`);
  }
  const pattern = hfPattern(json.pre_tokenizer, file);
  const added = addedTokens(json.added_tokens, file);
  const toBytes = unicodeDecoder(file);
  const tokens: (Uint8Array | null)[] = [];
  const ids = new Map<string, number>();
  const owners = new Map<number, string>();
  for (const [token, value] of Object.entries(vocab)) {
    const where = `model.vocab[${JSON.stringify(token)}]`;
    const id = checkId(value, owners, where, file, where);
    ids.set(token, id);
    if (!added.has(token)) tokens[id] = toBytes(token, where);
  }
  // An added token is in the vocabulary under its own id, or outside it under an id no token has.
  for (const [content, { id, where }] of added) {
    const own = ids.get(content);
    if (own !== undefined && own !== id) {
      throw new DataError(file, `${where}.id`, `${id}, but model.vocab gives ${show(content)} id ${own}`);
    }
    if (own === undefined && owners.has(id)) {
      throw new DataError(file, `${where}.id`, `id ${id} is taken by ${owners.get(id)}`);
    }
  }
  return build(file, {
    tokens: Array.from(tokens, (t) => t ?? null),
    merges: parseMerges(merges, ids, file, (i) => `model.merges[${i}]`),
    pattern,
    specialTokens: Object.fromEntries([...added].map(([content, { id }]) => [content, id])),
    ignoreMerges: model.ignore_merges ?? false,
  });
}

/** `added_tokens`: content → id and the entry's field path; contents and ids unique. */
function addedTokens(list: unknown, file: string): Map<string, { id: number; where: string }> {
  const added = new Map<string, { id: number; where: string }>();
  if (list === undefined || list === null) return added;
  if (!Array.isArray(list)) throw new DataError(file, "added_tokens", "not an array");
  const owners = new Map<number, string>();
  list.forEach((t, i) => {
    const where = `added_tokens[${i}]`;
    if (!isObject(t)) throw new DataError(file, where, `not an object: ${show(t)}`);
    if (typeof t.content !== "string" || t.content === "") {
      throw new DataError(file, `${where}.content`, `not a non-empty string: ${show(t.content)}`);
    }
    if (added.has(t.content)) {
      throw new DataError(file, where, `${show(t.content)} is also ${added.get(t.content)!.where}`);
    }
    added.set(t.content, { id: checkId(t.id, owners, where, file, `${where}.id`), where });
  });
  return added;
}

function hfPattern(pre: unknown, file: string): string {
  if (pre !== undefined && pre !== null && !isObject(pre)) {
    throw new DataError(file, "pre_tokenizer", `not an object: ${show(pre)}`);
  }
  const byteLevel = (p: Record<string, unknown>, where: string) => {
    if (p.add_prefix_space) {
      throw new DataError(file, `${where}.add_prefix_space`, "add_prefix_space is not supported");
    }
  };
  if (pre?.type === "ByteLevel" && pre.use_regex !== false) {
    byteLevel(pre, "pre_tokenizer");
    return GPT2_PATTERN;
  }
  if (pre?.type === "Sequence") {
    const seq = pre.pretokenizers ?? [];
    if (!Array.isArray(seq)) throw new DataError(file, "pre_tokenizer.pretokenizers", "not an array");
    seq.forEach((p, i) => {
      if (!isObject(p)) {
        throw new DataError(file, `pre_tokenizer.pretokenizers[${i}]`, `not an object: ${show(p)}`);
      }
    });
    const [split, bl] = seq as Record<string, unknown>[];
    if (seq.length === 2 && split.type === "Split" && bl.type === "ByteLevel" && bl.use_regex === false) {
      byteLevel(bl, "pre_tokenizer.pretokenizers[1]");
      const regex = isObject(split.pattern) ? split.pattern.Regex : undefined;
      if (typeof regex !== "string" || split.behavior !== "Isolated") {
        throw new DataError(
          file,
          "pre_tokenizer.pretokenizers[0]",
          "only an Isolated Regex split is supported",
        );
      }
      checkPattern(regex, file, "pre_tokenizer.pretokenizers[0].pattern.Regex");
      return regex;
    }
    throw new DataError(
      file,
      "pre_tokenizer.pretokenizers",
      `only [Split, ByteLevel without regex] is supported, not ${show(seq.map((p) => p.type))}`,
    );
  }
  throw new DataError(file, "pre_tokenizer", `pre-tokenizer ${show(pre?.type)} is not byte-level BPE`);
}

/** A JSON object: not null, not an array. */
function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** A value as it would read in the file, cut short: for error messages. */
function show(value: unknown): string {
  const text = JSON.stringify(value) ?? String(value);
  return text.length > 60 ? text.slice(0, 57) + "..." : text;
}

/**
 * A token id from a file, checked before it indexes an array: an integer from 0 below
 * {@linkcode MAX_VOCAB_SIZE} (the arrays are as long as the largest id: a huge one would make kiln
 * walk that many slots) that no other token (`owners`: id → who has it) has.
 */
function checkId(
  value: unknown,
  owners: Map<number, string>,
  owner: string,
  file: string,
  where: string,
): number {
  if (typeof value !== "number" || !Number.isInteger(value) || value < 0) {
    throw new DataError(file, where, `id ${show(value)} is not a non-negative integer`);
  }
  if (value >= MAX_VOCAB_SIZE) {
    throw new DataError(
      file,
      where,
      `id ${value} is past the largest vocabulary kiln supports (${MAX_VOCAB_SIZE} ids)`,
    );
  }
  const other = owners.get(value);
  if (other !== undefined) throw new DataError(file, where, `id ${value} is taken by ${other}`);
  owners.set(value, owner);
  return value;
}

/**
 * Refuses a pattern the pre-tokenizer cannot run (see `pretokenize.ts`: known patterns have exact
 * scanners, others must compile on RE2, which runs in linear time), naming the file and field.
 */
function checkPattern(pattern: string, file: string, field: string): void {
  if (isKnownPattern(pattern)) return;
  try {
    pretokenizer(pattern);
  } catch (e) {
    throw new DataError(file, field, (e as Error).message);
  }
}

function build(file: string, spec: ConstructorParameters<typeof Tokenizer>[0]): Tokenizer {
  try {
    return new Tokenizer(spec);
  } catch (e) {
    throw new DataError(file, undefined, (e as Error).message);
  }
}

async function readText(path: string): Promise<string> {
  try {
    return await Deno.readTextFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new DataError(path, undefined, "no such file");
    throw e;
  }
}

/**
 * Loads a tokenizer by name (`gpt2`, `cl100k_base`) or from a file, recognising the format by its
 * content: kiln's JSON, Hugging Face's `tokenizer.json`, GPT-2's `encoder.json` (with `vocab.bpe` in
 * the same directory; a directory holding both also works), or a tiktoken rank file.
 */
export async function loadTokenizer(source: string, opts: RankFileOptions = {}): Promise<Tokenizer> {
  if (source === "gpt2") return gpt2Tokenizer();
  if (source === "cl100k_base") return cl100kTokenizer();
  let path = source;
  const info = await Deno.stat(path).catch(() => undefined);
  if (!info) {
    throw new DataError(
      source,
      undefined,
      `no such file (nor a tokenizer name: ${NAMED_TOKENIZERS.join(", ")})`,
    );
  }
  if (info.isDirectory) path = `${path.replace(/\/$/, "")}/encoder.json`;
  const text = await readText(path);
  if (!text.trimStart().startsWith("{")) return fromTiktoken(text, opts, path);
  let json: Record<string, unknown>;
  try {
    json = JSON.parse(text);
  } catch (e) {
    throw new DataError(path, undefined, `not JSON (${(e as Error).message})`);
  }
  if (json.format === "kiln-bpe") return Tokenizer.fromJSON(json, path);
  // (GPT-2's encoder.json has a token "model" too, but its value is an id.)
  if (typeof json.model === "object" && json.model !== null) return fromHuggingFace(text, path);
  const vocab = path.replace(/[^/]*$/, "vocab.bpe");
  return fromGpt2Files(text, await readText(vocab), { encoder: path, vocab });
}
