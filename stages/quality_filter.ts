/**
 * The `quality-filter` stage: datatrove-style rule filters (Gopher quality and repetition, C4, FineWeb,
 * length, URL block lists, language), filters of your own, GPT-3's quality classifier, then optional
 * PII masking, run per shard on the worker pool. Dropped documents go to `excluded/<filter>/<shard>`
 * with `meta.filter_reason`; the stats give, per filter, the documents and characters it saw and
 * dropped, and why (the funnel the run report draws).
 *
 * The config, what the stage reads and what its key covers are made from the filter list
 * (`filters/mod.ts`); each filter's settings live with the filter. A filter of your own is a module
 * named in `custom` (see `filters/custom.ts`): its code is part of the cache key through the stage's
 * fingerprint, and the stage's process may read it.
 *
 * @example
 * ```ts
 * import { qualityFilter } from "./quality_filter.ts";
 * const stage = qualityFilter({
 *   c4: true,
 *   classifier: { reference: ["data/ref/*.txt"] },
 *   custom: [{ module: "./no_shouting.ts", export: "noShouting", config: { maxUpper: 0.5 } }],
 * });
 * ```
 * @module
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { z } from "npm:zod@^4.6.7";
import { moduleGraph } from "../pipeline/code_hash.ts";
import { ConfigError } from "../pipeline/errors.ts";
import { fingerprintFiles } from "../pipeline/files.ts";
import { defineStage, localPaths, type StageContext } from "../pipeline/stage.ts";
import { documentShards, excludedExamples, outputNames, reportBadLines } from "./documents.ts";
import {
  buildChain,
  type ChainOptions,
  CUSTOM_BEFORE,
  customOptions,
  customPath,
  customSchema,
  type FilterModule,
  FILTERS,
} from "./filters/mod.ts";
import type { FilterCounts, FilterShardArgs, FilterShardResult } from "./filters/shard.ts";

const SHARD = new URL("./filters/shard.ts", import.meta.url).href;

type Builtin = (typeof FILTERS)[number];

/** The config's fields: each filter's, in the order they run; its group's switch before it; then the rest. */
type Shape =
  & { [F in Builtin as F["name"]]: F["schema"] }
  & { [G in NonNullable<Builtin["group"]>]: z.ZodOptional<z.ZodBoolean> }
  & { custom: z.ZodOptional<typeof customSchema>; writeExcluded: z.ZodDefault<z.ZodBoolean> };

const shape: Record<string, z.ZodType> = {};
for (const filter of FILTERS as readonly FilterModule[]) {
  // A group's switch: `gopher: false` turns both Gopher filters off.
  if (filter.group) shape[filter.group] ??= z.boolean().optional();
  // Custom filters, `[{ module, export?, name?, config? }]`, run in this order before the classifier.
  if (filter.name === CUSTOM_BEFORE) shape.custom = customSchema.optional();
  shape[filter.name] = filter.schema;
}
// Write dropped documents to `excluded/<filter>/` for inspection.
shape.writeExcluded = z.boolean().default(true);

const schema = z.strictObject(shape as Shape);

type Config = z.output<typeof schema>;

/** A filter's config field, and whether its group is switched off. */
const fieldOf = (config: Config, filter: FilterModule) => ({
  value: (config as Record<string, unknown>)[filter.name],
  off: filter.group !== undefined && (config as Record<string, unknown>)[filter.group] === false,
});

/** Files the config names (block lists, the classifier's reference or model). */
const configFiles = (config: Config) =>
  (FILTERS as readonly FilterModule[]).flatMap((f) => f.files?.(fieldOf(config, f).value) ?? []);

/** The options the shard workers build the chain from; runs each filter's `prepare` (the classifier trains). */
async function chainOptions(ctx: StageContext<Config, "documents">, inputs: string[]): Promise<ChainOptions> {
  const chain: Record<string, unknown> = {};
  const prepareContext = {
    inputs: inputs.map((file) => ctx.input.path(file)),
    out: ctx.out,
    stats: ctx.stats,
    log: (message: string) => ctx.log(message),
  };
  for (const filter of FILTERS as readonly FilterModule[]) {
    const { value, off } = fieldOf(ctx.config, filter);
    if (off) continue;
    const options = filter.prepare
      ? await filter.prepare(value, prepareContext)
      : value === false
      ? undefined
      : value === true
      ? {}
      : value;
    if (options !== undefined) chain[filter.name] = options;
  }
  if (ctx.config.custom?.length) {
    chain.custom = customOptions(ctx.config.custom);
    // Built once here, so a custom filter that cannot load, or has a bad config, fails before the shards.
    await buildChain(chain);
  }
  return chain;
}

