/**
 * `precision: "mixed"` in the fine-tuning stages (sft, rewardModel, ppo) on the CPU backend, which has
 * f16 tensors: each trains like fp32 within small tolerances, records the `precision` stat, resumes
 * exactly after an interruption, and is a config error on a backend without f16 (WebGPU without
 * `shader-f16`, e.g. llvmpipe). fp32 staying bit-identical is not a test: it was checked once by
 * hashing each stage's artifact before and after the change (.notes/issue-4.md, session 2 part C).
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { createBackend } from "../kernels/device.ts";
import { ConfigError, InterruptedError } from "../pipeline/errors.ts";
import { STAGE_TEST, tinyPipeline, writeData } from "./sft_fixture.ts";
import { tinyPpoPipeline, writePrompts } from "./ppo_fixture.ts";

type Precision = "fp32" | "mixed";
type Json = Record<string, number>;

const { sft: SFT, rewardModel: RM } = STAGE_TEST;
/** Small learning rates: the runs stay close enough that every rollout samples the same tokens. */
const PPO = {
  iterations: 6,
  batch: 8,
  minibatch: 4,
  ppoEpochs: 2,
  maxTokens: 4,
  lr: 1e-3,
  valueLr: 1e-3,
  kl: { beta: 0.05 },
  ptx: { coef: 0.5, batch: 2, seqLen: 8 },
  logSamples: 0,
  eval: { fraction: 0.25, every: 0 },
  backend: "cpu" as const,
};

const jsonl = (text: string): Json[] => text.trim().split("\n").map((l) => JSON.parse(l));

/** True once a training checkpoint of `stage` exists under `workdir` (synchronous: read from a timer). */
function checkpointed(workdir: string, stage: string): boolean {
  const walk = (dir: string): boolean => {
    let entries: Deno.DirEntry[];
    try {
      entries = [...Deno.readDirSync(dir)];
    } catch {
      return false; // not there yet, or removed while listing
    }
    return entries.some((e) =>
      e.isDirectory ? walk(join(dir, e.name)) : e.name === "train-state.json" || e.name === "ppo-state.json"
    );
  };
  return walk(join(workdir, "work", stage));
}

/**
 * Runs `execute` and aborts it (as SIGINT does) once `stage` has checkpointed: the stage stops at its
 * next safe point with an InterruptedError, leaving the checkpoint for the rerun.
 */
async function interruptAfterCheckpoint(
  workdir: string,
  stage: string,
  execute: (signal: AbortSignal) => Promise<unknown>,
): Promise<void> {
  const controller = new AbortController();
  const timer = setInterval(() => {
    if (checkpointed(workdir, stage)) controller.abort();
  }, 1);
  try {
    await assert.rejects(execute(controller.signal), InterruptedError);
  } finally {
    clearInterval(timer);
  }
  assert.ok(checkpointed(workdir, stage), `${stage} left a checkpoint`);
}

/** Whether this machine has a WebGPU adapter without f16 (logs why not when it has none). */
async function webgpuWithoutF16(): Promise<boolean> {
  const gpu = await createBackend({ backend: "webgpu", log: () => {} }).catch((e: Error) => e);
  if (gpu instanceof Error || gpu.hasF16) {
    console.log(
      `config error not checked: ${gpu instanceof Error ? gpu.message : `${gpu.description} has f16`}`,
    );
    if (!(gpu instanceof Error)) gpu.destroy();
    return false;
  }
  gpu.destroy();
  return true;
}

const f16Error = (stage: string) => (e: Error) =>
  e instanceof ConfigError &&
  e.message.includes(`stage "${stage}": config.precision: "mixed" needs f16 tensors`);

