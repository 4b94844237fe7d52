/**
 * `rewardModel({ sample })`: K responses per prompt sampled from the SFT model inside the stage, ranked by
 * the checker, written to the artifact as `comparisons.sampled.jsonl` and trained on; seeded, cached,
 * resumable, with what was merged or dropped counted and config errors naming the field.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { makeRlhfData, rlhfTasks } from "../examples/make_rlhf_data.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import { GPT } from "../model/gpt.ts";
import { loadModelDir } from "../model/checkpoint.ts";
import { ConfigError } from "../pipeline/errors.ts";
import { listFiles } from "../pipeline/workspace.ts";
import { readComparisons } from "../stages/reward_model/data.ts";
import { sampleResponses } from "../stages/reward_model/sample.ts";
import { rewardModel } from "../stages/reward_model.ts";
import { responseScore } from "../chat/task.ts";
import { loadChatTemplate } from "../chat/template.ts";
import { loadTokenizer } from "../tokenizer/mod.ts";
import { SAMPLING_SFT, tinyPipeline } from "./sft_fixture.ts";
import { killAfterCheckpoint } from "./kill_helpers.ts";

type Row = { prompt: string; responses: string[]; scores: number[] };
const jsonl = <T>(text: string): T[] => text.trim().split("\n").map((l) => JSON.parse(l));

const K = 4, SEED = 5, MAX_TOKENS = 8;

/** Demonstrations and 24 checkable prompts (some too long for the tiny model's 32-token context). */
async function setup(dir: string) {
  const data = join(dir, "data");
  await makeRlhfData({ out: data, sft: 60, prompts: 4, comparisons: 24 });
  const prompts = join(dir, "rm_prompts.jsonl");
  const tasks = rlhfTasks(60, 4, 24, 1).comparisons;
  await Deno.writeTextFile(prompts, tasks.map((t) => JSON.stringify({ prompt: t.prompt }) + "\n").join(""));
  const sft = { ...SAMPLING_SFT, data: join(data, "sft.jsonl") };
  const rm = {
    sample: { prompts, k: K, seed: SEED, maxTokens: MAX_TOKENS, batch: 5 },
    batch: 4,
    checkpointEvery: 2,
    backend: "cpu" as const,
  };
  return { prompts: tasks.map((t) => t.prompt), comparisons: join(data, "comparisons.jsonl"), sft, rm };
}

