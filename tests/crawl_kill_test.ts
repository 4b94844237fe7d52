// kill -9 in the middle of a live crawl, and rerun until done: a pipeline subprocess crawls two local
// servers politely and is killed with SIGKILL at seeded random moments (KILN_TEST_SEED replays one).
//
// What the design promises (stages/crawl/frontier.ts): a URL that the committed frontier log holds as
// dealt with (seen and not queued) when a run starts is never requested in that run or any later one;
// only pages that were in flight, or finished in a batch not yet committed, when the process died are
// fetched again. Every page written out is committed. And nothing is lost: the final documents and
// skips are exactly those of an uninterrupted crawl.
//
// That promise holds within one attempt, `work/<id>/<key>/`: the cache key covers the stage's code,
// so when a source file of the crawl stage changes between two runs, the next run rightly starts a
// fresh crawl from the seeds in a new work directory. In a shared checkout other people edit such
// files (stages/documents.ts is one) while the suite runs, which once showed up here as "…/p/0
// fetched again" (a fresh crawl's first request). So the subprocesses run from a snapshot of the
// fixture's module graph taken when the test starts, and the test checks there is one attempt only.
import { strict as assert } from "node:assert";
import { dirname, join, relative } from "node:path";
import { importSpecifiers } from "../pipeline/code_hash.ts";
import { listFiles } from "../pipeline/workspace.ts";
import { readDocuments } from "../stages/documents.ts";
import { replayFrontier } from "../stages/crawl/frontier.ts";
import { openArchive, readArchive } from "../stages/crawl/warc.ts";
import { mulberry32 } from "../model/rng.ts";

const ROOT = new URL("../", import.meta.url).pathname;
const FIXTURE = "tests/fixtures/crawl_pipeline.ts";
const PAGES = 120; // per server

/**
 * Two sites (two hosts for politeness) of PAGES pages each, a binary tree of links per site plus a
 * link to the same page on the other site, some redirects (to pages linked from nowhere else, so the
 * outcome does not depend on timing), some 404s and some robots-disallowed links. Every request is
 * logged with the run it belongs to.
 */
function sites() {
  const requests: { run: string; url: string }[] = [];
  let run = "";
  let firstPage = Promise.withResolvers<void>();
  const bases: string[] = [];
  const servers = [0, 1].map((s) =>
    Deno.serve({ hostname: "127.0.0.1", port: 0, onListen() {} }, (req) => {
      const url = new URL(req.url);
      requests.push({ run, url: url.href });
      if (url.pathname === "/robots.txt") return new Response("User-agent: *\nDisallow: /private/\n");
      firstPage.resolve();
      const old = url.pathname.match(/^\/old\/(\d+)$/);
      if (old) return Response.redirect(`${bases[s]}/moved/${old[1]}`, 301);
      const m = url.pathname.match(/^\/(?:p|moved)\/(\d+)$/);
      const i = m ? Number(m[1]) : NaN;
      if (!(i < PAGES)) return new Response("not found", { status: 404 });
      const links = [2 * i + 1, 2 * i + 2].filter((k) => k < PAGES).map((k) => `/p/${k}`);
      links.push(`${bases[1 - s]}/p/${i}`);
      if (i % 10 === 0) links.push(`/old/${i}`, `/missing/${i}`, `/private/${i}`);
      if (url.pathname.startsWith("/moved/")) links.length = 0;
      const html =
        `<html><head><title>Site ${s} ${url.pathname}</title></head><body><p>Page ${i} of site ${s}: ${
          "kilns fire clay into pottery ".repeat(2 + (i % 7))
        }</p>${links.map((l) => `<a href="${l}">${l}</a>`).join(" ")}</body></html>`;
      return new Response(html, { headers: { "content-type": "text/html; charset=utf-8" } });
    })
  );
  for (const server of servers) bases.push(`http://127.0.0.1:${server.addr.port}`);
  return {
    bases,
    requests,
    /** Starts labelling requests as `label`; resolves at its first page request. */
    startRun(label: string) {
      run = label;
      firstPage = Promise.withResolvers<void>();
      return firstPage.promise;
    },
    shutdown: () => Promise.all(servers.map((s) => s.shutdown())),
  };
}

