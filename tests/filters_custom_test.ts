/**
 * Filters of a user's own in the quality-filter stage: from a pipeline file and from YAML, in the
 * chain's funnel and exclusion shards, with their code in the stage's cache key, and with errors that
 * name the config field.
 */
import { strict as assert } from "node:assert";
import { fileURLToPath as fromFileUrl } from "node:url";
import { pipeline } from "../pipeline/pipeline.ts";
import { loadPipelineYaml } from "../pipeline/yaml.ts";
import { readDocuments } from "../stages/documents.ts";
import { qualityFilter } from "../stages/quality_filter.ts";
import { builtinStage } from "../stages/registry.ts";
import { rawShards, shardContent } from "./dedupe_fixtures.ts";

const FIXTURES = new URL("./fixtures/user_filters/", import.meta.url);
const MODULE = fromFileUrl(new URL("no_shouting.ts", FIXTURES));

const DOCS = [
  {
    id: "calm-1",
    text: "The river rose slowly through the night, and by morning the fields were under water.",
  },
  { id: "loud-1", text: "BUY NOW!!! THE BEST DEALS OF THE YEAR, ONLY TODAY, DO NOT MISS OUT" },
  { id: "tiny", text: "ok then" },
  { id: "calm-2", text: "Write to the clerk at clerk@town.example.org before the meeting on Tuesday." },
  { id: "loud-2", text: "Stop. READ THIS BEFORE YOU SIGN ANYTHING WITH THEM" },
];
const SHARDS = [shardContent(DOCS.slice(0, 3)), shardContent(DOCS.slice(3))];

/** The rule filters off, so that only what a test turns on runs. */
const RULES_OFF = { gopherQuality: false, gopherRepetition: false };
const CUSTOM = [
  { module: MODULE, export: "noShouting", config: { maxUpper: 0.5 } },
  // A file: URL, as `import.meta.resolve("./no_shouting.ts")` gives in a pipeline file.
  { module: new URL("no_shouting.ts", FIXTURES).href, export: "minLetters", config: { min: 10 } },
];

async function run(config: Parameters<typeof qualityFilter>[0], workdir?: string) {
  workdir ??= await Deno.makeTempDir({ prefix: "kiln-custom-" });
  const result = await pipeline("custom-filter", { workdir, workers: 2 })
    .pipe(rawShards({ shards: SHARDS })).pipe(qualityFilter(config))
    .execute({ command: "run", quiet: true });
  return { workdir, artifact: result.artifacts["quality-filter"] };
}

/** Document ids of an artifact: the kept ones, and the excluded ones as `filter/reason/id`. */
async function outcome(artifact: Awaited<ReturnType<typeof run>>["artifact"]) {
  const kept: string[] = [], excluded: string[] = [];
  for (const file of artifact.files(".jsonl.gz")) {
    for await (const { doc } of readDocuments(artifact.path(file))) {
      if (file.startsWith("excluded/")) {
        excluded.push(`${doc.meta!.filter}/${doc.meta!.filter_reason}/${doc.id}`);
      } else kept.push(doc.id);
    }
  }
  return { kept: kept.sort(), excluded: excluded.sort() };
}

Deno.test("custom filters from TypeScript: a function and a { schema, build } module, in the funnel after the rule filters and before PII masking", async () => {
  const { workdir, artifact } = await run({
    ...RULES_OFF,
    length: { minChars: 1 },
    pii: true,
    custom: CUSTOM,
  });
  try {
    assert.deepEqual(await outcome(artifact), {
      kept: ["calm-1", "calm-2"],
      excluded: [
        "minLetters/too_few_letters/tiny",
        "noShouting/too_much_upper_case/loud-1",
        "noShouting/too_much_upper_case/loud-2",
      ],
    });
    // deno-lint-ignore no-explicit-any -- stats are free-form JSON
    const stats = artifact.stats as Record<string, any>;
    assert.deepEqual(Object.keys(stats.filters), ["length", "noShouting", "minLetters", "pii"]);
    assert.deepEqual(stats.filters.noShouting.reasons, { too_much_upper_case: 2 });
    assert.equal(stats.filters.minLetters.documentsIn, 3);
    assert.deepEqual(stats.filters.pii.changes, { emails_masked: 1, ips_masked: 0 });
  } finally {
    await Deno.remove(workdir, { recursive: true });
  }
});

