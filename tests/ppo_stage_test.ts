import { strict as assert } from "node:assert";
import { join } from "node:path";
import { ConfigError } from "../pipeline/errors.ts";
import { ppo } from "../stages/ppo.ts";
import { mulberry32 } from "../model/rng.ts";
import { tinyPpoPipeline, writePrompts } from "./ppo_fixture.ts";

/** A run small enough for the CPU backend in seconds, exercising every piece of state. */
const resumeConfig = (prompts: string) => ({
  prompts,
  // Twelve iterations, killed twice by iteration 8 (+ < 30 ms, under one iteration): the run cannot
  // finish before a kill lands.
  iterations: 12,
  batch: 8,
  minibatch: 4,
  ppoEpochs: 2,
  maxTokens: 4,
  lr: 1e-2,
  valueLr: 1e-2,
  kl: { beta: 0.05, target: 1, horizon: 100 }, // adaptive: the controller's state must resume too
  ptx: { coef: 0.5, batch: 2, seqLen: 8 },
  logSamples: 2,
  eval: { fraction: 0.25, every: 6 }, // 2 of the 8 prompts, answered at iterations 0, 6 and 12
  backend: "cpu" as const,
});

/** The lines of metrics.jsonl. */
async function metricsOf(dir: string): Promise<unknown[]> {
  const text = await Deno.readTextFile(join(dir, "metrics.jsonl"));
  return text.trim().split("\n").map((line) => JSON.parse(line));
}

/** A stage's stats less the wall-clock ones (ms spent generating, scoring and training). */
function withoutTimings(stats: Record<string, unknown>): Record<string, unknown> {
  const { generateMs: _g, scoreMs: _s, trainMs: _t, ...rest } = stats;
  return rest;
}

/** The iteration recorded in the PPO checkpoint under `workdir`, if one has been written. */
async function checkpointedIteration(workdir: string): Promise<number> {
  const walk = async (dir: string): Promise<number> => {
    let best = -1;
    const entries = await Array.fromAsync(Deno.readDir(dir)).catch(() => [] as Deno.DirEntry[]);
    for (const e of entries) {
      const path = join(dir, e.name);
      if (e.isDirectory) best = Math.max(best, await walk(path).catch(() => -1));
      else if (e.name === "ppo-state.json") {
        const state = await Deno.readTextFile(path).then(JSON.parse).catch(() => undefined);
        if (state) best = Math.max(best, state.state.iteration);
      }
    }
    return best;
  };
  return await walk(workdir);
}

/**
 * Runs the fixture pipeline in a subprocess and kill -9s it `delayMs` after its checkpoint reaches
 * `iteration`, so the kill lands somewhere inside the next iteration.
 */
async function killAt(workdir: string, config: unknown, iteration: number, delayMs: number): Promise<void> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./ppo_fixture.ts", import.meta.url).pathname,
      workdir,
      JSON.stringify(config),
    ],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const deadline = Date.now() + 120_000;
  let done = false;
  const exited = child.status.then(() => (done = true));
  while (!done && Date.now() < deadline && await checkpointedIteration(workdir) < iteration) {
    await new Promise((r) => setTimeout(r, 25));
  }
  await new Promise((r) => setTimeout(r, delayMs));
  if (done) {
    const err = new TextDecoder().decode((await child.output()).stderr);
    throw new Error(`the run finished before iteration ${iteration} was checkpointed: ${err}`);
  }
  child.kill("SIGKILL");
  await exited;
  await child.stderr.cancel().catch(() => {});
}

