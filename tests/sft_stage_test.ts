import { strict as assert } from "node:assert";
import { join } from "node:path";
import { killAfterCheckpoint } from "./kill_helpers.ts";
import { loadModelDir } from "../model/checkpoint.ts";
import { RewardScorer } from "../stages/reward_model/score.ts";
import { scoreCommand } from "../stages/reward_model/score_cli.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import { STAGE_TEST, tinyPipeline, writeData } from "./sft_fixture.ts";
import { GPT } from "../model/gpt.ts";
import { loadTokenizer } from "../tokenizer/mod.ts";
import { loadChatTemplate } from "../chat/template.ts";
import { readSftData } from "../chat/data.ts";
import { holdOut } from "../chat/jsonl.ts";
import { batchRows } from "../chat/packing.ts";

const { sft: SFT, rewardModel: RM } = STAGE_TEST;

type Json = Record<string, unknown>;
const jsonl = (text: string): Json[] => text.trim().split("\n").map((l) => JSON.parse(l));

Deno.test("sft → rewardModel: artifacts, metrics, reward stats, and the score API/CLI", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const data = await writeData(dir);
    const result = await tinyPipeline(join(dir, "work"), { ...SFT, data: data.sft }, {
      ...RM,
      data: data.comparisons,
    })
      .execute({ command: "run", quiet: true });
    const s = result.artifacts["sft"];
    assert.deepEqual(s.files(), [
      "chat_template.json",
      "config.json",
      "generation_config.json",
      "metrics.jsonl",
      "model.safetensors",
      "samples.jsonl",
      "tokenizer.json",
    ]);
    assert.equal((await loadModelDir(s.dir)).config.dim, 16);
    const metrics = jsonl(await s.readText("metrics.jsonl"));
    const losses = metrics.filter((m) => "loss" in m) as { loss: number; step: number }[];
    assert.ok(losses.length > 4);
    assert.ok(losses.at(-1)!.loss < losses[0].loss, `loss ${losses[0].loss} → ${losses.at(-1)!.loss}`);
    // The validation loss is the response-only loss of the held-out conversations (through
    // Trainer.evalLoss in the stage), recomputed here with a plain forward of the saved model.
    const valLoss = metrics.findLast((m) => "valLoss" in m)!.valLoss as number;
    const model = await loadModelDir(s.dir);
    const template = await loadChatTemplate(s.dir, await loadTokenizer(s.path("tokenizer.json")));
    const { val } = holdOut((await readSftData(data.sft)).examples, 0.05, 1337);
    const encoded = val.map((e) => template.render(e.turns));
    const alone = batchRows(encoded.map((_, i) => [i]), encoded, encoded.length, 32, 0);
    const gpt = new GPT(createCpuBackend(), model.layout, model.params);
    const acts = gpt.activations(encoded.length, 32, { mask: true });
    gpt.forward(acts, alone.inputs, { targets: alone.targets, lossMask: alone.lossMask });
    const expected = await gpt.readLoss(acts);
    assert.ok(Math.abs(valLoss - expected) < 1e-5 * expected, `valLoss ${valLoss}, alone ${expected}`);
    // Held-out answers are checked before training (step 0) and at the end.
    const rates = metrics.filter((m) => "passRate" in m);
    assert.deepEqual(rates.map((m) => m.step), [0, losses.at(-1)!.step]);
    const samples = jsonl(await s.readText("samples.jsonl"));
    assert.ok(samples.every((x) => typeof x.pass === "boolean" && /^Uppercase: /.test(x.prompt as string)));
    assert.equal(s.stats.examples, 38);
    assert.equal(s.stats.valExamples, 2);

    const rm = result.artifacts["reward-model"];
    assert.deepEqual(rm.files(), [
      "chat_template.json",
      "config.json",
      "metrics.jsonl",
      "model.safetensors",
      "reward_stats.json",
      "tokenizer.json",
    ]);
    const stats = await rm.readJson<{ mean: number; std: number; count: number }>("reward_stats.json");
    assert.equal(stats.count, 36 * 3);
    assert.ok(stats.std > 0 && Number.isFinite(stats.mean));
    assert.equal(rm.stats.rewardMean, stats.mean);
    const rmMetrics = jsonl(await rm.readText("metrics.jsonl"));
    assert.deepEqual(rmMetrics.filter((m) => "valAccuracy" in m).map((m) => m.step), [0, 18]);

    // The API and the CLI score the same numbers; scoring agrees with a batch of one.
    const scorer = await RewardScorer.load(rm.dir, { backend: createCpuBackend() });
    const [a, b] = await scorer.scoreMany([{ prompt: "Uppercase: abc", response: "ABC" }, {
      prompt: "Uppercase: abc",
      response: "abc",
    }]);
    // The second response is packed behind the first; its positions restart, so it scores as if alone.
    assert.ok(Math.abs(a - await scorer.score("Uppercase: abc", "ABC")) < 1e-5);
    assert.ok(Math.abs(b - await scorer.score("Uppercase: abc", "abc")) < 1e-5);
    scorer.close();
    const lines: string[] = [];
    const cli = await scoreCommand([
      rm.dir,
      "--prompt",
      "Uppercase: abc",
      "--response",
      "ABC",
      "--response",
      "abc",
      "--backend",
      "cpu",
    ], (l) => lines.push(l));
    assert.ok(Math.abs(cli[0] - a) < 1e-5 && Math.abs(cli[1] - b) < 1e-5);
    assert.match(lines[0], /^-?\d+\.\d{4}\t"ABC"$/);
    await assert.rejects(scoreCommand([rm.dir]), /give --prompt and --response, or --file/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

for (const stage of ["sft", "reward-model"] as const) {
  Deno.test(`${stage}: killed with SIGKILL after a checkpoint, a rerun resumes to the same metrics and weights`, async () => {
    const dir = await Deno.makeTempDir();
    try {
      const data = await writeData(dir);
      const sftConfig = { ...SFT, data: data.sft, epochs: stage === "sft" ? 6 : 1 };
      const rmConfig = { ...RM, data: data.comparisons, epochs: stage === "reward-model" ? 6 : 1 };
      const reference = await tinyPipeline(join(dir, "a"), sftConfig, rmConfig).execute({
        command: "run",
        quiet: true,
      });

      const workdir = join(dir, "b");
      const { checkpointed, committed, stderr } = await killAfterCheckpoint(
        [
          new URL("./sft_fixture.ts", import.meta.url).pathname,
          workdir,
          JSON.stringify(sftConfig),
          JSON.stringify(rmConfig),
        ],
        workdir,
        stage,
      );
      assert.ok(checkpointed, `the subprocess wrote no ${stage} checkpoint; its stderr:\n${stderr}`);
      assert.ok(
        !committed,
        "the run was killed before the stage finished (make the run longer if this fails)",
      );

      const resumed = await tinyPipeline(workdir, sftConfig, rmConfig).execute({
        command: "run",
        quiet: true,
      });
      assert.equal(resumed.stages.find((s) => s.id === stage)?.action, "resumed");
      const [got, want] = [resumed.artifacts[stage], reference.artifacts[stage]];
      // Byte for byte, metrics included (they hold no wall-clock figures), so downstream keys agree.
      assert.equal(await got.readText("metrics.jsonl"), await want.readText("metrics.jsonl"));
      assert.deepEqual(
        await Deno.readFile(got.path("model.safetensors")),
        await Deno.readFile(want.path("model.safetensors")),
      );
      if (stage === "sft") {
        assert.equal(await got.readText("samples.jsonl"), await want.readText("samples.jsonl"));
      } else {assert.deepEqual(
          await got.readJson("reward_stats.json"),
          await want.readJson("reward_stats.json"),
        );}
      assert.equal(got.digest, want.digest);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
}