Deno.test("a custom filter from YAML gives the same artifact as from TypeScript", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiln-custom-yaml-" });
  try {
    const yaml = [
      "name: custom-filter",
      "workdir: .kiln",
      "stages:",
      `  - stage: ${fromFileUrl(new URL("./dedupe_fixtures.ts", import.meta.url))}#rawShards`,
      `    config: { shards: ${JSON.stringify(SHARDS)} }`,
      "  - stage: quality-filter",
      "    config:",
      "      gopherQuality: false",
      "      gopherRepetition: false",
      "      custom:",
      `        - module: ${MODULE}`,
      "          export: noShouting",
      "          config: { maxUpper: 0.5 }",
      `        - { module: ${MODULE}, export: minLetters, config: { min: 10 } }`,
    ].join("\n");
    await Deno.writeTextFile(`${dir}/pipeline.yaml`, yaml);
    const fromYaml = await (await loadPipelineYaml(`${dir}/pipeline.yaml`, builtinStage))
      .execute({ command: "run", quiet: true });
    const fromTs = await run({ ...RULES_OFF, custom: CUSTOM });
    try {
      const artifact = fromYaml.artifacts["quality-filter"];
      assert.equal(artifact.digest, fromTs.artifact.digest);
      assert.deepEqual((await outcome(artifact)).kept, ["calm-1", "calm-2"]);
    } finally {
      await Deno.remove(fromTs.workdir, { recursive: true });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("editing a custom filter's module, or a module it imports, reruns the stage, and status says why", async () => {
  // The filter lives outside kiln, as a user's would: its folder is read only because the stage names it.
  const dir = await Deno.makeTempDir({ prefix: "kiln-user-filter-" });
  const documents = new URL("../stages/documents.ts", import.meta.url).href;
  const source = (await Deno.readTextFile(MODULE)).replace("../../../stages/documents.ts", documents);
  await Deno.writeTextFile(`${dir}/no_shouting.ts`, source);
  await Deno.copyFile(fromFileUrl(new URL("letters.ts", FIXTURES)), `${dir}/letters.ts`);
  const config = {
    ...RULES_OFF,
    custom: [{ module: `${dir}/no_shouting.ts`, export: "noShouting", config: { maxUpper: 0.5 } }],
  };
  const stagePipeline = (workdir: string) =>
    pipeline("custom-filter", { workdir }).pipe(rawShards({ shards: SHARDS })).pipe(qualityFilter(config));
  const { workdir, artifact } = await run(config);
  try {
    assert.deepEqual((await outcome(artifact)).kept, ["calm-1", "calm-2", "tiny"]);
    let status = await stagePipeline(workdir).execute({ command: "status" });
    assert.equal(status[1].state, "done");
    assert.ok(
      status[1].grant!.some((flag) =>
        flag.startsWith("--allow-read=") && flag.includes(`${dir}/no_shouting.ts`)
      ),
      `the stage's process may read the filter: ${status[1].grant}`,
    );
    // The helper the filter imports: now every letter counts as upper case.
    const helper = await Deno.readTextFile(`${dir}/letters.ts`);
    await Deno.writeTextFile(`${dir}/letters.ts`, helper.replace("[^\\p{Lu}]", "[^\\p{L}]"));
    status = await stagePipeline(workdir).execute({ command: "status" });
    assert.equal(status[1].state, "stale");
    assert.deepEqual(status[1].reasons, ["input files changed"]);
    const rerun = await stagePipeline(workdir).execute({ command: "run", quiet: true });
    assert.notEqual(rerun.artifacts["quality-filter"].key, artifact.key);
    assert.deepEqual((await outcome(rerun.artifacts["quality-filter"])).kept, []);
    // The module itself.
    await Deno.writeTextFile(`${dir}/no_shouting.ts`, source.replace("too_much_upper_case", "shouting"));
    status = await stagePipeline(workdir).execute({ command: "status" });
    assert.deepEqual(status[1].reasons, ["input files changed"]);
    const again = await stagePipeline(workdir).execute({ command: "run", quiet: true });
    assert.ok(
      (await outcome(again.artifacts["quality-filter"])).excluded.includes("noShouting/shouting/loud-1"),
    );
  } finally {
    await Deno.remove(workdir, { recursive: true });
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("custom filter errors name the field: module, export, config, name, and a verdict that is not one", async () => {
  const fails = async (custom: unknown[], pattern: RegExp, extra = {}) => {
    const workdir = await Deno.makeTempDir({ prefix: "kiln-custom-" });
    try {
      await assert.rejects(
        // deno-lint-ignore no-explicit-any -- deliberately malformed configs
        () => run({ ...RULES_OFF, ...extra, custom: custom as any }, workdir),
        pattern,
      );
    } finally {
      await Deno.remove(workdir, { recursive: true });
    }
  };
  // Refused when the config is made, before anything runs.
  assert.throws(
    () => qualityFilter({ custom: [{ module: "https://example.org/filter.ts" }] }),
    /config\.custom\.0\.module: a custom filter's module must be a local file/,
  );
  assert.throws(
    () => qualityFilter({ custom: [CUSTOM[0], CUSTOM[0]] }),
    /config\.custom\.1\.name: two custom filters are named "noShouting"/,
  );
  // Found when the stage starts, before the shards run.
  await fails(
    [{ module: MODULE, export: "nope" }],
    /config\.custom\.0\.export: .*exports nothing named "nope"/,
  );
  await fails(
    [{ module: `${MODULE}.missing.ts` }],
    /config\.custom\.0\.module: .*no_shouting\.ts\.missing\.ts/,
  );
  await fails(
    [{ module: MODULE, export: "minLetters", config: { min: 0 } }],
    /config\.custom\.0\.config\.min: /,
  );
  await fails(
    [{ module: MODULE, export: "noShouting", name: "c4", config: { maxUpper: 1 } }],
    /config\.custom\.0\.name: "c4" is also the name of a built-in filter/,
    { c4: true },
  );
  // The first document of either shard (they run in parallel).
  await fails(
    [{ module: MODULE, export: "broken" }],
    /custom filter "broken" returned \d+ for document "calm-[12]"/,
  );
});