export const qualityFilter = defineStage({
  name: "quality-filter",
  version: 1,
  module: import.meta.url,
  input: "documents",
  output: "documents",
  schema,
  permissions: (config) => ({
    read: localPaths(configFiles(config), (config.custom ?? []).map((c) => customPath(c.module))),
  }),
  description:
    "Gopher, C4 and FineWeb rules, URL/language/length filters, your own filters, GPT-3 quality classifier, " +
    "PII masking",
  // Files the config names, and each custom filter's code: its module and what that imports (the
  // stage's own code hash covers only the stage's import graph). The stage process may read these.
  fingerprint: async (config) => {
    const files = configFiles(config);
    const fingerprint = files.length ? await fingerprintFiles(files) : null;
    if (!config.custom?.length) return fingerprint;
    const custom = [];
    for (const [i, c] of config.custom.entries()) {
      const path = resolve(customPath(c.module));
      let graph;
      try {
        graph = await moduleGraph(pathToFileURL(path).href);
      } catch (e) {
        if (!(e instanceof Deno.errors.NotFound)) throw e;
        throw new ConfigError("quality-filter", ["custom", String(i), "module"], (e as Error).message);
      }
      custom.push({ module: path, code: graph.digest, files: graph.files });
    }
    return { files: fingerprint, custom };
  },
  async run(ctx) {
    const inputs = documentShards(ctx.input);
    const outputs = outputNames(inputs);
    const chain = await chainOptions(ctx, inputs);
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
          documentsIn: 0,
          charactersIn: 0,
          droppedDocuments: 0,
          droppedCharacters: 0,
          reasons: {},
          changes: {},
        };
        t.documentsIn += c.documentsIn;
        t.charactersIn += c.charactersIn;
        t.droppedDocuments += c.droppedDocuments;
        t.droppedCharacters += c.droppedCharacters;
        for (const [k, n] of Object.entries(c.reasons)) t.reasons[k] = (t.reasons[k] ?? 0) + n;
        for (const [k, n] of Object.entries(c.changes)) t.changes[k] = (t.changes[k] ?? 0) + n;
      }
    }
    const sum = (f: (r: FilterShardResult) => number) => results.reduce((a, r) => a + f(r), 0);
    ctx.stats.set("documentsIn", sum((r) => r.documents));
    ctx.stats.set("charactersIn", sum((r) => r.characters));
    ctx.stats.set("documentsOut", sum((r) => r.kept));
    ctx.stats.set("charactersOut", sum((r) => r.keptCharacters));
    ctx.stats.set("filters", filters);
    // The run report draws this as the filter funnel: documents left after each filter, in chain order.
    ctx.stats.set("funnel", [
      { name: "input", documents: sum((r) => r.documents) },
      ...Object.entries(filters).map(([name, c]) => ({
        name,
        documents: c.documentsIn - c.droppedDocuments,
      })),
    ]);
    ctx.log(
      `${sum((r) => r.documents)} documents in, ${sum((r) => r.kept)} kept; dropped ${
        Object.entries(filters).map(([n, c]) => `${c.droppedDocuments} by ${n}`).join(", ")
      }`,
    );
    const warning = keptTooFewWarning(sum((r) => r.documents), sum((r) => r.kept), filters);
    if (warning) {
      ctx.stats.set("warning", warning);
      ctx.log(`warning: ${warning}`);
    }
    // A few of the dropped documents per reason, for the report.
    const written = await ctx.out.list();
    ctx.stats.set("examples", await excludedExamples(written, (f) => ctx.out.path(f), ctx.stats.toJSON()));
  },
});

/** Below this share of documents kept, the stage warns: a setting is more likely wrong than the data. */
const KEPT_SHARE_WARNING = 0.05;

/** A warning naming the filter that dropped most, when nearly every document was dropped. */
export function keptTooFewWarning(
  documentsIn: number,
  kept: number,
  filters: Record<string, { droppedDocuments: number }>,
): string | undefined {
  if (documentsIn < 20 || kept >= documentsIn * KEPT_SHARE_WARNING) return undefined;
  const [worst, counts] =
    Object.entries(filters).sort((a, b) => b[1].droppedDocuments - a[1].droppedDocuments)[0];
  const hint = worst === "classifier"
    ? " The classifier keeps a document when a Pareto draw (GPT-3's rule, alpha 9) beats 1 − its score, so it " +
      "keeps little of a crawl that looks unlike the reference corpus: use a reference closer to the crawl, " +
      'mode: "threshold" with a lower threshold, or a smaller alpha.'
    : "";
  return `only ${kept} of ${documentsIn} documents kept (${(100 * kept / documentsIn).toFixed(1)} %); ` +
    `${worst} dropped ${counts.droppedDocuments}.${hint}`;
}
