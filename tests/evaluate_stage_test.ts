// The evaluate stage end to end on a tiny byte-level model: every figure is recomputed here from
// full forwards of each sequence alone (no batching, no padding), by the definitions the stage documents.
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { z } from "npm:zod@^4.6.7";
import { createCpuBackend } from "../kernels/cpu.ts";
import { modelDirFiles, saveModelDir, specialTokenIds } from "../model/checkpoint.ts";
import { gptConfig } from "../model/config.ts";
import { encodeTokenShard } from "../model/data.ts";
import { generateBatch } from "../model/generate.ts";
import { GPT } from "../model/gpt.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { pipeline } from "../pipeline/pipeline.ts";
import { defineStage } from "../pipeline/stage.ts";
import { ConfigError, DataError } from "../pipeline/errors.ts";
import { evaluate, type ModelEvaluation } from "../stages/evaluate.ts";
import { readMultipleChoice } from "../stages/evaluate/multiple_choice.ts";
import { ChatTemplate } from "../chat/template.ts";
import { DEFAULT_SPECIAL_TOKENS, END_OF_TEXT, Tokenizer } from "../tokenizer/tokenizer.ts";

const HELLASWAG = new URL("./fixtures/hellaswag_tiny.jsonl", import.meta.url).pathname;

// Bytes 0..255, then <|endoftext|>, <|system|>, <|user|>, <|assistant|>, <|end|> (256..260).
const tokenizer = new Tokenizer({
  tokens: Array.from({ length: 256 }, (_, i) => Uint8Array.of(i)),
  specialTokens: Object.fromEntries(DEFAULT_SPECIAL_TOKENS.map((t, i) => [t, 256 + i])),
});
const EOT = tokenizer.specialTokens[END_OF_TEXT];
const config = gptConfig({ layers: 2, dim: 32, heads: 2, context: 128, vocab: 261 });
const layout = paramLayout(config);
const weights = (seed: number) => initParams(layout, seed).map((x) => x * 4);

/** −ln p of every next token of `tokens` under `params`, by one forward of the sequence alone. */
async function referenceLosses(params: Float32Array, tokens: number[]): Promise<number[]> {
  const model = new GPT(createCpuBackend(), layout, params);
  const acts = model.activations(1, tokens.length - 1);
  model.forward(acts, Int32Array.from(tokens.slice(0, -1)));
  const [logits] = await model.backend.download(acts.logits);
  model.dispose();
  const V = config.vocab;
  return tokens.slice(1).map((target, t) => {
    const row = [...logits.subarray(t * V, (t + 1) * V)];
    const max = Math.max(...row);
    return max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0)) - row[target];
  });
}

const DOCS = [
  "The quick brown fox jumps over the lazy dog. ".repeat(4),
  "Pack my box with five dozen liquor jugs.",
  "Sphinx of black quartz, judge my vow! Ünïcödé bytes count as bytes: ✓",
];

/** A source stage standing for pretrain: writes the model directory `params` (seed) with its tokenizer. */
const fakeModel = defineStage({
  name: "fake-model",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "model",
  schema: z.object({ seed: z.number(), steps: z.number(), keep: z.number().optional() }),
  async run(ctx) {
    const files = modelDirFiles(layout, weights(ctx.config.seed), specialTokenIds(tokenizer));
    for (const [name, bytes] of Object.entries(files)) await ctx.out.writeFile(name, bytes);
    if (ctx.config.keep) {
      // A checkpoint kept inside the artifact, as a training stage may keep them: evaluated too.
      const kept = modelDirFiles(layout, weights(ctx.config.keep), specialTokenIds(tokenizer));
      for (const [name, bytes] of Object.entries(kept)) {
        await ctx.out.writeFile(`checkpoints/step-${ctx.config.keep}/${name}`, bytes);
      }
      await ctx.out.writeText(
        `checkpoints/step-${ctx.config.keep}/tokenizer.json`,
        JSON.stringify(tokenizer.toJSON()),
      );
    }
    await ctx.out.writeText("tokenizer.json", JSON.stringify(tokenizer.toJSON()));
    ctx.stats.set("steps", ctx.config.steps);
  },
});

