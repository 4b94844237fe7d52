/**
 * The `quality-filter` stage: datatrove-style rule filters (Gopher quality and repetition, C4, FineWeb,
 * length, URL block lists, language) and GPT-3's quality classifier, then optional PII masking, run
 * per shard on the worker pool. Dropped documents go to `excluded/<filter>/<shard>` with
 * `meta.filter_reason`; the stats give, per filter, the documents and characters it saw and dropped,
 * and why (the funnel the run report draws).
 *
 * The classifier is trained once, before the shards run, on `classifier.reference` (text files, split
 * into documents at blank lines, or JSONL document shards: the positives) against a seeded sample of
 * the input (the negatives), and saved as `classifier.json` in the artifact; `classifier.model` reuses
 * a saved one instead.
 *
 * @example
 * ```ts
 * import { qualityFilter } from "./quality_filter.ts";
 * const stage = qualityFilter({ gopherQuality: true, c4: true, classifier: { reference: ["data/ref/*.txt"] } });
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { ConfigError } from "../pipeline/errors.ts";
import { expandFiles, fingerprintFiles } from "../pipeline/files.ts";
import { defineStage, localPaths, type StageContext } from "../pipeline/stage.ts";
import { documentShards, isDocumentShard, readDocuments } from "./documents.ts";
import { type ClassifierModel, QualityClassifier, trainClassifier } from "./filters/classifier.ts";
import { mulberry32 } from "../model/rng.ts";
import { outputNames, reportBadLines } from "./filters/io.ts";
import type { ChainOptions } from "./filters/mod.ts";
import type { FilterCounts, FilterShardArgs, FilterShardResult } from "./filters/shard.ts";

const SHARD = new URL("./filters/shard.ts", import.meta.url).href;

/** `true` (defaults), `false` (off) or an object overriding some thresholds. */
const toggle = <T extends z.ZodRawShape>(shape: T, on: boolean) =>
  z.union([z.boolean(), z.strictObject(shape).partial()]).default(on);
const ratio = z.number().min(0);

const schema = z.strictObject({
  /** Both Gopher filters at once; `gopherQuality` / `gopherRepetition` set them one by one. */
  gopher: z.boolean().optional(),
  gopherQuality: toggle({
    minDocWords: z.number().int().min(0),
    maxDocWords: z.number().int().min(0),
    minAvgWordLength: ratio,
    maxAvgWordLength: ratio,
    maxSymbolWordRatio: ratio,
    maxBulletLinesRatio: ratio,
    maxEllipsisLinesRatio: ratio,
    maxNonAlphaWordsRatio: ratio,
    minStopWords: z.number().int().min(0),
    stopWords: z.array(z.string()),
  }, true),
  gopherRepetition: toggle({
    dupLineFrac: ratio,
    dupParaFrac: ratio,
    dupLineCharFrac: ratio,
    dupParaCharFrac: ratio,
    topNGrams: z.array(z.tuple([z.number().int().min(1), ratio])),
    dupNGrams: z.array(z.tuple([z.number().int().min(1), ratio])),
  }, true),
  c4: toggle({
    filterNoTerminalPunct: z.boolean(),
    minWordsPerLine: z.number().int().min(0),
    maxWordLength: z.number().int().min(1),
    minSentences: z.number().int().min(0),
    filterLoremIpsum: z.boolean(),
    filterJavascript: z.boolean(),
    filterCurlyBracket: z.boolean(),
    filterPolicy: z.boolean(),
    removeCitations: z.boolean(),
  }, false),
  fineweb: toggle({
    linePunctThr: ratio,
    linePunctExcludeZero: z.boolean(),
    shortLineThr: ratio,
    shortLineLength: z.number().int().min(0),
    charDuplicatesRatio: ratio,
    newLineRatio: ratio,
  }, false),
  length: z.union([
    z.literal(false),
    z.strictObject({
      minChars: z.number().int().min(0).optional(),
      maxChars: z.number().int().min(0).optional(),
      minWords: z.number().int().min(0).optional(),
      maxWords: z.number().int().min(0).optional(),
    }),
  ]).default(false),
  urls: z.union([
    z.literal(false),
    z.strictObject({
      /** Blocked domains (their subdomains too). */
      domains: z.array(z.string()).default([]),
      /** Block-list files: one domain a line, `#` comments (UT1 or hosts-file style). */
      files: z.array(z.string()).default([]),
      /** Words that block a URL when they appear in its host, path or query. */
      words: z.array(z.string()).default([]),
    }),
  ]).default(false),
  language: z.union([
    z.literal(false),
    z.strictObject({
      languages: z.array(z.string()).min(1).default(["en"]),
      /** ELD's score for the detected language (clean prose scores ≈ 0.7–0.8). */
      minScore: z.number().min(0).max(1).default(0.5),
    }),
  ]).default(false),
  classifier: z.union([
    z.literal(false),
    z.strictObject({
      /** Reference corpus (positives): paths or globs of text files or JSONL document shards. */
      reference: z.union([z.string(), z.array(z.string())]).optional(),
      /** A saved `classifier.json` to use instead of training. */
      model: z.string().optional(),
      mode: z.enum(["pareto", "threshold"]).default("pareto"),
      /** Shape of the Pareto draw (GPT-3: 9). */
      alpha: z.number().gt(0).default(9),
      threshold: z.number().min(0).max(1).default(0.5),
      seed: z.number().int().default(1),
      featureBits: z.number().int().min(8).max(24).default(18),
      ngrams: z.number().int().min(1).max(5).default(2),
      epochs: z.number().int().min(1).default(5),
      /** At most this many documents per class are used for training (a seeded sample). */
      maxDocuments: z.number().int().min(10).default(20_000),
    }).refine((c) => (c.reference === undefined) !== (c.model === undefined), {
      message: "give either reference (to train) or model (a saved classifier.json)",
    }),
  ]).default(false),
  pii: toggle({
    emails: z.boolean(),
    ips: z.boolean(),
    emailReplacement: z.string(),
    ipReplacement: z.string(),
  }, false),
  /** Write dropped documents to `excluded/<filter>/` for inspection. */
  writeExcluded: z.boolean().default(true),
});

