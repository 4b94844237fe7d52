/**
 * Each stage runs with exactly what it needs (issue 14): overstepping is refused in the stage's process
 * and in its worker threads, ids cannot leave the workdir, damaged shards are redone before a commit,
 * and configs are strict.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { pipeline } from "../pipeline/pipeline.ts";
import { PermissionError, PipelineError } from "../pipeline/errors.ts";
import { listFiles } from "../pipeline/workspace.ts";
import { crawl } from "../stages/crawl.ts";
import { dedupe } from "../stages/dedupe.ts";
import { qualityFilter } from "../stages/quality_filter.ts";
import { hostile } from "./fixtures/hostile.ts";
import { flakyShards } from "./fixtures/flaky_shards.ts";

const WARCS = new URL("../examples/data/", import.meta.url).pathname;

for (const attempt of ["read", "run", "write", "net", "env"] as const) {
  for (const inWorker of [false, true]) {
    Deno.test(`sandbox: a stage that declares nothing is refused ${attempt} ${inWorker ? "in a worker" : "in its process"}`, async () => {
      const workdir = await Deno.makeTempDir();
      const outside = join(workdir, "escaped.txt");
      const run = pipeline("hostile", { workdir, workers: 2 })
        .pipe(hostile({ attempt, inWorker, outside }))
        .execute({ quiet: true });
      const err = await run.then(() => undefined, (e) => e);
      assert.ok(err instanceof PermissionError, `expected a PermissionError, got ${err}`);
      assert.match(err.message, new RegExp(`stage "hostile" was refused ${attempt} access`));
      assert.match(err.message, /permissions|ctx\.out/, "the message says how a stage declares it");
      assert.equal(await Deno.stat(outside).then(() => true, () => false), false);
    });
  }
}

Deno.test("sandbox: plan --json shows each stage's grant: its inputs and work dir, no more", async () => {
  const workdir = await Deno.makeTempDir();
  const p = pipeline("grant", { workdir })
    .pipe(crawl({ warc: [join(WARCS, "*.warc.gz")] }))
    .pipe(dedupe({}));
  await p.execute({ quiet: true, until: "crawl" });
  const [crawlStatus, dedupeStatus] = await p.execute({ command: "plan" });
  const flag = (grant: string[] | undefined, name: string) =>
    grant?.find((f) => f.startsWith(name + "="))?.slice(name.length + 1).split(",") ?? [];
  assert.ok(flag(crawlStatus.grant, "--allow-read").includes(WARCS.replace(/\/$/, "")));
  assert.deepEqual(flag(crawlStatus.grant, "--allow-write").length, 1);
  assert.ok(!crawlStatus.grant!.some((f) => f.startsWith("--allow-net") || f.startsWith("--allow-run")));
  const reads = flag(dedupeStatus.grant, "--allow-read");
  assert.ok(reads.some((r) => r.includes("/artifacts/crawl/")), "dedupe reads crawl's artifact");
  assert.ok(!reads.includes(WARCS.replace(/\/$/, "")), "dedupe does not read the archives");
  assert.ok(flag(dedupeStatus.grant, "--allow-write")[0].includes("/work/dedupe/"));
});

Deno.test("a stage id that would leave the workdir is refused before anything is written", () => {
  assert.throws(() => crawl({ warc: ["x.warc.gz"] }).as("../../escaped"), PipelineError);
  assert.throws(() => crawl({ warc: ["x.warc.gz"] }).as(".."), PipelineError);
  assert.throws(() => pipeline("../up"), PipelineError);
});

Deno.test("integrity: a byte flipped in a done shard of a partial stage is redone, never committed", async () => {
  const workdir = await Deno.makeTempDir();
  const dir = await Deno.makeTempDir();
  await Deno.writeTextFile(join(dir, "fail"), "");
  const p = () => pipeline("flaky", { workdir, workers: 1 }).pipe(flakyShards({ dir }));
  await assert.rejects(p().execute({ quiet: true }), /shard 2 fails/);
  // The partial stage: shards 0 and 1 are marked done. Damage shard 0's output, and cut a marker short.
  const work = join(workdir, "work", "flaky-shards");
  const [key] = (await Array.fromAsync(Deno.readDir(work))).map((e) => e.name);
  const part0 = join(work, key, "out", "part-0.jsonl");
  const bytes = await Deno.readFile(part0);
  bytes[10] ^= 1;
  await Deno.writeFile(part0, bytes);
  const markers = await listFiles(join(work, key, "state", "done"));
  assert.equal(markers.length, 2);
  await Deno.writeTextFile(join(work, key, "state", "done", markers[1]), '{"id": "shard-');
  await Deno.remove(join(dir, "fail"));

  const result = await p().execute({ quiet: true });
  const clean = await pipeline("flaky", { workdir: await Deno.makeTempDir() }).pipe(flakyShards({ dir }))
    .execute({ quiet: true });
  assert.equal(result.artifacts["flaky-shards"].digest, clean.artifacts["flaky-shards"].digest);
  const text = await Deno.readTextFile(result.artifacts["flaky-shards"].path("part-0.jsonl"));
  assert.ok(text.startsWith('{"id":"0-0"'));
});

Deno.test("strict configs: unknown fields are errors with the nearest name, wrong values say what was expected", () => {
  assert.throws(
    () => crawl({ wrac: ["x"] } as never),
    /stage "crawl": config\.wrac: unknown field; did you mean "warc"\?/,
  );
  assert.throws(
    () => dedupe({ minhash: { treshold: 0.8 } } as never),
    /config\.minhash\.treshold: unknown field; did you mean "threshold"\?/,
  );
  assert.throws(
    () => qualityFilter({ c4: { filterNoTerminalPunct: "no" } } as never),
    /config\.c4\.filterNoTerminalPunct: expected boolean \(got "no"\)/,
  );
});

Deno.test("an expected failure (a full disk) prints one line, no stack trace", async () => {
  const { main } = await import("../pipeline/command.ts");
  const lines: string[] = [];
  const original = console.error;
  console.error = (...args: unknown[]) => lines.push(args.join(" "));
  try {
    const p = pipeline("full", { workdir: await Deno.makeTempDir() }).pipe(hostile({ attempt: "diskFull" }));
    assert.equal(await main(["run", "--quiet"], { pipeline: p }), 1);
  } finally {
    console.error = original;
  }
  const text = lines.join("\n");
  assert.match(text, /^error: .*No space left on device \(os error 28\)/);
  assert.doesNotMatch(text, /\n\s+at /);
});
