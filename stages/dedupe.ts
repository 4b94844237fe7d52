/**
 * The `dedupe` stage: removes exact duplicates (same normalised text) and near duplicates (MinHash
 * LSH, datatrove's defaults: 5-word shingles, 14 bands × 8 rows, threshold ≈ 0.72), optionally also
 * the documents that duplicate another dataset (GPT-3 deduplicated its crawl against its reference
 * corpora). It runs as datatrove's scalable pipeline, each step resumable:
 *
 * 1. signatures, per shard on the worker pool: every document's band keys, sorted per band, into
 *    `signatures/NNNNN.bands` (kept in the artifact, so later datasets can deduplicate against it);
 * 2. pairs, per band on the worker pool: a k-way merge of that band's sorted runs;
 * 3. clusters: union-find over all pairs; each component keeps its smallest member (earliest shard,
 *    then earliest document), so the result does not depend on worker count or pair order;
 * 4. filter, per shard on the worker pool: kept documents to the output shard (the representative
 *    records `meta.dedupe_cluster_size`), removed ones to `excluded/dedupe/<shard>` with the reason
 *    and the id of the document kept instead.
 *
 * @example
 * ```ts
 * import { dedupe } from "./dedupe.ts";
 * const stage = dedupe({ exact: true, minhash: { threshold: 0.8 } });
 * ```
 * @module
 */
import { basename } from "node:path";
import { z } from "npm:zod@^4.6.7";
import { openArtifact } from "../pipeline/artifact.ts";
import { ConfigError } from "../pipeline/errors.ts";
import { fingerprintFiles } from "../pipeline/files.ts";
import { defineStage } from "../pipeline/stage.ts";
import { documentShards, excludedExamples, outputNames, reportBadLines } from "./documents.ts";
import { readPairs, type Run, UnionFind } from "./dedupe/buckets.ts";
import type { MinHashParams } from "./dedupe/minhash.ts";
import { webGpuUnavailable } from "./dedupe/minhash_gpu.ts";
import { bandLayout, effectiveThreshold } from "./dedupe/params.ts";
import {
  type Dropped,
  type FilterArgs,
  type PairsArgs,
  REASONS,
  type SignatureArgs,
  type SignatureResult,
} from "./dedupe/shards.ts";

const SHARDS = new URL("./dedupe/shards.ts", import.meta.url).href;

const minhashSchema = z.object({
  /** Words per shingle. */
  shingleWords: z.number().int().min(1).default(5),
  /** Similarity threshold; picks the band layout when `bands`/`rows` are not given. */
  threshold: z.number().gt(0).lt(1).optional(),
  /** Hash functions available to the band layout chosen from `threshold`. */
  hashes: z.number().int().min(1).max(1024).default(112),
  bands: z.number().int().min(1).optional(),
  rows: z.number().int().min(1).optional(),
  seed: z.number().int().default(1),
  /**
   * Apply the hash functions on a WebGPU device (one dispatch per batch of documents). The
   * signatures, and so the output, are bit-identical to the CPU's; without an adapter (or with
   * `KILN_BACKEND=cpu`) the stage says so in one line and uses the CPU.
   */
  gpu: z.boolean().default(false),
});

const schema = z.object({
  /** Remove documents whose normalised text equals an earlier one's. */
  exact: z.boolean().default(true),
  /** Near-duplicate detection, or false to turn it off. */
  minhash: z.union([z.literal(false), minhashSchema]).default(minhashSchema.parse({})),
  /**
   * Committed dedupe artifacts of other datasets (their directories): documents near or exactly
   * duplicating theirs are removed from this one. Their signature settings must match.
   */
  against: z.array(z.string()).default([]),
  /** Write removed documents to `excluded/dedupe/` for inspection. */
  writeExcluded: z.boolean().default(true),
});

type Config = z.output<typeof schema>;

/** The signatures index written into the artifact (`signatures/index.json`). */
export interface SignatureIndex {
  format: "kiln-dedupe-signatures/1";
  minhash: MinHashParams | null;
  exact: boolean;
  shards: { source: string; bands: string; ids: string; docs: number }[];
}

