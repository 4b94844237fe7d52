// The crawl stage end to end: archives, local files and JSONL through the pipeline runner (same
// output with 1 or 2 workers), and the live crawler against a hostile local server.
import { strict as assert } from "node:assert";
import { gzipSync } from "node:zlib";
import { join } from "node:path";
import { pipeline } from "../pipeline/pipeline.ts";
import { crawl } from "../stages/crawl.ts";
import { readDocuments } from "../stages/documents.ts";
import type { Artifact } from "../pipeline/artifact.ts";
import { extractLinks, normalizeUrl, retryAfterMs } from "../stages/crawl/crawler.ts";
import { robotsRules } from "../stages/crawl/robots.ts";

const EXAMPLES = new URL("../examples/data/", import.meta.url).pathname;

async function docsOf(artifact: Artifact, prefix = "crawl-") {
  const docs = [];
  for (const file of artifact.files(".jsonl.gz").filter((f) => f.startsWith(prefix))) {
    for await (const { doc } of readDocuments(artifact.path(file))) docs.push({ file, ...doc });
  }
  return docs;
}

Deno.test("archives, local files and JSONL become documents with provenance, whatever the worker count", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      join(dir, "page.html"),
      "<html><head><meta charset=utf-8><title>Local page</title></head><body><nav>Menu</nav>" +
        "<p>A local page about kilns and pottery, written by hand.</p></body></html>",
    );
    await Deno.writeTextFile(join(dir, "notes.md"), "# Notes\n\nPlain markdown text about firing clay.");
    await Deno.writeTextFile(join(dir, "ignored.bin"), "x");
    await Deno.writeTextFile(
      join(dir, "docs.jsonl"),
      '{"id":"a","text":"Ein kurzer deutscher Text über Keramik und Öfen."}\nnot json\n',
    );
    const config = {
      warc: [join(EXAMPLES, "*.warc.gz")],
      files: [join(dir, "*.html"), join(dir, "*.md")],
      jsonl: [join(dir, "docs.jsonl")],
    };
    const run = async (workers: number) => {
      const result = await pipeline("t", { workdir: join(dir, `w${workers}`), workers })
        .pipe(crawl(config)).execute({ quiet: true });
      return result.artifacts.crawl;
    };
    const one = await run(1);
    const two = await run(2);
    assert.deepEqual(one.files(".jsonl.gz"), [
      "crawl-00000.jsonl.gz",
      "crawl-00001.jsonl.gz",
      "crawl-00002.jsonl.gz",
      "crawl-00003.jsonl.gz",
    ]);
    assert.equal(one.digest, two.digest, "output depends on the worker count");

    const docs = await docsOf(one);
    const example = docs.find((d) => d.url === "http://example.com/")!;
    assert.match(example.text, /^Example Domain\n\nThis domain is established/);
    assert.equal(example.meta?.status, 200);
    assert.equal(example.meta?.lang, "en");
    assert.equal(example.meta?.offset, 784);
    assert.match(String(example.meta?.source), /warcio-example\.warc\.gz$/);
    assert.equal(example.meta?.fetchTime, "2017-03-06T04:02:06Z");
    assert.equal(example.meta?.contentType, "text/html");

    const local = docs.find((d) => d.url?.endsWith("page.html"))!;
    // The <title> is metadata, not a line of the text.
    assert.equal(local.text, "A local page about kilns and pottery, written by hand.");
    assert.equal(local.meta?.title, "Local page");
    assert.ok(docs.some((d) => d.text.startsWith("# Notes")));
    const jsonl = docs.find((d) => d.id === "a")!;
    assert.equal(jsonl.meta?.lang, "de");
    assert.equal(jsonl.meta?.line, 1);

    const stats = one.stats;
    assert.equal(stats.documents, docs.length);
    assert.equal(stats["skipped.bad-line"], 1);
    assert.ok((stats["skipped.record-type"] as number) > 0);
    assert.ok((stats["skipped.status"] as number) > 0, "redirects in the wget archive are skipped by status");
    // The wget archive holds robots.txt and wget's metadata:// log and manifest: not pages.
    assert.equal(stats["skipped.robots-txt"], 2);
    assert.equal(stats["skipped.metadata"], 3);
    assert.ok(docs.every((d) => !/robots\.txt$|^metadata:/.test(d.url ?? "")));
    assert.ok((stats.bytesIn as number) > 10_000);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("config errors name the field", () => {
  assert.throws(() => crawl({}), /at least one source/);
  assert.throws(() => crawl({ urls: { seeds: ["ftp://x/"] } }), /config\.urls\.seeds\.0/);
  assert.throws(() => crawl({ warc: ["a"], maxBytes: -1 }), /config\.maxBytes/);
});

