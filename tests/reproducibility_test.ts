/**
 * Byte-reproducible artifacts, as a user meets them with the demo pipeline (examples/demo.ts, CPU
 * backend): the same inputs give the same bytes in every stage, so the same cache keys, and a stage
 * rerun that reproduces its output leaves everything downstream cached (early cutoff). Wall-clock
 * figures (ms/step, tokens/s, ms per PPO phase) live in log lines and stats, never in hashed files.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import type { RunResult } from "../pipeline/pipeline.ts";
import { demo } from "../examples/demo.ts";

const STAGES = [
  "crawl",
  "dedupe",
  "quality-filter",
  "books",
  "mix",
  "pretrain",
  "sft",
  "reward-model",
  "ppo",
];

/** Per stage: its key, its content digest, and each file's SHA-256. */
function fingerprint(result: RunResult) {
  return Object.fromEntries(STAGES.map((id) => {
    const artifact = result.artifacts[id];
    assert.ok(artifact, `stage ${id} has no artifact`);
    const files = Object.fromEntries(Object.entries(artifact.manifest.files).map(([f, e]) => [f, e.sha256]));
    return [id, { key: artifact.key, digest: artifact.digest, files }];
  }));
}

const actions = (result: RunResult) => Object.fromEntries(result.stages.map((s) => [s.id, s.action]));

Deno.test("demo: two runs from empty workdirs give the same keys and bytes; --force=pretrain cuts off", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const first = await demo.execute({ command: "run", quiet: true, workdir: join(dir, "a") });
    const second = await demo.execute({ command: "run", quiet: true, workdir: join(dir, "b") });
    assert.deepEqual(Object.keys(first.artifacts).sort(), [...STAGES].sort());
    const [a, b] = [fingerprint(first), fingerprint(second)];
    for (const id of STAGES) assert.deepEqual(b[id], a[id], `stage ${id} differs between two runs`);

    // The timings a user watches are still reported, outside the artifact's bytes.
    assert.ok((first.artifacts.pretrain.stats.tokensPerSec as number) > 0, "pretrain reports tokens/s");
    for (const id of ["pretrain", "sft", "reward-model"]) {
      assert.ok((first.artifacts[id].stats.msPerStep as number) > 0, `${id} reports ms/step`);
    }
    assert.ok(typeof first.artifacts.ppo.stats.generateMs === "number", "ppo reports its time split");

    // Retraining pretrain reproduces its model to the byte, so SFT, the reward model and PPO stay cached.
    const forced = await demo.execute({
      command: "run",
      quiet: true,
      workdir: join(dir, "a"),
      force: ["pretrain"],
    });
    assert.deepEqual(actions(forced), {
      "crawl": "cached",
      "dedupe": "cached",
      "quality-filter": "cached",
      "books": "cached",
      "mix": "cached",
      "pretrain": "ran",
      "sft": "cached",
      "reward-model": "cached",
      "ppo": "cached",
    });
    assert.deepEqual(fingerprint(forced), a);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