Deno.test("ppo: kill -9 at two random moments and rerun: identical metrics and final weights (CPU)", async () => {
  // Seeded random kill points; KILN_TEST_SEED replays one.
  const seed = Number(Deno.env.get("KILN_TEST_SEED") ?? Date.now() % 100000);
  const random = mulberry32(seed);
  const kill1 = 1 + Math.floor(random() * 4), kill2 = kill1 + 1 + Math.floor(random() * (8 - kill1));
  const delays = [Math.floor(random() * 30), Math.floor(random() * 30)];
  console.log(
    `seed ${seed}: killed ${delays[0]} ms after iteration ${kill1}, ${delays[1]} ms after ${kill2}`,
  );
  const dir = await Deno.makeTempDir();
  try {
    const prompts = await writePrompts(dir);
    const config = resumeConfig(prompts);
    const straight = await tinyPpoPipeline(join(dir, "straight"), config).execute({ quiet: true });
    const expected = straight.artifacts.ppo;

    // Killed inside the iteration after `kill1`'s checkpoint, resumed, killed after `kill2`'s, resumed.
    const workdir = join(dir, "killed");
    await killAt(workdir, config, kill1, delays[0]);
    assert.equal(await checkpointedIteration(workdir) >= kill1, true);
    await killAt(workdir, config, kill2, delays[1]);
    const resumed = await tinyPpoPipeline(workdir, config).execute({ quiet: true });
    const got = resumed.artifacts.ppo;

    assert.deepEqual(await metricsOf(got.dir), await metricsOf(expected.dir));
    assert.deepEqual(
      await Deno.readFile(got.path("model.safetensors")),
      await Deno.readFile(expected.path("model.safetensors")),
    );
    assert.equal(await got.readText("samples.jsonl"), await expected.readText("samples.jsonl"));
    assert.deepEqual(withoutTimings(got.stats), withoutTimings(expected.stats));
    // Every file byte for byte (metrics hold no wall-clock figures), so downstream keys agree.
    assert.equal(await got.readText("metrics.jsonl"), await expected.readText("metrics.jsonl"));
    assert.equal(got.digest, expected.digest);
    const lines = await metricsOf(expected.dir) as Record<string, number>[];
    const evals = lines.filter((m) => "heldOutReward" in m);
    const evalLines = evals.map((m) => [m.iteration, m.checked, m.passRate]);
    assert.deepEqual(evalLines, [[0, 2, 0], [6, 2, 0], [12, 2, 0]]);
    assert.equal(expected.stats.rewardBefore, evals[0].heldOutReward);
    assert.equal(expected.stats.reward, evals[2].heldOutReward);
    assert.equal(expected.stats.passRateBefore, 0);
    assert.equal(expected.stats.heldOutPrompts, 2);
    assert.equal(expected.stats.prompts, 6, "held-out prompts are not trained on");
    const samples = (await expected.readText("samples.jsonl")).trim().split("\n").map((l) => JSON.parse(l));
    const verdicts = samples.map((s) => `${s.iteration}:${s.pass}`);
    assert.deepEqual(verdicts, ["0:false", "0:false", "6:false", "6:false", "12:false", "12:false"]);
    // The mean of the held-out answers' scores is the evaluation's reward.
    const first = samples.filter((s) => s.iteration === 0).map((s) => s.reward);
    assert.ok(Math.abs((first[0] + first[1]) / 2 - evals[0].heldOutReward) < 1e-12);
    const metrics = lines.filter((m) => "kl" in m) as { iteration: number; ptxLoss: number; beta: number }[];
    assert.deepEqual(metrics.map((m) => m.iteration), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert.ok(
      metrics.every((m) => (m as unknown as { rolloutPassRate: number }).rolloutPassRate === 0),
      "rollouts checked too",
    );
    assert.ok(metrics.every((m) => Number.isFinite(m.ptxLoss)), "ptx loss logged every iteration");
    assert.notEqual(metrics[11].beta, metrics[0].beta, "the adaptive controller moved β");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ppo: config errors name the field", () => {
  assert.throws(
    () => ppo({} as never),
    (e: Error) => e instanceof ConfigError && /config\.prompts/.test(e.message),
  );
  assert.throws(
    () => ppo({ prompts: "p.jsonl", kl: { beta: -1 } }),
    (e: Error) => e instanceof ConfigError && /config\.kl\.beta/.test(e.message),
  );
  assert.equal(ppo({ prompts: "p.jsonl" }).config.kl.beta, 0.02);
  assert.equal(ppo({ prompts: "p.jsonl" }).config.ptx.coef, 27.8);
});

Deno.test("ppo: missingEndPenalty lowers the score of responses cut without a stop token", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const prompts = await writePrompts(dir);
    // One iteration, λ = 1: the return at a response's first token is its whole reward, and before any
    // update the policy is the reference (KL 0), so the mean return is the mean score.
    const run = async (missingEndPenalty: number) => {
      const result = await tinyPpoPipeline(join(dir, `w${missingEndPenalty}`), {
        prompts,
        iterations: 1,
        batch: 16,
        minibatch: 8,
        ppoEpochs: 1,
        maxTokens: 2,
        lambda: 1,
        missingEndPenalty,
        ptx: { coef: 0 },
        eval: { count: 0 },
        backend: "cpu",
      }).execute({ quiet: true });
      const [line] = (await metricsOf(result.artifacts.ppo.dir)) as { return: number; truncated: number }[];
      return line;
    };
    const plain = await run(0), penalised = await run(3);
    assert.equal(penalised.truncated, plain.truncated);
    // (The tiny random policy never emits a stop token in 2 tokens: every response is cut.)
    assert.ok(plain.truncated > 0, `truncated fraction ${plain.truncated}`);
    assert.ok(
      Math.abs(plain.return - penalised.return - 3 * plain.truncated) < 1e-6,
      `returns ${plain.return} → ${penalised.return}`,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("ppo: learning-rate warmup and cosine decay over the iterations; constant by default", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const prompts = await writePrompts(dir);
    const lrs = async (name: string, schedule: { warmup?: number; minLr?: number }) => {
      const result = await tinyPpoPipeline(join(dir, name), {
        prompts,
        iterations: 5,
        batch: 8,
        minibatch: 8,
        ppoEpochs: 1,
        maxTokens: 2,
        lr: 1e-3,
        ...schedule,
        ptx: { coef: 0 },
        eval: { count: 0 },
        backend: "cpu",
      }).execute({ quiet: true });
      return ((await metricsOf(result.artifacts.ppo.dir)) as { lr: number }[]).map((m) => m.lr);
    };
    assert.deepEqual(await lrs("constant", {}), [1e-3, 1e-3, 1e-3, 1e-3, 1e-3]);
    const scheduled = await lrs("scheduled", { warmup: 2, minLr: 1e-4 });
    // Warmup: 1/2, 2/2 of lr; then cosine from lr (iteration 2) to minLr (iteration 5, past the end).
    const expected = [
      5e-4,
      1e-3,
      1e-3,
      1e-4 + 0.45e-3 * (1 + Math.cos(Math.PI / 3)),
      1e-4 + 0.45e-3 * (1 + Math.cos(2 * Math.PI / 3)),
    ];
    scheduled.forEach((lr, i) =>
      assert.ok(Math.abs(lr - expected[i]) < 1e-12, `iteration ${i + 1}: ${lr} vs ${expected[i]}`)
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