/**
 * Copies the fixture, the local modules it imports (transitively), the runner (`pipeline/`, whose
 * worker module is loaded by URL) and deno.json/deno.lock into `dir`, at the same relative paths.
 */
async function snapshotFixture(dir: string) {
  const files = new Set(["deno.json", "deno.lock"]);
  const visit = async (rel: string) => {
    if (files.has(rel)) return;
    files.add(rel);
    for (const spec of importSpecifiers(await Deno.readTextFile(join(ROOT, rel)))) {
      if (spec.startsWith(".")) await visit(relative(ROOT, join(ROOT, dirname(rel), spec)));
    }
  };
  await visit(FIXTURE);
  for (const entry of await listFiles(join(ROOT, "pipeline"))) {
    if (entry.endsWith(".ts")) await visit(`pipeline/${entry}`);
  }
  for (const rel of files) {
    await Deno.mkdir(join(dir, dirname(rel)), { recursive: true });
    await Deno.copyFile(join(ROOT, rel), join(dir, rel));
  }
}

function spawn(code: string, workdir: string, seeds: string[]) {
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-check", "-A", join(code, FIXTURE), "run", "--workdir", workdir, "--quiet"],
    env: { NO_COLOR: "1", KILN_CRAWL_SEEDS: seeds.join(",") },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

/**
 * Documents (url → text) and skips (url → reason) written under `dir`, in shards named crawl-live-*,
 * and where each document says its WARC response record is (url → [file, offset]).
 */
async function writtenOut(dir: string) {
  const docs = new Map<string, string>();
  const skips = new Map<string, string>();
  const records = new Map<string, [string, number]>();
  for (const rel of await listFiles(dir)) {
    const path = join(dir, rel);
    if (/(^|\/)crawl-live-\d+\.jsonl\.gz$/.test(rel)) {
      for await (const { doc } of readDocuments(path)) {
        assert.ok(!docs.has(doc.url!), `${doc.url} written out twice`);
        docs.set(doc.url!, doc.text);
        records.set(doc.url!, [join(dirname(path), String(doc.meta?.source)), Number(doc.meta?.offset)]);
      }
    } else if (/(^|\/)skipped\/crawl-live-\d+\.json$/.test(rel)) {
      for (const s of JSON.parse(await Deno.readTextFile(path))) {
        assert.ok(!skips.has(s.url), `${s.url} skipped twice`);
        skips.set(s.url, s.reason);
      }
    }
  }
  return { docs, skips, records };
}

/**
 * URLs the committed frontier log under `workdir` holds as dealt with: seen and not queued. There is
 * at most one attempt (one cache key) under `work/`, else the runs did not resume one crawl.
 */
async function committedUrls(workdir: string): Promise<Set<string>> {
  const logs = (await listFiles(join(workdir, "work"))).filter((f) => f.endsWith("live/frontier.log"));
  assert.ok(logs.length <= 1, `more than one crawl attempt (cache key) under ${workdir}/work: ${logs}`);
  if (!logs.length) return new Set();
  const { seen, queue } = await replayFrontier(join(workdir, "work", logs[0]));
  for (const { url } of queue) seen.delete(url);
  return seen;
}

const pageRequests = (requests: { run: string; url: string }[], run: string) =>
  requests.filter((r) => r.run === run && !r.url.endsWith("/robots.txt")).map((r) => r.url);

Deno.test("kill -9 at random moments of a live crawl: no committed page is fetched again, none is lost", async () => {
  const site = sites();
  const seeds = [`${site.bases[0]}/p/0`];
  const dirs: string[] = [];
  try {
    const code = await Deno.makeTempDir();
    dirs.push(code);
    await snapshotFixture(code);
    // The reference: one uninterrupted crawl, which requests every URL exactly once.
    const reference = await Deno.makeTempDir();
    dirs.push(reference);
    site.startRun("ref");
    const ref = await spawn(code, reference, seeds).output();
    assert.equal(ref.code, 0, new TextDecoder().decode(ref.stderr));
    const expected = await writtenOut(join(reference, "artifacts"));
    assert.equal(expected.docs.size, 2 * PAGES + 2 * PAGES / 10);
    assert.ok(expected.docs.has(`${site.bases[1]}/moved/20`));
    assert.equal(expected.skips.get(`${site.bases[0]}/missing/0`), "status");
    assert.equal(expected.skips.get(`${site.bases[1]}/private/10`), "robots");
    const refUrls = pageRequests(site.requests, "ref");
    assert.equal(new Set(refUrls).size, refUrls.length, "an uninterrupted crawl fetched a URL twice");

    const workdir = await Deno.makeTempDir();
    dirs.push(workdir);
    const seed = Number(Deno.env.get("KILN_TEST_SEED") ?? Date.now() % 100000);
    const random = mulberry32(seed);
    let kills = 0;
    let resumedMidway = 0;
    let done = false;
    for (let run = 0; run < 12 && !done; run++) {
      // Before each run: what the checkpoint has committed, and what has been written out.
      const committed = await committedUrls(workdir);
      const out = await writtenOut(join(workdir, "work"));
      for (const url of [...out.docs.keys(), ...out.skips.keys()]) {
        assert.ok(committed.has(url), `seed ${seed}: ${url} written out but not committed`);
      }

      const label = `run${run}`;
      const firstPage = site.startRun(label);
      const child = spawn(code, workdir, seeds);
      const status = child.output();
      let timer: ReturnType<typeof setTimeout> | undefined;
      if (kills < 6) {
        // Kill 0–0.7 s after the run's first page request (the whole crawl takes 2–3 s).
        await Promise.race([firstPage, status]);
        timer = setTimeout(() => {
          try {
            child.kill("SIGKILL");
          } catch {
            // it finished first
          }
        }, random() * 700);
      }
      const result = await status;
      clearTimeout(timer);
      if (result.code === 0) done = true;
      else {
        assert.equal(result.signal, "SIGKILL", `seed ${seed}: ${new TextDecoder().decode(result.stderr)}`);
        kills++;
      }
      const fetched = pageRequests(site.requests, label);
      if (committed.size > 0 && fetched.length > 0) resumedMidway++;
      for (const url of fetched) {
        assert.ok(
          !committed.has(url),
          `seed ${seed}: ${url} fetched again in ${label} after it was committed`,
        );
      }
    }
    assert.ok(done, `seed ${seed}: the crawl did not finish`);
    assert.ok(kills >= 3, `seed ${seed}: only ${kills} kills landed before the crawl finished`);
    assert.ok(resumedMidway >= 2, `seed ${seed}: only ${resumedMidway} reruns resumed a partial crawl`);

    const final = await writtenOut(join(workdir, "artifacts"));
    assert.deepEqual(final.docs, expected.docs, `seed ${seed}: documents differ from an uninterrupted crawl`);
    assert.deepEqual(final.skips, expected.skips, `seed ${seed}: skips differ from an uninterrupted crawl`);
    // The crawl's WARC files (written in the same batches) hold the response record each document
    // points at, after the reruns too.
    const responses = new Map<string, string>();
    for (const file of new Set([...final.records.values()].map(([f]) => f))) {
      for await (const r of readArchive(await openArchive(file))) {
        if (r.type === "response") responses.set(`${file}@${r.offset}`, r.url!);
      }
    }
    for (const [url, [file, offset]] of final.records) {
      assert.equal(responses.get(`${file}@${offset}`), url, `seed ${seed}: ${url}'s WARC record`);
    }
    // Refetches happen, but only of what was not committed; every URL was fetched in some run.
    const all = site.requests.filter((r) => r.run.startsWith("run") && !r.url.endsWith("/robots.txt"));
    assert.deepEqual(new Set(all.map((r) => r.url)), new Set(refUrls));
  } finally {
    await site.shutdown();
    for (const dir of dirs) await Deno.remove(dir, { recursive: true });
  }
});
