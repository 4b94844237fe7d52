// Parquet in and out: export-parquet's shards read back by DuckDB (a real, independent reader) and by
// kiln's own reader; crawl({ parquet }) reading a file another writer made, with named columns, from
// disk and over HTTP (fetching only the byte ranges it needs); errors that name the file and column.
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { parquetWriteBuffer } from "npm:hyparquet-writer@^0.17.0";
import { pipeline } from "../pipeline/pipeline.ts";
import { DataError } from "../pipeline/errors.ts";
import { type Document, documentShards, readDocuments } from "../stages/documents.ts";
import { crawl } from "../stages/crawl.ts";
import { exportParquet } from "../stages/export_parquet.ts";
import { readParquetDocuments } from "../stages/crawl/parquet.ts";

/** DuckDB's Node API (native), or why it cannot load here; the DuckDB checks skip without it. */
async function duckdb() {
  try {
    const { DuckDBInstance } = await import("npm:@duckdb/node-api@^1.5.6-r.1");
    return await (await DuckDBInstance.create(":memory:")).connect();
  } catch (e) {
    console.warn(`DuckDB checks skipped: @duckdb/node-api does not load here (${(e as Error).message})`);
    return undefined;
  }
}

const DOCS: Document[] = [
  {
    id: "a",
    text: "Kilns fire clay at 1,200 °C.",
    url: "https://example.org/a",
    meta: { lang: "en", langScore: 0.81, tags: ["clay", "fire"], nested: { depth: 2 } },
  },
  { id: "b", text: "Zweiter Text über Keramik.", meta: { lang: "de", langScore: 0.7 } },
  { id: "c", text: 'no language given, and "quotes"\nand a newline' },
  { id: "d", text: "a score of the wrong type", meta: { lang: "en", langScore: "high" } },
];

/** DOCS as two JSONL files (a, b | c, d) and a crawl stage reading them (it adds source and line). */
async function crawlOfDocs(dir: string) {
  const files = [join(dir, "in-0.jsonl"), join(dir, "in-1.jsonl")];
  for (const [i, docs] of [DOCS.slice(0, 2), DOCS.slice(2)].entries()) {
    await Deno.writeTextFile(files[i], docs.map((d) => JSON.stringify(d) + "\n").join(""));
  }
  return { stage: crawl({ jsonl: files }), files };
}

