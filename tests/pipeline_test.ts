import { strict as assert } from "node:assert";
import { join } from "node:path";
import { z } from "npm:zod@^4.6.7";
import { pipeline } from "../pipeline/pipeline.ts";
import { defineStage } from "../pipeline/stage.ts";
import { ConfigError, PipelineError } from "../pipeline/errors.ts";
import { loadPipelineYaml } from "../pipeline/yaml.ts";
import { numbers } from "./fixtures/numbers.ts";
import { upper } from "./fixtures/upper.ts";
import { summary } from "./fixtures/summary.ts";
import { builtinStage } from "../stages/registry.ts";

const fixture = (workdir: string, suffix = "!", summaryDelay = 0) =>
  pipeline("fixture", { workdir, workers: 2 })
    .pipe(numbers({ shards: 3, perShard: 20 }))
    .pipe(upper({ suffix }))
    .pipe(summary({ delayMs: summaryDelay }));

const actions = (result: { stages: { id: string; action: string }[] }) =>
  Object.fromEntries(result.stages.map((s) => [s.id, s.action]));

Deno.test("a second run skips every committed stage and returns the same artifacts", async () => {
  const workdir = await Deno.makeTempDir();
  const first = await fixture(workdir).execute({ quiet: true });
  assert.deepEqual(actions(first), { numbers: "ran", upper: "ran", summary: "ran" });
  const second = await fixture(workdir).execute({ quiet: true });
  assert.deepEqual(actions(second), { numbers: "cached", upper: "cached", summary: "cached" });
  assert.equal(second.artifacts.summary.dir, first.artifacts.summary.dir);
  assert.deepEqual(await second.artifacts.summary.readJson("summary.json"), {
    docs: 60,
    chars: 60 * 0 + sumChars(60),
  });
});

function sumChars(n: number): number {
  let total = 0;
  for (let i = 0; i < n; i++) total += `DOCUMENT NUMBER ${i} ${"X".repeat(i % 17)}!`.length;
  return total;
}

Deno.test("changing one stage's config reruns exactly that stage and its downstream, and status says why", async () => {
  const workdir = await Deno.makeTempDir();
  await fixture(workdir).execute({ quiet: true });
  const status = await fixture(workdir, "?").execute({ command: "status" });
  assert.deepEqual(status.map((s) => s.state), ["done", "stale", "stale"]);
  assert.deepEqual(status[1].reasons, ["config changed: suffix"]);
  assert.match(status[2].reasons[0], /waits for "upper", which will run/);
  const plan = await fixture(workdir, "?").execute({ command: "plan" });
  assert.deepEqual(plan.map((s) => s.action), ["skip", "run", "run"]);
  const result = await fixture(workdir, "?").execute({ quiet: true });
  assert.deepEqual(actions(result), { numbers: "cached", upper: "ran", summary: "ran" });
  // Going back to the old config finds the old artifacts still committed.
  const back = await fixture(workdir, "!").execute({ quiet: true });
  assert.deepEqual(actions(back), { numbers: "cached", upper: "cached", summary: "cached" });
});

Deno.test("outputs are identical with 1 and 4 workers", async () => {
  const one = await fixture(await Deno.makeTempDir()).execute({ quiet: true, workers: 1 });
  const four = await fixture(await Deno.makeTempDir()).execute({ quiet: true, workers: 4 });
  for (const id of ["numbers", "upper", "summary"]) {
    assert.equal(one.artifacts[id].digest, four.artifacts[id].digest, id);
  }
});

Deno.test("a damaged artifact is detected and rebuilt, never used", async (t) => {
  const damage: Record<string, (dir: string, file: string) => Promise<void>> = {
    "a flipped byte (same size)": async (dir, file) => {
      const bytes = await Deno.readFile(join(dir, file));
      bytes[bytes.length - 5] ^= 0xff;
      await Deno.writeFile(join(dir, file), bytes);
    },
    "a truncated file": async (dir, file) => {
      const bytes = await Deno.readFile(join(dir, file));
      await Deno.writeFile(join(dir, file), bytes.subarray(0, 10));
    },
    "a missing file": (dir, file) => Deno.remove(join(dir, file)),
    "a truncated manifest": async (dir) => {
      const text = await Deno.readTextFile(join(dir, "manifest.json"));
      await Deno.writeTextFile(join(dir, "manifest.json"), text.slice(0, text.length / 2));
    },
  };
  for (const [what, harm] of Object.entries(damage)) {
    await t.step(what, async () => {
      const workdir = await Deno.makeTempDir();
      const good = await fixture(workdir).execute({ quiet: true });
      const dir = good.artifacts.upper.dir;
      await harm(dir, good.artifacts.upper.files(".jsonl.gz")[1]);
      // A changed summary config makes the runner read `upper`'s artifact: it must notice the damage.
      const result = await fixture(workdir, "!", 1).execute({ quiet: true });
      assert.equal(actions(result).upper, "ran");
      assert.equal(result.artifacts.upper.digest, good.artifacts.upper.digest);
      assert.equal(await result.artifacts.upper.verify(), undefined);
      assert.deepEqual(
        await result.artifacts.summary.readJson("summary.json"),
        await good.artifacts.summary.readJson("summary.json"),
      );
    });
  }
});

