/**
 * The checkable task, learned: SFT raises the checker's pass rate on held-out prompts over the
 * pretrained (here: freshly initialised) model, and the reward model's held-out pairwise accuracy
 * rises well above chance. A few minutes on the 2-core dev VM (CPU backend), so it runs under
 * `deno task test:slow` (KILN_SLOW=1), not the default suite.
 *
 * The setup is `LEARNING` of `../sft_fixture.ts`. Data: `examples/make_rlhf_data.ts` with more rows
 * than the checked-in files (the same four task kinds, letters a–h, words of 2–4, operands ≤ 20): 1000
 * demonstrations (100 held out) and 1000 synthetic comparison prompts (200 held out). Then comparisons
 * sampled from the SFT model itself (InstructGPT's recipe, `--model`) train a second reward model, both
 * files together a third, and all three rank the SFT model's samples for 300 prompts none trained on.
 * Those figures are printed, not asserted: at this size the SFT model's own mistakes are much harder to
 * rank than corruptions, see BENCHMARKS.md.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { LEARNING, tinyPipeline } from "../sft_fixture.ts";
import { makeRlhfData, rlhfTasks, sampleCandidates } from "../../examples/make_rlhf_data.ts";
import { createCpuBackend } from "../../kernels/cpu.ts";
import { rankByChecker } from "../../stages/reward_model/data.ts";
import { responseScore } from "../../chat/task.ts";
import { RewardScorer } from "../../stages/reward_model/score.ts";

Deno.test({
  name: "checkable task: SFT raises the held-out pass rate; the reward model ranks well above chance",
  ignore: Deno.env.get("KILN_SLOW") !== "1",
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const data = join(dir, "data");
      await makeRlhfData({ out: data, ...LEARNING.data });
      const { base, rewardModel: rm } = LEARNING;
      const sft = { ...LEARNING.sft, data: join(data, "sft.jsonl") };
      const workdir = join(dir, "w");
      const result = await tinyPipeline(workdir, sft, { ...rm, data: join(data, "comparisons.jsonl") }, base)
        .execute({ command: "run", quiet: true });
      const s = result.artifacts["sft"].stats, r = result.artifacts["reward-model"].stats;
      const pairs = (await result.artifacts["reward-model"].readText("metrics.jsonl")).trim().split("\n")
        .map((l) => JSON.parse(l)).findLast((m) => "pairs" in m).pairs;
      console.log(
        `SFT pass rate on 60 held-out prompts: ${s.passRateBefore} → ${s.passRate} (${s.steps} steps); ` +
          `RM on synthetic comparisons, held-out pairwise accuracy (${pairs} pairs): ` +
          `${r.valAccuracyBefore} → ${r.valAccuracy}`,
      );
      assert.equal(s.passRateBefore, 0);
      assert.ok((s.passRate as number) >= 0.4, `pass rate ${s.passRate}`);
      assert.ok((r.valAccuracy as number) >= 0.7, `held-out accuracy ${r.valAccuracy}`);

      // InstructGPT's recipe: K = 4 samples of the SFT model per prompt, ranked by the checker (the
      // first 600 of the comparison prompts), and the same for 300 prompts no reward model trains on.
      const model = result.artifacts["sft"].dir;
      const sampled = join(dir, "sampled");
      const report = await makeRlhfData({
        out: sampled,
        ...LEARNING.data,
        comparisons: 600,
        model,
        backend: "cpu",
        maxTokens: 6,
      });
      assert.ok(report.comparisons > 100);
      const { sft: n, prompts: p, comparisons: c } = LEARNING.data;
      const unseen = rlhfTasks(n, p, c + 300, 1).comparisons.slice(c);
      const samples = await sampleCandidates(model, unseen, { k: 4, seed: 1, backend: "cpu", maxTokens: 6 });
      const evalRows = unseen.flatMap((t, i) =>
        rankByChecker(t.prompt, samples[i]!, (r) => responseScore(t.prompt, r)!).row ?? []
      );
      const mixed = join(dir, "mixed.jsonl");
      await Deno.writeTextFile(
        mixed,
        await Deno.readTextFile(join(data, "comparisons.jsonl")) +
          await Deno.readTextFile(join(sampled, "comparisons.jsonl")),
      );

      // Three reward models judged on the unseen prompts' samples.
      const rmDir = async (file: string) =>
        (await tinyPipeline(workdir, sft, { ...rm, data: file }, base).execute({
          command: "run",
          quiet: true,
        }))
          .artifacts["reward-model"];
      const models = {
        synthetic: result.artifacts["reward-model"],
        sampled: await rmDir(join(sampled, "comparisons.jsonl")),
        both: await rmDir(mixed),
      };
      const rankings: Record<string, string> = {};
      for (const [name, artifact] of Object.entries(models)) {
        const { all, rightVsWrong } = await rankAccuracy(artifact.dir, evalRows);
        rankings[name] = `held-out ${artifact.stats.valAccuracy}; unseen samples: ${all.accuracy} of ` +
          `${all.pairs} pairs, right-vs-wrong ${rightVsWrong.accuracy} of ${rightVsWrong.pairs}`;
      }
      console.log(
        `comparisons sampled from the SFT model: ${report.comparisons} rows of 600 prompts ` +
          `(${JSON.stringify(report.dropped)} dropped); ${evalRows.length} rows of 300 unseen prompts. ` +
          `Reward models by training data:\n${JSON.stringify(rankings, null, 2)}`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** How a reward model orders the graded pairs of `rows`: all of them, and those of a right answer. */
async function rankAccuracy(dir: string, rows: { prompt: string; responses: string[]; scores: number[] }[]) {
  const scorer = await RewardScorer.load(dir, { backend: createCpuBackend() });
  const all = { hits: 0, pairs: 0 }, rightVsWrong = { hits: 0, pairs: 0 };
  for (const row of rows) {
    const r = await scorer.scoreMany(row.responses.map((response) => ({ prompt: row.prompt, response })));
    for (const [w, better] of row.scores.entries()) {
      for (const [l, worse] of row.scores.entries()) {
        if (better <= worse) continue;
        for (const tally of better === 1 ? [all, rightVsWrong] : [all]) {
          tally.hits += r[w] > r[l] ? 1 : 0;
          tally.pairs++;
        }
      }
    }
  }
  scorer.close();
  const summary = (t: typeof all) => ({ accuracy: t.hits / t.pairs, pairs: t.pairs });
  return { all: summary(all), rightVsWrong: summary(rightVsWrong) };
}