type Config = z.output<typeof schema>;

const patterns = (p: string | string[] | undefined) => p === undefined ? [] : Array.isArray(p) ? p : [p];

function chainOptions(config: Config, classifierPath: string | undefined): ChainOptions {
  const on = <T>(value: boolean | T, gopher?: boolean): T | undefined => {
    if (gopher !== undefined && value === true) return gopher ? {} as T : undefined;
    return value === false ? undefined : value === true ? {} as T : value;
  };
  const c = config.classifier;
  return {
    length: config.length || undefined,
    urls: config.urls
      ? { domains: config.urls.domains, domainFiles: config.urls.files, words: config.urls.words }
      : undefined,
    language: config.language || undefined,
    gopherRepetition: config.gopher === false ? undefined : on(config.gopherRepetition),
    gopherQuality: config.gopher === false ? undefined : on(config.gopherQuality),
    c4: on(config.c4),
    fineweb: on(config.fineweb),
    classifier: c && classifierPath
      ? { model: classifierPath, mode: c.mode, alpha: c.alpha, threshold: c.threshold, seed: c.seed }
      : undefined,
    pii: on(config.pii),
  };
}

export const qualityFilter = defineStage({
  name: "quality-filter",
  version: 1,
  module: import.meta.url,
  input: "documents",
  output: "documents",
  schema,
  permissions: (config) => ({
    read: localPaths(
      config.urls ? config.urls.files : [],
      config.classifier ? config.classifier.reference : [],
      config.classifier ? config.classifier.model : [],
    ),
  }),
  description:
    "Gopher, C4 and FineWeb rules, URL/language/length filters, GPT-3 quality classifier, PII masking",
  fingerprint: async (config) => {
    const files = [
      ...config.urls ? config.urls.files : [],
      ...config.classifier
        ? [...patterns(config.classifier.reference), ...patterns(config.classifier.model)]
        : [],
    ];
    return files.length ? await fingerprintFiles(files) : null;
  },
  async run(ctx) {
    const inputs = documentShards(ctx.input);
    const outputs = outputNames(inputs);
    const classifierPath = ctx.config.classifier ? await prepareClassifier(ctx, inputs) : undefined;
    const chain = chainOptions(ctx.config, classifierPath);
    const results = await ctx.runShards<FilterShardArgs, FilterShardResult>(
      { module: SHARD, fn: "filterShard" },
      inputs.map((file, i) => ({
        id: `filter:${file}`,
        args: {
          path: ctx.input.path(file),
          outName: outputs[i],
          chain,
          writeExcluded: ctx.config.writeExcluded,
        },
      })),
    );
    reportBadLines(ctx, inputs, results);
    const filters: Record<string, FilterCounts> = {};
    for (const r of results) {
      for (const [name, c] of Object.entries(r.filters)) {
        const t = filters[name] ??= {
          documents_in: 0,
          characters_in: 0,
          dropped_documents: 0,
          dropped_characters: 0,
          reasons: {},
          changes: {},
        };
        t.documents_in += c.documents_in;
        t.characters_in += c.characters_in;
        t.dropped_documents += c.dropped_documents;
        t.dropped_characters += c.dropped_characters;
        for (const [k, n] of Object.entries(c.reasons)) t.reasons[k] = (t.reasons[k] ?? 0) + n;
        for (const [k, n] of Object.entries(c.changes)) t.changes[k] = (t.changes[k] ?? 0) + n;
      }
    }
    const sum = (f: (r: FilterShardResult) => number) => results.reduce((a, r) => a + f(r), 0);
    ctx.stats.set("documents_in", sum((r) => r.documents));
    ctx.stats.set("characters_in", sum((r) => r.characters));
    ctx.stats.set("documents_out", sum((r) => r.kept));
    ctx.stats.set("characters_out", sum((r) => r.keptCharacters));
    ctx.stats.set("filters", filters);
    // The run report draws this as the filter funnel: documents left after each filter, in chain order.
    ctx.stats.set("funnel", [
      { name: "input", documents: sum((r) => r.documents) },
      ...Object.entries(filters).map(([name, c]) => ({
        name,
        documents: c.documents_in - c.dropped_documents,
      })),
    ]);
    ctx.log(
      `${sum((r) => r.documents)} documents in, ${sum((r) => r.kept)} kept; dropped ${
        Object.entries(filters).map(([n, c]) => `${c.dropped_documents} by ${n}`).join(", ")
      }`,
    );
    const warning = keptTooFewWarning(sum((r) => r.documents), sum((r) => r.kept), filters);
    if (warning) {
      ctx.stats.set("warning", warning);
      ctx.log(`warning: ${warning}`);
    }
  },
});

