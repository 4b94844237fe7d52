import { strict as assert } from "node:assert";
import { join } from "node:path";
import { killAfterCheckpoint } from "./kill_helpers.ts";
import { z } from "npm:zod@^4.6.7";
import { defineStage } from "../pipeline/stage.ts";
import { pipeline } from "../pipeline/pipeline.ts";
import { encodeTokenShard } from "../model/data.ts";
import { loadModelDir } from "../model/checkpoint.ts";
import { pretrain } from "../stages/pretrain.ts";
import { createBackend } from "../kernels/device.ts";
import { ConfigError } from "../pipeline/errors.ts";

/** A tiny repetitive corpus as byte-level tokens (ids < 32), so a small model can learn it. */
const text = "the cat sat on the mat. the dog sat on the log. ".repeat(40);
const ids = Array.from(text, (ch) => (ch === " " ? 0 : ch === "." ? 1 : ch.charCodeAt(0) - 95));

const tokens = defineStage({
  name: "test-tokens",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "tokens",
  schema: z.object({}),
  async run(ctx) {
    await ctx.out.writeFile("train-00000.bin", encodeTokenShard(ids));
    await ctx.out.writeFile("val-00000.bin", encodeTokenShard(ids.slice(0, 200)));
  },
});

const CONFIG = {
  model: { layers: 1, dim: 32, heads: 2, context: 16, vocab: 32 },
  steps: 80,
  batch: 4,
  lr: 1e-2,
  warmup: 5,
  weightDecay: 0,
  seed: 3,
  logEvery: 5,
  eval: { every: 40, batches: 2 },
  sample: { every: 0 },
  checkpointEvery: 20,
  backend: "cpu" as const,
};

/**
 * Long enough that the subprocess is still training when it is killed after its first checkpoint (the
 * CPU backend runs ~5 ms per step of this model: 150 steps once ended between the checkpoint and the kill).
 */
const RESUME_STEPS = 400;

type Line = { step: number; loss?: number; valLoss?: number; lr?: number; gradNorm?: number };

Deno.test("pretrain: a tiny model overfits a tiny corpus; artifact is a loadable HF model directory", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const result = await pipeline("t", { workdir: dir, workers: 1 })
      .pipe(tokens({}))
      .pipe(pretrain(CONFIG))
      .execute({ command: "run", quiet: true });
    const artifact = result.artifacts["pretrain"];
    assert.deepEqual(artifact.files(), ["config.json", "metrics.jsonl", "model.safetensors"]);
    const lines: Line[] = (await artifact.readText("metrics.jsonl")).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    const losses = lines.filter((l) => l.loss !== undefined);
    assert.equal(losses.length, 80);
    assert.deepEqual(losses.map((l) => l.step), Array.from({ length: 80 }, (_, i) => i + 1));
    assert.ok(losses[0].loss! > 3, `initial loss ${losses[0].loss} is about ln 32`);
    assert.ok(losses.at(-1)!.loss! < 1.0, `final loss ${losses.at(-1)!.loss}`);
    const val = lines.filter((l) => l.valLoss !== undefined);
    assert.deepEqual(val.map((l) => l.step), [40, 80]);
    assert.ok(val[1].valLoss! < val[0].valLoss!);
    const model = await loadModelDir(artifact.dir);
    assert.deepEqual(model.config, CONFIG.model);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("pretrain: precision mixed trains like fp32 on the CPU, and is a config error without f16", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const run = (precision: "fp32" | "mixed", backend: "cpu" | "webgpu", workdir: string) =>
      pipeline("t", { workdir, workers: 1 })
        .pipe(tokens({}))
        .pipe(pretrain({ ...CONFIG, steps: 40, eval: { every: 0 }, precision, backend }))
        .execute({ command: "run", quiet: true });
    const finalLoss = async (workdir: string, precision: "fp32" | "mixed") => {
      const artifact = (await run(precision, "cpu", workdir)).artifacts["pretrain"];
      assert.equal(artifact.stats.precision, precision);
      return artifact.stats.loss as number;
    };
    const fp32 = await finalLoss(join(dir, "fp32"), "fp32");
    const mixed = await finalLoss(join(dir, "mixed"), "mixed");
    assert.ok(Math.abs(mixed - fp32) < 0.02, `final loss: mixed ${mixed}, fp32 ${fp32}`);

    const gpu = await createBackend({ backend: "webgpu", log: () => {} }).catch((e: Error) => e);
    if (gpu instanceof Error || gpu.hasF16) {
      console.log(
        `config error not checked: ${gpu instanceof Error ? gpu.message : `${gpu.description} has f16`}`,
      );
      if (!(gpu instanceof Error)) gpu.destroy();
      return;
    }
    gpu.destroy();
    await assert.rejects(
      run("mixed", "webgpu", join(dir, "webgpu")),
      (e: Error) =>
        e instanceof ConfigError && /config\.precision: "mixed" needs f16 tensors/.test(e.message),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

/** The pipeline as a script, so a subprocess can run it and be killed. */
function script(workdir: string): string {
  const here = new URL(".", import.meta.url).href;
  return `
import { pipeline } from "${here}../pipeline/pipeline.ts";
import { pretrain } from "${here}../stages/pretrain.ts";
import { tokensForResumeTest } from "${here}pretrain_stage_test.ts";
await pipeline("t", { workdir: ${JSON.stringify(workdir)}, workers: 1 })
  .pipe(tokensForResumeTest({})).pipe(pretrain(${JSON.stringify({ ...CONFIG, steps: RESUME_STEPS })}))
  .execute({ command: "run", quiet: true });
`;
}

/** Exported for the subprocess of the resume test (the same stage, so the same cache key). */
export const tokensForResumeTest = tokens;

Deno.test("pretrain: killed with SIGKILL after a checkpoint, a rerun resumes to the same losses and weights", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // Uninterrupted reference run.
    const run = (workdir: string) =>
      pipeline("t", { workdir, workers: 1 }).pipe(tokens({})).pipe(
        pretrain({ ...CONFIG, steps: RESUME_STEPS }),
      )
        .execute({ command: "run", quiet: true });
    const reference = (await run(join(dir, "a"))).artifacts["pretrain"];

    // Interrupted run: a subprocess killed with SIGKILL once a checkpoint exists.
    const workdir = join(dir, "b");
    await Deno.mkdir(workdir);
    const file = join(dir, "run.ts");
    await Deno.writeTextFile(file, script(workdir));
    const { checkpointed, committed, stderr } = await killAfterCheckpoint([file], workdir, "pretrain");
    assert.ok(checkpointed, `the subprocess wrote no checkpoint; its stderr:\n${stderr}`);
    assert.ok(!committed, "the run was killed before it finished (make the run longer if this fails)");

    const resumed = await run(workdir);
    assert.equal(resumed.stages.find((s) => s.id === "pretrain")?.action, "resumed");
    const artifact = resumed.artifacts["pretrain"];
    // Byte for byte, metrics included (they hold no wall-clock figures), so downstream keys agree.
    assert.equal(await artifact.readText("metrics.jsonl"), await reference.readText("metrics.jsonl"));
    assert.deepEqual(
      await Deno.readFile(artifact.path("model.safetensors")),
      await Deno.readFile(reference.path("model.safetensors")),
    );
    assert.equal(artifact.digest, reference.digest);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
