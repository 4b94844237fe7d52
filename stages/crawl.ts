/**
 * The `crawl` stage: web archives, local files, JSONL and Parquet documents and the live web in;
 * clean text documents out (`crawl-NNNNN.jsonl.gz`, one shard per archive / JSONL or Parquet file /
 * group of local files, then `crawl-live-NNNNN.jsonl.gz` batches from the live crawler).
 *
 * Each document is `{id, text, url, meta}` with `meta`: `url`, `fetchTime`, `status` (HTTP),
 * `contentType`, `charset` (declared, or detected when undeclared or contradicted by the bytes), `title`,
 * `lang` (ISO 639-1; `und` for text too short or not words) and `langScore` (0–1, lower for short texts),
 * `source` (archive path or URL, local file, or the live crawl's WARC file) and `offset` (byte offset
 * of the record in `source`, of its gzip member for compressed archives).
 *
 * Stats: `records` read, `skipped.<reason>` (`record-type`, `robots-txt`, `sitemap` and `metadata`
 * for archived records that are not pages, `status`, `type`, `size`, `empty`,
 * `robots`, `error`, `redirects`, `scope`, `duplicate`, `bad-line`…), `bytesIn`, `documents`,
 * `warnings` (damage found in archives, with byte offsets, also written to the log), and for the
 * live crawl `fetched`, `robotsFetched`, `retries` and `linksBeyondMaxPages` (links found once
 * `maxPages` URLs were queued: never fetched, so not kept).
 *
 * The live crawl resumes after a crash or kill -9 without fetching again a page it has written out
 * (see `crawl/frontier.ts`).
 *
 * Permissions: `--allow-read` for local archives, files and JSONL; `--allow-net` for archive URLs
 * and the live crawl (`--allow-net=host,…` for just the seeds' hosts and the archives' hosts).
 *
 * @example Two local archives and a small live crawl
 * ```ts
 * import { crawl } from "./crawl.ts";
 * const stage = crawl({
 *   warc: ["examples/data/*.warc.gz"],
 *   urls: { seeds: ["https://example.org/"], maxPages: 50, maxDepth: 2 },
 * });
 * console.log(stage.config.urls?.delayMs); // 1000: one request a second per host by default
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { defineStage, localPaths, urlHosts } from "../pipeline/stage.ts";
import { expandFiles, fingerprintFiles } from "../pipeline/files.ts";
import type { ShardTask } from "../pipeline/pool.ts";
import type { ShardResult } from "./crawl/sources.ts";
import { crawl as crawlLive } from "./crawl/crawler.ts";
import { allowPrivateNetworkSchema } from "./crawl/address.ts";
import { parquetFiles, parquetSourceSchema } from "./crawl/parquet.ts";

const MiB = 1024 * 1024;

const urlsSchema = z.object({
  seeds: z.array(z.url({ protocol: /^https?$/ })).min(1),
  scope: z.enum(["host", "domain", "any"]).default("host"),
  allow: z.array(z.string()).default([]),
  deny: z.array(z.string()).default([]),
  maxDepth: z.number().int().min(0).default(3),
  maxPages: z.number().int().positive().default(1000),
  userAgent: z.string().min(1).default("kiln-crawler/0.1 (+https://github.com/kiln)"),
  robots: z.boolean().default(true),
  concurrency: z.number().int().positive().default(8),
  delayMs: z.number().min(0).default(1000),
  retries: z.number().int().min(0).default(3),
  backoffMs: z.number().min(0).default(1000),
  maxRetryAfterMs: z.number().min(0).default(60_000),
  maxRedirects: z.number().int().min(0).default(5),
  connectTimeoutMs: z.number().positive().default(10_000),
  timeoutMs: z.number().positive().default(30_000),
  batchPages: z.number().int().positive().default(50),
  warc: z.boolean().default(false),
});

const schema = z.object({
  /** WARC/ARC files: paths, globs, http(s) URLs. */
  warc: z.array(z.string()).default([]),
  /** Local HTML, text and Markdown files: paths or globs. */
  files: z.array(z.string()).default([]),
  /** JSONL document files (`{id, text, url?, meta?}` a line; .gz/.zst allowed). */
  jsonl: z.array(z.string()).default([]),
  /**
   * Parquet document files (paths, globs, http(s) URLs), or `{ files, text?, id?, url?, meta? }`
   * naming the columns (see `crawl/parquet.ts`).
   */
  parquet: parquetSourceSchema.default([]),
  /** The live crawler; absent: no live crawl. */
  urls: urlsSchema.optional(),
  /** Media types turned into documents. */
  contentTypes: z.array(z.string()).default(["text/html", "application/xhtml+xml", "text/plain"]),
  /** Largest record, file or page body considered, in bytes. */
  maxBytes: z.number().int().positive().default(16 * MiB),
  /** Documents with less text than this (characters) are skipped. */
  minChars: z.number().int().min(0).default(1),
  /** Local files per output shard. */
  filesPerShard: z.number().int().positive().default(1000),
  /** Keep archived robots.txt, sitemaps and `metadata://`/`dns:` records as documents (default: skipped). */
  keepNonPages: z.boolean().default(false),
  /** Follow symbolic links that lead outside the folders the globs of `warc`, `files`… name. */
  followSymlinks: z.boolean().default(false),
  /** Addresses that are not public (loopback, private…) archive URLs and `urls` may reach: `true` or ranges. */
  allowPrivateNetwork: allowPrivateNetworkSchema,
}).refine(
  (c) =>
    c.warc.length + c.files.length + c.jsonl.length + parquetFiles(c.parquet).files.length > 0 ||
    c.urls !== undefined,
  { message: "give at least one source: warc, files, jsonl, parquet or urls" },
);

