/**
 * The dedupe stage end to end on the runner: clusters on real e-mail (SpamAssassin's spam), the same
 * output with 1 and 4 workers, malformed input lines reported with file and line, and deduplication
 * against another dataset.
 */
import { strict as assert } from "node:assert";
import type { Artifact } from "../pipeline/artifact.ts";
import { pipeline } from "../pipeline/pipeline.ts";
import { dedupe } from "../stages/dedupe.ts";
import { MinHasher } from "../stages/dedupe/minhash.ts";
import { type Document, readDocuments } from "../stages/documents.ts";
import { rawShards, shardContent, spamSource } from "./dedupe_fixtures.ts";

async function documents(artifact: Artifact, prefix = ""): Promise<Document[]> {
  const out: Document[] = [];
  for (const file of artifact.files(".jsonl.gz").filter((f) => f.startsWith(prefix))) {
    if (!prefix && file.startsWith("excluded/")) continue;
    for await (const { doc } of readDocuments(artifact.path(file))) out.push(doc);
  }
  return out;
}

async function run(
  workers: number,
  stages: { source: ReturnType<typeof spamSource>; dedupe: ReturnType<typeof dedupe> },
) {
  const workdir = await Deno.makeTempDir({ prefix: "kiln-dedupe-" });
  const result = await pipeline("dedupe-test", { workdir, workers })
    .pipe(stages.source).pipe(stages.dedupe)
    .execute({ command: "run", quiet: true });
  return { workdir, artifact: result.artifacts["dedupe"] };
}

function jaccard(hasher: MinHasher, a: string, b: string): number {
  const sa = new Set(hasher.shingles(a)), sb = new Set(hasher.shingles(b));
  let common = 0;
  for (const x of sa) if (sb.has(x)) common++;
  return common / (sa.size + sb.size - common);
}

Deno.test("SpamAssassin spam: clusters of near-duplicates, the same with 1 and 4 workers", async () => {
  const stages = { source: spamSource({ groups: ["spam-1", "spam-2"], shards: 6 }), dedupe: dedupe({}) };
  const one = await run(1, stages);
  const four = await run(4, stages);
  try {
    assert.equal(one.artifact.digest, four.artifact.digest, "every output file is byte-identical");
    // deno-lint-ignore no-explicit-any -- stats are free-form JSON
    const stats = one.artifact.stats as Record<string, any>;
    const kept = await documents(one.artifact);
    const removed = await documents(one.artifact, "excluded/dedupe/");
    assert.equal(stats.documentsIn, 1896);
    assert.equal(kept.length + removed.length, 1896, "every document is kept or written aside");
    assert.equal(stats.documentsOut, kept.length);

    // Every removed document names a kept one, and (for near duplicates) is really similar to it.
    const byId = new Map(kept.map((d) => [d.id, d]));
    const hasher = new MinHasher({ shingleWords: 5, bands: 14, rows: 8, seed: 1 });
    const similarities: number[] = [];
    for (const doc of removed) {
      const info = doc.meta!.dedupe as { reason: string; duplicate_of: string };
      const original = byId.get(info.duplicate_of);
      assert.ok(original, `${doc.id}: its kept duplicate ${info.duplicate_of} is in the output`);
      if (info.reason === "near-duplicate") similarities.push(jaccard(hasher, doc.text, original.text));
    }
    // Cluster members are joined through chains of pairs, so a member can be less similar to the
    // representative than to its neighbour; still, nearly all are close to it.
    similarities.sort((a, b) => a - b);
    const median = similarities[similarities.length >> 1];
    assert.ok(median > 0.72, `median Jaccard to the kept document: ${median}`);

    // The report: cluster sizes and the subjects of the biggest clusters.
    const clusters = new Map<string, string[]>();
    for (const doc of removed) {
      const rep = (doc.meta!.dedupe as { duplicate_of: string }).duplicate_of;
      clusters.set(rep, [...clusters.get(rep) ?? [], doc.id]);
    }
    const biggest = [...clusters].sort((a, b) => b[1].length - a[1].length).slice(0, 5);
    console.log(
      `SpamAssassin spam (1896 messages): ${stats.clusters.count} clusters with ${stats.clusters.documents} messages; removed ${
        stats.dropped["exact-duplicate"].documents
      } exact and ${
        stats.dropped["near-duplicate"].documents
      } near duplicates; median Jaccard of a removed near duplicate to its kept message ${median.toFixed(2)}`,
    );
    for (const [rep, members] of biggest) {
      console.log(`  ${members.length + 1} × "${byId.get(rep)!.meta!.subject}" (kept ${rep})`);
    }
    assert.ok(stats.clusters.count > 50 && stats.dropped["near-duplicate"].documents > 100);
    // The representative carries its cluster's size.
    const [rep, members] = biggest[0];
    assert.equal(byId.get(rep)!.meta!.dedupe_cluster_size, members.length + 1);
  } finally {
    await Deno.remove(one.workdir, { recursive: true });
    await Deno.remove(four.workdir, { recursive: true });
  }
});

