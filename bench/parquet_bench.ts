/**
 * Parquet read/write throughput of the npm libraries kiln could use, on documents shaped like a
 * crawl's (`id`, `text`, `url`, `meta` as JSON), written with Snappy in row groups of 5,000 rows.
 * MB/s counts the UTF-8 bytes of the text column. Each reader reads the file its own library wrote
 * (all four read each other's files: the cross-reads are checked, not timed).
 *
 *   deno run -A bench/parquet_bench.ts [--docs 10000] [--dir /tmp/kiln-parquet-bench]
 *
 * @module
 */
import { cpuUsage } from "node:process";
import { parseArgs } from "node:util";
import { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects } from "npm:hyparquet@^1.31.5";
import { fileWriter, ParquetWriter } from "npm:hyparquet-writer@^0.17.0";
import * as wasm from "npm:parquet-wasm@^0.8.0";
import * as arrow from "npm:apache-arrow@^21.2.0";
import parquetjs from "npm:@dsnp/parquetjs@1.8.9";
import { DuckDBInstance } from "npm:@duckdb/node-api@^1.5.6-r.1";
import { mulberry32 } from "../model/rng.ts";
import { readParquetDocuments } from "../stages/crawl/parquet.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { docs: { type: "string", default: "10000" }, dir: { type: "string", default: "" } },
});
const N = Number(values.docs);
const dir = values.dir || await Deno.makeTempDir({ prefix: "kiln-parquet-bench-" });
await Deno.mkdir(dir, { recursive: true });
const ROWS = 5000;

// Documents: Zipf-ish words from a 5,000-word vocabulary, 100–1,000 words each (≈ crawl text).
const random = mulberry32(7);
const vocab = Array.from({ length: 5000 }, (_, i) => i.toString(36) + "abcdefghij".slice(0, 1 + (i % 7)));
const ids: string[] = [], texts: string[] = [], urls: string[] = [], metas: string[] = [];
let textBytes = 0;
const encoder = new TextEncoder();
for (let i = 0; i < N; i++) {
  const words = 100 + Math.floor(random() * 900);
  const parts: string[] = [];
  for (let w = 0; w < words; w++) parts.push(vocab[Math.floor(vocab.length * random() ** 3)]);
  const text = parts.join(" ");
  textBytes += encoder.encode(text).length;
  ids.push(`doc-${i}`);
  texts.push(text);
  urls.push(`https://example.org/${i % 97}/page-${i}.html`);
  metas.push(JSON.stringify({ lang: "en", langScore: 0.8, source: "bench.warc.gz", offset: i * 4096 }));
}
const MB = textBytes / 1e6;
console.log(`${N} documents, ${MB.toFixed(1)} MB of text; files in ${dir}`);

/**
 * Best of three runs after a warm-up: MB/s by wall clock, and by CPU time (user + system, all
 * threads), which a busy shared machine disturbs less.
 */
async function time(label: string, fn: () => Promise<unknown> | unknown) {
  await fn(); // warm-up (JIT, wasm instantiation)
  let best = { wall: Infinity, cpu: Infinity };
  for (let i = 0; i < 3; i++) {
    const [t0, c0] = [performance.now(), cpuUsage()];
    await fn();
    const c1 = cpuUsage();
    const run = {
      wall: (performance.now() - t0) / 1000,
      cpu: (c1.user + c1.system - c0.user - c0.system) / 1e6,
    };
    if (run.wall < best.wall) best = run;
  }
  console.log(
    `${label.padEnd(50)} ${(MB / best.wall).toFixed(1).padStart(7)} MB/s wall ${
      (MB / best.cpu).toFixed(1).padStart(7)
    } MB/s CPU  (${best.wall.toFixed(2)} s)`,
  );
}

const files = {
  hyparquet: `${dir}/hyparquet.parquet`,
  wasm: `${dir}/parquet-wasm.parquet`,
  parquetjs: `${dir}/parquetjs.parquet`,
};
const STRING = { type: "BYTE_ARRAY", converted_type: "UTF8", repetition_type: "OPTIONAL" } as const;

await time("write hyparquet-writer 0.17 (snappy)", () => {
  const writer = new ParquetWriter({
    writer: fileWriter(files.hyparquet),
    schema: [
      { name: "schema", num_children: 4 },
      { name: "id", ...STRING },
      { name: "text", ...STRING },
      { name: "url", ...STRING },
      { name: "meta", type: "BYTE_ARRAY", converted_type: "JSON", repetition_type: "OPTIONAL" },
    ],
    statistics: false,
  });
  for (let i = 0; i < N; i += ROWS) {
    writer.write({
      columnData: [
        { name: "id", data: ids.slice(i, i + ROWS) },
        { name: "text", data: texts.slice(i, i + ROWS) },
        { name: "url", data: urls.slice(i, i + ROWS) },
        { name: "meta", data: metas.slice(i, i + ROWS) },
      ],
      rowGroupSize: ROWS,
    });
  }
  writer.finish();
});