/** The crawl stage's config after defaults. */
export type CrawlConfig = z.output<typeof schema>;

const shardName = (i: number) => `crawl-${String(i).padStart(5, "0")}.jsonl.gz`;
const worker = (fn: string, module = "./crawl/sources.ts") => ({
  module: new URL(module, import.meta.url).href,
  fn,
});

/** The crawl stage factory. */
export const crawl = defineStage({
  name: "crawl",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema,
  permissions: (config) => ({
    read: localPaths(config.warc, config.files, config.jsonl, parquetFiles(config.parquet).files),
    // The live crawl reaches its seeds' hosts, or any host when its scope is wider.
    net: config.urls && config.urls.scope !== "host" ? true : urlHosts(config.urls?.seeds ?? []),
  }),
  description: "WARC/ARC archives, local files, JSONL and the live web to clean text documents",
  fingerprint: async (config) => ({
    warc: await fingerprintFiles(config.warc, { followSymlinks: config.followSymlinks }),
    files: await fingerprintFiles(config.files, { followSymlinks: config.followSymlinks }),
    jsonl: await fingerprintFiles(config.jsonl, { followSymlinks: config.followSymlinks }),
    parquet: await fingerprintFiles(parquetFiles(config.parquet).files, {
      followSymlinks: config.followSymlinks,
    }),
  }),
  async run(ctx) {
    const { config } = ctx;
    const opts = {
      contentTypes: config.contentTypes,
      maxBytes: config.maxBytes,
      minChars: config.minChars,
      allowPrivateNetwork: config.allowPrivateNetwork,
      keepNonPages: config.keepNonPages,
    };
    const links = {
      followSymlinks: config.followSymlinks,
      onOutside: (path: string, target: string) => {
        ctx.stats.add("skipped.symlink", 1);
        ctx.log(`crawl: ${path} leads outside its folder, to ${target}: skipped (see followSymlinks)`);
      },
    };
    const totals: Record<string, number> = {};
    const addAll = (stats: Record<string, number>) => {
      for (const [k, v] of Object.entries(stats)) totals[k] = (totals[k] ?? 0) + v;
    };

    // Sources in a fixed order (archives, files, JSONL; each sorted), so shard numbers are stable.
    let index = 0;
    const runKind = async <A>(fn: string, tasks: ShardTask<A>[], module?: string) => {
      if (!tasks.length) return;
      const results = await ctx.runShards<A, ShardResult>(worker(fn, module), tasks);
      for (const [i, result] of results.entries()) {
        addAll(result.stats);
        for (const warning of result.warnings) ctx.log(`crawl: ${warning}`);
        if (result.stats.warnings > result.warnings.length) {
          ctx.log(`crawl: ${tasks[i].id}: ${result.stats.warnings - result.warnings.length} more warnings`);
        }
      }
    };
    const archives = await expandFiles(config.warc, links);
    await runKind(
      "warcShard",
      archives.map((location) => ({
        id: `warc:${location}`,
        args: { location, shard: shardName(index++), opts },
      })),
    );
    const files = await expandFiles(config.files, links);
    const groups: string[][] = [];
    for (let i = 0; i < files.length; i += config.filesPerShard) {
      groups.push(files.slice(i, i + config.filesPerShard));
    }
    await runKind(
      "filesShard",
      groups.map((paths) => ({
        id: `files:${paths[0]}:${paths.length}`,
        args: { paths, shard: shardName(index++), opts },
      })),
    );
    const jsonl = await expandFiles(config.jsonl, links);
    await runKind(
      "jsonlShard",
      jsonl.map((path) => ({
        id: `jsonl:${path}`,
        args: { path, shard: shardName(index++), opts },
      })),
    );
    const parquet = parquetFiles(config.parquet);
    await runKind(
      "parquetShard",
      (await expandFiles(parquet.files, links)).map((location) => ({
        id: `parquet:${location}`,
        args: { location, columns: parquet.columns, shard: shardName(index++), opts },
      })),
      "./crawl/parquet.ts",
    );

    if (config.urls) {
      addAll(await crawlLive(config.urls, opts, ctx));
    }
    for (const [k, v] of Object.entries(totals)) ctx.stats.set(k, v);
  },
});
