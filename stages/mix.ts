/**
 * Stage `mix` (several documents artifacts → tokens): GPT-3's training mixture. Each source is a
 * documents artifact (a branch of the pipeline: a cleaned crawl, a book corpus, Wikipedia…) with a
 * weight (its share of the training tokens) or a number of epochs (how many times its tokens are
 * seen), and the stage writes llm.c token shards in which each source has that share.
 *
 * How the shares are met, in whole documents: every source is tokenized and its training documents'
 * tokens counted (N tokens); a source with `epochs: e` gets e·N tokens; the weighted sources share the
 * rest of `tokens` (default: as many tokens as the weighted sources hold together, one pass over them
 * in all) in proportion to their weights. A source's target of T tokens is met by repeating all its
 * documents ⌊T / N⌋ times and adding documents in a seeded random order until the remainder is
 * reached. Training reads windows from all shards in a shuffled order (see `model/data.ts`), so the
 * share of a source in the shards is its share of the batches. The validation split (by document id,
 * as `tokenize` does it) is written once per source, never repeated.
 *
 * The artifact: `tokenizer.json` (trained on every source's training documents, or loaded),
 * `train-<source>-NNNNN.bin` and `val-<source>-NNNNN.bin` per input shard; stats `sources` (per source:
 * documents, tokens available, tokens written, achieved share and epochs) for the report.
 *
 * @example GPT-3's recipe in miniature (a pipeline with stages `web`, `books` and `wiki`)
 * ```ts
 * import { mix } from "./mix.ts";
 * mix({
 *   bpe: { vocabSize: 4096 },
 *   sources: { web: { weight: 0.6 }, books: { weight: 0.16 }, wiki: { epochs: 3.4 } },
 * });
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { defineStage, localPaths } from "../pipeline/stage.ts";
import type { ShardEnv, ShardWorker } from "../pipeline/pool.ts";
import { ConfigError, DataError } from "../pipeline/errors.ts";
import { documentShards, readDocuments } from "./documents.ts";
import { END_OF_TEXT } from "../tokenizer/tokenizer.ts";
import { needsUint32 } from "../tokenizer/shards.ts";
import { mulberry32 } from "../model/rng.ts";
import { isValidation, prepareTokenizer, TokenBuffer, tokenizerAt, tokenizerSettings } from "./tokens.ts";

const share = z.union([
  z.object({
    /** Share of the training tokens (weights are normalised over the weighted sources). */
    weight: z.number().positive(),
  }).strict(),
  z.object({
    /** Times each of the source's tokens is seen (fractions sample documents). */
    epochs: z.number().positive(),
  }).strict(),
]);

const schema = z.object({
  /** The sources by the stage id that produces each (bind another id with `.from({ name: id })`). */
  sources: z.record(z.string().regex(/^[A-Za-z0-9_][\w.-]*$/), share).refine(
    (s) => Object.keys(s).length > 0,
    {
      message: "name at least one source",
    },
  ),
  /** Training tokens to write in all (default: what the weighted sources hold, plus the epoch sources'). */
  tokens: z.number().int().positive().optional(),
  /** Seeds the choice of documents. */
  seed: z.number().int().default(1),
  ...tokenizerSettings,
}).strict();

/** The config of {@linkcode mix}. */
export type MixConfig = z.output<typeof schema>;

/** Arguments of the counting pass, one task per input document shard. */
interface CountArgs {
  input: string;
  tokenizer: string;
  valFraction: number;
}

/** Token counts (separator included) of a shard's training documents, in file order. */
interface CountResult {
  counts: number[];
  documents: number;
}

/** Shard worker, first pass: how many tokens each training document of a shard has. */
export async function countShard(args: CountArgs): Promise<CountResult> {
  const tok = await tokenizerAt(args.tokenizer);
  const eot = tok.specialId(END_OF_TEXT);
  const counts: number[] = [];
  const ids: number[] = [];
  let documents = 0;
  for await (const { doc } of readDocuments(args.input)) {
    documents++;
    if (isValidation(doc.id, args.valFraction)) continue;
    ids.length = 0;
    ids.push(eot);
    tok.encodeInto(doc.text, ids);
    counts.push(ids.length);
  }
  return { counts, documents };
}

