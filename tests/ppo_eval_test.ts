import { strict as assert } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { GPT } from "../model/gpt.ts";
import { generate } from "../model/generate.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { PieceCounter, trainBpe } from "../tokenizer/mod.ts";
import { checkAnswer, evaluateHeldOut } from "../stages/ppo/evaluate.ts";
import { ScalarModel } from "../stages/ppo/networks.ts";
import type { Prompt } from "../stages/ppo/prompts.ts";
import { packSequences } from "../stages/ppo/rollout.ts";
import { ChatTemplate } from "../chat/template.ts";

const prompt = (text: string, meta: Record<string, unknown> = {}, tokens: number[] = []): Prompt => ({
  line: 1,
  text,
  tokens,
  meta,
});

Deno.test("checkAnswer: the row's answer field first, else kiln's task checker, else not checkable", () => {
  assert.equal(checkAnswer(prompt("What is 2 + 3?"), " 5\n"), true);
  assert.equal(checkAnswer(prompt("What is 2 + 3?"), "6"), false);
  assert.equal(checkAnswer(prompt("Reverse: abc"), "cba"), true);
  // The row's answer wins over the task's (a file may define its own answers) and may be a number.
  assert.equal(checkAnswer(prompt("What is 2 + 3?", { answer: "five" }), "five"), true);
  assert.equal(checkAnswer(prompt("What is 2 + 3?", { answer: "five" }), "5"), false);
  assert.equal(checkAnswer(prompt("name a colour", { answer: 7 }), " 7"), true);
  assert.equal(checkAnswer(prompt("name a colour"), "red"), undefined);
  assert.equal(checkAnswer(prompt("name a colour", { answer: null }), "red"), undefined);
});

Deno.test("evaluateHeldOut: greedy answers, the reward model's scores and the checker's pass rate", async () => {
  const counter = new PieceCounter();
  counter.add("the cat sat on the mat and the dog sat on the log");
  const tokenizer = trainBpe(counter, { vocabSize: 280 });
  const template = new ChatTemplate(tokenizer);
  const backend = createCpuBackend();
  const layout = paramLayout(
    gptConfig({ layers: 1, dim: 16, heads: 2, context: 24, vocab: tokenizer.vocabSize }),
  );
  const params = initParams(layout, 3);
  for (let i = layout.wte.offset; i < layout.wte.offset + layout.wte.size; i++) params[i] *= 10;
  const policy = new GPT(backend, layout, params);
  const weight = Float32Array.from({ length: 16 }, (_, i) => Math.sin(i + 1));
  const T = 24, rows = 2;
  const reward = new ScalarModel(backend, layout, initParams(layout, 4), { weight, bias: 0.5 }, { rows, T });
  try {
    const texts = ["the cat", "the dog", "sat on", "the mat"];
    const tokens = texts.map((t) => template.prompt([{ role: "user", content: t }]));
    const stop = template.stopIds();
    const greedy = [];
    for (const t of tokens) greedy.push(await generate(policy, t, { maxTokens: 5, temperature: 0, stop }));
    const answers = greedy.map((g) => template.answerText(g.ids));
    // Two right answers, one wrong, one prompt without an answer: pass rate 2/3 over 3 checked.
    const prompts = [
      prompt(texts[0], { answer: answers[0] }, tokens[0]),
      prompt(texts[1], { answer: answers[1] }, tokens[1]),
      prompt(texts[2], { answer: answers[2] + "x" }, tokens[2]),
      prompt(texts[3], {}, tokens[3]),
    ];
    const { summary, samples } = await evaluateHeldOut(policy, reward, prompts, {
      iteration: 3,
      maxTokens: 5,
      temperature: 0,
      seed: 1,
      rows,
      T,
      template,
    });
    assert.deepEqual(samples.map((s) => s.response), answers);
    assert.deepEqual(samples.map((s) => s.pass), [true, true, false, undefined]);
    assert.deepEqual(
      samples.map((s) => s.truncated === true),
      greedy.map((g) => g.finish === "length"),
    );
    assert.equal(summary.iteration, 3);
    assert.equal(summary.checked, 3);
    assert.equal(summary.passRate, 2 / 3);
    assert.equal(summary.heldOutLength, greedy.reduce((n, g) => n + g.ids.length, 0) / 4);
    // Each score is the reward model's head at the answer's last token, scored one sequence at a time.
    for (const [i, s] of samples.entries()) {
      const packed = packSequences([{ prompt: tokens[i], response: greedy[i].ids }], rows, T);
      const values = await reward.forward(packed);
      const expected = values[packed.responseStart[0] + packed.responseLength[0]];
      assert.ok(Math.abs(s.reward - expected) < 1e-5, `${s.reward} vs ${expected}`);
    }
    const mean = samples.reduce((a, s) => a + s.reward, 0) / 4;
    assert.ok(Math.abs(summary.heldOutReward - mean) < 1e-12);
  } finally {
    policy.dispose();
    reward.dispose();
  }
});
