/**
 * The runtime's own cost: planning and skipping a 100-stage pipeline whose stages are all cached,
 * and deciding that a stage with a 10 GB output is up to date (which must read none of the data).
 *
 *   deno bench -A bench/pipeline_bench.ts
 */
import { join } from "node:path";
import { pipeline } from "../pipeline/pipeline.ts";
import { big, source, step } from "./pipeline_stages.ts";
import { contentDigest, MANIFEST } from "../pipeline/artifact.ts";

function hundredStages(workdir: string) {
  let p = pipeline("hundred", { workdir }).pipe(source({}));
  for (let i = 1; i < 100; i++) p = p.pipe(step({ n: i }).as(`step-${i}`));
  return p;
}

const workdir = await Deno.makeTempDir();
await hundredStages(workdir).execute({ quiet: true });

Deno.bench("run: 100 cached stages (plan + skip all)", async () => {
  const result = await hundredStages(workdir).execute({ quiet: true });
  if (result.stages.some((s) => s.action !== "cached")) throw new Error("expected every stage cached");
});

Deno.bench("status: 100 cached stages", async () => {
  await hundredStages(workdir).execute({ command: "status" });
});

// The sandbox's cost: every stage runs in a Deno process of its own (see pipeline/sandbox.ts). Ten
// tiny stages built from scratch, per run; divide by ten for the cost a stage.
Deno.bench("run: 10 tiny stages from scratch (one sandboxed process each)", async () => {
  let p = pipeline("ten", { workdir: await Deno.makeTempDir() }).pipe(source({}));
  for (let i = 1; i < 10; i++) p = p.pipe(step({ n: i }).as(`step-${i}`));
  const result = await p.execute({ quiet: true });
  if (result.stages.some((s) => s.action !== "ran")) throw new Error("expected every stage to run");
});

// A stage whose committed output is one 10 GB file (sparse on disk: it costs no space or write time).
// The manifest is written as a commit would, with a placeholder digest for the data: deciding that the
// stage is up to date stats the file and reads none of it, so the placeholder is never looked at.
const bigDir = await Deno.makeTempDir();
{
  const statuses = await pipeline("big", { workdir: bigDir }).pipe(big({})).execute({ command: "status" });
  const key = statuses[0].key!;
  const dir = join(bigDir, "artifacts", "big", key.slice(0, 16));
  await Deno.mkdir(dir, { recursive: true });
  const file = await Deno.open(join(dir, "data.bin"), { create: true, write: true });
  await file.truncate(10e9);
  file.close();
  const files = { "data.bin": { size: 10e9, sha256: "0".repeat(64) } };
  await Deno.writeTextFile(
    join(dir, MANIFEST),
    JSON.stringify({
      format: "kiln-artifact/1",
      stage: "big",
      kind: "blob",
      key,
      digest: contentDigest(files),
      files,
      stats: {},
      committedAt: new Date().toISOString(),
      durationMs: 0,
    }),
  );
}

Deno.bench("run: skip a stage with a 10 GB committed output", async () => {
  const result = await pipeline("big", { workdir: bigDir }).pipe(big({})).execute({ quiet: true });
  if (result.stages[0].action !== "cached") throw new Error("expected the 10 GB stage cached");
});