Deno.test("sft and rewardModel: mixed trains like fp32, resumes exactly, and needs f16", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const data = await writeData(dir);
    const run = (workdir: string, sft: Precision, rm: Precision, signal?: AbortSignal) =>
      tinyPipeline(workdir, { ...SFT, precision: sft, data: data.sft }, {
        ...RM,
        precision: rm,
        data: data.comparisons,
      }).execute({ command: "run", quiet: true, signal });

    // SFT in both precisions (the reward model of the mixed SFT model is not compared).
    const fp32 = await run(join(dir, "fp32"), "fp32", "fp32");
    const mixed = await run(join(dir, "mixed"), "mixed", "mixed");
    const [a, b] = [fp32.artifacts.sft, mixed.artifacts.sft];
    assert.equal(a.stats.precision, "fp32");
    assert.equal(b.stats.precision, "mixed");
    assert.notDeepEqual(await b.readText("model.safetensors"), await a.readText("model.safetensors"));
    for (const key of ["loss", "valLoss"]) {
      const x = a.stats[key] as number, y = b.stats[key] as number;
      assert.ok(Math.abs(x - y) < 0.01, `sft ${key}: fp32 ${x}, mixed ${y}`);
    }
    const losses = (m: Json[]) => m.filter((l) => "loss" in l).map((l) => l.loss);
    const [la, lb] = [
      losses(jsonl(await a.readText("metrics.jsonl"))),
      losses(jsonl(await b.readText("metrics.jsonl"))),
    ];
    assert.equal(la.length, lb.length);
    la.forEach((x, i) =>
      assert.ok(Math.abs(x - lb[i]) < 0.01, `sft step ${i + 1}: fp32 ${x}, mixed ${lb[i]}`)
    );

    // The reward model in both precisions from the same (fp32) SFT model: the sft stage is cached.
    const rmMixed = (await run(join(dir, "fp32"), "fp32", "mixed")).artifacts["reward-model"];
    const rmFp32 = fp32.artifacts["reward-model"];
    assert.equal(rmFp32.stats.precision, "fp32");
    assert.equal(rmMixed.stats.precision, "mixed");
    const pairs = jsonl(await rmFp32.readText("metrics.jsonl")).findLast((l) => "pairs" in l)!.pairs;
    const tolerance: Record<string, number> = {
      loss: 0.01,
      valLoss: 0.01,
      valAccuracy: 1 / pairs + 1e-9, // one held-out pair
      rewardMean: 0.02,
      rewardStd: 0.01,
    };
    for (const [key, tol] of Object.entries(tolerance)) {
      const x = rmFp32.stats[key] as number, y = rmMixed.stats[key] as number;
      assert.ok(Math.abs(x - y) <= tol, `reward model ${key}: fp32 ${x}, mixed ${y} (tolerance ${tol})`);
    }
    assert.ok((rmMixed.stats.valLoss as number) < (rmMixed.stats.valLossBefore as number), "mixed RM learns");

    // Interrupted after a checkpoint and rerun: the same artifacts as the uninterrupted mixed runs
    // (the f16 copy is derived from the checkpoint's f32 weights).
    const resumed = join(dir, "resumed");
    await interruptAfterCheckpoint(resumed, "sft", (signal) => run(resumed, "mixed", "mixed", signal));
    await interruptAfterCheckpoint(
      resumed,
      "reward-model",
      (signal) => run(resumed, "mixed", "mixed", signal),
    );
    const again = await run(resumed, "mixed", "mixed");
    for (
      const [got, want] of [[again.artifacts.sft, b], [
        again.artifacts["reward-model"],
        mixed.artifacts["reward-model"],
      ]]
    ) {
      assert.deepEqual(
        await Deno.readFile(got.path("model.safetensors")),
        await Deno.readFile(want.path("model.safetensors")),
      );
      assert.deepEqual(
        jsonl(await got.readText("metrics.jsonl")).map(({ msPerStep: _, ...rest }) => rest),
        jsonl(await want.readText("metrics.jsonl")).map(({ msPerStep: _, ...rest }) => rest),
      );
    }

    if (!await webgpuWithoutF16()) return;
    const gpu = (precision: Precision, stage: "sft" | "rm") =>
      tinyPipeline(join(dir, "webgpu"), {
        ...SFT,
        backend: stage === "sft" ? "webgpu" : "cpu",
        precision,
        data: data.sft,
      }, {
        ...RM,
        backend: "webgpu",
        precision,
        data: data.comparisons,
      }).execute({ command: "run", quiet: true, until: stage === "sft" ? "sft" : undefined });
    await assert.rejects(gpu("mixed", "sft"), f16Error("sft"));
    await assert.rejects(gpu("mixed", "rm"), f16Error("reward-model"));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ppo: mixed tracks fp32 iteration by iteration, resumes exactly, and needs f16", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const prompts = await writePrompts(dir);
    const run = (workdir: string, precision: Precision, signal?: AbortSignal) =>
      tinyPpoPipeline(workdir, { ...PPO, prompts, precision }).execute({ quiet: true, signal });
    const a = (await run(join(dir, "fp32"), "fp32")).artifacts.ppo;
    const b = (await run(join(dir, "mixed"), "mixed")).artifacts.ppo;
    assert.equal(a.stats.precision, "fp32");
    assert.equal(b.stats.precision, "mixed");
    assert.notDeepEqual(await b.readText("model.safetensors"), await a.readText("model.safetensors"));
    const iterations = async (artifact: typeof a) =>
      jsonl(await artifact.readText("metrics.jsonl")).filter((l) => "kl" in l);
    const [ia, ib] = [await iterations(a), await iterations(b)];
    assert.equal(ib.length, PPO.iterations);
    // Measured: every difference below 3e-4 (policyLoss 1e-4, valueLoss 3e-4, reward 1e-4).
    const tolerance: Record<string, number> = {
      reward: 0.01,
      kl: 0.01,
      policyLoss: 0.002,
      valueLoss: 0.01,
      ptxLoss: 0.01,
      entropy: 0.01,
      value: 0.01,
    };
    ia.forEach((x, i) => {
      assert.equal(ib[i].responseLength, x.responseLength, `iteration ${x.iteration}: the same rollouts`);
      for (const [key, tol] of Object.entries(tolerance)) {
        const d = Math.abs(x[key] - ib[i][key]);
        assert.ok(d <= tol, `iteration ${x.iteration} ${key}: fp32 ${x[key]}, mixed ${ib[i][key]}`);
      }
    });
    // The held-out answers are scored by the frozen reward model, in mixed precision in b.
    const before = (s: typeof a.stats) => s.rewardBefore as number;
    assert.ok(Math.abs(before(a.stats) - before(b.stats)) < 1e-3, `${before(a.stats)} vs ${before(b.stats)}`);

    const resumed = join(dir, "resumed");
    await interruptAfterCheckpoint(resumed, "ppo", (signal) => run(resumed, "mixed", signal));
    const got = (await run(resumed, "mixed")).artifacts.ppo;
    assert.deepEqual(
      await Deno.readFile(got.path("model.safetensors")),
      await Deno.readFile(b.path("model.safetensors")),
    );
    const metrics = async (artifact: typeof a) =>
      jsonl(await artifact.readText("metrics.jsonl")).map(({ time: _, ...rest }) => rest);
    assert.deepEqual(await metrics(got), await metrics(b));

    if (!await webgpuWithoutF16()) return;
    await assert.rejects(
      tinyPpoPipeline(join(dir, "webgpu"), { ...PPO, prompts, precision: "mixed", backend: "webgpu" })
        .execute({ quiet: true }),
      f16Error("ppo"),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
