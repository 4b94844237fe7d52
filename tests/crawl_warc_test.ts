// WARC/ARC reading on the shared corpus of real and broken archives, plus HTTP payload decoding,
// charset detection, main-text extraction and language identification.
import { strict as assert } from "node:assert";
import { gzipSync } from "node:zlib";
import { type ArchiveWarning, readArchive } from "../stages/crawl/warc.ts";
import { dechunk, parseHttpResponse } from "../stages/crawl/http.ts";
import { decodeHtml, detectLanguage, extractText } from "../stages/crawl/extract.ts";

const CORPUS = new URL("../../shared/data/warc/", import.meta.url).pathname;
const haveCorpus = await Deno.stat(CORPUS).then(() => true, () => false);
if (!haveCorpus) console.warn(`skipping WARC corpus tests: ${CORPUS} is absent`);

function streamOf(bytes: Uint8Array, chunk = 7): ReadableStream<Uint8Array> {
  let at = 0;
  return new ReadableStream({
    pull(c) {
      if (at >= bytes.length) return c.close();
      c.enqueue(bytes.slice(at, at + chunk));
      at += chunk;
    },
  });
}

async function readAll(name: string, bytes?: Uint8Array) {
  const warnings: ArchiveWarning[] = [];
  const stream = bytes ? streamOf(bytes) : (await Deno.open(CORPUS + name)).readable;
  const records = [];
  for await (const r of readArchive({ name, stream }, { onWarning: (w) => warnings.push(w) })) {
    records.push(r);
  }
  return { records, warnings };
}

// Expected record counts and warnings for every file of the corpus.
const EXPECTED: Record<string, { records: number; warnings: number[] }> = {
  "IAH-20080430204825-00000-blackbook-truncated.warc.gz": { records: 23, warnings: [] },
  "IAH-urls-wget.warc.gz": { records: 36, warnings: [] },
  "warcio-bad.arc": { records: 1, warnings: [0, 134, 262] },
  "warcio-example-bad-non-chunked.warc.gz": { records: 6, warnings: [] },
  "warcio-example-digest.warc": { records: 4, warnings: [] },
  "warcio-example-iana.org-chunked.warc": { records: 3, warnings: [] },
  "warcio-example-resource.warc.gz": { records: 3, warnings: [] },
  "warcio-example-space-in-target-uri.warc.gz": { records: 2, warnings: [] },
  "warcio-example-trunc.warc": { records: 3, warnings: [1197] },
  "warcio-example-wget-bad-target-uri.warc.gz": { records: 6, warnings: [] },
  "warcio-example-wrong-chunks.warc.gz": { records: 2, warnings: [] },
  "warcio-example.arc.gz": { records: 1, warnings: [] },
  "warcio-example.warc": { records: 6, warnings: [] },
  "warcio-example.warc.gz": { records: 6, warnings: [] },
  "warcio-post-test.warc.gz": { records: 6, warnings: [] },
  "wikipedia-sopa-blackout-2012-homepage.warc.gz": { records: 164, warnings: [] },
};

Deno.test({
  name: "every archive of the corpus reads: intact records, and damage as warnings with byte offsets",
  ignore: !haveCorpus,
  async fn() {
    const names = [...Deno.readDirSync(CORPUS)].map((e) => e.name).filter((n) => !n.endsWith(".md")).sort();
    assert.deepEqual(names, Object.keys(EXPECTED).sort(), "a corpus file without an expectation");
    for (const name of names) {
      const { records, warnings } = await readAll(name);
      assert.equal(records.length, EXPECTED[name].records, name);
      assert.deepEqual(warnings.map((w) => w.offset), EXPECTED[name].warnings, name);
      for (const r of records) assert.equal(r.block?.length, r.length, `${name}@${r.offset}`);
    }
  },
});

Deno.test({
  name: "gzip-per-record offsets are the gzip member offsets; target URIs are cleaned",
  ignore: !haveCorpus,
  async fn() {
    const { records } = await readAll("warcio-example.warc.gz");
    assert.deepEqual(records.map((r) => r.offset), [0, 353, 784, 2012, 2621, 3207]);
    assert.equal(records[2].type, "response");
    assert.equal(records[2].url, "http://example.com/");
    const space = await readAll("warcio-example-space-in-target-uri.warc.gz");
    assert.ok(space.records[1].url?.includes("%20"), space.records[1].url);
    const wget = await readAll("warcio-example-wget-bad-target-uri.warc.gz");
    assert.ok(wget.records.every((r) => !r.url?.startsWith("<")));
  },
});

Deno.test({
  name: "an ARC record gives its URL, date and HTTP response",
  ignore: !haveCorpus,
  async fn() {
    const { records } = await readAll("warcio-example.arc.gz");
    assert.equal(records[0].format, "arc");
    assert.equal(records[0].url, "http://example.com/");
    assert.equal(records[0].date, "2014-02-16T05:02:21Z");
    const http = parseHttpResponse(records[0].block!);
    assert.equal(http?.status, 200);
    assert.match(new TextDecoder().decode(http!.body), /Example Domain/);
  },
});

Deno.test({
  name: "a file cut in the middle of a gzip record keeps the records before it and warns where",
  ignore: !haveCorpus,
  async fn() {
    const whole = await Deno.readFile(CORPUS + "warcio-example.warc.gz");
    const { records, warnings } = await readAll("cut", whole.slice(0, 2300));
    assert.equal(records.length, 3);
    assert.deepEqual(warnings.map((w) => w.offset), [2012]);
    assert.match(warnings[0].message, /truncated/);
  },
});

