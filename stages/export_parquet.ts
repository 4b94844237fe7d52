/**
 * The `export-parquet` stage: a documents artifact as Parquet shards, the layout Hugging Face
 * `datasets`, pandas, DuckDB and Spark read directly: `data/train-00000-of-00004.parquet`, one file
 * per input shard (so it runs per shard on the worker pool and resumes per shard), columns `id`,
 * `text`, `url` (strings), `meta` (the rest of the document's metadata as a JSON column) and any
 * `meta` fields lifted into typed columns of their own (`columns: { lang: "string", langScore:
 * "double" }`), in row groups of `rowGroupRows` documents, Snappy-compressed.
 *
 *     load_dataset("parquet", data_files=".kiln/artifacts/export-parquet/<key>/data/*.parquet")
 *     duckdb -c "select count(*) from '.kiln/artifacts/export-parquet/*\/data/*.parquet'"
 *
 * Its output is a `parquet` artifact (not `documents`: nothing downstream reads it as documents), so
 * the stage ends a branch of a pipeline; the crawl stage reads such files back with
 * `crawl({ parquet: [...] })`.
 *
 * Written with hyparquet-writer (pure JS; see BENCHMARKS.md `## Parquet` for the measured
 * alternatives).
 *
 * @example
 * ```ts
 * import { exportParquet } from "./export_parquet.ts";
 * const stage = exportParquet({ columns: { lang: "string", langScore: "double" } });
 * console.log(stage.config.rowGroupRows); // 1000, as datatrove's ParquetWriter
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { ByteWriter, ParquetWriter } from "npm:hyparquet-writer@^0.17.0";
import type { ShardEnv } from "../pipeline/pool.ts";
import { defineStage } from "../pipeline/stage.ts";
import type { PendingFile } from "../pipeline/workspace.ts";
import { type Document, documentShards, readDocuments } from "./documents.ts";

/** Parquet types a lifted `meta` field can have. */
const COLUMN_TYPES = {
  string: { type: "BYTE_ARRAY", converted_type: "UTF8" },
  int64: { type: "INT64" },
  double: { type: "DOUBLE" },
  boolean: { type: "BOOLEAN" },
} as const;

/** The type of a lifted column. */
export type ColumnType = keyof typeof COLUMN_TYPES;

const schema = z.strictObject({
  /** Documents per row group (readers stream a row group at a time). */
  rowGroupRows: z.number().int().positive().default(1000),
  compression: z.enum(["snappy", "none"]).default("snappy"),
  /** `meta` fields written as typed columns of their own (and left out of the `meta` JSON). */
  columns: z.record(z.string().regex(/^[A-Za-z_][\w.-]*$/), z.enum(["string", "int64", "double", "boolean"]))
    .refine((c) => !["id", "text", "url", "meta"].some((name) => name in c), {
      message: "id, text, url and meta are columns already; name other meta fields",
    })
    .default({}),
  /** The split in the file names (`train-00000-of-00004.parquet`), which `datasets` reads. */
  split: z.string().regex(/^[\w-]+$/).default("train"),
});

/** Options of {@linkcode ParquetDocumentWriter}. */
export interface ParquetWriteOptions {
  rowGroupRows: number;
  compression: "snappy" | "none";
  columns: Record<string, ColumnType>;
}

/**
 * Writes documents as one Parquet file into a pending output file, a row group at a time (memory:
 * one row group). Call `close()` to finish and commit it, or `abort()`.
 */
export class ParquetDocumentWriter {
  #file: PendingFile;
  #options: ParquetWriteOptions;
  #bytes = new ByteWriter();
  #writer: ParquetWriter;
  #rows: Document[] = [];
  /** Documents written. */
  count = 0;
  /** Row groups written. */
  rowGroups = 0;
  /** Values of lifted columns that were not of the column's type (written as null). */
  mismatches = 0;

