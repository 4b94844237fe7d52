/**
 * kiln as a user meets it: from a directory of their own, outside the checkout and with no deno.json,
 * with the permission flags the README gives. Every run here is a subprocess.
 */
import { strict as assert } from "node:assert";
import { dirname, join } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { pipeline } from "../pipeline/pipeline.ts";
import { crawl } from "../stages/crawl.ts";
import { dedupe } from "../stages/dedupe.ts";

const ROOT = dirname(dirname(fromFileUrl(import.meta.url)));
const WARCS = join(ROOT, "examples", "data");
/** The README's flags for a pipeline file and for the `kiln` command. */
const PIPELINE_FLAGS = ["--allow-read", "--allow-write", "--allow-run", "--allow-env"];

/** A fresh folder outside the checkout with the demo's two archives under `data/`. */
async function userDir(): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "kiln-user-" });
  await Deno.mkdir(join(dir, "data"));
  for await (const e of Deno.readDir(WARCS)) {
    if (e.name.endsWith(".warc.gz")) await Deno.copyFile(join(WARCS, e.name), join(dir, "data", e.name));
  }
  return dir;
}

/**
 * Runs deno as a user would from `cwd`: without the INIT_CWD that `deno task test` leaves in the
 * environment (a `deno task` started by the user's shell sets its own; a nested one keeps the outer one).
 */
async function deno(cwd: string, args: string[]) {
  const { INIT_CWD: _, ...env } = Deno.env.toObject();
  const out = await new Deno.Command(Deno.execPath(), {
    args,
    cwd,
    env,
    clearEnv: true,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  return { code: out.code, stdout, text: stdout + new TextDecoder().decode(out.stderr) };
}

/** Content digests of every stage's committed artifact in a workdir, by stage id. */
async function digests(workdir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for await (const stage of Deno.readDir(join(workdir, "artifacts"))) {
    for await (const key of Deno.readDir(join(workdir, "artifacts", stage.name))) {
      const manifest = JSON.parse(
        await Deno.readTextFile(join(workdir, "artifacts", stage.name, key.name, "manifest.json")),
      );
      out[stage.name] = manifest.digest;
    }
  }
  return out;
}

// The archives by their path in the checkout: documents record their source file, so the same
// inputs give the same artifacts.
const pipelineFile = (kiln: string) =>
  `import { crawl, dedupe, pipeline } from "${kiln}";
await pipeline("outside", { workdir: "work" })
  .pipe(crawl({ warc: [${JSON.stringify(join(WARCS, "*.warc.gz"))}] }))
  .pipe(dedupe({}))
  .run();
`;

/** Serves the checkout at /kiln/ and `extra` files at their paths, on a free port. */
function serve(extra: Record<string, () => string> = {}) {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen() {} },
    async (req) => {
      const path = decodeURIComponent(new URL(req.url).pathname);
      if (extra[path]) {
        return new Response(extra[path](), {
          headers: { "content-type": "application/typescript" },
        });
      }
      if (!path.startsWith("/kiln/") || path.includes("..")) {
        return new Response("not found", {
          status: 404,
        });
      }
      try {
        return new Response(await Deno.readFile(join(ROOT, path.slice("/kiln/".length))), {
          headers: { "content-type": "application/typescript" },
        });
      } catch {
        return new Response("not found", { status: 404 });
      }
    },
  );
  const host = `127.0.0.1:${server.addr.port}`;
  return { host, stop: async () => (ac.abort(), await server.finished) };
}

Deno.test("a pipeline file outside the checkout imports kiln by path and by URL, with the README's flags", async () => {
  // The reference: the same pipeline run from inside the checkout.
  const inside = await Deno.makeTempDir();
  await pipeline("outside", { workdir: inside })
    .pipe(crawl({ warc: [join(WARCS, "*.warc.gz")] }))
    .pipe(dedupe({}))
    .execute({ quiet: true });
  const expected = await digests(inside);
  assert.deepEqual(Object.keys(expected).sort(), ["crawl", "dedupe"]);

  const byPath = await userDir();
  await Deno.writeTextFile(join(byPath, "pipeline.ts"), pipelineFile(`file://${ROOT}/mod.ts`));
  const local = await deno(byPath, ["run", ...PIPELINE_FLAGS, "pipeline.ts"]);
  assert.equal(local.code, 0, local.text);
  assert.deepEqual(await digests(join(byPath, "work")), expected);

  const server = serve();
  try {
    const byUrl = await userDir();
    await Deno.writeTextFile(join(byUrl, "pipeline.ts"), pipelineFile(`http://${server.host}/kiln/mod.ts`));
    const flags = [...PIPELINE_FLAGS, `--allow-net=${server.host}`, `--allow-import=${server.host}`];
    const remote = await deno(byUrl, ["run", ...flags, "pipeline.ts"]);
    assert.equal(remote.code, 0, remote.text);
    assert.deepEqual(await digests(join(byUrl, "work")), expected);
  } finally {
    await server.stop();
  }
});