Deno.test("malformed lines and bytes that are not UTF-8 are reported with file and line; good documents all survive", async () => {
  const text = (i: number) =>
    `Document number ${"abcdefghij"[i]} says something different from the others here.`;
  const shards = [
    shardContent([{ id: "a0", text: text(0) }, "{not json", { id: "a1", text: text(1) }]),
    shardContent([
      new Uint8Array([0x7b, 0x22, 0x69, 0xff, 0xfe, 0x22, 0x7d]),
      { id: "b0", text: text(2) },
      { id: "b1" },
      { id: "b2", text: text(0) }, // exact duplicate of a0
      "",
      { id: "b3", text: text(3) },
    ]),
  ];
  const workdir = await Deno.makeTempDir({ prefix: "kiln-dedupe-" });
  try {
    const result = await pipeline("bad-lines", { workdir, workers: 2 })
      .pipe(rawShards({ shards })).pipe(dedupe({}))
      .execute({ command: "run", quiet: true });
    const artifact = result.artifacts["dedupe"];
    // deno-lint-ignore no-explicit-any -- stats are free-form JSON
    const stats = artifact.stats as Record<string, any>;
    assert.equal(stats.badLines, 3);
    assert.deepEqual(stats.badLineList.map((l: string) => l.split(": ")[0]), [
      "part-00000.jsonl:2",
      "part-00001.jsonl:1",
      "part-00001.jsonl:3",
    ]);
    assert.match(stats.badLineList[1], /not UTF-8/);
    assert.deepEqual((await documents(artifact)).map((d) => d.id), ["a0", "a1", "b0", "b3"]);
    const removed = await documents(artifact, "excluded/dedupe/");
    assert.deepEqual(removed.map((d) => [d.id, d.meta!.dedupe]), [
      ["b2", { reason: "exact-duplicate", duplicate_of: "a0" }],
    ]);
  } finally {
    await Deno.remove(workdir, { recursive: true });
  }
});

Deno.test("against another dataset: documents that duplicate it are removed, the rest are kept", async () => {
  const doc = (id: string, words: string) => ({
    id,
    text: `${words} ${"shared filler words go here ".repeat(4)}`,
  });
  const workdir = await Deno.makeTempDir({ prefix: "kiln-dedupe-" });
  try {
    const reference = await pipeline("reference", { workdir, workers: 1 })
      .pipe(rawShards({ shards: [shardContent([doc("r0", "alpha bravo charlie delta echo")])] }))
      .pipe(dedupe({}))
      .execute({ command: "run", quiet: true });
    const crawl = await pipeline("crawl", { workdir, workers: 1 })
      .pipe(rawShards({
        shards: [shardContent([
          doc("c0", "alpha bravo charlie delta echo"),
          doc("c1", "entirely unrelated words in this one here and nothing in common at all with the rest"),
        ])],
      }))
      .pipe(dedupe({ against: [reference.artifacts["dedupe"].dir] }))
      .execute({ command: "run", quiet: true });
    const artifact = crawl.artifacts["dedupe"];
    assert.deepEqual((await documents(artifact)).map((d) => d.id), ["c1"]);
    const removed = await documents(artifact, "excluded/dedupe/");
    assert.equal(removed.length, 1);
    assert.equal((removed[0].meta!.dedupe as { reason: string }).reason, "duplicate-of-reference");
  } finally {
    await Deno.remove(workdir, { recursive: true });
  }
});