/** Below this share of documents kept, the stage warns: a setting is more likely wrong than the data. */
const KEPT_SHARE_WARNING = 0.05;

/** A warning naming the filter that dropped most, when nearly every document was dropped. */
export function keptTooFewWarning(
  documentsIn: number,
  kept: number,
  filters: Record<string, { dropped_documents: number }>,
): string | undefined {
  if (documentsIn < 20 || kept >= documentsIn * KEPT_SHARE_WARNING) return undefined;
  const [worst, counts] = Object.entries(filters).sort((a, b) => b[1].dropped_documents - a[1].dropped_documents)[0];
  const hint = worst === "classifier"
    ? " The classifier keeps a document when a Pareto draw (GPT-3's rule, alpha 9) beats 1 − its score, so it " +
      "keeps little of a crawl that looks unlike the reference corpus: use a reference closer to the crawl, " +
      'mode: "threshold" with a lower threshold, or a smaller alpha.'
    : "";
  return `only ${kept} of ${documentsIn} documents kept (${(100 * kept / documentsIn).toFixed(1)} %); ` +
    `${worst} dropped ${counts.dropped_documents}.${hint}`;
}

/** Trains the classifier (or copies the given one) into the artifact; returns its path. */
async function prepareClassifier(ctx: StageContext<Config, "documents">, inputs: string[]): Promise<string> {
  const c = ctx.config.classifier;
  if (!c) throw new Error("unreachable: no classifier configured");
  if (await ctx.out.exists("classifier.json")) return ctx.out.path("classifier.json");
  let model: ClassifierModel;
  if (c.model) {
    try {
      model = JSON.parse(await Deno.readTextFile(c.model));
      new QualityClassifier(model);
    } catch (e) {
      throw new ConfigError("quality-filter", ["classifier", "model"], `${c.model}: ${(e as Error).message}`);
    }
  } else {
    const random = mulberry32(c.seed);
    const positives = sampler(c.maxDocuments, random);
    for (const file of await expandFiles(patterns(c.reference))) {
      for await (const text of referenceTexts(file)) positives.add(text);
    }
    const negatives = sampler(c.maxDocuments, random);
    for (const file of inputs) {
      for await (const { doc } of readDocuments(ctx.input.path(file))) negatives.add(doc.text);
    }
    const trained = trainClassifier(positives.items, negatives.items, {
      featureBits: c.featureBits,
      ngrams: c.ngrams,
      epochs: c.epochs,
      seed: c.seed,
    });
    model = trained.model;
    ctx.log(
      `classifier trained on ${positives.items.length} reference and ${negatives.items.length} crawl documents; held out: accuracy ${
        trained.heldOut.accuracy.toFixed(3)
      }, AUC ${trained.heldOut.auc.toFixed(3)}`,
    );
  }
  ctx.stats.set("classifier", model.training ?? { model: c.model });
  await ctx.out.writeJson("classifier.json", model);
  return ctx.out.path("classifier.json");
}

/** Reservoir sampling: a seeded, uniform sample of at most `size` items from a stream. */
function sampler(size: number, random: () => number) {
  const items: string[] = [];
  let seen = 0;
  return {
    items,
    add(item: string) {
      seen++;
      if (items.length < size) items.push(item);
      else {
        const j = Math.floor(random() * seen);
        if (j < size) items[j] = item;
      }
    },
  };
}

/** Documents of a reference file: each document of a JSONL shard, or a text file's blank-line-separated chunks of up to ~20,000 characters. */
async function* referenceTexts(file: string): AsyncGenerator<string> {
  if (isDocumentShard(file)) {
    for await (const { doc } of readDocuments(file)) yield doc.text;
    return;
  }
  let chunk = "";
  for (const paragraph of (await Deno.readTextFile(file)).split(/\n\s*\n/)) {
    if (chunk && chunk.length + paragraph.length > 20_000) {
      yield chunk;
      chunk = "";
    }
    chunk += (chunk ? "\n\n" : "") + paragraph.trim();
  }
  if (chunk.trim()) yield chunk;
}
