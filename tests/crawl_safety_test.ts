// What a crawl reads is bounded by what its config names (issue 14): globs do not follow symbolic links
// out of their folder, the live crawler and archive URLs reach only public addresses (after DNS and at
// every redirect) unless the config allows more, `maxBytes` bounds JSONL lines in bytes, and a truncated
// compressed JSONL file is a warning that keeps the documents before the damage.
import { strict as assert } from "node:assert";
import { gzipSync, zstdCompressSync } from "node:zlib";
import { join } from "node:path";
import { pipeline } from "../pipeline/pipeline.ts";
import { crawl } from "../stages/crawl.ts";
import { readDocuments } from "../stages/documents.ts";
import { expandFiles } from "../pipeline/files.ts";
import { DataError, KilnError } from "../pipeline/errors.ts";
import { AddressGuard, nonPublicRange } from "../stages/crawl/address.ts";
import type { Artifact } from "../pipeline/artifact.ts";

const EXAMPLES = new URL("../examples/data/", import.meta.url).pathname;

async function docsOf(artifact: Artifact) {
  const docs = [];
  for (const file of artifact.files(".jsonl.gz").filter((f) => f.startsWith("crawl-"))) {
    for await (const { doc } of readDocuments(artifact.path(file))) docs.push(doc);
  }
  return docs;
}