Deno.test("--from, --until and --only select stages; unbuilt inputs are a clear error", async () => {
  const workdir = await Deno.makeTempDir();
  const until = await fixture(workdir).execute({ quiet: true, until: "upper" });
  assert.deepEqual(actions(until), { numbers: "ran", upper: "ran" });
  await assert.rejects(
    fixture(await Deno.makeTempDir()).execute({ quiet: true, only: ["summary"] }),
    /stage "numbers" is not built/,
  );
  const only = await fixture(workdir).execute({ quiet: true, only: ["summary"] });
  assert.deepEqual(actions(only), { numbers: "not selected", upper: "not selected", summary: "ran" });
  const forced = await fixture(workdir).execute({ quiet: true, from: "upper", force: true });
  assert.deepEqual(actions(forced), { numbers: "not selected", upper: "ran", summary: "ran" });
  await assert.rejects(
    fixture(workdir).execute({ quiet: true, until: "nope" }),
    /--until nope: no such stage/,
  );
});

Deno.test("gc removes artifacts no current key points to, and keeps the current ones", async () => {
  const workdir = await Deno.makeTempDir();
  await fixture(workdir).execute({ quiet: true });
  const current = await fixture(workdir, "?").execute({ quiet: true });
  const { removed } = await fixture(workdir, "?").execute({ command: "gc" });
  assert.equal(removed.length, 2); // the old upper and summary artifacts
  const after = await fixture(workdir, "?").execute({ quiet: true });
  assert.deepEqual(actions(after), { numbers: "cached", upper: "cached", summary: "cached" });
  assert.equal(after.artifacts.summary.dir, current.artifacts.summary.dir);
});

Deno.test("an invalid config value is an error naming the stage and field", () => {
  assert.throws(
    () => numbers({ shards: "many" as unknown as number }),
    (e: unknown) => e instanceof ConfigError && /stage "numbers": config\.shards: /.test(e.message),
  );
});

Deno.test("connecting stages of mismatched kinds is a type error, and a run-time error for loaded stages", () => {
  const source = pipeline("kinds").pipe(numbers({}));
  const summarized = source.pipe(summary({}));
  // @ts-expect-error: upper takes documents, summary outputs "summary"
  assert.throws(() => summarized.pipe(upper({})), PipelineError);
  // @ts-expect-error: a source stage cannot follow another stage
  assert.throws(() => source.pipe(numbers({}).as("again")), /takes no input but "numbers" outputs documents/);
  assert.throws(() => source.pipe(upper({})).pipe(upper({})), /already in the pipeline/);
});

const both = defineStage({
  name: "both",
  version: 1,
  module: import.meta.url,
  input: "summary",
  output: "report",
  uses: { docs: "documents" },
  schema: z.object({}),
  async run(ctx) {
    // The nearest upstream "documents" artifact is upper's, not numbers'.
    await ctx.out.writeJson("report.json", { docsFrom: ctx.uses.docs.stage, summaryFrom: ctx.input.stage });
  },
});

Deno.test("a stage can read named upstream artifacts through `uses`", async () => {
  const result = await fixture(await Deno.makeTempDir()).pipe(both({})).execute({ quiet: true });
  assert.deepEqual(await result.artifacts.both.readJson("report.json"), {
    docsFrom: "upper",
    summaryFrom: "summary",
  });
});

const YAML_OK = `name: from-yaml
stages:
  - stage: ./fixtures/numbers.ts
    config: { shards: 2, perShard: 5 }
  - stage: ./fixtures/upper.ts#upper
    id: shout
    config:
      suffix: "!!"
`;