Deno.test("a plain WARC with garbage between records resynchronises on the next header", async () => {
  const rec = (body: string) =>
    `WARC/1.0\r\nWARC-Type: resource\r\nWARC-Target-URI: http://x/\r\nContent-Length: ${body.length}\r\n\r\n${body}\r\n\r\n`;
  const text = rec("one") + "garbage line\r\nmore garbage\r\n" + rec("two");
  const { records, warnings } = await readAll("x.warc", new TextEncoder().encode(text));
  assert.deepEqual(records.map((r) => new TextDecoder().decode(r.block)), ["one", "two"]);
  assert.equal(warnings.length, 1);
  assert.equal(warnings[0].offset, rec("one").length);
});

Deno.test("non-gzip bytes after a gzip member stop reading with a warning, not a crash", async () => {
  const member = gzipSync(
    "WARC/1.0\r\nWARC-Type: resource\r\nWARC-Target-URI: http://x/\r\nContent-Length: 2\r\n\r\nok\r\n\r\n",
  );
  const bytes = new Uint8Array([...member, ...new TextEncoder().encode("not gzip at all")]);
  const { records, warnings } = await readAll("x.warc.gz", bytes);
  assert.equal(records.length, 1);
  assert.equal(warnings[0].offset, member.length);
});

Deno.test("chunked and gzip-encoded HTTP payloads are decoded; bad chunks are reported", () => {
  const body = gzipSync("<p>hello</p>");
  const head = "HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nTransfer-Encoding: chunked\r\n\r\n";
  const chunked = new Uint8Array([
    ...new TextEncoder().encode(head + body.length.toString(16) + "\r\n"),
    ...body,
    ...new TextEncoder().encode("\r\n0\r\n\r\n"),
  ]);
  const http = parseHttpResponse(chunked)!;
  assert.equal(http.status, 200);
  assert.equal(new TextDecoder().decode(http.body), "<p>hello</p>");
  assert.equal(http.problem, undefined);
  assert.equal(dechunk(new TextEncoder().encode("ff\r\nshort")), undefined);
  assert.equal(parseHttpResponse(new TextEncoder().encode("not http")), undefined);
});

Deno.test("charset: BOM, then HTTP header, then meta, then UTF-8 validity, else windows-1252", () => {
  const latin = new Uint8Array([0x63, 0x61, 0x66, 0xe9]); // "café" in latin-1
  assert.deepEqual(decodeHtml(latin, "text/html; charset=iso-8859-1"), {
    text: "café",
    charset: "windows-1252",
    source: "http",
  });
  assert.equal(decodeHtml(latin).source, "fallback");
  assert.equal(decodeHtml(latin).text, "café");
  const meta = new Uint8Array([...new TextEncoder().encode('<meta charset="koi8-r">'), 0xc1]);
  assert.equal(decodeHtml(meta).charset, "koi8-r");
  assert.equal(decodeHtml(meta).text.endsWith("а"), true);
  const bom = new Uint8Array([0xef, 0xbb, 0xbf, ...new TextEncoder().encode("é")]);
  assert.deepEqual(decodeHtml(bom, "text/html; charset=iso-8859-1"), {
    text: "é",
    charset: "utf-8",
    source: "bom",
  });
  assert.equal(
    decodeHtml(new TextEncoder().encode("naïve"), "text/html; charset=bogus").source,
    "utf8-valid",
  );
  const sjis = new Uint8Array([0x82, 0xa0]); // "あ" in Shift_JIS
  assert.equal(decodeHtml(sjis, "text/html; charset=Shift_JIS").text, "あ");
});

Deno.test("extraction keeps title, headings and paragraphs and drops boilerplate", () => {
  const html = `<!doctype html><html><head><title>The Title</title><style>p{color:red}</style>
    <script>var x = "script text";</script></head><body>
    <div id="cookie-banner">We use cookies. Accept all</div>
    <nav><a href="/">Home</a> <a href="/about">About</a></nav>
    <header class="site-header"><h1>Page heading</h1></header>
    <div class="menu"><a href="/a">A</a> | <a href="/b">B</a></div>
    <h2>Section</h2><p>First paragraph with <b>bold</b> text &amp; an entity.</p>
    <p>Second paragraph<br>with a break.</p>
    <ul><li><a href="/1">link one</a></li><li><a href="/2">link two</a></li></ul>
    <div role="contentinfo">Copyright 2024</div><footer>Footer text</footer>
    <p hidden>hidden text</p></body></html>`;
  const page = extractText(html);
  assert.equal(page.title, "The Title");
  assert.equal(
    page.text,
    "Page heading\n\nSection\n\nFirst paragraph with bold text & an entity.\n\nSecond paragraph\nwith a break.",
  );
});

Deno.test("extraction prefers <main>/<article> and survives malformed HTML", () => {
  const intro = "Lorem ipsum dolor sit amet, consectetur adipiscing elit. ".repeat(5);
  const page = extractText(`<p>Teaser outside</p><article><h1>Story</h1><p>${intro}</p></article><p>After`);
  assert.equal(page.text, `Story\n\n${intro.trim()}`);
  const broken = extractText("<html><body><p>unclosed <div><b>bold <i>both</b> tail</p></span></body>< p>x");
  assert.match(broken.text, /unclosed/);
  assert.match(broken.text, /tail/);
  assert.deepEqual(extractText(""), { title: "", text: "" });
});

Deno.test("language identification returns ISO 639-1 codes with a score", () => {
  const en = detectLanguage(
    "The quick brown fox jumps over the lazy dog and keeps running through the forest.",
  );
  assert.equal(en.lang, "en");
  assert.ok(en.score > 0.5 && en.score <= 1, String(en.score));
  assert.equal(detectLanguage("Der schnelle braune Fuchs springt über den faulen Hund.").lang, "de");
  assert.deepEqual(detectLanguage(""), { lang: "und", score: 0 });
});