/** Arguments of the writing pass: how many times each training document of the shard is written. */
interface WriteArgs extends CountArgs {
  /** `train-${stem}.bin`, `val-${stem}.bin`. */
  stem: string;
  repeats: number[];
}

/** Shard worker, second pass: writes each training document its number of times, and the validation split. */
export async function writeMixShard(
  args: WriteArgs,
  env: ShardEnv,
): Promise<{ trainTokens: number; valTokens: number }> {
  const tok = await tokenizerAt(args.tokenizer);
  const eot = tok.specialId(END_OF_TEXT);
  const uint32 = needsUint32(tok.vocabSize);
  const train = new TokenBuffer(uint32), val = new TokenBuffer(uint32);
  const ids: number[] = [];
  let t = 0;
  for await (const { doc } of readDocuments(args.input)) {
    ids.length = 0;
    ids.push(eot);
    tok.encodeInto(doc.text, ids);
    if (isValidation(doc.id, args.valFraction)) val.append(ids);
    else for (let r = args.repeats[t++]; r > 0; r--) train.append(ids);
  }
  if (train.length) await env.out.writeFile(`train-${args.stem}.bin`, train.file());
  if (val.length) await env.out.writeFile(`val-${args.stem}.bin`, val.file());
  return { trainTokens: train.length, valTokens: val.length };
}

/**
 * How many times each document is written so that the source totals `target` tokens: every document
 * ⌊target / total⌋ times, then documents in a seeded random order until the remainder is covered.
 */
export function repeatsFor(counts: number[], target: number, seed: number): number[] {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return counts.map(() => 0);
  const full = Math.floor(target / total);
  const repeats = counts.map(() => full);
  let remainder = target - full * total;
  const order = counts.map((_, i) => i);
  const random = mulberry32(seed);
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j], order[i]];
  }
  for (const i of order) {
    if (remainder <= 0) break;
    repeats[i]++;
    remainder -= counts[i];
  }
  return repeats;
}

/** A seed per source: the stage's seed and the source's name, so adding a source changes no other. */
function sourceSeed(seed: number, name: string): number {
  let h = seed >>> 0;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193) >>> 0;
  return h;
}

const COUNT: ShardWorker = { module: import.meta.url, fn: "countShard" };
const WRITE: ShardWorker = { module: import.meta.url, fn: "writeMixShard" };

