/**
 * The dedupe stage's shard functions, run on the worker pool (see `pipeline/pool.ts`): signatures
 * per input shard, duplicate pairs per band, and the final filter per input shard.
 * @module
 */
import { dirname } from "node:path";
import type { ShardEnv } from "../../pipeline/pool.ts";
import { type Document, DocumentWriter, readDocuments } from "../documents.ts";
import { bandFile, mergeBand, type Run } from "./buckets.ts";
import { bandKeys, exactKey, MinHasher, type MinHashParams } from "./minhash.ts";
import { BATCH_DOCS, BATCH_SHINGLES, GpuMinHasher } from "./minhash_gpu.ts";

/** At most this many malformed lines per shard are listed by line (all are counted). */
export const MAX_LISTED_BAD_LINES = 100;

/** A line of an input shard that is not a document. */
export interface BadLine {
  line: number;
  reason: string;
}

/** Arguments of {@linkcode signatureShard}. */
export interface SignatureArgs {
  /** Absolute path of the input shard. */
  path: string;
  /** Where the band file goes, relative to the output (`signatures/00000.bands`). */
  bandsFile: string;
  /** Where the document ids go (`signatures/00000.ids.json`). */
  idsFile: string;
  minhash: MinHashParams | null;
  exact: boolean;
  /** Apply the MinHash functions on a WebGPU device (same signatures as the CPU's, bit for bit). */
  gpu?: boolean;
}

/** What {@linkcode signatureShard} returns. */
export interface SignatureResult {
  docs: number;
  bytes: number;
  badLines: BadLine[];
  badLineCount: number;
  /** Why the signatures were computed on the CPU although `gpu` was asked for. */
  gpuFallback?: string;
  /** The WebGPU adapter the signatures were computed on, when they were. */
  gpuDevice?: string;
}

/** One GPU hasher per worker isolate and MinHash setting, made on first use. */
const gpuHashers = new Map<string, Promise<GpuMinHasher | string>>();

function gpuHasher(hasher: MinHasher): Promise<GpuMinHasher | string> {
  const key = JSON.stringify(hasher.params);
  let found = gpuHashers.get(key);
  if (!found) gpuHashers.set(key, found = GpuMinHasher.create(hasher));
  return found;
}

/**
 * Reads one shard and writes, for every document in order, its band keys (MinHash bands, then the
 * exact hash as one more band) as a band file sorted per band, and the document ids.
 */
export async function signatureShard(args: SignatureArgs, env: ShardEnv): Promise<SignatureResult> {
  const hasher = args.minhash ? new MinHasher(args.minhash) : undefined;
  let gpuFallback: string | undefined;
  let gpu: GpuMinHasher | undefined;
  if (hasher && args.gpu) {
    const made = await gpuHasher(hasher);
    if (typeof made === "string") gpuFallback = made;
    else gpu = made;
  }
  const minhashBands = args.minhash?.bands ?? 0;
  const bands = minhashBands + (args.exact ? 1 : 0);
  const ids: string[] = [];
  const badLines: BadLine[] = [];
  let badLineCount = 0;
  let keys = new Uint32Array(1024 * bands * 2);
  let bytes = 0;
  const encoder = new TextEncoder();
  // GPU batches: documents' shingle hashes (computed here), signed many at a time.
  let pending: Uint32Array[] = [];
  let pendingFrom = 0;
  let pendingShingles = 0;
  const flush = async () => {
    if (!pending.length) return;
    const sigs = await gpu!.signatures(pending);
    const H = gpu!.hashes;
    for (let d = 0; d < pending.length; d++) {
      const sig = sigs.subarray(d * H, (d + 1) * H);
      keys.set(bandKeys(sig, minhashBands, args.minhash!.rows), (pendingFrom + d) * bands * 2);
    }
    pending = [];
    pendingShingles = 0;
  };
  for await (
    const { doc } of readDocuments(args.path, {
      onBadLine: (line, reason) => {
        badLineCount++;
        if (badLines.length < MAX_LISTED_BAD_LINES) badLines.push({ line, reason });
      },
    })
  ) {
    const i = ids.length;
    if ((i + 1) * bands * 2 > keys.length) {
      const grown = new Uint32Array(keys.length * 2);
      grown.set(keys);
      keys = grown;
    }
    const at = i * bands * 2;
    if (gpu) {
      if (!pending.length) pendingFrom = i;
      const shingles = hasher!.shingles(doc.text);
      pending.push(shingles);
      pendingShingles += shingles.length;
    } else if (hasher) {
      keys.set(bandKeys(hasher.signature(doc.text), minhashBands, args.minhash!.rows), at);
    }
    if (args.exact) keys.set(exactKey(doc.text), at + minhashBands * 2);
    ids.push(doc.id);
    bytes += encoder.encode(doc.text).length;
    if (pending.length >= BATCH_DOCS || pendingShingles >= BATCH_SHINGLES) await flush();
  }
  await flush();
  await env.out.writeFile(args.bandsFile, bandFile(keys.subarray(0, ids.length * bands * 2), bands));
  await env.out.writeJson(args.idsFile, ids);
  return {
    docs: ids.length,
    bytes,
    badLines,
    badLineCount,
    ...(gpuFallback ? { gpuFallback } : {}),
    ...(gpu ? { gpuDevice: gpu.description } : {}),
  };
}