Deno.test("export-parquet writes HF-style shards that DuckDB and kiln's reader read back", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { stage, files } = await crawlOfDocs(dir);
    const result = await pipeline("t", { workdir: join(dir, "w"), workers: 2 })
      .pipe(stage)
      .pipe(exportParquet({ rowGroupRows: 1, columns: { lang: "string", langScore: "double" } }))
      .execute({ quiet: true });
    const artifact = result.artifacts["export-parquet"];
    assert.deepEqual(artifact.files(".parquet"), [
      "data/train-00000-of-00002.parquet",
      "data/train-00001-of-00002.parquet",
    ]);
    assert.equal(artifact.stats.documents, 4);
    assert.equal(artifact.stats.rowGroups, 4);
    assert.equal(artifact.stats.columnTypeMismatches, 1, "langScore 'high' is not a double");

    // kiln's reader: the same documents (lifted columns and the JSON meta merged back), in order.
    const back: Document[] = [];
    for (const file of artifact.files(".parquet")) {
      for await (const { doc } of readParquetDocuments(artifact.path(file))) back.push(doc);
    }
    const crawled: Document[] = [];
    for (const file of documentShards(result.artifacts.crawl)) {
      for await (const { doc } of readDocuments(result.artifacts.crawl.path(file))) crawled.push(doc);
    }
    assert.equal(crawled.length, 4);
    crawled[3].meta!.langScore = null; // the type mismatch, written as null
    assert.deepEqual(back, crawled);
    assert.deepEqual(back[0].meta, { ...DOCS[0].meta, source: files[0], line: 1 });

    const db = await duckdb();
    if (!db) return;
    const rows = await db.runAndReadAll(
      `select id, text, url, lang, langScore, meta::varchar as meta
       from read_parquet('${artifact.dir}/data/*.parquet') order by id`,
    );
    assert.deepEqual(rows.getRowObjectsJson(), [
      {
        id: "a",
        text: DOCS[0].text,
        url: "https://example.org/a",
        lang: "en",
        langScore: 0.81,
        meta: JSON.stringify({ tags: ["clay", "fire"], nested: { depth: 2 }, source: files[0], line: 1 }),
      },
      {
        id: "b",
        text: DOCS[1].text,
        url: null,
        lang: "de",
        langScore: 0.7,
        meta: JSON.stringify({ source: files[0], line: 2 }),
      },
      {
        id: "c",
        text: DOCS[2].text,
        url: null,
        lang: crawled[2].meta!.lang,
        langScore: crawled[2].meta!.langScore,
        meta: JSON.stringify({ source: files[1], line: 1 }),
      },
      {
        id: "d",
        text: DOCS[3].text,
        url: null,
        lang: "en",
        langScore: null,
        meta: JSON.stringify({ source: files[1], line: 2 }),
      },
    ]);
    const types = await db.runAndReadAll(
      `select column_name, column_type from (describe select * from read_parquet('${
        artifact.path("data/train-00000-of-00002.parquet")
      }'))`,
    );
    assert.deepEqual(types.getRows(), [
      ["id", "VARCHAR"],
      ["text", "VARCHAR"],
      ["url", "VARCHAR"],
      ["meta", "JSON"],
      ["lang", "VARCHAR"],
      ["langScore", "DOUBLE"],
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** A FineWeb-like file with its own column names and a large column nobody asked for. */
function foreignParquet(rows: number, htmlBytes = 1000): Uint8Array<ArrayBuffer> {
  const text = Array.from({ length: rows }, (_, i) => i === 3 ? null : `document number ${i} about kilns`);
  return new Uint8Array(parquetWriteBuffer({
    columnData: [
      { name: "doc_id", data: Array.from({ length: rows }, (_, i) => BigInt(1000 + i)), type: "INT64" },
      { name: "content", data: text, type: "STRING" },
      {
        name: "link",
        data: Array.from({ length: rows }, (_, i) => `https://example.org/${i}`),
        type: "STRING",
      },
      { name: "score", data: Array.from({ length: rows }, (_, i) => i / 10), type: "DOUBLE" },
      // Hard-to-compress bytes: what a reader that fetches every column would pay for.
      {
        name: "html",
        data: Array.from(
          { length: rows },
          (_, i) => crypto.getRandomValues(new Uint8Array(htmlBytes)).join(",") + i,
        ),
        type: "STRING",
      },
    ],
    rowGroupSize: 4,
  }));
}

Deno.test("crawl({ parquet }) reads named columns into document shards, with provenance", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "part-0.parquet");
    await Deno.writeFile(file, foreignParquet(10));
    const result = await pipeline("t", { workdir: join(dir, "w"), workers: 1 })
      .pipe(
        crawl({
          parquet: {
            files: [join(dir, "*.parquet")],
            text: "content",
            id: "doc_id",
            url: "link",
            meta: ["score"],
          },
        }),
      )
      .execute({ quiet: true });
    const artifact = result.artifacts.crawl;
    const docs = [];
    for await (const { doc } of readDocuments(artifact.path("crawl-00000.jsonl.gz"))) docs.push(doc);
    assert.equal(docs.length, 9, "row 3 has no text");
    assert.equal(artifact.stats["skipped.bad-row"], 1);
    assert.deepEqual(
      { ...docs[0], meta: { ...docs[0].meta, lang: undefined, langScore: undefined } },
      {
        id: "1000",
        text: "document number 0 about kilns",
        url: "https://example.org/0",
        meta: { score: 0, source: file, row: 0, lang: undefined, langScore: undefined },
      },
    );
    assert.equal(docs[3].id, "1004");
    assert.equal(docs[3].meta?.row, 4);
    assert.equal(typeof docs[0].meta?.lang, "string", "language detected where the file has none");

    // A column the config names that the file lacks: the error names the file and lists its columns.
    await assert.rejects(
      pipeline("t", { workdir: join(dir, "w2") })
        .pipe(crawl({ parquet: { files: [file], text: "body" } }))
        .execute({ quiet: true }),
      /part-0\.parquet: no column "body" \(the text column\); the file has: doc_id, content, link, score, html/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a Parquet URL is read a row group at a time, fetching only the columns asked for", async () => {
  // Large enough that the footer read (hyparquet fetches the last 512 kB first) is not the whole file.
  const bytes = foreignParquet(24, 60_000);
  let served = 0;
  const ranged: string[] = [];
  const server = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, (req) => {
    const range = req.headers.get("range")?.match(/^bytes=(\d+)-(\d+)?$/);
    if (req.method === "HEAD") {
      return new Response(null, { headers: { "content-length": `${bytes.length}` } });
    }
    if (!range) {
      served += bytes.length;
      return new Response(bytes);
    }
    ranged.push(range[0]);
    const start = Number(range[1]), end = range[2] ? Number(range[2]) + 1 : bytes.length;
    served += end - start;
    return new Response(bytes.slice(start, end), {
      status: 206,
      headers: { "content-range": `bytes ${start}-${end - 1}/${bytes.length}` },
    });
  });
  try {
    const url = `http://127.0.0.1:${server.addr.port}/data/part-0.parquet`;
    const docs = readParquetDocuments(url, { text: "content", id: "doc_id", meta: [] });
    const first = await docs.next();
    assert.equal(first.value?.doc.text, "document number 0 about kilns");
    assert.ok(served < bytes.length / 4, `first row group: ${served} of ${bytes.length} bytes fetched`);
    const rest = [];
    for await (const { doc } of docs) rest.push(doc.id);
    assert.deepEqual(rest, Array.from({ length: 22 }, (_, i) => String(1001 + i + (i >= 2 ? 1 : 0))));
    assert.ok(ranged.length > 0, "range requests");
    assert.ok(
      served < bytes.length / 2,
      `whole file: ${served} of ${bytes.length} bytes fetched (html skipped)`,
    );
  } finally {
    await server.shutdown();
  }
});

Deno.test("a file that is not Parquet is a DataError naming it", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "oops.parquet");
    await Deno.writeTextFile(file, '{"id": "a", "text": "this is JSONL"}\n');
    await assert.rejects(
      async () => {
        for await (const _ of readParquetDocuments(file)) { /* nothing */ }
      },
      (e) => e instanceof DataError && e.message.startsWith(`${file}: not a Parquet file`),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a zstd-compressed file DuckDB wrote (FineWeb-like columns, a struct) reads as documents", async () => {
  const db = await duckdb();
  if (!db) return;
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, "fineweb.parquet");
    await db.run(
      `copy (select 'text ' || i as text, 'urn:uuid:' || i as id, 'CC-MAIN-2024-10' as dump,
               'https://example.org/' || i as url, timestamp '2024-02-20 10:00:00' as date,
               'en' as language, 0.9::double as language_score, (i * 3)::bigint as token_count,
               {'shard': i // 1000, 'tags': ['a', 'b']} as info
             from range(2500) t(i))
       to '${file}' (format parquet, compression zstd, row_group_size 1000)`,
    );
    const docs = [];
    for await (const { doc } of readParquetDocuments(file)) docs.push(doc);
    assert.equal(docs.length, 2500);
    assert.deepEqual(docs[2499], {
      id: "urn:uuid:2499",
      text: "text 2499",
      url: "https://example.org/2499",
      meta: {
        dump: "CC-MAIN-2024-10",
        date: "2024-02-20T10:00:00.000Z",
        language: "en",
        language_score: 0.9,
        token_count: 7497,
        info: { shard: 2, tags: ["a", "b"] }, // a struct column, as an object
      },
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