/** The mix stage. */
export const mix = defineStage({
  name: "mix",
  version: 1,
  module: import.meta.url,
  input: null,
  inputs: (config) => Object.fromEntries(Object.keys(config.sources).map((name) => [name, "documents"])),
  output: "tokens",
  schema,
  permissions: (config) => ({ read: localPaths(config.tokenizer) }),
  description: "GPT-3's training mixture: token shards from several document sets by weight or epochs",
  async run(ctx) {
    const { config } = ctx;
    const names = Object.keys(config.sources);
    const shards = Object.fromEntries(names.map((name) => [name, documentShards(ctx.uses[name])]));
    const files = names.flatMap((name) => shards[name].map((f) => ctx.uses[name].path(f)));
    const { path: tokenizer } = await prepareTokenizer(ctx, "mix", config, files);

    // First pass: the tokens of every training document, per source.
    const countTasks = names.flatMap((name) =>
      shards[name].map((file) => ({
        id: `count:${name}:${file}`,
        args: { input: ctx.uses[name].path(file), tokenizer, valFraction: config.valFraction },
      }))
    );
    const counted = await ctx.runShards<CountArgs, CountResult>(COUNT, countTasks);
    const countsOf: Record<string, CountResult[]> = {};
    for (const [i, task] of countTasks.entries()) {
      (countsOf[task.id.split(":")[1]] ??= []).push(counted[i]);
    }
    const available = Object.fromEntries(
      names.map((
        name,
      ) => [name, (countsOf[name] ?? []).reduce((a, r) => a + r.counts.reduce((x, y) => x + y, 0), 0)]),
    );

    // A source left with no training documents (everything filtered out upstream) cannot take its share:
    // it is left out with a warning, and the weighted sources that have documents share the rest.
    const empty = names.filter((name) => available[name] === 0);
    if (empty.length === names.length) {
      throw new DataError("mix", undefined, "no source has any training documents");
    }
    if (empty.length) {
      const warning = `no training documents in ${
        empty.map((n) => `"${n}"`).join(", ")
      }: left out of the mix`;
      ctx.stats.set("warning", warning);
      ctx.log(`warning: ${warning}`);
    }

    // The targets: epoch sources first, the weighted ones share the rest by weight.
    const target: Record<string, number> = {};
    let fixed = 0, weights = 0, weightedTokens = 0;
    for (const name of names) {
      const s = config.sources[name];
      if ("epochs" in s) fixed += target[name] = Math.round(s.epochs * available[name]);
      else if (available[name] > 0) (weights += s.weight, weightedTokens += available[name]);
    }
    const rest = config.tokens !== undefined ? config.tokens - fixed : weightedTokens;
    if (rest < 0) {
      throw new ConfigError(
        "mix",
        ["tokens"],
        `${config.tokens} is less than the ${fixed} tokens the epoch sources take`,
      );
    }
    for (const name of names) {
      const s = config.sources[name];
      if ("weight" in s) target[name] = available[name] ? Math.round(rest * s.weight / weights) : 0;
    }

    // Second pass: write each source's documents their number of times.
    const writeTasks = names.flatMap((name) => {
      const counts = (countsOf[name] ?? []).flatMap((r) => r.counts);
      const repeats = repeatsFor(counts, target[name], sourceSeed(config.seed, name));
      let offset = 0;
      return shards[name].map((file, i) => {
        const n = countsOf[name][i].counts.length;
        const args = {
          input: ctx.uses[name].path(file),
          tokenizer,
          valFraction: config.valFraction,
          stem: `${name}-${String(i).padStart(5, "0")}`,
          repeats: repeats.slice(offset, offset += n),
        };
        return { id: `write:${name}:${file}`, args };
      });
    });
    const written = await ctx.runShards<WriteArgs, { trainTokens: number; valTokens: number }>(
      WRITE,
      writeTasks,
    );
    const perSource: Record<string, { trainTokens: number; valTokens: number }> = {};
    for (const [i, task] of writeTasks.entries()) {
      const t = perSource[task.id.split(":")[1]] ??= { trainTokens: 0, valTokens: 0 };
      t.trainTokens += written[i].trainTokens;
      t.valTokens += written[i].valTokens;
    }
    const trainTokens = names.reduce((a, n) => a + (perSource[n]?.trainTokens ?? 0), 0);
    const stats: Record<string, unknown> = {};
    for (const name of names) {
      const got = perSource[name]?.trainTokens ?? 0;
      const wanted = "weight" in config.sources[name]
        ? { weight: (config.sources[name] as { weight: number }).weight / (weights || 1) }
        : { epochs: (config.sources[name] as { epochs: number }).epochs };
      stats[name] = {
        documents: (countsOf[name] ?? []).reduce((a, r) => a + r.documents, 0),
        tokensAvailable: available[name],
        tokensWritten: got,
        share: trainTokens ? Math.round(got / trainTokens * 1e4) / 1e4 : 0,
        epochs: available[name] ? Math.round(got / available[name] * 1e3) / 1e3 : 0,
        ...wanted,
      };
      ctx.log(
        `${name}: ${got} of ${trainTokens} training tokens (${
          (100 * got / Math.max(1, trainTokens)).toFixed(1)
        } %), ` +
          `${(got / Math.max(1, available[name])).toFixed(2)} epochs of its ${available[name]}`,
      );
    }
    ctx.stats.set("sources", stats);
    ctx.stats.set("trainTokens", trainTokens);
    ctx.stats.set("valTokens", names.reduce((a, n) => a + (perSource[n]?.valTokens ?? 0), 0));
  },
});
