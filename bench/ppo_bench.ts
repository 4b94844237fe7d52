/**
 * PPO throughput: rollout tokens/s and PPO iterations/min, with each iteration's time split between
 * generation (sampling the responses), scoring (policy, reference, value and reward-model forwards)
 * and training (the PPO epochs, ptx included). Runs the tiny PPO pipeline of the tests.
 *
 *   deno run -A bench/ppo_bench.ts [iterations=5] [backend=cpu]
 *
 * The first iteration is reported but left out of the averages (warm-up: JIT, buffer pools).
 * @module
 */
import { join } from "node:path";
import { TINY, tinyPpoPipeline, writePrompts } from "../tests/ppo_fixture.ts";

const iterations = Number(Deno.args[0] ?? 5);
const backend = (Deno.args[1] ?? "cpu") as "cpu" | "webgpu" | "auto";
const config = {
  batch: 16,
  minibatch: 8,
  epochs: 2,
  maxResponse: 16,
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
  const measured = lines.length > 1 ? lines.slice(1) : lines;
  const sum = (f: (m: typeof lines[number]) => number) => measured.reduce((s, m) => s + f(m), 0);
  const generate = sum((m) => m.time.generate),
    score = sum((m) => m.time.score),
    train = sum((m) => m.time.train);
  const total = generate + score + train;
  const tokens = sum((m) => m.responseLength * config.batch);
  console.log(
    `model: ${JSON.stringify(TINY)}, vocab 300; backend ${result.artifacts.ppo.stats.backend}; ` +
      `${JSON.stringify(config)}`,
  );
  for (const m of lines) {
    console.log(
      `iteration ${m.iteration}: ${m.time.generate} ms generate, ${m.time.score} ms score, ${m.time.train} ms train ` +
        `(${(m.responseLength * config.batch).toFixed(0)} response tokens)`,
    );
  }
  console.log(`rollout tokens/s (generation only): ${(tokens / (generate / 1000)).toFixed(1)}`);
  console.log(`PPO iterations/min: ${(measured.length / (total / 60_000)).toFixed(2)}`);
  console.log(
    `time split: generate ${(100 * generate / total).toFixed(1)} %, score ${
      (100 * score / total).toFixed(1)
    } %, ` +
      `train ${(100 * train / total).toFixed(1)} %`,
  );
} finally {
  await Deno.remove(dir, { recursive: true });
}
