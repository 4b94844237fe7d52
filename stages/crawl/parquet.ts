/**
 * Documents from Parquet files, the format open web datasets ship in (FineWeb, RefinedWeb, Hugging
 * Face `datasets` shards): local paths or http(s) URLs, read one row group at a time, so memory stays
 * bounded by the largest row group (not the file), and over HTTP only the byte ranges of the columns
 * asked for are fetched (Range requests, as DuckDB and `datasets` streaming do).
 *
 * Reading is hyparquet (pure JS, no native code, reads every codec Parquet writers use with
 * hyparquet-compressors); see BENCHMARKS.md `## Parquet` for why over parquet-wasm and parquetjs.
 *
 * Columns are named by config: `text` (default `"text"`), `id` (default `"id"` when the file has
 * it, else an id from the file and row), `url` (default `"url"` when present), and `meta`: the
 * columns kept in `meta` (default: every other column, so FineWeb's `dump`, `date`, `language`,
 * `language_score`… travel with the document; a JSON `meta` column, as `export-parquet` writes,
 * is merged into `meta`, so kiln's own Parquet export reads back as the documents it came from).
 *
 * @example FineWeb's sample, straight from the Hub
 * ```ts
 * import { readParquetDocuments } from "./parquet.ts";
 * const url = "https://huggingface.co/datasets/HuggingFaceFW/fineweb/resolve/main/sample/10BT/000_00000.parquet";
 * for await (const { doc, row } of readParquetDocuments(url, { text: "text", meta: ["language"] })) {
 *   console.log(row, doc.id, doc.meta?.language, doc.text.slice(0, 80));
 *   break;
 * }
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import {
  type AsyncBuffer,
  asyncBufferFromFile,
  asyncBufferFromUrl,
  type FileMetaData,
  parquetMetadataAsync,
  parquetReadObjects,
  parquetSchema,
} from "npm:hyparquet@^1.31.5";
import { compressors } from "npm:hyparquet-compressors@^1.1.2";
import { DataError } from "../../pipeline/errors.ts";
import type { ShardEnv } from "../../pipeline/pool.ts";
import type { Document } from "../documents.ts";
import { detectLanguage } from "./extract.ts";
import { documentId, type ExtractOptions, type ShardResult, writeShard } from "./sources.ts";

/** Which columns hold what. */
export const parquetColumnsSchema = z.strictObject({
  /** The document text (a string column). */
  text: z.string().min(1).default("text"),
  /** The document id; default `"id"` if the file has it, else an id made from the file and row. */
  id: z.string().min(1).optional(),
  /** The document URL; default `"url"` if the file has it. */
  url: z.string().min(1).optional(),
  /** Columns copied into `meta`; default every column but text, id and url. */
  meta: z.array(z.string().min(1)).optional(),
});

/** Parquet columns config after defaults. */
export type ParquetColumns = z.output<typeof parquetColumnsSchema>;

/**
 * The crawl stage's `parquet` option: a list of paths, globs and URLs (columns by their usual
 * names), or those files with the columns named.
 */
export const parquetSourceSchema = z.union([
  z.array(z.string()),
  parquetColumnsSchema.extend({ files: z.array(z.string()).min(1) }),
]);

/** The `parquet` option as the user wrote it. */
export type ParquetSource = z.output<typeof parquetSourceSchema>;

/** Files and columns of a `parquet` option, whichever form it was given in. */
export function parquetFiles(source: ParquetSource): { files: string[]; columns: ParquetColumns } {
  if (Array.isArray(source)) return { files: source, columns: parquetColumnsSchema.parse({}) };
  const { files, ...columns } = source;
  return { files, columns };
}

const isUrl = (location: string) => /^https?:\/\//i.test(location);

/** Fetch with retries on network errors and 5xx/429 answers (remote datasets are big; hiccups happen). */
async function fetchWithRetries(input: RequestInfo | URL, init?: RequestInit): Promise<Response> {
  for (let attempt = 0;; attempt++) {
    try {
      const response = await fetch(input, init);
      if ((response.status < 500 && response.status !== 429) || attempt === 3) return response;
      await response.body?.cancel();
    } catch (e) {
      if (attempt === 3) throw e;
    }
    await new Promise((resolve) => setTimeout(resolve, 500 * 2 ** attempt));
  }
}

/** Opens a Parquet file and reads its footer; errors name the location. */
export async function openParquet(location: string): Promise<{ file: AsyncBuffer; metadata: FileMetaData }> {
  let file: AsyncBuffer;
  try {
    file = isUrl(location)
      ? await asyncBufferFromUrl({ url: location, fetch: fetchWithRetries })
      : await asyncBufferFromFile(location);
  } catch (e) {
    throw new DataError(location, undefined, `cannot open: ${(e as Error).message}`);
  }
  try {
    return { file, metadata: await parquetMetadataAsync(file) };
  } catch (e) {
    throw new DataError(location, undefined, `not a Parquet file (${(e as Error).message})`);
  }
}