Deno.test("robots.txt: groups, wildcards, $, longest match, crawl-delay, 4xx and 5xx", () => {
  const txt = "User-agent: *\nDisallow: /private\nAllow: /private/ok$\nDisallow: /*.pdf$\n\n" +
    "User-agent: kiln\nDisallow: /k\nAllow: /k/pub\nCrawl-delay: 2\n";
  const star = robotsRules("http://a/robots.txt", 200, txt, "other");
  assert.equal(star.isAllowed("http://a/private/x"), false);
  assert.equal(star.isAllowed("http://a/private/ok"), true);
  assert.equal(star.isAllowed("http://a/private/ok2"), false);
  assert.equal(star.isAllowed("http://a/x.pdf"), false);
  assert.equal(star.isAllowed("http://a/x.pdfx"), true);
  const kiln = robotsRules("http://a/robots.txt", 200, txt, "kiln/0.1");
  assert.equal(kiln.isAllowed("http://a/private/x"), true, "a specific group replaces *");
  assert.equal(kiln.isAllowed("http://a/k/x"), false);
  assert.equal(kiln.isAllowed("http://a/k/pub/1"), true);
  assert.equal(kiln.crawlDelay, 2);
  assert.equal(robotsRules("http://a/robots.txt", 404, "", "kiln").isAllowed("http://a/x"), true);
  assert.equal(robotsRules("http://a/robots.txt", 503, "", "kiln").isAllowed("http://a/x"), false);
});

Deno.test("URL normalisation, link extraction and Retry-After", () => {
  assert.equal(normalizeUrl("HTTP://Example.COM:80/a#frag"), "http://example.com/a");
  assert.equal(normalizeUrl("mailto:x@y"), undefined);
  assert.equal(normalizeUrl("/b?", "http://h/a"), "http://h/b");
  assert.deepEqual(
    extractLinks(
      '<base href="http://h/d/"><a href="x">x</a><a href="/y#z">y</a><a rel=nofollow href=n>n</a>',
      "http://h/",
    ),
    ["http://h/d/x", "http://h/y"],
  );
  assert.equal(retryAfterMs("3"), 3000);
  assert.equal(retryAfterMs(new Date(10_000).toUTCString(), 4_000), 6_000);
  assert.equal(retryAfterMs("soon"), undefined);
});

/** A hostile test server: every misbehaviour the crawler must survive. */
function hostileServer() {
  const hits = new Map<string, number>();
  const bomb = new Uint8Array(gzipSync(new Uint8Array(64 * 1024 * 1024))); // 64 MiB of zeros, ~64 KB compressed
  // A 600 KB robots.txt: its first 500 KiB are parsed (RFC 9309 §2.5), the rest is not. The cut falls
  // inside "Disallow: /deep/2", which must not be read as "Disallow: /"; the "Disallow: /" after the
  // cut must not count either.
  const robotsHead = "User-agent: *\nDisallow: /secret\nDisallow: /*.pdf$\n";
  const straddle = 500 * 1024 - "Disallow: /".length - robotsHead.length;
  const padLines = Math.floor(straddle / 100) - 1;
  const robots = robotsHead + ("#".repeat(99) + "\n").repeat(padLines) +
    "#".repeat(straddle - padLines * 100 - 1) + "\n" + "Disallow: /deep/2\n" + "#".repeat(99_999) +
    "\nDisallow: /\n";
  const page = (title: string, body: string, links: string[] = []) =>
    `<html><head><title>${title}</title></head><body><p>${body}</p>${
      links.map((l) => `<a href="${l}">${l}</a>`).join(" ")
    }</body></html>`;
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    const n = (hits.get(path) ?? 0) + 1;
    hits.set(path, n);
    const html = (s: string, headers: Record<string, string> = {}) =>
      new Response(s, { headers: { "content-type": "text/html; charset=utf-8", ...headers } });
    switch (path) {
      case "/robots.txt":
        return new Response(robots);
      case "/":
        return html(page("Home", "The home page of the hostile test server.", [
          "/secret/page",
          "/doc.pdf",
          "/loop-a",
          "/slow",
          "/huge",
          "/bomb",
          "/flaky",
          "/busy",
          "/latin1",
          "/nocharset",
          "/malformed",
          "/binary",
          "/missing",
          "http://elsewhere.invalid/",
          "/deep/1",
        ]));
      case "/loop-a":
        return Response.redirect(new URL("/loop-b", req.url), 302);
      case "/loop-b":
        return Response.redirect(new URL("/loop-a", req.url), 302);
      case "/slow": {
        // Trickles a byte every 200 ms, forever (until the client gives up).
        let timer: ReturnType<typeof setInterval>;
        return new Response(
          new ReadableStream({
            start(c) {
              c.enqueue(new TextEncoder().encode("<p>"));
              timer = setInterval(() => c.enqueue(new TextEncoder().encode("z")), 200);
            },
            cancel() {
              clearInterval(timer);
            },
          }),
          { headers: { "content-type": "text/html" } },
        );
      }
      case "/huge": {
        // 50 MB, streamed without Content-Length.
        let sent = 0;
        const chunk = new TextEncoder().encode("<p>" + "x".repeat(65_530) + "</p>");
        return new Response(
          new ReadableStream({
            pull(c) {
              if (sent >= 50_000_000) return c.close();
              c.enqueue(chunk);
              sent += chunk.length;
            },
          }),
          { headers: { "content-type": "text/html" } },
        );
      }
      case "/bomb":
        return new Response(bomb, { headers: { "content-type": "text/html", "content-encoding": "gzip" } });
      case "/flaky":
        return n <= 2
          ? new Response("down", { status: 503 })
          : html(page("Flaky", "Flaky works on the third try."));
      case "/busy":
        return n === 1
          ? new Response("slow down", { status: 429, headers: { "retry-after": "1" } })
          : html(page("Busy", "Busy answered after Retry-After."));
      case "/latin1":
        return new Response(
          new Uint8Array([
            ...new TextEncoder().encode("<p>Caf"),
            0xe9,
            ...new TextEncoder().encode(" cr"),
            0xe8,
            0x6d,
            0x65,
          ]),
          { headers: { "content-type": "text/html; charset=iso-8859-1" } },
        );
      case "/nocharset":
        return new Response(new Uint8Array([...new TextEncoder().encode("<p>Na"), 0xef, 0x76, 0x65]), {
          headers: { "content-type": "text/html" },
        });
      case "/malformed":
        return html("<html><body><p>Broken <b>markup <i>still</b> readable</p></div></span><p>tail");
      case "/binary":
        return new Response(new Uint8Array(1000), {
          headers: { "content-type": "application/octet-stream" },
        });
      case "/deep/1":
        return html(page("Deep 1", "Depth one.", ["/deep/2"]));
      case "/deep/2":
        return html(page("Deep 2", "Depth two, beyond the limit.", ["/deep/3"]));
      default:
        return new Response("not found", { status: 404 });
    }
  });
  const base = `http://127.0.0.1:${server.addr.port}`;
  return { server, base, hits };
}

