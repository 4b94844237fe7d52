import { strict as assert } from "node:assert";
import { join } from "node:path";
import { ConfigError } from "../pipeline/errors.ts";
import { ppo } from "../stages/ppo.ts";
import { tinyPpoPipeline, writePrompts } from "./ppo_fixture.ts";

/** A run small enough for the CPU backend in seconds, exercising every piece of state. */
const resumeConfig = (prompts: string) => ({
  prompts,
  iterations: 4,
  batch: 8,
  minibatch: 4,
  epochs: 2,
  maxResponse: 4,
  lr: 1e-2,
  valueLr: 1e-2,
  kl: { beta: 0.05, target: 1, horizon: 100 }, // adaptive: the controller's state must resume too
  ptx: { coef: 0.5, batch: 2, seqLen: 8 },
  samples: 2,
  backend: "cpu" as const,
});

/** metrics.jsonl without the wall-clock timings (the only fields that may differ between runs). */
async function metricsOf(dir: string): Promise<unknown[]> {
  const text = await Deno.readTextFile(join(dir, "metrics.jsonl"));
  return text.trim().split("\n").map((line) => {
    const { time: _time, ...rest } = JSON.parse(line);
    return rest;
  });
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

/** Runs the fixture pipeline in a subprocess and kill -9s it once its checkpoint reaches `iteration`. */
async function killAt(workdir: string, config: unknown, iteration: number): Promise<void> {
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
  if (done) {
    const err = new TextDecoder().decode((await child.output()).stderr);
    throw new Error(`the run finished before iteration ${iteration} was checkpointed: ${err}`);
  }
  child.kill("SIGKILL");
  await exited;
  await child.stderr.cancel().catch(() => {});
}

Deno.test("ppo: kill -9 at two iterations and rerun: identical metrics and final weights (CPU)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const prompts = await writePrompts(dir);
    const config = resumeConfig(prompts);
    const straight = await tinyPpoPipeline(join(dir, "straight"), config).execute({ quiet: true });
    const expected = straight.artifacts.ppo;

    // Killed after iteration 1's checkpoint, resumed, killed after iteration 3's, resumed to the end.
    const workdir = join(dir, "killed");
    await killAt(workdir, config, 1);
    assert.equal(await checkpointedIteration(workdir) >= 1, true);
    await killAt(workdir, config, 3);
    const resumed = await tinyPpoPipeline(workdir, config).execute({ quiet: true });
    const got = resumed.artifacts.ppo;

    assert.deepEqual(await metricsOf(got.dir), await metricsOf(expected.dir));
    assert.deepEqual(
      await Deno.readFile(got.path("model.safetensors")),
      await Deno.readFile(expected.path("model.safetensors")),
    );
    const metrics = await metricsOf(expected.dir) as { iteration: number; ptxLoss: number; beta: number }[];
    assert.deepEqual(metrics.map((m) => m.iteration), [1, 2, 3, 4]);
    assert.ok(metrics.every((m) => Number.isFinite(m.ptxLoss)), "ptx loss logged every iteration");
    assert.notEqual(metrics[3].beta, metrics[0].beta, "the adaptive controller moved β");
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