function base64(bytes: Uint8Array): string {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** A Parquet value as plain JSON (binary as base64): int64 as a number (or a string past 2⁵³), dates as ISO strings. */
function plain(value: unknown): unknown {
  if (typeof value === "bigint") {
    return Number.isSafeInteger(Number(value)) ? Number(value) : value.toString();
  }
  if (value instanceof Date) return value.toISOString();
  if (value instanceof Uint8Array) return base64(value);
  if (Array.isArray(value)) return value.map(plain);
  if (value !== null && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, plain(v)]));
  }
  return value;
}

/** Options of {@linkcode readParquetDocuments}. */
export interface ReadParquetOptions {
  /** Called for each row that is not a document (0-based row, reason); it is skipped. */
  onBadRow?: (row: number, reason: string) => void;
}

/**
 * Reads documents from a Parquet file (local path or http(s) URL), one row group at a time, yielding
 * each with its 0-based row number. Rows whose text is null go to `onBadRow`. A column the config
 * names that the file lacks is a {@linkcode DataError} listing the file's columns.
 */
export async function* readParquetDocuments(
  location: string,
  columns: Partial<ParquetColumns> = {},
  opts: ReadParquetOptions = {},
): AsyncGenerator<{ doc: Document; row: number }> {
  const { file, metadata } = await openParquet(location);
  // Top-level columns (a struct column is one name here, read as an object).
  const available = parquetSchema(metadata).children.map((c) => c.element.name);
  const require = (field: string, name: string) => {
    if (!available.includes(name)) {
      throw new DataError(
        location,
        undefined,
        `no column "${name}" (the ${field} column); the file has: ${available.join(", ")}`,
      );
    }
    return name;
  };
  const text = require("text", columns.text ?? "text");
  const id = columns.id !== undefined
    ? require("id", columns.id)
    : available.includes("id")
    ? "id"
    : undefined;
  const url = columns.url !== undefined
    ? require("url", columns.url)
    : available.includes("url")
    ? "url"
    : undefined;
  const meta = columns.meta?.map((name) => require("meta", name)) ??
    available.filter((name) => name !== text && name !== id && name !== url);
  const wanted = [...new Set([text, ...id ? [id] : [], ...url ? [url] : [], ...meta])];

  let rowStart = 0;
  for (const [g, group] of metadata.row_groups.entries()) {
    const rowEnd = rowStart + Number(group.num_rows);
    let rows: Record<string, unknown>[];
    try {
      rows = await parquetReadObjects({ file, metadata, columns: wanted, rowStart, rowEnd, compressors });
    } catch (e) {
      throw new DataError(location, `row group ${g}`, (e as Error).message);
    }
    for (const [i, record] of rows.entries()) {
      const row = rowStart + i;
      const value = record[text];
      if (typeof value !== "string") {
        opts.onBadRow?.(row, `column "${text}" is ${value === null ? "null" : `a ${typeof value}`}`);
        continue;
      }
      const doc: Document = {
        id: id !== undefined && record[id] !== null && record[id] !== undefined
          ? String(plain(record[id]))
          : documentId(location, row),
        text: value,
      };
      if (url !== undefined && typeof record[url] === "string") doc.url = record[url] as string;
      if (meta.length) {
        doc.meta = {};
        for (const name of meta) {
          const value = plain(record[name]);
          // A JSON `meta` column of objects (as export-parquet writes) is the document's meta.
          if (name === "meta" && value !== null && typeof value === "object" && !Array.isArray(value)) {
            Object.assign(doc.meta, value);
          } else doc.meta[name] = value;
        }
      }
      yield { doc, row };
    }
    rowStart = rowEnd;
  }
}

/** Arguments of {@linkcode parquetShard}. */
export interface ParquetShardArgs {
  /** Local path or http(s) URL of a Parquet file. */
  location: string;
  columns: ParquetColumns;
  /** Output file name, e.g. `crawl-00003.jsonl.gz`. */
  shard: string;
  opts: ExtractOptions;
}

/**
 * The crawl stage's shard function for one Parquet file: its documents into one shard, as JSONL
 * input is, with `meta.source` (the file) and `meta.row`, and the language where `meta` lacks `lang`.
 */
export async function parquetShard(args: ParquetShardArgs, env: ShardEnv): Promise<ShardResult> {
  return await writeShard(env, args.shard, async (writer, tally) => {
    const docs = readParquetDocuments(args.location, args.columns, {
      onBadRow: (row, why) => {
        tally.skip("bad-row");
        tally.warn(`${args.location}: row ${row}: ${why}`);
      },
    });
    for await (const { doc, row } of docs) {
      tally.add("records");
      tally.add("bytesIn", doc.text.length);
      if (doc.text.trim().length < args.opts.minChars) {
        tally.skip("empty");
        continue;
      }
      const meta: Record<string, unknown> = { ...doc.meta, source: args.location, row };
      if (meta.lang === undefined) {
        const { lang, score } = detectLanguage(doc.text);
        Object.assign(meta, { lang, langScore: score });
      }
      await writer.write({ ...doc, meta });
      tally.add("documents");
    }
  });
}
