import { strict as assert } from "node:assert";
import { join } from "node:path";
import { pipeline } from "../pipeline/pipeline.ts";
import { loadPipelineYaml } from "../pipeline/yaml.ts";
import { builtinStage } from "../stages/registry.ts";
import { mix, repeatsFor } from "../stages/mix.ts";
import { dedupe } from "../stages/dedupe.ts";
import { texts } from "./fixtures/texts.ts";

type SourceStats = Record<
  string,
  { tokensAvailable: number; tokensWritten: number; share: number; epochs: number }
>;

const sources = (workdir: string, web = 60) =>
  pipeline("gpt3-mini", { workdir })
    .pipe(texts({ prefix: "web", documents: web }).as("web"))
    .branch(texts({ prefix: "book", documents: 10, seed: 2 }).as("books"))
    .branch(texts({ prefix: "wiki", documents: 10, seed: 3 }).as("wiki"));

const recipe = {
  bpe: { vocabSize: 300 },
  valFraction: 0,
  sources: { web: { weight: 0.7 }, books: { weight: 0.3 }, wiki: { epochs: 3 } },
};

Deno.test("mix: branches meet in one stage; each source gets its weight or epochs of the training tokens", async () => {
  const workdir = await Deno.makeTempDir();
  const result = await sources(workdir).branch(mix(recipe)).execute({ quiet: true });
  const stats = result.artifacts.mix.stats.sources as SourceStats;
  const { web, books, wiki } = stats;
  // The epoch source: three passes over its documents exactly.
  assert.equal(wiki.tokensWritten, 3 * wiki.tokensAvailable);
  // The weighted ones share the rest 70/30, to within one document.
  const rest = web.tokensWritten + books.tokensWritten;
  assert.equal(rest >= web.tokensAvailable + books.tokensAvailable, true);
  assert.ok(Math.abs(web.tokensWritten / rest - 0.7) < 0.03, `web share ${web.tokensWritten / rest}`);
  assert.ok(books.epochs > 1, "books (30 % of the rest, more than it holds) is repeated");
  assert.ok(web.epochs < 1, "web (70 %, less than it holds) is subsampled");
  const files = result.artifacts.mix.files(".bin");
  assert.ok(
    files.some((f) => f.startsWith("train-books-")) && files.some((f) => f.startsWith("train-wiki-")),
  );

  // Deterministic for a seed: a fresh workdir gives the same bytes; another seed other documents.
  const again = await sources(await Deno.makeTempDir()).branch(mix(recipe)).execute({ quiet: true });
  assert.equal(again.artifacts.mix.digest, result.artifacts.mix.digest);
  const reseeded = await sources(await Deno.makeTempDir()).branch(mix({ ...recipe, seed: 9 })).execute({
    quiet: true,
  });
  assert.notEqual(reseeded.artifacts.mix.digest, result.artifacts.mix.digest);

  // Cache semantics are unchanged: changing one branch reruns it and the merge, not the other branches.
  const changed = await sources(workdir, 80).branch(mix(recipe)).execute({ quiet: true });
  assert.deepEqual(
    Object.fromEntries(changed.stages.map((s) => [s.id, s.action])),
    { web: "ran", books: "cached", wiki: "cached", mix: "ran" },
  );
});

Deno.test("mix: a YAML pipeline branches with sources anywhere and `from`", async () => {
  const dir = await Deno.makeTempDir();
  const fixture = new URL("./fixtures/texts.ts", import.meta.url).pathname;
  await Deno.writeTextFile(
    join(dir, "p.yaml"),
    `name: yaml-mix
workdir: work
stages:
  - { stage: ${fixture}, id: crawl, config: { prefix: web, documents: 30 } }
  - { stage: dedupe, id: web }
  - { stage: ${fixture}, id: books, config: { prefix: book, documents: 10, seed: 2 } }
  - stage: mix
    config: { bpe: { vocabSize: 300 }, valFraction: 0, sources: { web: { weight: 0.5 }, novels: { weight: 0.5 } } }
    from: { novels: books }
`,
  );
  const p = await loadPipelineYaml(join(dir, "p.yaml"), builtinStage);
  const result = await p.execute({ quiet: true });
  const stats = result.artifacts.mix.stats.sources as SourceStats;
  assert.ok(Math.abs(stats.web.share - 0.5) < 0.05 && Math.abs(stats.novels.share - 0.5) < 0.05);
});

Deno.test("branches: mistakes are errors that name the stages", () => {
  const base = pipeline("b").pipe(texts({ prefix: "a", documents: 1 }).as("a"));
  assert.throws(
    () => base.branch(dedupe({})),
    /a branch starts with a source stage or a stage given \.from\(id\)/,
  );
  assert.throws(
    () => base.branch(dedupe({}).from("nope")),
    /from names "nope", which is not an earlier stage \(earlier: a\)/,
  );
  assert.throws(
    () => base.branch(mix({ bpe: { vocabSize: 300 }, sources: { missing: { weight: 1 } } })),
    /input "missing" names "missing", which is not an earlier stage/,
  );
  // A branch off an earlier stage by id.
  const branched = base.pipe(dedupe({})).branch(dedupe({}).as("again").from("a"));
  assert.deepEqual(branched.stages.map((s) => s.id), ["a", "dedupe", "again"]);
});

Deno.test("mix: repeats cover a source's target in whole documents, seeded", () => {
  const counts = [10, 20, 30, 40];
  assert.deepEqual(repeatsFor(counts, 200, 1), [2, 2, 2, 2]);
  const partial = repeatsFor(counts, 150, 1);
  const written = partial.reduce((a, r, i) => a + r * counts[i], 0);
  assert.ok(written >= 150 && written < 150 + 40, `wrote ${written}`);
  assert.deepEqual(repeatsFor(counts, 150, 1), partial);
  assert.deepEqual(repeatsFor([], 10, 1), []);
});

Deno.test("mix: a source left empty upstream is left out with a warning; all empty is an error", async () => {
  const base = pipeline("empty-source", { workdir: await Deno.makeTempDir() })
    .pipe(texts({ prefix: "web", documents: 30 }).as("web"))
    .branch(texts({ prefix: "none", documents: 0 }).as("none"));
  const result = await base
    .branch(
      mix({
        bpe: { vocabSize: 300 },
        valFraction: 0,
        sources: { web: { weight: 0.5 }, none: { weight: 0.5 } },
      }),
    )
    .execute({ quiet: true });
  const stats = result.artifacts.mix.stats;
  assert.match(String(stats.warning), /no training documents in "none"/);
  assert.equal((stats.sources as SourceStats).web.share, 1);
  await assert.rejects(
    pipeline("all-empty", { workdir: await Deno.makeTempDir() })
      .pipe(texts({ prefix: "none", documents: 0 }).as("none"))
      .branch(mix({ bpe: { vocabSize: 300 }, sources: { none: { weight: 1 } } }))
      .execute({ quiet: true }),
    /no source has any training documents/,
  );
});
