/**
 * PPO throughput: rollout tokens/s and PPO iterations/min, with the time split between
 * generation (sampling the responses), scoring (policy, reference, value and reward-model forwards)
 * and training (the PPO epochs, ptx included). Runs the tiny PPO pipeline of the tests.
 *
 *   deno run -A bench/ppo_bench.ts [iterations=5] [backend=cpu]
 *
 * The times are the stage's `generateMs`, `scoreMs` and `trainMs` stats: totals over every iteration,
 * the first (warm-up: JIT, buffer pools) included, so run enough iterations for it to fade.
 * @module
 */
import { join } from "node:path";
import { TINY, tinyPpoPipeline, writePrompts } from "../tests/ppo_fixture.ts";

const iterations = Number(Deno.args[0] ?? 5);
const backend = (Deno.args[1] ?? "cpu") as "cpu" | "webgpu" | "auto";
const config = {
  batch: 16,
  minibatch: 8,
  ppoEpochs: 2,
  maxTokens: 16,
  ptx: { coef: 1, batch: 2, seqLen: 16 },
};

const dir = await Deno.makeTempDir();
try {
  const prompts = await writePrompts(dir);
  const result = await tinyPpoPipeline(join(dir, "work"), {
    prompts,
    iterations,
    ...config,
    lr: 1e-3,
    valueLr: 1e-3,
    eval: { count: 0 },
    backend,
  }).execute({ quiet: true });
  const lines = (await result.artifacts.ppo.readText("metrics.jsonl")).trim().split("\n").map((l) =>
    JSON.parse(l)
  ).filter((m) => "kl" in m); // iteration lines, not the held-out evaluation's
  // Wall-clock figures stay out of the artifact: the stage's stats hold the totals over its iterations
  // (the first one, which compiles and warms up, included).
  const stats = result.artifacts.ppo.stats as Record<string, number>;
  const generate = stats.generateMs, score = stats.scoreMs, train = stats.trainMs;
  const total = generate + score + train;
  const tokens = lines.reduce((s, m) => s + m.responseLength * config.batch, 0);
  console.log(
    `model: ${JSON.stringify(TINY)}, vocab 300; backend ${result.artifacts.ppo.stats.backend}; ` +
      `${JSON.stringify(config)}`,
  );
  console.log(
    `${lines.length} iterations: ${generate} ms generate, ${score} ms score, ${train} ms train ` +
      `(${tokens.toFixed(0)} response tokens)`,
  );
  console.log(`rollout tokens/s (generation only): ${(tokens / (generate / 1000)).toFixed(1)}`);
  console.log(`PPO iterations/min: ${(lines.length / (total / 60_000)).toFixed(2)}`);
  console.log(
    `time split: generate ${(100 * generate / total).toFixed(1)} %, score ${
      (100 * score / total).toFixed(1)
    } %, ` +
      `train ${(100 * train / total).toFixed(1)} %`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
