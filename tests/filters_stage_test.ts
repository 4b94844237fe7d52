/**
 * The quality-filter stage end to end, and GPT-3's classifier on real text: trained on the Brown
 * corpus (edited American English, positives) against SpamAssassin spam (negatives), it separates
 * held-out documents of both.
 */
import { strict as assert } from "node:assert";
import { pipeline } from "../pipeline/pipeline.ts";
import { readDocuments } from "../stages/documents.ts";
import { auc, paretoKeep, QualityClassifier, trainClassifier } from "../stages/filters/classifier.ts";
import { qualityFilter } from "../stages/quality_filter.ts";
import { brownDocuments, mailBody, rawShards, shardContent, spamAssassin } from "./dedupe_fixtures.ts";

Deno.test("classifier: Brown (positives) vs SpamAssassin spam (negatives) separates held-out documents", async () => {
  const brown = (await brownDocuments()).map((d) => d.text);
  const spam = (await spamAssassin(["spam-1", "spam-2"])).map((m) => mailBody(m.text));
  // Hold out every fifth document of each corpus; train on the rest.
  const held = (xs: string[]) => xs.filter((_, i) => i % 5 === 0);
  const train = (xs: string[]) => xs.filter((_, i) => i % 5 !== 0);
  const { model } = trainClassifier(train(brown), train(spam), { seed: 3, holdOut: 0 });
  const classifier = new QualityClassifier(model);
  const pos = held(brown).map((t) => classifier.score(t));
  const neg = held(spam).map((t) => classifier.score(t));
  const scores = [...pos, ...neg];
  const labels = [...pos.map(() => 1), ...neg.map(() => 0)];
  const accuracy = scores.filter((s, i) => (s >= 0.5 ? 1 : 0) === labels[i]).length / scores.length;
  const area = auc(scores, labels);
  console.log(
    `classifier, held out ${pos.length} Brown + ${neg.length} spam: accuracy ${accuracy.toFixed(4)}, AUC ${
      area.toFixed(4)
    }`,
  );
  assert.ok(accuracy > 0.95, `accuracy ${accuracy}`);
  assert.ok(area > 0.98, `AUC ${area}`);
  // Pareto sampling keeps far more of the reference-like documents than of the spam.
  const keptRate = (s: number[], prefix: string) =>
    s.filter((x, i) => paretoKeep(x, `${prefix}${i}`, 9, 1)).length / s.length;
  assert.ok(
    keptRate(pos, "b") > 0.5 && keptRate(neg, "s") < 0.1,
    `${keptRate(pos, "b")} vs ${keptRate(neg, "s")}`,
  );
  // The model survives a JSON round trip.
  const again = new QualityClassifier(JSON.parse(JSON.stringify(model)));
  assert.equal(again.score(brown[0]), classifier.score(brown[0]));
});

Deno.test("auc: ties count half, a perfect ranking is 1", () => {
  assert.equal(auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]), 1);
  assert.equal(auc([0.5, 0.5], [0, 1]), 0.5);
});

Deno.test("quality-filter stage: exclusion shards with reasons, per-filter stats, bad lines, 1 and 4 workers agree", async () => {
  const brown = (await brownDocuments()).slice(0, 40);
  const spam = (await spamAssassin(["spam-1"])).slice(0, 120).map((m) => ({
    id: m.id,
    text: mailBody(m.text),
  }));
  const docs = [...brown, ...spam];
  const shards = [0, 1, 2, 3].map((s) => {
    const lines: (string | object)[] = docs.filter((_, i) => i % 4 === s);
    if (s === 2) lines.splice(1, 0, '{"id": "broken", "text": ');
    return shardContent(lines);
  });
  const refDir = await Deno.makeTempDir({ prefix: "kiln-ref-" });
  for (const d of (await brownDocuments()).slice(100, 300)) {
    await Deno.writeTextFile(`${refDir}/${d.id.replace("/", "-")}.txt`, d.text);
  }
  const config = {
    c4: { filterNoTerminalPunct: false },
    fineweb: true,
    pii: true,
    // The crawl's own Brown samples are training negatives too (as in GPT-3, where the crawl is the
    // negative class), which pulls their scores to ≈ 0.4; spam scores near 0.
    classifier: { reference: [`${refDir}/*.txt`], mode: "threshold" as const, threshold: 0.25 },
  };
  const runs = [];
  for (const workers of [1, 4]) {
    const workdir = await Deno.makeTempDir({ prefix: "kiln-filter-" });
    const result = await pipeline("filter-test", { workdir, workers })
      .pipe(rawShards({ shards })).pipe(qualityFilter(config))
      .execute({ command: "run", quiet: true });
    runs.push({ workdir, artifact: result.artifacts["quality-filter"] });
  }
  try {
    const [one, four] = runs;
    assert.equal(one.artifact.digest, four.artifact.digest);
    // deno-lint-ignore no-explicit-any -- stats are free-form JSON
    const stats = one.artifact.stats as Record<string, any>;
    assert.equal(stats.badLines, 1);
    assert.match(stats.badLineList[0], /^part-00002\.jsonl:2: not JSON/);
    assert.equal(stats.documentsIn, docs.length);
    // The funnel: each filter sees what the one before it kept.
    const names = Object.keys(stats.filters);
    assert.deepEqual(names, ["gopher_repetition", "gopher_quality", "c4", "fineweb", "classifier", "pii"]);
    for (let i = 1; i < names.length; i++) {
      const before = stats.filters[names[i - 1]];
      assert.equal(stats.filters[names[i]].documentsIn, before.documentsIn - before.droppedDocuments);
    }
    // Kept and excluded documents account for every input document, each excluded one with its reason.
    let kept = 0, excluded = 0, brownKept = 0;
    for (const file of one.artifact.files(".jsonl.gz")) {
      for await (const { doc } of readDocuments(one.artifact.path(file))) {
        if (file.startsWith("excluded/")) {
          excluded++;
          assert.equal(file.split("/")[1], doc.meta!.filter);
          assert.ok(stats.filters[doc.meta!.filter as string].reasons[doc.meta!.filter_reason as string] > 0);
        } else {
          kept++;
          if (doc.id.startsWith("brown/")) brownKept++;
          assert.ok(typeof doc.meta?.quality_score === "number");
        }
      }
    }
    assert.equal(kept + excluded, docs.length);
    assert.equal(kept, stats.documentsOut);
    assert.ok(brownKept >= 36, `Brown samples kept: ${brownKept} of 40`);
    assert.ok(kept - brownKept <= 12, `spam kept: ${kept - brownKept} of 120`);
    assert.ok(one.artifact.files().includes("classifier.json"));
  } finally {
    for (const r of runs) await Deno.remove(r.workdir, { recursive: true });
    await Deno.remove(refDir, { recursive: true });
  }
});