  constructor(file: PendingFile, options: ParquetWriteOptions) {
    this.#file = file;
    this.#options = options;
    // hyparquet-writer calls flush() after each row group and awaits it: the bytes go to the file
    // and the buffer starts over, so a file of any size needs one row group of memory.
    const bytes = this.#bytes;
    const flush = () => {
      const chunk = bytes.getBytes().slice();
      bytes.index = 0;
      return file.write(chunk);
    };
    Object.assign(bytes, { flush, finish: flush });
    const optional = { repetition_type: "OPTIONAL" } as const;
    const lifted = Object.entries(options.columns);
    this.#writer = new ParquetWriter({
      writer: bytes,
      schema: [
        { name: "schema", num_children: 4 + lifted.length },
        { name: "id", ...COLUMN_TYPES.string, repetition_type: "REQUIRED" },
        { name: "text", ...COLUMN_TYPES.string, repetition_type: "REQUIRED" },
        { name: "url", ...COLUMN_TYPES.string, ...optional },
        { name: "meta", type: "BYTE_ARRAY", converted_type: "JSON", ...optional },
        ...lifted.map(([name, type]) => ({ name, ...COLUMN_TYPES[type], ...optional })),
      ],
      codec: options.compression === "snappy" ? "SNAPPY" : "UNCOMPRESSED",
      createdBy: "kiln export-parquet",
    });
  }

  async write(doc: Document): Promise<void> {
    this.#rows.push(doc);
    this.count++;
    if (this.#rows.length >= this.#options.rowGroupRows) await this.#flushRows();
  }

  async #flushRows(): Promise<void> {
    const rows = this.#rows;
    if (!rows.length) return;
    this.#rows = [];
    const lifted = Object.entries(this.#options.columns);
    const metas = rows.map((doc) => {
      if (!doc.meta) return null;
      const rest = { ...doc.meta };
      for (const [name] of lifted) delete rest[name];
      return Object.keys(rest).length ? rest : null;
    });
    await this.#writer.write({
      columnData: [
        { name: "id", data: rows.map((d) => d.id) },
        { name: "text", data: rows.map((d) => d.text) },
        { name: "url", data: rows.map((d) => d.url ?? null) },
        { name: "meta", data: metas }, // a JSON column: hyparquet-writer stringifies the objects
        ...lifted.map(([name, type]) => ({
          name,
          data: rows.map((d) => this.#typed(d.meta?.[name], type)),
        })),
      ],
      rowGroupSize: rows.length,
    });
    this.rowGroups++;
  }

  #typed(value: unknown, type: ColumnType): unknown {
    if (value === undefined || value === null) return null;
    const ok = type === "string"
      ? typeof value === "string"
      : type === "boolean"
      ? typeof value === "boolean"
      : type === "int64"
      ? Number.isInteger(value)
      : typeof value === "number";
    if (!ok) {
      this.mismatches++;
      return null;
    }
    return type === "int64" ? BigInt(value as number) : value;
  }

  async close(): Promise<void> {
    await this.#flushRows();
    await this.#writer.finish();
    await this.#file.commit();
  }

  async abort(): Promise<void> {
    await this.#file.abort();
  }
}

/** Arguments of {@linkcode exportShard}. */
export interface ExportShardArgs {
  /** Absolute path of the input document shard. */
  path: string;
  /** Output file name, e.g. `data/train-00000-of-00004.parquet`. */
  outName: string;
  options: ParquetWriteOptions;
}

/** What {@linkcode exportShard} returns. */
export interface ExportShardResult {
  documents: number;
  rowGroups: number;
  mismatches: number;
  badLines: number;
}

/** Writes one document shard as one Parquet file (runs on the worker pool). */
export async function exportShard(args: ExportShardArgs, env: ShardEnv): Promise<ExportShardResult> {
  const writer = new ParquetDocumentWriter(await env.out.create(args.outName), args.options);
  let badLines = 0;
  try {
    for await (const { doc } of readDocuments(args.path, { onBadLine: () => badLines++ })) {
      await writer.write(doc);
    }
    await writer.close();
  } catch (e) {
    await writer.abort();
    throw e;
  }
  return { documents: writer.count, rowGroups: writer.rowGroups, mismatches: writer.mismatches, badLines };
}

/** The export-parquet stage factory. */
export const exportParquet = defineStage({
  name: "export-parquet",
  version: 1,
  module: import.meta.url,
  input: "documents",
  output: "parquet",
  schema,
  description: "Documents to Parquet shards (data/train-NNNNN-of-NNNNN.parquet) for datasets, pandas, DuckDB",
  async run(ctx) {
    const inputs = documentShards(ctx.input);
    const count = String(inputs.length).padStart(5, "0");
    const outNames = inputs.map((_, i) =>
      `data/${ctx.config.split}-${String(i).padStart(5, "0")}-of-${count}.parquet`
    );
    const { rowGroupRows, compression, columns } = ctx.config;
    const results = await ctx.runShards<ExportShardArgs, ExportShardResult>(
      { module: import.meta.url, fn: "exportShard" },
      inputs.map((file, i) => ({
        id: `export:${file}`,
        args: {
          path: ctx.input.path(file),
          outName: outNames[i],
          options: { rowGroupRows, compression, columns },
        },
      })),
    );
    const sum = (f: (r: ExportShardResult) => number) => results.reduce((a, r) => a + f(r), 0);
    let bytes = 0;
    for (const name of outNames) bytes += (await Deno.stat(ctx.out.path(name))).size;
    ctx.stats.set("documents", sum((r) => r.documents));
    ctx.stats.set("files", outNames.length);
    ctx.stats.set("rowGroups", sum((r) => r.rowGroups));
    ctx.stats.set("bytes", bytes);
    if (sum((r) => r.badLines)) ctx.stats.set("badLines", sum((r) => r.badLines));
    if (sum((r) => r.mismatches)) {
      ctx.stats.set("columnTypeMismatches", sum((r) => r.mismatches));
      ctx.log(`${sum((r) => r.mismatches)} meta values were not of their column's type; written as null`);
    }
  },
});