function minhashParams(config: Config): MinHashParams | null {
  const m = config.minhash;
  if (m === false) return null;
  if ((m.bands === undefined) !== (m.rows === undefined)) {
    throw new ConfigError(
      "dedupe",
      ["minhash", m.bands === undefined ? "bands" : "rows"],
      "give both bands and rows",
    );
  }
  const layout = m.bands !== undefined
    ? { bands: m.bands, rows: m.rows! }
    : m.threshold !== undefined
    ? bandLayout(m.threshold, m.hashes)
    : { bands: 14, rows: 8 };
  return { shingleWords: m.shingleWords, ...layout, seed: m.seed };
}

export const dedupe = defineStage({
  name: "dedupe",
  version: 1,
  module: import.meta.url,
  input: "documents",
  output: "documents",
  schema,
  permissions: (config) => ({ read: config.against }),
  description: "Exact and MinHash near-duplicate removal (datatrove defaults), resumable per shard",
  fingerprint: async (config) =>
    config.against.length ? await fingerprintFiles(config.against.map((d) => `${d}/manifest.json`)) : null,
  async run(ctx) {
    const params = minhashParams(ctx.config);
    const exact = ctx.config.exact;
    if (!params && !exact) {
      throw new ConfigError("dedupe", ["exact"], "both exact and minhash are off: nothing to do");
    }
    const bands = (params?.bands ?? 0) + (exact ? 1 : 0);
    if (params) {
      ctx.stats.set("minhash", {
        ...params,
        threshold: +effectiveThreshold(params.bands, params.rows).toFixed(3),
      });
    }

    // 1. Signatures, per shard (optionally on the GPU: same signatures, so the same output).
    let gpu = ctx.config.minhash !== false && ctx.config.minhash.gpu && params !== null;
    if (gpu) {
      const why = await webGpuUnavailable();
      if (why) {
        ctx.log(`minhash.gpu: ${why}; computing signatures on the CPU`);
        gpu = false;
      }
    }
    const inputs = documentShards(ctx.input);
    const outputs = outputNames(inputs);
    const shardFiles = inputs.map((_, i) => `signatures/${String(i).padStart(5, "0")}`);
    const signatures = await ctx.runShards<SignatureArgs, SignatureResult>(
      { module: SHARDS, fn: "signatureShard" },
      inputs.map((file, i) => ({
        id: `signatures:${file}`,
        args: {
          path: ctx.input.path(file),
          bandsFile: `${shardFiles[i]}.bands`,
          idsFile: `${shardFiles[i]}.ids.json`,
          minhash: params,
          exact,
          gpu,
        },
      })),
    );
    reportBadLines(ctx, inputs, signatures);
    const fallback = signatures.find((s) => s.gpuFallback)?.gpuFallback;
    if (fallback) ctx.log(`minhash.gpu: ${fallback}; some shards' signatures were computed on the CPU`);
    if (params) {
      const devices = [...new Set(signatures.map((s) => s.gpuDevice ? `webgpu: ${s.gpuDevice}` : "cpu"))];
      ctx.stats.set("minhashSignaturesOn", devices.sort().join(", "));
    }
    const index: SignatureIndex = {
      format: "kiln-dedupe-signatures/1",
      minhash: params,
      exact,
      shards: inputs.map((source, i) => ({
        source,
        bands: `${shardFiles[i]}.bands`,
        ids: `${shardFiles[i]}.ids.json`,
        docs: signatures[i].docs,
      })),
    };
    await ctx.out.writeJson("signatures/index.json", index);

    // Global ids: other datasets first (so a cluster touching them keeps theirs), then ours.
    const others = await Promise.all(ctx.config.against.map((dir) => openOther(dir, index)));
    const runs: Run[] = [];
    const owners: { dir: string; ids: string; base: number; docs: number; label?: string }[] = [];
    let base = 0;
    for (const other of others) {
      for (const shard of other.index.shards) {
        runs.push({ path: other.artifact.path(shard.bands), docs: shard.docs, base });
        owners.push({
          dir: other.artifact.dir,
          ids: other.artifact.path(shard.ids),
          base,
          docs: shard.docs,
          label: other.label,
        });
        base += shard.docs;
      }
    }
    const external = base;
    for (const shard of index.shards) {
      runs.push({ path: ctx.out.path(shard.bands), docs: shard.docs, base });
      owners.push({ dir: "", ids: ctx.out.path(shard.ids), base, docs: shard.docs });
      base += shard.docs;
    }
    if (base > 2 ** 32) {
      throw new ConfigError("dedupe", [], `${base} documents: more than 2³² are not supported`);
    }

    // 2. Duplicate pairs, per band.
    const pairsPath = (band: number) =>
      ctx.checkpoint.path(`pairs/band-${String(band).padStart(3, "0")}.bin`);
    const pairs = await ctx.runShards<PairsArgs, { pairs: number }>(
      { module: SHARDS, fn: "pairsShard" },
      Array.from({ length: bands }, (_, band) => ({
        id: `pairs:${band}`,
        args: { runs, band, pairsPath: pairsPath(band), skipBelow: external },
      })),
    );
    ctx.stats.set("candidatePairs", pairs.reduce((a, p) => a + p.pairs, 0));

    // 3. Clusters (one step, checkpointed as a whole).
    type Plan = { removed: FilterArgs["removed"][]; representatives: FilterArgs["representatives"][] };
    let plan = await ctx.checkpoint.load<Plan & { clusters: unknown }>("clusters");
    if (!plan) {
      plan = await clusters(bands, exact, pairsPath, external, owners, index.shards.length);
      await ctx.checkpoint.save("clusters", plan);
    }
    ctx.stats.set("clusters", plan.clusters);

    // 4. Filter, per shard.
    const results = await ctx.runShards<
      FilterArgs,
      { kept: number; keptCharacters: number; dropped: Dropped }
    >(
      { module: SHARDS, fn: "filterShard" },
      inputs.map((file, i) => ({
        id: `filter:${file}`,
        args: {
          path: ctx.input.path(file),
          outName: outputs[i],
          removed: plan.removed[i],
          representatives: plan.representatives[i],
          writeExcluded: ctx.config.writeExcluded,
        },
      })),
    );
    const dropped: Dropped = {};
    for (const reason of REASONS) dropped[reason] = { documents: 0, characters: 0 };
    for (const r of results) {
      for (const [reason, d] of Object.entries(r.dropped)) {
        dropped[reason].documents += d.documents;
        dropped[reason].characters += d.characters;
      }
    }
    const kept = results.reduce((a, r) => a + r.kept, 0);
    const documentsIn = signatures.reduce((a, s) => a + s.docs, 0);
    ctx.stats.set("documentsIn", documentsIn);
    ctx.stats.set("documentsOut", kept);
    ctx.stats.set("charactersOut", results.reduce((a, r) => a + r.keptCharacters, 0));
    ctx.stats.set("dropped", dropped);
    ctx.log(
      `${documentsIn} documents in, ${kept} kept; removed ${
        REASONS.map((r) => `${dropped[r].documents} ${r}`).join(", ")
      }`,
    );
    // A few of the removed documents per reason, for the report.
    const written = await ctx.out.list();
    ctx.stats.set("examples", await excludedExamples(written, (f) => ctx.out.path(f), ctx.stats.toJSON()));
  },
});