Deno.test("the live crawler keeps to its limits against a hostile server and says why it skipped each URL", async () => {
  const dir = await Deno.makeTempDir();
  const { server, base, hits } = hostileServer();
  try {
    const result = await pipeline("t", { workdir: dir, workers: 1 }).pipe(crawl({
      urls: {
        seeds: [base + "/"],
        maxDepth: 1,
        delayMs: 0,
        retries: 2,
        backoffMs: 100,
        timeoutMs: 2000,
        connectTimeoutMs: 1000,
        warc: true,
      },
      maxBytes: 1_000_000,
      allowPrivateNetwork: true, // the test server is on 127.0.0.1
    })).execute({ quiet: true });
    const artifact = result.artifacts.crawl;
    const docs = await docsOf(artifact, "crawl-live-");
    const byPath = new Map(docs.map((d) => [new URL(d.url!).pathname, d]));
    assert.deepEqual([...byPath.keys()].sort(), [
      "/",
      "/busy",
      "/deep/1",
      "/flaky",
      "/latin1",
      "/malformed",
      "/nocharset",
    ]);
    assert.equal(byPath.get("/latin1")!.text, "Café crème");
    assert.equal(byPath.get("/nocharset")!.text, "Naïve");
    assert.equal(byPath.get("/malformed")!.text, "Broken markup still readable\n\ntail");
    assert.equal(byPath.get("/")!.meta?.lang, "en");

    const skipped: { url: string; reason: string }[] = [];
    for (const f of artifact.files(".json").filter((f) => f.startsWith("skipped/"))) {
      skipped.push(...await artifact.readJson(f) as { url: string; reason: string }[]);
    }
    const reasons = Object.fromEntries(skipped.map((s) => [new URL(s.url).pathname, s.reason]));
    assert.deepEqual(reasons, {
      "/secret/page": "robots",
      "/doc.pdf": "robots",
      "/loop-a": "redirects",
      "/slow": "error",
      "/huge": "size",
      "/bomb": "size",
      "/binary": "type",
      "/missing": "status",
    });
    assert.equal(hits.get("/secret/page"), undefined, "a robots-disallowed page was fetched");
    assert.equal(hits.get("/deep/2"), undefined, "maxDepth was exceeded");
    assert.equal(hits.get("/flaky"), 3);
    assert.equal(hits.get("/busy"), 2);
    assert.equal(artifact.stats["skipped.scope"], undefined, "out-of-scope links are never queued");
    assert.equal(artifact.stats.retries, 5, "flaky 2, busy 1, and the trickling page timed out 3 times");

    // The WARC of the crawl reads back, and documents point at their response records.
    const { readArchive } = await import("../stages/crawl/warc.ts");
    const doc = byPath.get("/latin1")!;
    const file = await Deno.open(artifact.path(String(doc.meta?.source)));
    for await (const record of readArchive({ name: "w", stream: file.readable })) {
      if (record.offset === doc.meta?.offset) {
        assert.equal(record.type, "response");
        assert.equal(record.url, doc.url);
      }
    }
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
