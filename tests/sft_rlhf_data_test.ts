/**
 * `examples/make_rlhf_data.ts`: the checked-in files are what its defaults make, and with `--model`
 * the comparison rows are the SFT model's own samples ranked by the checker — valid rows the reward
 * model's loader accepts, with merged duplicates, empty samples and dropped prompts counted.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { makeRlhfData, rlhfTasks, sampleCandidates } from "../examples/make_rlhf_data.ts";
import { readComparisons } from "../stages/reward_model/data.ts";
import { responseScore } from "../chat/task.ts";
import { loadChatTemplate } from "../chat/template.ts";
import { loadTokenizer } from "../tokenizer/mod.ts";
import { SAMPLING_SFT, tinyPipeline } from "./sft_fixture.ts";

const script = new URL("../examples/make_rlhf_data.ts", import.meta.url).pathname;
const checkedIn = new URL("../examples/data/", import.meta.url).pathname;
const FILES = ["sft.jsonl", "prompts.jsonl", "comparisons.jsonl"];

type Row = { prompt: string; responses: string[]; scores: number[] };
const jsonl = <T>(text: string): T[] => text.trim().split("\n").map((l) => JSON.parse(l));

Deno.test("make_rlhf_data: the defaults remake the checked-in files; prompts are disjoint", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const report = await makeRlhfData({ out: dir });
    assert.deepEqual(report, {
      sft: 200,
      prompts: 100,
      comparisons: 150,
      candidates: 600,
      duplicates: 0,
      empty: 0,
      dropped: { tooLong: 0, tooFewResponses: 0, allTied: 0 },
    });
    for (const name of FILES) {
      assert.equal(
        await Deno.readTextFile(join(dir, name)),
        await Deno.readTextFile(join(checkedIn, name)),
        `${name} differs from examples/data/${name}: regenerate it or fix the defaults`,
      );
    }
    const prompts = await Promise.all(
      FILES.map(async (f) =>
        jsonl<{ prompt: string }>(await Deno.readTextFile(join(dir, f))).map((r) => r.prompt)
      ),
    );
    const all = prompts.flat();
    assert.equal(new Set(all).size, all.length, "a prompt is in two files");
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("make_rlhf_data --model: K samples from the SFT model, ranked by the checker, skips counted", async () => {
  const dir = await Deno.makeTempDir();
  try {
    // The intended order: demonstrations first, SFT on them, then comparisons sampled from the SFT model.
    const first = join(dir, "data");
    await makeRlhfData({ out: first, sft: 60, prompts: 4, comparisons: 24 });
    const sftConfig = { ...SAMPLING_SFT, data: join(first, "sft.jsonl") };
    const result = await tinyPipeline(join(dir, "work"), sftConfig, { data: "later" })
      .execute({ command: "run", quiet: true, until: "sft" });
    const model = result.artifacts["sft"].dir;

    const K = 4, seed = 5;
    const out = join(dir, "sampled");
    const report = await makeRlhfData({
      out,
      sft: 60,
      prompts: 4,
      comparisons: 24,
      k: K,
      seed,
      model,
      backend: "cpu",
      maxTokens: 8,
    });

    // The same samples, drawn again: what every row and count must agree with.
    const tasks = rlhfTasks(60, 4, 24, seed).comparisons;
    const lists = await sampleCandidates(model, tasks, { k: K, seed, backend: "cpu", maxTokens: 8 });
    assert.deepEqual(
      await sampleCandidates(model, tasks, { k: K, seed, backend: "cpu", maxTokens: 8 }),
      lists,
      "sampling is not reproducible",
    );
    // Prompts longer than the tiny model's 32-token context are not sampled ("How many letters…").
    const tokenizer = await loadTokenizer(join(model, "tokenizer.json"));
    const template = await loadChatTemplate(model, tokenizer);
    const tooLong = tasks.filter((t) => template.prompt([{ role: "user", content: t.prompt }]).length >= 32);
    assert.ok(tooLong.length > 0, "the fixture should have a prompt too long for the context");
    assert.equal(report.dropped.tooLong, tooLong.length);
    lists.forEach((l, i) => assert.equal(l === undefined, tooLong.includes(tasks[i])));

    let duplicates = 0, empty = 0;
    const sampled = new Map<string, string[]>();
    lists.forEach((list, i) => {
      if (!list) return;
      assert.equal(list.length, K);
      const trimmed = list.map((s) => s.trim());
      const nonEmpty = trimmed.filter((s) => s !== "");
      empty += trimmed.length - nonEmpty.length;
      duplicates += nonEmpty.length - new Set(nonEmpty).size;
      sampled.set(tasks[i].prompt, nonEmpty);
    });
    assert.ok([...sampled.values()].some((s) => new Set(s).size > 1), "temperature-1 samples all agree");
    // This SFT model is barely trained: some of its samples are empty or repeat (so the counts are tested).
    assert.ok(duplicates + empty > 0, "no duplicate or empty sample to count");

    const rows = jsonl<Row>(await Deno.readTextFile(join(out, "comparisons.jsonl")));
    assert.ok(rows.length >= 3, `only ${rows.length} comparison rows: train the SFT fixture longer`);
    assert.equal(report.comparisons, rows.length);
    assert.equal(report.candidates, sampled.size * K);
    assert.equal(report.duplicates, duplicates);
    assert.equal(report.empty, empty);
    const { tooLong: _, ...dropped } = report.dropped;
    assert.equal(rows.length + dropped.tooFewResponses + dropped.allTied, sampled.size);
    for (const row of rows) {
      const samples = sampled.get(row.prompt);
      assert.ok(samples, `row for a prompt that was not sampled: ${row.prompt}`);
      // Every distinct non-empty sample, once, graded by the checker; at least two grades differ.
      assert.deepEqual(row.responses, [...new Set(samples)]);
      assert.ok(row.responses.length >= 2);
      assert.deepEqual(row.scores, row.responses.map((r) => responseScore(row.prompt, r)));
      assert.ok(row.scores.some((s) => s !== row.scores[0]));
    }
    // Prompts without a row: fewer than two distinct samples, or all graded the same.
    const withRow = new Set(rows.map((r) => r.prompt));
    let few = 0, tied = 0;
    for (const [prompt, samples] of sampled) {
      if (withRow.has(prompt)) continue;
      const distinct = [...new Set(samples)];
      if (distinct.length < 2) few++;
      else {
        assert.ok(distinct.every((r) => responseScore(prompt, r) === responseScore(prompt, distinct[0])));
        tied++;
      }
    }
    assert.deepEqual(dropped, { tooFewResponses: few, allTied: tied });

    // The reward model's loader takes the file as it is; its pairs follow the scores.
    const { comparisons, skipped } = await readComparisons(join(out, "comparisons.jsonl"));
    assert.equal(skipped.total, 0);
    assert.equal(comparisons.length, rows.length);
    comparisons.forEach((c, i) => {
      assert.ok(c.pairs.length > 0);
      for (const [w, l] of c.pairs) assert.ok(rows[i].scores[w] > rows[i].scores[l]);
    });
    // And the stage trains on it, from the SFT model the samples came from (a sequence past the 32-token
    // context is skipped and counted).
    const rm = await tinyPipeline(join(dir, "work"), sftConfig, {
      data: join(out, "comparisons.jsonl"),
      batch: 4,
      backend: "cpu",
    }).execute({ command: "run", quiet: true });
    assert.equal(rm.stages.find((s) => s.id === "sft")?.action, "cached");
    const stats = rm.artifacts["reward-model"].stats;
    assert.equal(
      (stats.prompts as number) + (stats.valPrompts as number) + ((stats["skipped.tooLong"] as number) ?? 0),
      rows.length,
    );

    // The command line writes the same rows and says what it dropped.
    const cliOut = join(dir, "cli");
    const cli = await new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "-A",
        script,
        ...["--out", cliOut, "--sft", "60", "--prompts", "4", "--comparisons", "24", "--k", `${K}`],
        ...["--seed", `${seed}`, "--model", model, "--backend", "cpu", "--max-tokens", "8"],
      ],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stdout = new TextDecoder().decode(cli.stdout);
    assert.equal(cli.code, 0, new TextDecoder().decode(cli.stderr));
    assert.match(stdout, new RegExp(`${rows.length} comparisons .*sampled from`));
    assert.match(stdout, new RegExp(`${duplicates} duplicates merged, ${empty} empty left out`));
    assert.match(stdout, new RegExp(`${tooLong.length} too long for the context`));
    assert.equal(
      await Deno.readTextFile(join(cliOut, "comparisons.jsonl")),
      await Deno.readTextFile(join(out, "comparisons.jsonl")),
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