Deno.test("evaluate: perplexity, bits per byte, HellaSwag accuracy and pass rate match their definitions; checkpoints make a curve", async () => {
  const dir = await Deno.makeTempDir({ prefix: "kiln-evaluate-test-" });
  try {
    // Held-out text twice: as documents and as the llm.c token shard of the same stream.
    const docs = join(dir, "heldout.jsonl");
    await Deno.writeTextFile(
      docs,
      DOCS.map((text, i) => JSON.stringify({ id: `d${i}`, text })).join("\n") + "\n",
    );
    const stream = DOCS.flatMap((text) => [EOT, ...tokenizer.encode(text)]);
    const shard = join(dir, "val-00000.bin");
    await Deno.writeFile(shard, encodeTokenShard(stream));
    // Checkpoints of the "run": seeds 1 and 2 at steps 10 and 20; the input model is seed 3 at step 30.
    for (const [seed, step] of [[1, 10], [2, 20]]) {
      await saveModelDir(join(dir, `run/step-${step}`), layout, weights(seed), specialTokenIds(tokenizer));
      await Deno.writeTextFile(
        join(dir, `run/step-${step}/tokenizer.json`),
        JSON.stringify(tokenizer.toJSON()),
      );
    }
    // Task prompts whose answers are the input model's own greedy answers for half of them: pass rate 1/2.
    const template = new ChatTemplate(tokenizer);
    const questions = ["What is 2 + 3?", "Reverse: abc", "Uppercase: dog", "What is 10 + 1?"];
    const input = new GPT(createCpuBackend(), layout, weights(3));
    const greedy = await generateBatch(
      input,
      questions.map((q) => template.prompt([{ role: "user", content: q }])),
      {
        maxTokens: 8,
        temperature: 0,
        stop: template.stopIds(),
      },
    );
    input.dispose();
    const answers = greedy.map((g, i) => (i % 2 === 0 ? template.answerText(g.ids) : "certainly not this"));
    const prompts = join(dir, "prompts.jsonl");
    await Deno.writeTextFile(
      prompts,
      questions.map((prompt, i) => JSON.stringify({ prompt, answer: answers[i] })).join("\n") + "\n",
    );

    const stage = evaluate({
      perplexity: { documents: [docs], seqLen: 64, batch: 3 },
      multipleChoice: { data: HELLASWAG, batch: 5 },
      tasks: { prompts, maxTokens: 8, batch: 3 },
      checkpoints: [join(dir, "run/step-20"), { path: join(dir, "run/step-10"), step: 10 }],
      backend: "cpu",
    });
    const run = () =>
      pipeline("eval-test", { workdir: join(dir, "work"), workers: 1 })
        .pipe(fakeModel({ seed: 3, steps: 30, keep: 4 }))
        .pipe(stage)
        .execute({ command: "run", quiet: true });
    const result = await run();
    const artifact = result.artifacts["evaluate"];
    const { models } = await artifact.readJson<{ models: ModelEvaluation[] }>("evaluation.json");
    assert.deepEqual(models.map((m) => [m.label, m.step]), [
      ["step-4", 4],
      ["step-10", 10],
      ["step-20", 20],
      ["model", 30],
    ]);
    const seeds: Record<string, number> = { "step-4": 4, "step-10": 1, "step-20": 2, "model": 3 };

    // Perplexity: windows of 65 tokens every 64, each token after the first predicted once.
    const expectedBytes = DOCS.reduce((n, d) => n + new TextEncoder().encode(d).length, 0);
    for (const m of models) {
      const seed = seeds[m.label];
      let sum = 0, n = 0;
      for (let start = 0; start + 1 < stream.length; start += 64) {
        const losses = await referenceLosses(weights(seed), stream.slice(start, start + 65));
        sum += losses.reduce((a, b) => a + b, 0);
        n += losses.length;
      }
      const p = m.perplexity!;
      assert.equal(p.tokens, stream.length - 1);
      assert.equal(p.bytes, expectedBytes, "the UTF-8 bytes of the documents");
      assert.ok(Math.abs(p.loss - sum / n) < 1e-5, `${m.label}: loss ${p.loss} vs ${sum / n}`);
      assert.ok(Math.abs(p.perplexity - Math.exp(sum / n)) < 1e-4 * p.perplexity);
      assert.ok(Math.abs(p.bitsPerByte! - sum / Math.LN2 / expectedBytes) < 1e-5);
      assert.equal(p.documents, 3);
    }
    assert.notEqual(
      models[0].perplexity!.loss,
      models[3].perplexity!.loss,
      "each checkpoint is its own model",
    );

    // HellaSwag: sum and mean of the ending tokens' losses, each candidate scored alone.
    const examples = await readMultipleChoice(HELLASWAG);
    const scored = (await artifact.readText("details/model/multiple_choice.jsonl")).trim().split("\n").map((
      l,
    ) => JSON.parse(l));
    let right = 0, rightNorm = 0;
    for (const [i, ex] of examples.entries()) {
      const ctx = tokenizer.encode(ex.ctx);
      const sums: number[] = [], means: number[] = [];
      for (const ending of ex.endings) {
        const end = tokenizer.encode(" " + ending);
        const losses = await referenceLosses(weights(3), [...ctx, ...end]);
        const sum = losses.slice(-end.length).reduce((a, b) => a + b, 0);
        sums.push(sum);
        means.push(sum / end.length);
      }
      const argmin = (xs: number[]) => xs.indexOf(Math.min(...xs));
      scored[i].losses.forEach((l: number, j: number) =>
        assert.ok(Math.abs(l - sums[j]) < 1e-3, `q${i} e${j}`)
      );
      assert.equal(scored[i].pred, argmin(sums));
      assert.equal(scored[i].predNorm, argmin(means));
      if (argmin(sums) === ex.label) right++;
      if (argmin(means) === ex.label) rightNorm++;
    }
    const mc = models[3].multipleChoice!;
    assert.deepEqual([mc.examples, mc.truncated], [8, 0]);
    assert.equal(mc.accuracy, right / 8);
    assert.equal(mc.accuracyNorm, rightNorm / 8);

    // Pass rate: the answers equal to the model's own pass, the others fail.
    assert.deepEqual(models[3].tasks, { passRate: 0.5, checked: 4, prompts: 4, skippedTooLong: 0 });
    const graded = (await artifact.readText("details/model/answers.jsonl")).trim().split("\n").map((l) =>
      JSON.parse(l)
    );
    assert.deepEqual(graded.map((a) => a.pass), [true, false, true, false]);

    // The curve and the stats: one metrics line per model, by step; the stats are the input model's.
    const metrics = (await artifact.readText("metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l));
    assert.deepEqual(metrics.map((m) => m.step), [4, 10, 20, 30]);
    assert.deepEqual(Object.keys(metrics[3]).sort(), [
      "accuracy",
      "accuracyNorm",
      "bitsPerByte",
      "loss",
      "passRate",
      "perplexity",
      "step",
    ]);
    assert.equal(artifact.stats.perplexity, models[3].perplexity!.perplexity);
    assert.equal(artifact.stats.accuracyNorm, mc.accuracyNorm);
    assert.equal(artifact.stats.models, 4);

    // Cached like any stage; the token shard gives the documents' figures (same stream, bytes from the tokenizer).
    const again = await run();
    assert.equal(again.stages.find((s) => s.id === "evaluate")!.action, "cached");
    const fromShard = await pipeline("eval-shard", { workdir: join(dir, "work2"), workers: 1 })
      .pipe(fakeModel({ seed: 3, steps: 30 }))
      .pipe(evaluate({ perplexity: { tokens: [shard], seqLen: 64 }, backend: "cpu" }))
      .execute({ command: "run", quiet: true });
    const shardModels = (await fromShard.artifacts["evaluate"].readJson<{ models: ModelEvaluation[] }>(
      "evaluation.json",
    )).models;
    const { documents: _d, ...fromDocs } = models[3].perplexity!;
    const { documents: _s, ...fromBin } = shardModels[0].perplexity!;
    assert.deepEqual(fromBin, fromDocs);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("evaluate: config and data errors name the field, file and line", async () => {
  assert.throws(
    () => evaluate({}),
    (e: Error) => e instanceof ConfigError && /nothing to evaluate/.test(e.message),
  );
  assert.throws(() => evaluate({ perplexity: {} }), /set documents or tokens/);
  assert.throws(() => evaluate({ tasks: { prompt: "x" } } as never), ConfigError);
  const dir = await Deno.makeTempDir();
  try {
    const bad = join(dir, "bad.jsonl");
    await Deno.writeTextFile(
      bad,
      `{"ctx": "a", "endings": ["b", "c"], "label": 0}\n{"ctx": "a", "endings": ["b"], "label": 0}\n`,
    );
    await assert.rejects(() => readMultipleChoice(bad), (e: Error) => {
      assert.ok(e instanceof DataError);
      assert.match(e.message, /bad\.jsonl:line 2: field "endings": expected a list of at least 2 strings/);
      return true;
    });
    await Deno.writeTextFile(bad, `{"ctx": "a", "endings": ["b", "c"], "label": 2}\n`);
    await assert.rejects(
      () => readMultipleChoice(bad),
      /line 1: field "label": expected the index of the right ending \(0 to 1\), got 2/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
