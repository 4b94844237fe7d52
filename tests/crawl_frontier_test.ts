// The live crawler's frontier: the commit log survives torn and damaged tails, per-host queues hand
// out URLs politely, and the queue never holds more than maxPages URLs.
import { strict as assert } from "node:assert";
import { dirname, join } from "node:path";
import { FrontierLog, HostQueues, replayFrontier } from "../stages/crawl/frontier.ts";
import { crawl, FRONTIER_LOG } from "../stages/crawl/crawler.ts";
import { Checkpoint, listFiles, OutputWriter } from "../pipeline/workspace.ts";

Deno.test("the frontier log replays committed segments only, and cuts a torn or damaged tail", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "live", "frontier.log");
    const first = await FrontierLog.open(path);
    assert.equal(first.replay.last, undefined);
    await first.log.commit("q 0 http://a/\nq 0 http://b/\n", { batch: 0, fetched: 0, stats: {} });
    await first.log.commit("q 1 http://a/x\ns http://a/moved\nd http://a/\n", {
      batch: 1,
      fetched: 1,
      stats: { fetched: 1 },
    });
    first.log.close();
    const committed = (await Deno.stat(path)).size;

    // A torn segment (no commit record) and then a segment whose checksum does not match.
    await Deno.writeTextFile(path, "q 1 http://b/y\nd http://b/\n", { append: true });
    let replay = await replayFrontier(path);
    assert.deepEqual(replay.queue, [{ url: "http://b/", depth: 0 }, { url: "http://a/x", depth: 1 }]);
    assert.deepEqual([...replay.seen].sort(), ["http://a/", "http://a/moved", "http://a/x", "http://b/"]);
    assert.deepEqual(replay.last, { batch: 1, fetched: 1, stats: { fetched: 1 } });
    assert.equal(replay.bytes, committed);
    await Deno.writeTextFile(path, `c {"batch":2,"fetched":2,"stats":{},"bytes":27,"sha":"0000"}\n`, {
      append: true,
    });
    assert.deepEqual((await replayFrontier(path)).last?.batch, 1, "a segment with a bad checksum counts");

    // Opening cuts the file back to its committed part, so the next segment follows a valid one.
    const second = await FrontierLog.open(path);
    assert.equal((await Deno.stat(path)).size, committed);
    await second.log.commit("d http://b/\n", { batch: 2, fetched: 2, stats: {} });
    second.log.close();
    replay = await replayFrontier(path);
    assert.deepEqual(replay.queue, [{ url: "http://a/x", depth: 1 }]);
    assert.equal(replay.last?.batch, 2);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("per-host queues: one request per host at a time, the host due first goes first", () => {
  const queues = new HostQueues(100);
  for (const url of ["http://a/1", "http://a/2", "http://b/1", "http://c:8080/1"]) {
    queues.push({ url, depth: 0 });
  }
  const t = 1_000_000;
  const take = (now: number) => queues.take(now);
  const a = take(t);
  const b = take(t);
  const c = take(t);
  assert.ok(typeof a === "object" && typeof b === "object" && typeof c === "object");
  assert.deepEqual([a.entry.url, b.entry.url, c.entry.url], ["http://a/1", "http://b/1", "http://c:8080/1"]);
  assert.equal(take(t), undefined, "a/2 waits while host a is busy");
  queues.host("a").delayMs = 250; // a Crawl-delay
  queues.release(a.host, t + 10);
  assert.equal(take(t + 10), t + 260, "host a is due 250 ms after its last request ended");
  const a2 = take(t + 260);
  assert.ok(typeof a2 === "object" && a2.entry.url === "http://a/2");
  assert.equal(queues.size, 0);
});

Deno.test("an endless site: maxPages URLs are fetched and no more are ever queued", async () => {
  const hits: string[] = [];
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
    const path = new URL(req.url).pathname;
    if (path === "/robots.txt") return new Response("", { status: 404 });
    hits.push(path);
    const n = Number(path.slice(1)) || 0;
    const links = [1, 2, 3, 4, 5].map((k) => `<a href="/${n * 5 + k}">more</a>`).join("");
    return new Response(
      `<title>${n}</title><p>Page ${n} of an endless site, with a sentence of its own.</p>${links}`,
      {
        headers: { "content-type": "text/html" },
      },
    );
  });
  const dir = await Deno.makeTempDir();
  try {
    const checkpoint = new Checkpoint(join(dir, "state"), join(dir, "tmp"));
    const options = {
      seeds: [`http://127.0.0.1:${server.addr.port}/0`],
      scope: "host" as const,
      allow: [],
      deny: [],
      maxDepth: 100,
      maxPages: 30,
      userAgent: "kiln-test",
      robots: true,
      concurrency: 4,
      delayMs: 0,
      retries: 0,
      backoffMs: 0,
      maxRetryAfterMs: 0,
      maxRedirects: 5,
      connectTimeoutMs: 5000,
      timeoutMs: 5000,
      batchPages: 7,
      warc: false,
    };
    const run = () =>
      crawl(options, {
        contentTypes: ["text/html"],
        maxBytes: 1 << 20,
        minChars: 1,
        allowPrivateNetwork: ["127.0.0.1/32"], // the test server
      }, {
        out: new OutputWriter(join(dir, "out"), join(dir, "tmp")),
        checkpoint,
        signal: new AbortController().signal,
        log: () => {},
        progress: () => {},
      });
    const stats = await run();
    assert.equal(stats.fetched, 30);
    assert.equal(stats.documents, 30);
    assert.equal(hits.length, 30);
    assert.ok(stats.linksBeyondMaxPages >= 30 * 5 - 30, "links past the budget are counted, not queued");
    const replay = await replayFrontier(checkpoint.path(FRONTIER_LOG));
    assert.equal(replay.seen.size, 30, "the frontier holds maxPages URLs, not every link found");
    assert.equal(replay.queue.length, 0);
    assert.equal(replay.last?.batch, 4, "30 pages in batches of 7: 5 commits");
    assert.deepEqual(
      await listFiles(dirname(checkpoint.path(FRONTIER_LOG))),
      ["frontier.log"],
      "the checkpoint keeps no copy of batches already written out",
    );
    assert.equal((await listFiles(join(dir, "out"))).filter((f) => f.endsWith(".jsonl.gz")).length, 5);

    // Run again on the same checkpoint (a kill after the last commit): nothing is fetched again.
    assert.deepEqual(await run(), stats);
    assert.equal(hits.length, 30);
    // A committed batch whose output was removed, with no copy left: a clear error, not a silent gap.
    await Deno.remove(join(dir, "out", "crawl-live-00002.jsonl.gz"));
    await assert.rejects(
      run(),
      /batch crawl-live-00002 is committed in .*frontier\.log, but neither its output/,
    );
  } finally {
    await server.shutdown();
    await Deno.remove(dir, { recursive: true });
  }
});