Deno.test("rewardModel sample: the SFT model's distinct samples ranked by the checker, counted, cached, seeded", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { prompts, comparisons, sft, rm } = await setup(dir);
    const work = join(dir, "work");
    const result = await tinyPipeline(work, sft, rm).execute({ command: "run", quiet: true });
    const artifact = result.artifacts["reward-model"];
    const text = await artifact.readText("comparisons.sampled.jsonl");
    const rows = jsonl<Row>(text);
    const stats = artifact.stats as Record<string, number>;

    // The same samples drawn again from the SFT artifact: what every row and count must agree with.
    const sftDir = result.artifacts["sft"].dir;
    const loaded = await loadModelDir(sftDir);
    const template = await loadChatTemplate(sftDir, await loadTokenizer(join(sftDir, "tokenizer.json")));
    const model = new GPT(createCpuBackend(), loaded.layout, loaded.params);
    const lists = await sampleResponses(model, template, prompts.map((p) => [{ role: "user", content: p }]), {
      k: K,
      seed: SEED,
      maxTokens: MAX_TOKENS,
      batch: 5,
    });
    model.dispose();

    let duplicates = 0, empty = 0, tooLong = 0, few = 0, tied = 0, passed = 0, drawn = 0;
    const expected: Row[] = [];
    lists.forEach((list, i) => {
      if (!list) return void tooLong++;
      const prompt = prompts[i];
      drawn += list.length;
      passed += list.filter((s) => responseScore(prompt, s) === 1).length;
      const nonEmpty = list.map((s) => s.trim()).filter((s) => s !== "");
      empty += list.length - nonEmpty.length;
      const distinct = [...new Set(nonEmpty)];
      duplicates += nonEmpty.length - distinct.length;
      const scores = distinct.map((r) => responseScore(prompt, r)!);
      if (distinct.length < 2) few++;
      else if (scores.every((s) => s === scores[0])) tied++;
      else expected.push({ prompt, responses: distinct, scores });
    });
    // The fixture exercises every path: too-long prompts, merged and empty samples, dropped prompts.
    assert.ok(tooLong > 0 && duplicates + empty > 0 && few + tied > 0, "the fixture misses a skip kind");
    assert.ok(expected.length >= 3, `only ${expected.length} comparison rows: train the SFT fixture longer`);
    assert.deepEqual(rows, expected);
    assert.deepEqual(
      {
        prompts: stats["sample.prompts"],
        comparisons: stats["sample.comparisons"],
        candidates: stats["sample.candidates"],
        duplicates: stats["sample.duplicates"],
        empty: stats["sample.empty"],
        tooLong: stats["sample.dropped.tooLong"],
        tooFewResponses: stats["sample.dropped.tooFewResponses"],
        allTied: stats["sample.dropped.allTied"],
        passRate: stats["sample.passRate"],
      },
      {
        prompts: prompts.length,
        comparisons: expected.length,
        candidates: drawn,
        duplicates,
        empty,
        tooLong,
        tooFewResponses: few,
        allTied: tied,
        passRate: passed / drawn,
      },
    );
    // It trained on exactly those rows (a sequence past the context is skipped and counted)...
    assert.equal(stats.prompts + stats.valPrompts + (stats["skipped.tooLong"] ?? 0), rows.length);
    // ...which the data format reads back as they are.
    const back = await readComparisons(artifact.path("comparisons.sampled.jsonl"));
    assert.equal(back.comparisons.length, rows.length);

    // A rerun is cached; run again, the same seed gives the same file and another seed another.
    const again = await tinyPipeline(work, sft, rm).execute({ command: "run", quiet: true });
    assert.equal(again.stages.find((s) => s.id === "reward-model")?.action, "cached");
    const forced = await tinyPipeline(work, sft, rm).execute({
      command: "run",
      quiet: true,
      force: ["reward-model"],
    });
    assert.equal(forced.stages.find((s) => s.id === "reward-model")?.action, "ran");
    assert.equal(await forced.artifacts["reward-model"].readText("comparisons.sampled.jsonl"), text);
    const other = await tinyPipeline(work, sft, { ...rm, sample: { ...rm.sample, seed: SEED + 1 } })
      .execute({ command: "run", quiet: true });
    assert.notEqual(await other.artifacts["reward-model"].readText("comparisons.sampled.jsonl"), text);

    // With `data` too, it trains on both files' rows.
    const both = await tinyPipeline(work, sft, { ...rm, data: comparisons })
      .execute({ command: "run", quiet: true });
    const bothStats = both.artifacts["reward-model"].stats as Record<string, number>;
    const dataRows = (await readComparisons(comparisons)).comparisons.length;
    assert.equal(
      bothStats.prompts + bothStats.valPrompts + (bothStats["skipped.tooLong"] ?? 0),
      dataRows + rows.length,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rewardModel sample: killed during training, a rerun resumes on the same sampled comparisons", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const { sft, rm: base } = await setup(dir);
    const rm = { ...base, epochs: 6 };
    const reference = await tinyPipeline(join(dir, "a"), sft, rm).execute({ command: "run", quiet: true });

    const workdir = join(dir, "b");
    const { checkpointed, committed, stderr } = await killAfterCheckpoint(
      [
        new URL("./sft_fixture.ts", import.meta.url).pathname,
        workdir,
        JSON.stringify(sft),
        JSON.stringify(rm),
      ],
      workdir,
      "reward-model",
    );
    assert.ok(checkpointed, `the subprocess wrote no reward-model checkpoint; its stderr:\n${stderr}`);
    assert.ok(!committed, "the run was killed after the stage finished (make the run longer if this fails)");
    // The sampled comparisons were checkpointed before training began.
    const state = await listFiles(join(workdir, "work", "reward-model"));
    assert.ok(state.some((f) => f.endsWith("sampled.json")), `no checkpoint of the samples in ${state}`);

    const resumed = await tinyPipeline(workdir, sft, rm).execute({ command: "run", quiet: true });
    assert.equal(resumed.stages.find((s) => s.id === "reward-model")?.action, "resumed");
    const [got, want] = [resumed.artifacts["reward-model"], reference.artifacts["reward-model"]];
    assert.equal(
      await got.readText("comparisons.sampled.jsonl"),
      await want.readText("comparisons.sampled.jsonl"),
    );
    assert.deepEqual(await got.readJson("reward_stats.json"), await want.readJson("reward_stats.json"));
    assert.deepEqual(
      await Deno.readFile(got.path("model.safetensors")),
      await Deno.readFile(want.path("model.safetensors")),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("rewardModel sample: config errors name the field", async () => {
  const field = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      assert.ok(e instanceof ConfigError, String(e));
      return e.field;
    }
    assert.fail("no config error");
  };
  assert.equal(field(() => rewardModel({})), "data");
  assert.equal(field(() => rewardModel({ sample: { prompts: "p.jsonl", k: 1 } })), "sample.k");
  assert.equal(field(() => rewardModel({ sample: { prompts: "" } })), "sample.prompts");
  assert.equal(
    field(() => rewardModel({ sample: { prompts: "p.jsonl", temperature: 0 } })),
    "sample.temperature",
  );

  const dir = await Deno.makeTempDir();
  try {
    const { sft, rm } = await setup(dir);
    // A prompts file that does not exist: named with its field before anything runs.
    await assert.rejects(
      tinyPipeline(join(dir, "work"), sft, {
        ...rm,
        sample: { ...rm.sample, prompts: join(dir, "nope.jsonl") },
      })
        .execute({ command: "run", quiet: true }),
      (e: Error) =>
        e instanceof ConfigError && e.field === "sample.prompts" && /no such file/.test(e.message),
    );
    // A prompt the checker cannot grade: file, line and field.
    const bad = join(dir, "bad.jsonl");
    await Deno.writeTextFile(bad, '{"prompt": "Reverse: ab"}\n{"prompt": "Tell me a joke"}\n');
    await assert.rejects(
      tinyPipeline(join(dir, "work"), sft, { ...rm, sample: { ...rm.sample, prompts: bad } })
        .execute({ command: "run", quiet: true }),
      /bad\.jsonl.*line 2: prompt.*checkable task/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