Deno.test("a YAML pipeline runs stage modules by path, and its errors name file, line and field", async (t) => {
  const dir = await Deno.makeTempDir({ dir: new URL(".", import.meta.url).pathname, prefix: ".tmp-yaml-" });
  try {
    await Deno.mkdir(join(dir, "fixtures"));
    for (const name of ["numbers.ts", "upper.ts"]) {
      // The copies import the runtime relative to tests/fixtures/, so keep them one level deeper alike.
      const source = await Deno.readTextFile(new URL(`./fixtures/${name}`, import.meta.url));
      await Deno.writeTextFile(join(dir, "fixtures", name), source.replaceAll("../../", "../../../"));
    }
    const write = async (text: string) => {
      await Deno.writeTextFile(join(dir, "p.yaml"), text);
      return join(dir, "p.yaml");
    };
    await t.step("runs", async () => {
      const p = await loadPipelineYaml(await write(YAML_OK), builtinStage);
      assert.deepEqual(p.stages.map((s) => s.id), ["numbers", "shout"]);
      const result = await p.execute({ quiet: true, workdir: join(dir, "work") });
      assert.equal(result.artifacts.shout.stats.documents, 10);
    });
    const cases: [string, string, RegExp][] = [
      [
        "a YAML syntax error",
        YAML_OK.replace("config: { shards: 2,", "config: { shards: 2"),
        /p\.yaml:4:\d+: YAML syntax error/,
      ],
      [
        "an unknown stage",
        YAML_OK.replace("./fixtures/numbers.ts", "numbrs"),
        /p\.yaml:3:12: unknown stage "numbrs"/,
      ],
      [
        "an invalid config value",
        YAML_OK.replace("shards: 2", 'shards: "two"'),
        /p\.yaml:4:23: stage "numbers": config\.shards: /,
      ],
      [
        "a typo in a field name",
        YAML_OK.replace("    config:\n", "    confg:\n"),
        /p\.yaml:7:5: unknown field "confg"/,
      ],
      [
        "a missing module",
        YAML_OK.replace("./fixtures/upper.ts#upper", "./fixtures/nope.ts"),
        /cannot import stage module/,
      ],
    ];
    for (const [what, text, expected] of cases) {
      await t.step(what, async () => {
        await assert.rejects(loadPipelineYaml(await write(text), builtinStage), expected);
      });
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a stage module served over HTTP plugs in and is cached like any other", async () => {
  const root = new URL("../", import.meta.url);
  const ac = new AbortController();
  let requests = 0;
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      requests++;
      const path = new URL(req.url).pathname;
      try {
        const body = await Deno.readFile(new URL("." + path, root));
        return new Response(body, { headers: { "content-type": "application/typescript" } });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  const dir = await Deno.makeTempDir();
  try {
    const url = `http://127.0.0.1:${server.addr.port}/tests/fixtures/upper.ts`;
    // The pipeline runs as a user runs it: `kiln run` on a YAML file naming the stage by URL. In a
    // subprocess with --no-lock, so the server's random port does not pile up in deno.lock.
    const yaml = join(dir, "remote.yaml");
    await Deno.writeTextFile(
      yaml,
      [
        "name: remote",
        "workdir: work",
        "stages:",
        `  - stage: ${new URL("fixtures/numbers.ts", import.meta.url).pathname}#numbers`,
        "    config: { shards: 2, perShard: 5 }",
        `  - stage: ${url}#upper`,
        '    config: { suffix: "+" }',
      ].join("\n"),
    );
    const run = async () => {
      const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-lock",
          "-A",
          new URL("../cli/kiln.ts", import.meta.url).pathname,
          "run",
          yaml,
          "--json",
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      assert.equal(code, 0, new TextDecoder().decode(stderr));
      const result = JSON.parse(new TextDecoder().decode(stdout)) as {
        stages: { id: string; action: string; artifact: string }[];
      };
      return result.stages.find((s) => s.id === "upper")!;
    };
    const first = await run();
    assert.equal(first.action, "ran");
    assert.ok(requests > 0);
    const manifest = JSON.parse(await Deno.readTextFile(join(first.artifact, "manifest.json")));
    assert.equal(manifest.stats.documents, 10);
    assert.equal((await run()).action, "cached");
  } finally {
    ac.abort();
    await server.finished;
    await Deno.remove(dir, { recursive: true });
  }
});

const trained = defineStage({
  name: "trained",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "model",
  schema: z.object({}),
  async run(ctx) {
    const lines = [0, 1, 2, 3].map((step) => JSON.stringify({ step, loss: 4 - step, lr: 0.001 }));
    await ctx.out.writeText("metrics.jsonl", lines.join("\n") + "\n");
    ctx.stats.set("funnel", [{ name: "input", documents: 100 }, { name: "gopher", documents: 60 }]);
    ctx.stats.set("final_loss", 1);
  },
});

Deno.test("the report plots metrics.jsonl and a filter funnel as inline SVG", async () => {
  const workdir = await Deno.makeTempDir();
  const p = pipeline("reported", { workdir }).pipe(trained({}));
  await p.execute({ quiet: true });
  const { path } = await p.execute({ command: "report" });
  const html = await Deno.readTextFile(path);
  assert.match(html, /<svg[^>]*aria-label="loss"/);
  assert.match(html, /<svg[^>]*aria-label="lr"/);
  assert.match(html, /<polyline [^>]*points="[\d., ]+"/);
  assert.match(html, /aria-label="documents kept, step by step"/);
  assert.equal(html.match(/<rect /g)?.length, 2);
  assert.match(html, /<th>final_loss<\/th><td>1<\/td>/);
});

Deno.test("the CI example YAML names built-in stages that load and connect", async () => {
  const file = new URL("../examples/ci/pipeline.yaml", import.meta.url).pathname;
  const p = await loadPipelineYaml(file, builtinStage);
  assert.deepEqual(p.stages.map((s) => s.id), ["crawl", "dedupe", "quality-filter"]);
});

/** A source with two kept documents and one set aside under excluded/, as the quality filter leaves them. */
export const keptAndExcluded = defineStage({
  name: "kept-and-excluded",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema: z.object({}),
  async run(ctx) {
    await ctx.out.writeText("part-0.jsonl", '{"id":"a","text":"one"}\n{"id":"b","text":"two"}\n');
    await ctx.out.writeText("excluded/gopher/part-0.jsonl", '{"id":"c","text":"dropped"}\n');
  },
});

Deno.test("the README's shout stage shouts the kept documents only, not those set aside under excluded/", async () => {
  const { shout } = await import("../examples/shout.ts");
  const result = await pipeline("shout", { workdir: await Deno.makeTempDir() })
    .pipe(keptAndExcluded({})).pipe(shout({ suffix: "!" })).execute({ quiet: true });
  assert.equal(result.artifacts.shout.stats.documents, 2);
  assert.deepEqual(result.artifacts.shout.files(), ["part-0.jsonl"]);
  assert.equal(
    await result.artifacts.shout.readText("part-0.jsonl"),
    '{"id":"a","text":"ONE!"}\n{"id":"b","text":"TWO!"}\n',
  );
});

Deno.test("a pinned stage runs only the code it was pinned to; a mismatch names the module", async () => {
  const workdir = await Deno.makeTempDir();
  const statuses = await pipeline("pinned", { workdir }).pipe(numbers({})).execute({ command: "plan" });
  const code = statuses[0].code!;
  assert.match(code, /^sha256-[0-9a-f]{64}$/);
  const result = await pipeline("pinned", { workdir }).pipe(numbers({}).pin(code)).execute({ quiet: true });
  assert.equal(result.stages[0].action, "ran");
  await assert.rejects(
    pipeline("pinned", { workdir }).pipe(numbers({}).pin(`sha256-${"0".repeat(64)}`)).execute({
      quiet: true,
    }),
    /stage "numbers": the code of file:.*numbers\.ts \(and what it imports\) does not match its pinned integrity/,
  );
  assert.throws(() => numbers({}).pin("md5-abc"), /sha256-<64 hex digits>/);
});

Deno.test("reference docs: docs/stages.md is what `kiln stages --docs` generates from the schemas", async () => {
  const { stagesReference } = await import("../cli/kiln.ts");
  const docs = await Deno.readTextFile(new URL("../docs/stages.md", import.meta.url));
  assert.equal(
    docs.trim(),
    (await stagesReference()).trim(),
    "run: deno task kiln stages --docs > docs/stages.md",
  );
});

Deno.test("no built-in stage's key includes a command line: editing a CLI's help text reruns nothing", async () => {
  const { moduleGraph } = await import("../pipeline/code_hash.ts");
  const { listBuiltinStages } = await import("../stages/registry.ts");
  const counts: Record<string, number> = {};
  const { registry } = await import("../pipeline/stage.ts");
  const builtins = new Set((await listBuiltinStages()).map(([name]) => name)); // loads every stage module
  for (const { name, module } of registry().filter((s) => builtins.has(s.name))) {
    const graph = await moduleGraph(module);
    counts[name] = graph.hashed.length;
    const clis = graph.hashed.filter((url) => /\/cli\/|_cli\.ts$|\/pipeline\/command\.ts$/.test(url));
    assert.deepEqual(clis, [], `stage ${name}'s key includes ${clis.join(", ")}`);
  }
  assert.ok(Object.values(counts).every((n) => n > 0));
});
