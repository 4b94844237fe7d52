/**
 * kill -9 in the middle of dedupe and quality-filter, then rerun: the final artifacts are
 * byte-identical to an uninterrupted run's. This file is also the pipeline the test runs as a
 * subprocess (when KILN_DEDUPE_CHILD is set).
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { pipeline } from "../pipeline/pipeline.ts";
import { dedupe } from "../stages/dedupe.ts";
import { qualityFilter } from "../stages/quality_filter.ts";
import { spamSource } from "./dedupe_fixtures.ts";

if (Deno.env.get("KILN_DEDUPE_CHILD")) {
  await pipeline("dedupe-kill")
    .pipe(spamSource({ groups: ["spam-1", "spam-2", "easy-ham-1"], shards: 12 }))
    .pipe(dedupe({}))
    .pipe(qualityFilter({ c4: { filterNoTerminalPunct: false }, fineweb: true }))
    .run();
}

function spawn(workdir: string) {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL(import.meta.url).pathname,
      "run",
      "--workdir",
      workdir,
      "--workers",
      "2",
      "--quiet",
    ],
    env: { KILN_DEDUPE_CHILD: "1" },
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

async function digests(workdir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const id of ["dedupe", "quality-filter"]) {
    for await (const key of Deno.readDir(join(workdir, "artifacts", id))) {
      const manifest = JSON.parse(
        await Deno.readTextFile(join(workdir, "artifacts", id, key.name, "manifest.json")),
      );
      out[id] = manifest.digest;
    }
  }
  return out;
}

Deno.test({
  name: "kill -9 mid-dedupe and mid-filter, then rerun: byte-identical artifacts",
  ignore: Deno.env.get("KILN_DEDUPE_CHILD") !== undefined,
  async fn() {
    const reference = await Deno.makeTempDir({ prefix: "kiln-kill-ref-" });
    const workdir = await Deno.makeTempDir({ prefix: "kiln-kill-" });
    try {
      const started = performance.now();
      const clean = await spawn(reference).output();
      const duration = performance.now() - started;
      assert.equal(clean.code, 0, new TextDecoder().decode(clean.stderr));
      // Each attempt is killed a fifth of a clean run's time after it starts (checkpoints carry the work
      // forward), so kills land in different steps (signatures, pairs, filter), and at least two land
      // before the work is done even when the clean run was timed on a busier machine than the attempts.
      let kills = 0;
      for (const delay of Array(8).fill(0.2 * duration)) {
        const child = spawn(workdir);
        const timer = setTimeout(() => child.kill("SIGKILL"), delay);
        const { code } = await child.output();
        clearTimeout(timer);
        if (code === 0) break;
        kills++;
      }
      assert.ok(kills >= 2, `only ${kills} kills landed before the run finished`);
      const last = await spawn(workdir).output();
      assert.equal(last.code, 0, new TextDecoder().decode(last.stderr));
      assert.deepEqual(await digests(workdir), await digests(reference));
    } finally {
      await Deno.remove(reference, { recursive: true });
      await Deno.remove(workdir, { recursive: true });
    }
  },
});