async function withDir(fn: (dir: string) => Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Runs one crawl stage in its own workdir; returns its artifact and the log lines. */
async function runCrawl(dir: string, name: string, config: Parameters<typeof crawl>[0]) {
  const result = await pipeline("t", { workdir: join(dir, name), workers: 1 }).pipe(crawl(config))
    .execute({ quiet: true });
  return result.artifacts.crawl;
}

/** `data/` with a page, a link inside it, and links to a file and a folder outside it. */
async function linkedFolder(dir: string) {
  const data = join(dir, "data");
  const secret = join(dir, "secret");
  await Deno.mkdir(join(data, "sub"), { recursive: true });
  await Deno.mkdir(secret);
  await Deno.writeTextFile(join(secret, "passwd.txt"), "root:x:0:0:secret password file");
  await Deno.writeTextFile(join(secret, "key.txt"), "a secret key");
  await Deno.writeTextFile(join(data, "page.txt"), "A page about kilns.");
  await Deno.symlink(join(data, "page.txt"), join(data, "sub", "again.txt")); // stays inside
  await Deno.symlink(join(secret, "passwd.txt"), join(data, "passwd.txt"));
  await Deno.symlink(secret, join(data, "sub", "secrets"));
  await Deno.symlink(join(dir, "nowhere.txt"), join(data, "dangling.txt"));
  return data;
}

Deno.test("globs do not follow symbolic links out of their folder unless followSymlinks is set", async () => {
  await withDir(async (dir) => {
    const data = await linkedFolder(dir);
    const all = [join(data, "**", "*.txt"), join(data, "*", "secrets", "*.txt")];
    assert.deepEqual(await expandFiles([all[0]]), [
      join(data, "page.txt"),
      join(data, "sub", "again.txt"),
    ]);
    const outside: string[][] = [];
    await expandFiles([all[0]], { onOutside: (path, target) => outside.push([path, target]) });
    assert.deepEqual(outside, [[
      join(data, "passwd.txt"),
      await Deno.realPath(join(dir, "secret", "passwd.txt")),
    ]]);
    await assert.rejects(
      expandFiles([all[1]]),
      (e) =>
        e instanceof KilnError &&
        /2 symbolic links leading outside it left out; set followSymlinks/.test(e.message),
    );
    assert.deepEqual(await expandFiles(all, { followSymlinks: true }), [
      join(data, "page.txt"),
      join(data, "passwd.txt"),
      join(data, "sub", "again.txt"),
      join(data, "sub", "secrets", "key.txt"),
      join(data, "sub", "secrets", "passwd.txt"),
    ]);
    // A plain path names its file, links and all.
    assert.deepEqual(await expandFiles([join(data, "passwd.txt")]), [join(data, "passwd.txt")]);

    const closed = await runCrawl(dir, "closed", { files: [all[0]] });
    const texts = (await docsOf(closed)).map((d) => d.text).sort();
    assert.deepEqual(texts, ["A page about kilns.", "A page about kilns."]);
    assert.equal(closed.stats["skipped.symlink"], 1, "data/passwd.txt is counted (and logged)");
    const open = await runCrawl(dir, "open", { files: all, followSymlinks: true });
    assert.ok((await docsOf(open)).some((d) => d.text.includes("secret password")));
  });
});

Deno.test("address ranges: loopback, private, link-local, unspecified and the like are not public", () => {
  const nonPublic = {
    "127.0.0.1": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.168.0.1": "private",
    "fc00::1": "unique-local",
    "fd12::1": "unique-local",
    "169.254.169.254": "link-local",
    "fe80::1": "link-local",
    "0.0.0.0": "unspecified",
    "::": "unspecified",
    "::ffff:10.0.0.1": "private",
    "100.64.0.1": "carrier-grade-nat",
    "224.0.0.1": "multicast",
  };
  for (const [address, range] of Object.entries(nonPublic)) {
    assert.equal(nonPublicRange(address), range, address);
  }
  for (const address of ["8.8.8.8", "172.32.0.1", "93.184.215.14", "2606:4700::1111"]) {
    assert.equal(nonPublicRange(address), "", address);
  }
});

Deno.test("the address guard resolves names and allows only the ranges it is given", async () => {
  const strict = new AddressGuard();
  assert.match(
    String(await strict.check("http://localhost:9/")),
    /^(127\.0\.0\.1|::1) \(localhost resolves to it\) is loopback/,
  );
  // The URL parser turns other spellings of an address into dotted quads first.
  assert.match(String(await strict.check("http://2130706433/")), /^127\.0\.0\.1 is loopback/);
  assert.match(String(await strict.check("http://0x7f.1/")), /^127\.0\.0\.1 is loopback/);
  assert.match(String(await strict.check("http://[::ffff:169.254.169.254]/")), /is link-local/);
  assert.equal(await strict.check("http://8.8.8.8/"), undefined);
  const some = new AddressGuard(["127.0.0.1/32", "fd00::/8"]);
  assert.equal(await some.check("http://127.0.0.1:8000/"), undefined);
  assert.equal(await some.check("http://[fd00::5]/"), undefined);
  assert.match(String(await some.check("http://127.0.0.2/")), /loopback/);
  assert.equal(await new AddressGuard(true).check("http://10.0.0.1/"), undefined);
  assert.throws(
    () => crawl({ urls: { seeds: ["http://a/"] }, allowPrivateNetwork: ["10.0.0.0/33"] }),
    /allowPrivateNetwork/,
  );
});

/** A server on 127.0.0.1 (or another loopback address) that counts its requests. */
function server(hostname: string, handler: (url: URL) => Response) {
  const hits: string[] = [];
  const s = Deno.serve({ hostname, port: 0, onListen() {} }, (req) => {
    const url = new URL(req.url);
    hits.push(url.pathname);
    return url.pathname === "/robots.txt" ? new Response("", { status: 404 }) : handler(url);
  });
  return { hits, base: `http://${hostname}:${s.addr.port}`, shutdown: () => s.shutdown() };
}

Deno.test("the live crawler refuses non-public addresses, after DNS and at every redirect, unless allowed", async () => {
  const page = (body: string) => new Response(`<p>${body}</p>`, { headers: { "content-type": "text/html" } });
  const other = server("127.0.0.2", () => page("another loopback host"));
  const main = server("127.0.0.1", (url) => {
    if (url.pathname === "/to-other") return Response.redirect(`${other.base}/`, 302);
    if (url.pathname === "/to-metadata") {
      return Response.redirect("http://169.254.169.254/latest/meta-data/", 302);
    }
    return page(`page ${url.pathname} <a href="/to-other">a</a> <a href="/to-metadata">b</a>
      <a href="http://[::1]:9/">c</a> <a href="http://0.0.0.0:9/">d</a>`);
  });
  const urls = {
    seeds: [main.base + "/"],
    scope: "any" as const,
    delayMs: 0,
    retries: 0,
    connectTimeoutMs: 2000,
  };
  await withDir(async (dir) => {
    try {
      // By default nothing on this machine is reached: the seed itself is refused, no request is made.
      const refused = await runCrawl(dir, "refused", { urls });
      assert.equal(refused.stats["skipped.address"], 1);
      assert.equal(refused.stats.documents ?? 0, 0);
      assert.equal(main.hits.length, 0);
      const skipped = JSON.parse(await refused.readText("skipped/crawl-live-00000.json"));
      assert.match(skipped[0].detail, /^127\.0\.0\.1 is loopback, not a public address/);

      // Allowed: just 127.0.0.1. Redirects to 127.0.0.2 and to cloud metadata, and links to [::1] and
      // 0.0.0.0, are refused before any connection is made.
      const some = await runCrawl(dir, "some", { urls, allowPrivateNetwork: ["127.0.0.1/32"] });
      assert.equal(other.hits.length, 0);
      assert.equal(some.stats.documents, 1);
      const reasons = JSON.parse(await some.readText("skipped/crawl-live-00000.json"));
      const byUrl = Object.fromEntries(
        reasons.map((r: { url: string }) => [new URL(r.url).pathname + new URL(r.url).hostname, r]),
      );
      assert.equal(byUrl["/to-other127.0.0.1"].reason, "address");
      assert.match(byUrl["/to-other127.0.0.1"].detail, /127\.0\.0\.2 is loopback/);
      assert.equal(byUrl["/to-metadata127.0.0.1"].reason, "address");
      assert.match(byUrl["/to-metadata127.0.0.1"].detail, /169\.254\.169\.254 is link-local/);
      assert.equal(byUrl["/[::1]"].reason, "address");
      assert.equal(byUrl["/0.0.0.0"].reason, "address");

      // Allowed: all of 127/8 (not `true`: a test must not reach a real cloud metadata service).
      const loopback = await runCrawl(dir, "loopback", { urls, allowPrivateNetwork: ["127.0.0.0/8"] });
      assert.ok(other.hits.includes("/"), "the redirect to 127.0.0.2 is followed");
      assert.equal(loopback.stats["skipped.address"], 3, "169.254.169.254, [::1] and 0.0.0.0 still are not");
    } finally {
      await main.shutdown();
      await other.shutdown();
    }
  });
});

Deno.test("archive URLs reach non-public addresses only when allowed, redirects included", async () => {
  const warc = await Deno.readFile(join(EXAMPLES, "warcio-example.warc.gz"));
  const s = server(
    "127.0.0.1",
    (url) =>
      url.pathname === "/moved.warc.gz"
        ? Response.redirect("http://169.254.169.254/a.warc.gz", 302)
        : new Response(warc),
  );
  await withDir(async (dir) => {
    try {
      const refused = await runCrawl(dir, "refused", { warc: [`${s.base}/a.warc.gz`] });
      assert.equal(refused.stats["skipped.address"], 1);
      assert.equal(s.hits.length, 0);
      const moved = await runCrawl(dir, "moved", {
        warc: [`${s.base}/moved.warc.gz`],
        allowPrivateNetwork: ["127.0.0.0/8"],
      });
      assert.equal(moved.stats["skipped.address"], 1);
      assert.deepEqual(s.hits, ["/moved.warc.gz"]);
      const allowed = await runCrawl(dir, "allowed", {
        warc: [`${s.base}/a.warc.gz`],
        allowPrivateNetwork: true,
      });
      assert.ok((allowed.stats.documents as number) > 0);
    } finally {
      await s.shutdown();
    }
  });
});

Deno.test("maxBytes bounds JSONL lines in bytes, without reading a long line whole", async () => {
  await withDir(async (dir) => {
    const short = JSON.stringify({ id: "short", text: "Ünïcödé text about kilns" }); // 31 bytes of text
    const long = JSON.stringify({ id: "long", text: "x".repeat(3_000_000) });
    const after = JSON.stringify({ id: "after", text: "The line after the long one." });
    const path = join(dir, "docs.jsonl");
    await Deno.writeTextFile(path, [short, long, after].join("\n") + "\n");
    const artifact = await runCrawl(dir, "w", { jsonl: [path], maxBytes: 1_000_000 });
    assert.deepEqual((await docsOf(artifact)).map((d) => d.id), ["short", "after"]);
    assert.equal(artifact.stats["skipped.size"], 1);
    assert.equal(artifact.stats.records, 3);
    const bytes = (line: string) => new TextEncoder().encode(line).length;
    assert.equal(artifact.stats.bytesIn, bytes(short) + bytes(long) + bytes(after), "bytes, not characters");

    // The reader itself: a long line is read past in pieces and reported with its length.
    const long2: number[][] = [];
    const ids: (string | number)[][] = [];
    for await (
      const { doc, bytes } of readDocuments(path, {
        maxLineBytes: 100_000,
        onLongLine: (line, n) => long2.push([line, n]),
      })
    ) ids.push([doc.id, bytes]);
    assert.deepEqual(ids, [["short", bytes(short)], ["after", bytes(after)]]);
    assert.deepEqual(long2, [[2, bytes(long)]]);
  });
});

Deno.test("a truncated .jsonl.gz or .jsonl.zst is a warning with its offset; the documents before it are kept", async () => {
  await withDir(async (dir) => {
    // zstd decodes whole blocks (128 KiB): enough text for several.
    const lines = Array.from(
      { length: 20_000 },
      (_, i) =>
        JSON.stringify({ id: `d${i}`, text: `Document ${i}: clay ${i * 7919}.`, meta: { lang: "en" } }),
    );
    const raw = new TextEncoder().encode(lines.join("\n") + "\n");
    for (const [ext, packed] of [["gz", gzipSync(raw)], ["zst", zstdCompressSync(raw)]] as const) {
      const path = join(dir, `docs.jsonl.${ext}`);
      await Deno.writeFile(path, packed); // whole, it reads whole (streamed, zstd included)
      let whole = 0;
      for await (const _ of readDocuments(path)) whole++;
      assert.equal(whole, lines.length);
      await Deno.writeFile(path, packed.subarray(0, Math.floor(packed.length * 0.6)));
      const artifact = await runCrawl(dir, ext, { jsonl: [path] });
      const ids = (await docsOf(artifact)).map((d) => d.id);
      assert.ok(ids.length > 1000 && ids.length < 20_000, `${ext}: ${ids.length} documents kept`);
      assert.deepEqual(
        ids,
        lines.slice(0, ids.length).map((_, i) => `d${i}`),
        "the documents before the cut",
      );
      assert.equal(artifact.stats.warnings, 1);
      let journal = "";
      for await (const f of Deno.readDir(join(dir, ext, "runs"))) {
        journal += await Deno.readTextFile(join(dir, ext, "runs", f.name));
      }
      assert.match(
        journal,
        new RegExp(`docs\\.jsonl\\.${ext}: byte \\d+: .*truncated or damaged after line`),
      );

      // Without onDamage, readers that must not go on get a DataError naming the file and offset.
      await assert.rejects(async () => {
        for await (const _ of readDocuments(path)) { /* read all */ }
      }, (e) => e instanceof DataError && new RegExp(`docs\\.jsonl\\.${ext}:byte \\d+: `).test(e.message));
    }
  });
});
