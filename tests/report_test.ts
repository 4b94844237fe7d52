// The run report a data team reads: dedupe's exact vs near-duplicate split and cluster sizes, each
// filter's drop reasons with excerpts of dropped documents beside the funnel, and one report file
// per pipeline when pipelines share a workdir.
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { pipeline } from "../pipeline/pipeline.ts";
import { reportFileName } from "../pipeline/report.ts";
import { excludedExamples } from "../stages/documents.ts";
import { openArtifact } from "../pipeline/artifact.ts";
import { crawl } from "../stages/crawl.ts";
import { dedupe } from "../stages/dedupe.ts";
import { qualityFilter } from "../stages/quality_filter.ts";

/** Deterministic prose: `words` words drawn from a small vocabulary by a seeded generator. */
function prose(seed: number, words: number): string {
  const vocab = ("the kiln fires clay slowly while potters watch glaze melt into glass over many hours and " +
    "cooling takes days before anyone opens the door to see what the flame made of their work").split(" ");
  let x = seed * 2654435761 >>> 0;
  const out: string[] = [];
  for (let i = 0; i < words; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    out.push(vocab[(x >>> 8) % vocab.length] + (i % 12 === 11 ? "." : ""));
  }
  return out.join(" ") + ".";
}

/**
 * 12 documents: one text three times verbatim (2 exact duplicates), one text and a copy with a word
 * changed (1 near duplicate), two short ones and one from a blocked domain (dropped by the filters).
 */
function corpus(): { id: string; text: string; url: string }[] {
  const base = prose(1, 120);
  const near = prose(2, 120);
  const nearCopy = near.replace(/^(\S+ \S+ \S+) \S+/, "$1 SOMETHING");
  const docs = [
    base,
    base,
    base,
    near,
    nearCopy,
    prose(3, 80),
    prose(4, 80),
    prose(5, 80),
    "Too short to keep.",
    "Also far too short.",
    prose(6, 80),
    prose(7, 80),
  ];
  return docs.map((text, i) => ({
    id: `d${i}`,
    text,
    url: i === 10 ? "https://spam.example/buy" : i === 9 ? "javascript:alert(1)" : `https://example.org/${i}`,
  }));
}

Deno.test("the report shows exact vs near duplicates, cluster sizes, and dropped examples per reason", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const input = join(dir, "docs.jsonl");
    await Deno.writeTextFile(input, corpus().map((d) => JSON.stringify(d) + "\n").join(""));
    const p = pipeline("clean", { workdir: join(dir, "w"), workers: 1 })
      .pipe(crawl({ jsonl: [input] }))
      .pipe(dedupe({ exact: true, minhash: { threshold: 0.7 } }))
      .pipe(qualityFilter({ gopher: false, length: { minWords: 10 }, urls: { domains: ["spam.example"] } }));
    const result = await p.execute({ quiet: true });

    const dd = result.artifacts.dedupe.stats;
    const dropped = dd.dropped as Record<string, { documents: number }>;
    assert.equal(dropped["exact-duplicate"].documents, 2);
    assert.equal(dropped["near-duplicate"].documents, 1);
    assert.deepEqual((dd.clusters as { sizes: Record<string, number> }).sizes, { "2": 1, "3-4": 1 });

    const { path } = await p.execute({ command: "report", out: join(dir, "r.html") });
    const html = await Deno.readTextFile(path);
    const section = (id: string) =>
      html.slice(html.indexOf(`<h2>${id} `), html.indexOf("</section>", html.indexOf(`<h2>${id} `)));

    // Dedupe: the split, the cluster-size chart, and an example naming the document kept instead.
    const d = section("dedupe");
    assert.match(d, /<td class="reason">exact-duplicate<\/td><td>2<\/td><td>16\.7 %<\/td>/);
    assert.match(d, /<td class="reason">near-duplicate<\/td><td>1<\/td><td>8\.3 %<\/td>/);
    assert.match(d, /duplicate clusters by size/);
    assert.match(d, /2 clusters of duplicates holding 5 documents; largest: 3, 2/);
    assert.match(d, /duplicate of <code>d0<\/code>/);
    assert.match(d, /<code>d4<\/code>.*duplicate of <code>d3<\/code>/s);

    // Quality filter: the funnel, and beside it each reason with excerpts of what it dropped.
    const q = section("quality-filter");
    assert.match(q, /<div class="funnel"><figure><svg/);
    const filters = result.artifacts["quality-filter"].stats.filters as Record<
      string,
      { reasons: Record<string, number> }
    >;
    for (const [name, f] of Object.entries(filters)) {
      for (const reason of Object.keys(f.reasons)) {
        const row = q.slice(q.indexOf(`<td class="reason">${reason}</td>`));
        assert.ok(row.length < q.length, `${name}: reason ${reason} listed`);
        assert.match(row.slice(0, row.indexOf("</tr>")), /<details><summary>\d examples?<\/summary>/);
      }
    }
    assert.match(q, /<blockquote>Too short to keep\.<\/blockquote>/);
    assert.match(q, /<a href="https:\/\/spam\.example\/buy">/);
    assert.match(q, /<code>d9<\/code> javascript:alert\(1\)/, "shown as text");
    assert.ok(!html.includes('href="javascript:'), "only http(s) URLs become links");
    // Nested stats are shown flattened, not dropped.
    assert.match(d, /<th>minhash\.bands<\/th>/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("examples are bounded: a few per reason, and reading stops at maxDocuments", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const input = join(dir, "docs.jsonl");
    const docs = Array.from({ length: 40 }, (_, i) => ({ id: `s${i}`, text: `short ${i}.` }));
    await Deno.writeTextFile(input, docs.map((d) => JSON.stringify(d) + "\n").join(""));
    const result = await pipeline("t", { workdir: join(dir, "w"), workers: 1 })
      .pipe(crawl({ jsonl: [input] }))
      .pipe(qualityFilter({ gopher: false, length: { minWords: 10 } }))
      .execute({ quiet: true });
    const artifact = (await openArtifact(result.artifacts["quality-filter"].dir))!;
    const read = (opts: Parameters<typeof excludedExamples>[3]) =>
      excludedExamples(artifact.files(), (f) => artifact.path(f), artifact.stats, opts);
    const all = await read({ perReason: 3 });
    const [reason, examples] = Object.entries(all["length"])[0];
    assert.ok(reason);
    assert.deepEqual(examples.map((e) => e.id), ["s0", "s1", "s2"]);
    assert.equal(examples[0].excerpt, "short 0.");
    const one = await read({ perReason: 3, maxDocuments: 1 });
    assert.deepEqual(Object.values(one["length"]).flat().map((e) => e.id), ["s0"]);
    const cut = await read({ excerptChars: 3 });
    assert.equal(Object.values(cut["length"])[0][0].excerpt, "sho…");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pipelines sharing a workdir each get their own report file", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const input = join(dir, "docs.jsonl");
    await Deno.writeTextFile(input, '{"id":"a","text":"one document about kilns"}\n');
    const workdir = join(dir, "w");
    const paths: string[] = [];
    for (const name of ["web", "books"]) {
      const p = pipeline(name, { workdir, workers: 1 }).pipe(crawl({ jsonl: [input] }));
      await p.execute({ quiet: true });
      paths.push((await p.execute({ command: "report" })).path);
    }
    assert.deepEqual(paths, [join(workdir, reportFileName("web")), join(workdir, reportFileName("books"))]);
    assert.match(await Deno.readTextFile(paths[0]), /<h1>kiln report: web<\/h1>/);
    assert.match(await Deno.readTextFile(paths[1]), /<h1>kiln report: books<\/h1>/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
