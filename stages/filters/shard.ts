/**
 * The quality filter's shard function, run on the worker pool: reads one input shard, runs the
 * filter chain over every document, writes the kept ones to the output shard and each dropped one to
 * `excluded/<filter>/<shard>` with `meta.filter_reason`, and returns per-filter counts.
 * @module
 */
import type { ShardEnv } from "../../pipeline/pool.ts";
import { DocumentWriter, readDocuments } from "../documents.ts";
import { buildChain, type ChainOptions } from "./mod.ts";

/** At most this many malformed lines per shard are listed by line (all are counted). */
const MAX_LISTED_BAD_LINES = 100;

/** Counts of one filter, datatrove style. */
export interface FilterCounts {
  documentsIn: number;
  charactersIn: number;
  droppedDocuments: number;
  droppedCharacters: number;
  /** Dropped documents per reason. */
  reasons: Record<string, number>;
  /** Changes to kept documents (lines removed by C4, addresses masked…). */
  changes: Record<string, number>;
}

/** Arguments of {@linkcode filterShard}. */
export interface FilterShardArgs {
  path: string;
  outName: string;
  chain: ChainOptions;
  writeExcluded: boolean;
}

/** What {@linkcode filterShard} returns. */
export interface FilterShardResult {
  documents: number;
  characters: number;
  kept: number;
  keptCharacters: number;
  filters: Record<string, FilterCounts>;
  badLines: { line: number; reason: string }[];
  badLineCount: number;
}

export async function filterShard(args: FilterShardArgs, env: ShardEnv): Promise<FilterShardResult> {
  const chain = await buildChain(args.chain);
  const filters: Record<string, FilterCounts> = {};
  for (const step of chain.steps) {
    filters[step.name] = {
      documentsIn: 0,
      charactersIn: 0,
      droppedDocuments: 0,
      droppedCharacters: 0,
      reasons: {},
      changes: {},
    };
  }
  const kept = new DocumentWriter(await env.out.create(args.outName), true);
  const excluded = new Map<string, DocumentWriter>();
  const result: FilterShardResult = {
    documents: 0,
    characters: 0,
    kept: 0,
    keptCharacters: 0,
    filters,
    badLines: [],
    badLineCount: 0,
  };
  const onBadLine = (line: number, reason: string) => {
    result.badLineCount++;
    if (result.badLines.length < MAX_LISTED_BAD_LINES) result.badLines.push({ line, reason });
  };
  for await (const { doc } of readDocuments(args.path, { onBadLine })) {
    result.documents++;
    result.characters += doc.text.length;
    const verdict = chain.apply(doc, (name, v, before) => {
      const c = filters[name];
      c.documentsIn++;
      c.charactersIn += before.text.length;
      if ("drop" in v) {
        c.droppedDocuments++;
        c.droppedCharacters += before.text.length;
        c.reasons[v.drop] = (c.reasons[v.drop] ?? 0) + 1;
      } else if (v.changes) {
        for (const [k, n] of Object.entries(v.changes)) c.changes[k] = (c.changes[k] ?? 0) + n;
      }
    });
    if ("doc" in verdict) {
      await kept.write(verdict.doc);
      result.keptCharacters += verdict.doc.text.length;
    } else if (args.writeExcluded) {
      let writer = excluded.get(verdict.filter);
      if (!writer) {
        writer = new DocumentWriter(await env.out.create(`excluded/${verdict.filter}/${args.outName}`), true);
        excluded.set(verdict.filter, writer);
      }
      await writer.write({
        ...doc,
        meta: { ...doc.meta, ...verdict.meta, filter: verdict.filter, filter_reason: verdict.drop },
      });
    }
  }
  await kept.close();
  for (const writer of excluded.values()) await writer.close();
  result.kept = kept.count;
  return result;
}
