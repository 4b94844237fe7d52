import { strict as assert } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { GPT } from "../model/gpt.ts";
import { generate } from "../model/generate.ts";

const config = gptConfig({ layers: 2, dim: 16, heads: 2, context: 12, vocab: 7 });
const layout = paramLayout(config);
// A larger init than GPT-2's so the distributions are far from uniform and ties are unlikely.
const model = new GPT(createCpuBackend(), layout, initParams(layout, 4).map((x) => x * 20));

/** log-softmax of the last position's logits, by a full forward over `tokens` (no cache). */
async function fullForwardLogprobs(tokens: number[]): Promise<number[]> {
  const acts = model.activations(1, tokens.length);
  model.forward(acts, Int32Array.from(tokens));
  const [logits] = await model.backend.download(acts.logits);
  model.freeActivations(acts);
  const row = [...logits.subarray((tokens.length - 1) * 7, tokens.length * 7)];
  const max = Math.max(...row);
  const logZ = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
  return row.map((x) => x - logZ);
}

Deno.test("generate: greedy with the KV cache equals argmax of full forwards; log-probs match", async () => {
  const prompt = [1, 5, 2];
  const { ids, logprobs } = await generate(model, prompt, { maxTokens: 6, temperature: 0, chunk: 4 });
  assert.equal(ids.length, 6);
  const seq = [...prompt];
  for (let i = 0; i < 6; i++) {
    const lp = await fullForwardLogprobs(seq);
    const best = lp.indexOf(Math.max(...lp));
    assert.equal(ids[i], best, `token ${i}`);
    assert.ok(Math.abs(logprobs[i] - lp[best]) < 1e-4);
    seq.push(best);
  }
  // The context bounds the length; a stop token ends it (and is kept).
  assert.equal((await generate(model, prompt, { maxTokens: 50, temperature: 0 })).ids.length, 12 - 3);
  const stopped = await generate(model, prompt, { maxTokens: 6, temperature: 0, stop: [ids[2]] });
  assert.deepEqual(stopped.ids, ids.slice(0, ids.indexOf(ids[2]) + 1));
});

Deno.test("generate: sampling is reproducible by seed, top-k 1 is greedy, top-p keeps likely tokens", async () => {
  const prompt = [3];
  const a = await generate(model, prompt, { maxTokens: 8, temperature: 1, seed: 5, chunk: 3 });
  const b = await generate(model, prompt, { maxTokens: 8, temperature: 1, seed: 5 });
  assert.deepEqual(a, b);
  const seeds = await Promise.all(
    [6, 7, 8, 9].map((seed) => generate(model, prompt, { maxTokens: 8, seed })),
  );
  assert.ok(seeds.some((g) => g.ids.join() !== a.ids.join()), "other seeds give other samples");
  const greedy = await generate(model, prompt, { maxTokens: 8, temperature: 0 });
  assert.deepEqual((await generate(model, prompt, { maxTokens: 8, topK: 1, seed: 3 })).ids, greedy.ids);
  const nucleus = await generate(model, prompt, { maxTokens: 8, topP: 1e-6, seed: 3 });
  assert.deepEqual(nucleus.ids, greedy.ids);
  await assert.rejects(() => generate(model, [9], { maxTokens: 1 }), /outside the vocabulary/);
});

Deno.test("generate: beam search with beams ≥ vocabulary finds the most likely sequence", async () => {
  const prompt = [2, 6];
  const beam = await generate(model, prompt, { maxTokens: 2, beams: 7 });
  let best = { score: -Infinity, ids: [] as number[] };
  const first = await fullForwardLogprobs(prompt);
  for (let x = 0; x < 7; x++) {
    const second = await fullForwardLogprobs([...prompt, x]);
    for (let y = 0; y < 7; y++) {
      if (first[x] + second[y] > best.score) best = { score: first[x] + second[y], ids: [x, y] };
    }
  }
  assert.deepEqual(beam.ids, best.ids);
  assert.ok(Math.abs(beam.logprobs[0] + beam.logprobs[1] - best.score) < 1e-4);
});