const thirdPartyStage = (suffix: string, host: string) =>
  `import { defineStage, documentShards, DocumentWriter, readDocuments, z } from "http://${host}/kiln/mod.ts";
export const tag = defineStage({
  name: "tag",
  version: 1,
  module: import.meta.url,
  input: "documents",
  output: "documents",
  schema: z.object({}),
  async run(ctx) {
    for (const file of documentShards(ctx.input)) {
      const writer = new DocumentWriter(await ctx.out.create(file), file.endsWith(".gz"));
      for await (const { doc } of readDocuments(ctx.input.path(file))) {
        await writer.write({ ...doc, text: doc.text.slice(0, 20) + "${suffix}" });
      }
      await writer.close();
    }
  },
});
`;

Deno.test("a URL stage runs the code kiln hashed: changed code reruns with the new code, and offline it stays cached", async () => {
  const dir = await userDir();
  let suffix = " [v1]";
  const server = serve({ "/third/tag.ts": () => thirdPartyStage(suffix, host) });
  const host = server.host;
  await Deno.writeTextFile(
    join(dir, "p.yaml"),
    `name: third\nworkdir: work\nstages:\n  - stage: crawl\n    config: { warc: [data/*.warc.gz] }\n` +
      `  - stage: http://${host}/third/tag.ts#tag\n`,
  );
  const kiln = (netHost: string) =>
    deno(dir, [
      "run",
      "--no-lock",
      ...PIPELINE_FLAGS,
      `--allow-net=${netHost}`,
      `--allow-import=${netHost}`,
      join(ROOT, "cli", "kiln.ts"),
      "run",
      "p.yaml",
      "--json",
    ]);
  try {
    const first = await kiln(host);
    assert.equal(first.code, 0, first.text);
    suffix = " [v2]";
    const second = await kiln(host);
    assert.equal(second.code, 0, second.text);
    const run2 = JSON.parse(second.stdout);
    const tagStage = run2.stages.find((s: { id: string }) => s.id === "tag");
    assert.equal(tagStage.action, "ran", "changed remote code must rerun");
    const texts: string[] = [];
    for await (const e of Deno.readDir(tagStage.artifact)) {
      if (!e.name.endsWith(".jsonl.gz")) continue;
      const stream = (await Deno.open(join(tagStage.artifact, e.name))).readable
        .pipeThrough(new DecompressionStream("gzip")).pipeThrough(new TextDecoderStream());
      let text = "";
      for await (const chunk of stream) text += chunk;
      texts.push(...text.trim().split("\n").map((l) => JSON.parse(l).text));
    }
    assert.ok(texts.length > 0);
    assert.ok(texts.every((t) => t.endsWith(" [v2]")), "the artifact holds the new code's output");
  } finally {
    await server.stop();
  }
  // The host is gone: the stored copy stands in, the keys are unchanged, every stage is cached.
  const offline = await kiln(host);
  assert.equal(offline.code, 0, offline.text);
  const run3 = JSON.parse(offline.stdout);
  assert.deepEqual(run3.stages.map((s: { action: string }) => s.action), ["cached", "cached"]);
});

Deno.test("the kiln command, installed or as `deno task kiln`, resolves a YAML file's paths against its folder", async () => {
  const dir = await userDir();
  await Deno.mkdir(join(dir, "ci"));
  await Deno.writeTextFile(
    join(dir, "ci", "p.yaml"),
    "name: rel\nworkdir: ../work\nstages:\n  - stage: crawl\n    config: { warc: [../data/*.warc.gz] }\n",
  );
  // `deno install -g` as the README gives it, into a root of the test's own.
  const root = join(dir, "bin-root");
  const install = await deno(dir, [
    "install",
    "-g",
    "--root",
    root,
    "-n",
    "kiln",
    "--no-config",
    ...PIPELINE_FLAGS,
    "--allow-net",
    join(ROOT, "cli", "kiln.ts"),
  ]);
  assert.equal(install.code, 0, install.text);
  const installed = await new Deno.Command(join(root, "bin", "kiln"), {
    args: ["run", "ci/p.yaml", "--quiet"],
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  }).output();
  assert.equal(installed.code, 0, new TextDecoder().decode(installed.stderr));
  assert.ok(Object.keys(await digests(join(dir, "work"))).includes("crawl"));

  // `deno task kiln` runs in kiln's folder; paths still follow the YAML file and the caller's folder.
  const task = await deno(dir, [
    "task",
    "--config",
    join(ROOT, "deno.json"),
    "kiln",
    "status",
    "ci/p.yaml",
    "--json",
  ]);
  assert.equal(task.code, 0, task.text);
  const status = JSON.parse(task.stdout);
  assert.equal(status[0].state, "done");
});

Deno.test("a stage loaded by URL is sandboxed like a local one", async () => {
  const dir = await userDir();
  const server = serve();
  try {
    await Deno.writeTextFile(
      join(dir, "p.yaml"),
      `name: hostile\nworkdir: work\nstages:\n  - stage: http://${server.host}/kiln/tests/fixtures/hostile.ts#hostile\n` +
        "    config: { attempt: read }\n",
    );
    const run = await deno(dir, [
      "run",
      "--no-lock",
      ...PIPELINE_FLAGS,
      `--allow-net=${server.host}`,
      `--allow-import=${server.host}`,
      join(ROOT, "cli", "kiln.ts"),
      "run",
      "p.yaml",
    ]);
    assert.equal(run.code, 1, run.text);
    assert.match(run.text, /error: stage "hostile" was refused read access to "\/etc\/hostname"/);
    assert.doesNotMatch(run.text, /\n\s+at /, "one line, no stack trace");
  } finally {
    await server.stop();
  }
});