await time("write parquet-wasm 0.8 (snappy, via apache-arrow)", () => {
  const props = new wasm.WriterPropertiesBuilder().setCompression(wasm.Compression.SNAPPY)
    .setMaxRowGroupSize(ROWS).build();
  const table = arrow.tableFromArrays({ id: ids, text: texts, url: urls, meta: metas });
  const bytes = wasm.writeParquet(wasm.Table.fromIPCStream(arrow.tableToIPC(table, "stream")), props);
  Deno.writeFileSync(files.wasm, bytes);
});

await time("write @dsnp/parquetjs 1.8 (snappy)", async () => {
  const field = { type: "UTF8", compression: "SNAPPY", optional: true } as const;
  const schema = new parquetjs.ParquetSchema({ id: field, text: field, url: field, meta: field });
  const writer = await parquetjs.ParquetWriter.openFile(schema, files.parquetjs, { rowGroupSize: ROWS });
  for (let i = 0; i < N; i++) {
    await writer.appendRow({ id: ids[i], text: texts[i], url: urls[i], meta: metas[i] });
  }
  await writer.close();
});

for (const [name, path] of Object.entries(files)) {
  console.log(`  ${name}: ${(Deno.statSync(path).size / 1e6).toFixed(1)} MB on disk`);
}

/** hyparquet, one row group at a time, with its built-in snappy (kiln's reader adds hysnappy). */
async function readHyparquet(path: string): Promise<number> {
  const file = await asyncBufferFromFile(path);
  const metadata = await parquetMetadataAsync(file);
  let chars = 0, start = 0;
  for (const group of metadata.row_groups) {
    const end = start + Number(group.num_rows);
    const rows = await parquetReadObjects({ file, metadata, rowStart: start, rowEnd: end });
    for (const row of rows) chars += (row.text as string).length;
    start = end;
  }
  return chars;
}

function readWasm(path: string): number {
  const table = arrow.tableFromIPC(wasm.readParquet(Deno.readFileSync(path)).intoIPCStream());
  let chars = 0;
  for (const text of table.getChild("text")!) chars += (text as string).length;
  return chars;
}

async function readParquetjs(path: string): Promise<number> {
  const reader = await parquetjs.ParquetReader.openFile(path);
  const cursor = reader.getCursor();
  let chars = 0;
  for (let row = await cursor.next(); row; row = await cursor.next()) {
    chars += (row as { text: string }).text.length;
  }
  await reader.close();
  return chars;
}

const duck = await (await DuckDBInstance.create(":memory:")).connect();
async function readDuckdb(path: string): Promise<number> {
  const result = await duck.runAndReadAll(`select text from read_parquet('${path}')`);
  let chars = 0;
  for (const [text] of result.getRows()) chars += (text as string).length;
  return chars;
}

const expected = texts.reduce((a, t) => a + t.length, 0);
const readers = { hyparquet: readHyparquet, wasm: readWasm, parquetjs: readParquetjs, duckdb: readDuckdb };
for (const [reader, read] of Object.entries(readers)) {
  for (const [writer, path] of Object.entries(files)) {
    const chars = await Promise.resolve().then(() => read(path)).catch((e) =>
      `error: ${(e as Error).message}`
    );
    if (chars !== expected) {
      console.log(`! ${reader} reading ${writer}'s file: ${chars} characters, not ${expected}`);
    }
  }
}
await time("read hyparquet 1.31 (row groups, built-in JS snappy)", () => readHyparquet(files.hyparquet));
await time("read kiln readParquetDocuments (+ hysnappy wasm)", async () => {
  let chars = 0;
  for await (const { doc } of readParquetDocuments(files.hyparquet)) chars += doc.text.length;
  return chars;
});
await time("read parquet-wasm 0.8 (whole file → apache-arrow)", () => readWasm(files.wasm));
await time("read @dsnp/parquetjs 1.8 (row cursor)", () => readParquetjs(files.parquetjs));
await time("read DuckDB 1.5 native (reference: → JS strings)", () => readDuckdb(files.hyparquet));
if (!values.dir) await Deno.remove(dir, { recursive: true });
