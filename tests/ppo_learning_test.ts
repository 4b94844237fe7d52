import { strict as assert } from "node:assert";
import { join } from "node:path";
import { tinyPpoPipeline, writePrompts } from "./ppo_fixture.ts";

// ~40 s on the 2-core dev VM: ten PPO iterations of a tiny GPT on the CPU backend.
Deno.test("ppo: a tiny run on the CPU raises the reward while the KL to the SFT model stays under its target", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const target = 6;
    const result = await tinyPpoPipeline(join(dir, "work"), {
      prompts: await writePrompts(dir),
      iterations: 10,
      batch: 16,
      minibatch: 8,
      ppoEpochs: 2,
      maxTokens: 6,
      lr: 3e-3,
      valueLr: 3e-3,
      kl: { beta: 0.05, target, horizon: 50 },
      ptx: { coef: 0 },
      eval: { count: 0 },
      backend: "cpu",
    }).execute({ quiet: true });
    const lines = (await result.artifacts.ppo.readText("metrics.jsonl")).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    // Iteration lines (the held-out evaluation's lines have no KL).
    const metrics = lines.filter((m) => "kl" in m) as {
      reward: number;
      kl: number;
      beta: number;
      entropy: number;
      samples: unknown[];
    }[];
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const first = mean(metrics.slice(0, 3).map((m) => m.reward));
    const last = mean(metrics.slice(-3).map((m) => m.reward));
    assert.ok(last > first + 1.5, `mean reward of the last 3 iterations ${last} vs the first 3 ${first}`);
    const maxKl = Math.max(...metrics.map((m) => m.kl));
    assert.ok(maxKl > 0.5 && maxKl < target, `KL to the reference peaked at ${maxKl} (target ${target})`);
    // Below target the adaptive controller lowers β.
    assert.ok(metrics.at(-1)!.beta < 0.05);
    assert.equal(metrics[0].samples.length, 3);
    assert.ok(metrics.every((m) => Number.isFinite(m.entropy) && m.entropy > 0));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