/** Arguments of {@linkcode pairsShard}. */
export interface PairsArgs {
  runs: Run[];
  band: number;
  /** Absolute path of the pairs file (in the stage's checkpoint directory). */
  pairsPath: string;
  /** Global ids below this belong to other datasets. */
  skipBelow: number;
}

/** Merges one band across all shards into duplicate pairs. */
export async function pairsShard(args: PairsArgs, _env: ShardEnv): Promise<{ pairs: number }> {
  await Deno.mkdir(dirname(args.pairsPath), { recursive: true });
  return { pairs: await mergeBand(args.runs, args.band, args.pairsPath, args.skipBelow) };
}

/** Why a document was removed. */
export const REASONS = ["exact-duplicate", "near-duplicate", "duplicate-of-reference"] as const;
export type Reason = typeof REASONS[number];

/** Arguments of {@linkcode filterShard}. */
export interface FilterArgs {
  path: string;
  /** Output shard name (also the exclusion shard's name under `excluded/dedupe/`). */
  outName: string;
  /** Documents to drop: `[index, reason code (into REASONS), id of the kept duplicate]`, by index. */
  removed: [number, number, string][];
  /** Kept representatives of clusters: `[index, cluster size]`, by index. */
  representatives: [number, number][];
  writeExcluded: boolean;
}

/** Per-reason drop counts. */
export type Dropped = Record<string, { documents: number; characters: number }>;

/** Writes a shard's kept documents, and the removed ones aside with the reason. */
export async function filterShard(
  args: FilterArgs,
  env: ShardEnv,
): Promise<{ kept: number; keptCharacters: number; dropped: Dropped }> {
  const kept = new DocumentWriter(await env.out.create(args.outName), true);
  const excluded = args.writeExcluded && args.removed.length
    ? new DocumentWriter(await env.out.create(`excluded/dedupe/${args.outName}`), true)
    : undefined;
  const dropped: Dropped = {};
  let keptCharacters = 0;
  let r = 0, k = 0, index = 0;
  for await (const { doc } of readDocuments(args.path)) {
    const i = index++;
    while (k < args.representatives.length && args.representatives[k][0] < i) k++;
    if (r < args.removed.length && args.removed[r][0] === i) {
      const [, code, keptId] = args.removed[r++];
      const reason = REASONS[code];
      const d = dropped[reason] ??= { documents: 0, characters: 0 };
      d.documents++;
      d.characters += doc.text.length;
      await excluded?.write(withMeta(doc, { dedupe: { reason, duplicate_of: keptId } }));
      continue;
    }
    const size = k < args.representatives.length && args.representatives[k][0] === i
      ? args.representatives[k][1]
      : undefined;
    // Like FineWeb-2, the kept document records its cluster's size, so a mix can upsample it later.
    await kept.write(size ? withMeta(doc, { dedupe_cluster_size: size }) : doc);
    keptCharacters += doc.text.length;
  }
  await kept.close();
  await excluded?.close();
  return { kept: kept.count, keptCharacters, dropped };
}

function withMeta(doc: Document, meta: Record<string, unknown>): Document {
  return { ...doc, meta: { ...doc.meta, ...meta } };
}
