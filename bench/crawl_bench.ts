// Crawl benchmarks: WARC → text throughput, extraction documents/s, live crawl pages/s.
// Run: deno run -A bench/crawl_bench.ts   (needs ../shared/data/warc for the WARC figures)
import { readArchive } from "../stages/crawl/warc.ts";
import { parseHttpResponse } from "../stages/crawl/http.ts";
import { pageDocument } from "../stages/crawl/sources.ts";
import { crawl } from "../stages/crawl/crawler.ts";
import { Checkpoint, OutputWriter } from "../pipeline/workspace.ts";

const WIKI =
  new URL("../../shared/data/warc/wikipedia-sopa-blackout-2012-homepage.warc.gz", import.meta.url).pathname;
const opts = {
  contentTypes: ["text/html", "application/xhtml+xml", "text/plain"],
  maxBytes: 16 << 20,
  minChars: 1,
};

if (await Deno.stat(WIKI).then(() => true, () => false)) {
  // The WARC repeated 40 times as one stream (~14.5 MB compressed), read record by record.
  const bytes = await Deno.readFile(WIKI);
  const repeats = 40;
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      for (let i = 0; i < repeats; i++) c.enqueue(bytes);
      c.close();
    },
  });
  let docs = 0;
  let pages = 0;
  const htmls: { body: Uint8Array; type: string }[] = [];
  const t0 = performance.now();
  for await (const r of readArchive({ name: "wiki", stream })) {
    if (r.type !== "response" || !r.block) continue;
    const http = parseHttpResponse(r.block);
    if (!http || http.status !== 200) continue;
    pages++;
    const type = http.headers.get("content-type") ?? "";
    const doc = pageDocument({ bytes: http.body, contentType: type, source: "wiki", offset: r.offset }, opts);
    if (!("skip" in doc)) {
      docs++;
      if (htmls.length < 20) htmls.push({ body: http.body, type });
    }
  }
  const s = (performance.now() - t0) / 1000;
  console.log(
    `WARC→text: ${(bytes.length * repeats / 1e6 / s).toFixed(1)} MB/s of gzipped WARC on one core ` +
      `(${pages} responses, ${docs} documents, ${s.toFixed(2)} s)`,
  );
  // Extraction alone on the HTML pages of that WARC.
  const t1 = performance.now();
  let n = 0;
  while (performance.now() - t1 < 3000) {
    for (const h of htmls) pageDocument({ bytes: h.body, contentType: h.type, source: "x" }, opts), n++;
  }
  const kb = htmls.reduce((a, h) => a + h.body.length, 0) / htmls.length / 1024;
  console.log(
    `extraction (decode + HTML→text + language): ${(n / ((performance.now() - t1) / 1000)).toFixed(0)} ` +
      `docs/s on one core (avg page ${kb.toFixed(0)} KiB)`,
  );
} else {
  console.warn(`skipping WARC benchmarks: ${WIKI} is absent`);
}

// Live crawl of a local site of 2,000 linked pages (CRAWL_BENCH_PAGES), politeness off; RSS is
// sampled every tenth of the crawl to show whether memory stays flat. With
// `--v8-flags=--expose-gc` a full GC runs before each sample, so the samples (and the V8 heap in
// use) show what is retained rather than garbage not yet collected.
const PAGES = Number(Deno.env.get("CRAWL_BENCH_PAGES") ?? 2000);
const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
  const path = new URL(req.url).pathname;
  if (path === "/robots.txt") return new Response("User-agent: *\nAllow: /\n");
  const i = Number(path.slice(1)) || 0;
  const links = [1, 2, 3].map((k) => `<a href="/${(i * 3 + k) % PAGES}">next</a>`).join(" ");
  return new Response(
    `<html><title>Page ${i}</title><p>Page number ${i} of the benchmark site. ${
      "Words ".repeat(100)
    }</p>${links}</html>`,
    {
      headers: { "content-type": "text/html; charset=utf-8" },
    },
  );
});
const dir = await Deno.makeTempDir();
const env = {
  out: new OutputWriter(`${dir}/out`, `${dir}/tmp`),
  checkpoint: new Checkpoint(`${dir}/ckpt`, `${dir}/tmp`),
  signal: new AbortController().signal,
  log: () => {},
  progress: ({ done }: { done: number }) => {
    if (done % (PAGES / 10) !== 0) return;
    gc?.();
    samples.push(Deno.memoryUsage());
  },
};
const gc = (globalThis as { gc?: () => void }).gc;
const samples: Deno.MemoryUsage[] = [];
const rss0 = Deno.memoryUsage().rss;
const t2 = performance.now();
const stats = await crawl(
  {
    seeds: [`http://127.0.0.1:${server.addr.port}/0`],
    scope: "host",
    allow: [],
    deny: [],
    maxDepth: 100,
    maxPages: PAGES,
    userAgent: "kiln-bench",
    robots: true,
    concurrency: 16,
    delayMs: 0,
    retries: 0,
    backoffMs: 0,
    maxRetryAfterMs: 0,
    maxRedirects: 5,
    connectTimeoutMs: 5000,
    timeoutMs: 10000,
    batchPages: 200,
    warc: false,
  },
  opts,
  env,
);
const s2 = (performance.now() - t2) / 1000;
console.log(
  `live crawl: ${
    (stats.fetched / s2).toFixed(0)
  } pages/s (${stats.fetched} pages, ${stats.documents} documents, ` +
    `${s2.toFixed(1)} s, RSS ${(rss0 / 1e6).toFixed(0)} → ${(Deno.memoryUsage().rss / 1e6).toFixed(0)} MB)`,
);
const series = (key: "rss" | "heapUsed") => samples.map((m) => (m[key] / 1e6).toFixed(0)).join(" ");
console.log(`every ${PAGES / 10} pages${gc ? ", after a full GC" : ""}: RSS (MB) ${series("rss")}`);
console.log(`                     V8 heap used (MB) ${series("heapUsed")}`);
await server.shutdown();
await Deno.remove(dir, { recursive: true });