async function openOther(dir: string, ours: SignatureIndex) {
  const where = `against: ${dir}`;
  const artifact = await openArtifact(dir);
  if (!artifact) {
    throw new ConfigError("dedupe", ["against"], `${where}: not a committed artifact (no manifest.json)`);
  }
  let index: SignatureIndex;
  try {
    index = await artifact.readJson<SignatureIndex>("signatures/index.json");
  } catch {
    throw new ConfigError(
      "dedupe",
      ["against"],
      `${where}: has no dedupe signatures (signatures/index.json)`,
    );
  }
  if (JSON.stringify(index.minhash) !== JSON.stringify(ours.minhash) || index.exact !== ours.exact) {
    throw new ConfigError(
      "dedupe",
      ["against"],
      `${where}: its signatures were made with other settings (${
        JSON.stringify(index.minhash)
      }, exact ${index.exact})`,
    );
  }
  return { artifact, index, label: basename(dir) };
}

/** Step 3: connected components over all pairs, and per shard what to drop and what was kept. */
async function clusters(
  bands: number,
  exact: boolean,
  pairsPath: (band: number) => string,
  external: number,
  owners: { dir: string; ids: string; base: number; docs: number; label?: string }[],
  ownShards: number,
) {
  const all = new UnionFind();
  const verbatim = new UnionFind(); // exact-hash pairs only: tells exact from near duplicates
  for (let band = 0; band < bands; band++) {
    const isExact = exact && band === bands - 1;
    for await (const chunk of readPairs(pairsPath(band))) {
      for (let i = 0; i < chunk.length; i += 2) {
        all.union(chunk[i], chunk[i + 1]);
        if (isExact) verbatim.union(chunk[i], chunk[i + 1]);
      }
    }
  }
  const sizes = new Map<number, number>();
  for (const x of all.parent.keys()) {
    const root = all.find(x);
    sizes.set(root, (sizes.get(root) ?? 0) + 1);
  }
  const owner = (gid: number) => {
    let lo = 0, hi = owners.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (owners[mid].base <= gid) lo = mid;
      else hi = mid - 1;
    }
    return lo;
  };
  // Ids of the kept documents, read one shard's id list at a time.
  const roots = new Map<number, number[]>();
  for (const root of sizes.keys()) {
    const o = owner(root);
    if (!roots.has(o)) roots.set(o, []);
    roots.get(o)!.push(root);
  }
  const rootIds = new Map<number, string>();
  for (const [o, list] of roots) {
    const ids = JSON.parse(await Deno.readTextFile(owners[o].ids)) as string[];
    for (const root of list) {
      const id = ids[root - owners[o].base];
      rootIds.set(root, owners[o].label ? `${owners[o].label}:${id}` : id);
    }
  }
  const firstOwn = owners.length - ownShards;
  const removed: FilterArgs["removed"][] = Array.from({ length: ownShards }, () => []);
  const representatives: FilterArgs["representatives"][] = Array.from({ length: ownShards }, () => []);
  for (const x of [...all.parent.keys()].sort((a, b) => a - b)) {
    if (x < external) continue;
    const root = all.find(x);
    const shard = owner(x) - firstOwn;
    const index = x - owners[shard + firstOwn].base;
    if (root === x) {
      representatives[shard].push([index, sizes.get(root)!]);
      continue;
    }
    const code = root < external ? 2 : verbatim.parent.has(x) && verbatim.find(x) !== x ? 0 : 1;
    removed[shard].push([index, code, rootIds.get(root)!]);
  }
  const ownSizes = [...sizes].filter(([root]) => root >= external).map(([, size]) => size).sort((a, b) =>
    b - a
  );
  return {
    removed,
    representatives,
    clusters: {
      count: ownSizes.length,
      documents: ownSizes.reduce((a, b) => a + b, 0),
      largest: ownSizes.slice(0, 10),
      sizes: sizeHistogram(ownSizes),
      touching_other_datasets: [...sizes.keys()].filter((root) => root < external).length,
    },
  };
}

/** Clusters by size in powers of two (`{"2": 40, "3-4": 7, "5-8": 1}`): how duplication is spread. */
export function sizeHistogram(sizes: number[]): Record<string, number> {
  const bins = new Map<number, number>();
  for (const size of sizes) {
    const bin = Math.ceil(Math.log2(size));
    bins.set(bin, (bins.get(bin) ?? 0) + 1);
  }
  const label = (bin: number) => bin <= 1 ? String(2 ** bin) : `${2 ** (bin - 1) + 1}-${2 ** bin}`;
  return Object.fromEntries([...bins].sort(([a], [b]) => a - b).map(([bin, n]) => [label(bin), n]));
}
