import { strict as assert } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { GPT } from "../model/gpt.ts";
import { generate, generateBatch, type Generation } from "../model/generate.ts";
import { KilnError } from "../pipeline/errors.ts";
import { webgpuForTests } from "./kernels_fixtures.ts";

const config = gptConfig({ layers: 2, dim: 16, heads: 2, context: 14, vocab: 11 });
const layout = paramLayout(config);
// A larger init than GPT-2's so the distributions are far from uniform and ties are unlikely.
const weights = initParams(layout, 5).map((x) => x * 6);
const model = new GPT(createCpuBackend(), layout, weights);
/** Lengths 2, 5 and 9: the rows sit at different positions at every step, and leave the context at different steps. */
const prompts = [[1, 5], [3, 0, 9, 2, 7], [4, 4, 8, 1, 6, 10, 2, 3, 5]];

/** The greedy next token of `tokens` by a full forward (no cache), and its log-probability. */
async function fullForwardGreedy(tokens: number[]): Promise<{ token: number; logp: number }> {
  const acts = model.activations(1, tokens.length);
  model.forward(acts, Int32Array.from(tokens));
  const [logits] = await model.backend.download(acts.logits);
  model.freeActivations(acts);
  const row = [...logits.subarray((tokens.length - 1) * 11, tokens.length * 11)];
  const max = Math.max(...row);
  const logZ = max + Math.log(row.reduce((s, x) => s + Math.exp(x - max), 0));
  return { token: row.indexOf(max), logp: max - logZ };
}

Deno.test("generateBatch: prompts of lengths 2, 5, 9 decode together exactly as each alone (greedy)", async () => {
  const options = { maxTokens: 20, temperature: 0, chunk: 4 };
  const batch = await generateBatch(model, prompts, options);
  // Each row stops where the context (14) is full: 14 - 2, 14 - 5, 14 - 9 tokens.
  assert.deepEqual(batch.map((g) => g.ids.length), [12, 9, 5]);
  assert.deepEqual(batch.map((g) => g.finish), ["length", "length", "length"]);
  for (let b = 0; b < prompts.length; b++) {
    assert.deepEqual(batch[b], await generate(model, prompts[b], options), `row ${b}`);
  }
  // And against the definition: every token of the longest row is the argmax of a full forward.
  const seq = [...prompts[2]];
  for (let i = 0; i < batch[2].ids.length; i++) {
    const { token, logp } = await fullForwardGreedy(seq);
    assert.equal(batch[2].ids[i], token, `token ${i}`);
    assert.ok(Math.abs(batch[2].logprobs[i] - logp) < 1e-4, `log-prob ${i}`);
    seq.push(token);
  }
});

Deno.test("generateBatch: rows end independently on stop tokens; maxTokens caps every row", async () => {
  const free = await generateBatch(model, prompts, { maxTokens: 5, temperature: 0 });
  const stopToken = free[1].ids[2];
  const stopped = await generateBatch(model, prompts, {
    maxTokens: 5,
    temperature: 0,
    stop: [stopToken],
    chunk: 2,
  });
  for (let b = 0; b < prompts.length; b++) {
    const at = free[b].ids.indexOf(stopToken);
    const expected: Generation = at < 0
      ? free[b]
      : { ids: free[b].ids.slice(0, at + 1), logprobs: free[b].logprobs.slice(0, at + 1), finish: "stop" };
    assert.deepEqual(stopped[b], expected, `row ${b}`);
  }
  assert.equal(stopped[1].finish, "stop");
  assert.ok(new Set(stopped.map((g) => g.ids.length)).size > 1, "the rows stopped after different lengths");
  // maxTokens is per row: here it binds before the context for every row.
  const three = await generateBatch(model, prompts, { maxTokens: 3, temperature: 0 });
  assert.deepEqual(three.map((g) => g.ids), free.map((g) => g.ids.slice(0, 3)));
  assert.deepEqual(three.map((g) => g.finish), ["length", "length", "length"]);
  assert.deepEqual(
    await generateBatch(model, prompts, { maxTokens: 0 }),
    prompts.map(() => ({
      ids: [],
      logprobs: [],
      finish: "length",
    })),
  );
});

Deno.test("generateBatch: seeded sampling is reproducible, per row, and equals generate for one prompt", async () => {
  const options = { maxTokens: 8, temperature: 1.3, topK: 6, topP: 0.95, seed: 11 };
  const a = await generateBatch(model, prompts, { ...options, chunk: 3 });
  assert.deepEqual(await generateBatch(model, prompts, options), a, "the chunk size does not change samples");
  assert.deepEqual(await generate(model, prompts[0], options), a[0]);
  // A row's sample depends on its prompt, the seed and its index, not on the other rows.
  const other = await generateBatch(model, [prompts[0], [2, 2], prompts[2]], options);
  assert.deepEqual(other[0], a[0]);
  assert.deepEqual(other[2], a[2]);
  const reseeded = await generateBatch(model, prompts, { ...options, seed: 12 });
  assert.notDeepEqual(reseeded.map((g) => g.ids), a.map((g) => g.ids), "another seed, other samples");
  for (const g of a) assert.ok(g.logprobs.every((lp) => lp <= 0 && lp > -Infinity));
});

Deno.test("generateBatch: beam search takes the prompts one at a time, as generate does", async () => {
  const options = { maxTokens: 3, beams: 3 };
  const beams = await generateBatch(model, prompts.slice(0, 2), options);
  assert.deepEqual(beams, [
    await generate(model, prompts[0], options),
    await generate(model, prompts[1], options),
  ]);
});

Deno.test("generateBatch: prompts that cannot be generated from are named in a clear error", async () => {
  const tooLong = Array.from({ length: 14 }, (_, i) => i % 11);
  await assert.rejects(
    () => generateBatch(model, [[1], tooLong], { maxTokens: 4 }),
    (e: Error) => {
      assert.ok(e instanceof KilnError);
      assert.match(e.message, /prompt 1 has 14 tokens, but the model's context is 14/);
      return true;
    },
  );
  await assert.rejects(() => generate(model, [], { maxTokens: 4 }), /the prompt is empty/);
  await assert.rejects(
    () => generateBatch(model, [[1], [2, 11]], { maxTokens: 4 }),
    /prompt 1 has token id 11/,
  );
  await assert.rejects(() => generate(model, [1], { maxTokens: 4, topP: 0 }), /topP must be in \(0, 1\]/);
  assert.deepEqual(await generateBatch(model, [], { maxTokens: 4 }), []);
});

Deno.test("generateBatch: WebGPU decodes a batch as each prompt alone, and as the CPU does", async () => {
  const gpu = await webgpuForTests();
  if (typeof gpu === "string") {
    console.log(`skipped: ${gpu}`);
    return;
  }
  const onGpu = new GPT(gpu, layout, weights);
  // Prompts of 3, 70 and 140 tokens in a context of 160: caches longer than one attention tile.
  const longConfig = gptConfig({ layers: 2, dim: 32, heads: 2, context: 160, vocab: 50 });
  const longLayout = paramLayout(longConfig);
  const longWeights = initParams(longLayout, 5).map((x) => x * 6);
  const longGpu = new GPT(gpu, longLayout, longWeights);
  const longCpu = new GPT(createCpuBackend(), longLayout, longWeights);
  try {
    const options = { maxTokens: 20, temperature: 0, chunk: 4 };
    const batch = await generateBatch(onGpu, prompts, options);
    const cpu = await generateBatch(model, prompts, options);
    for (let b = 0; b < prompts.length; b++) {
      assert.deepEqual(batch[b], await generate(onGpu, prompts[b], options), `row ${b} alone`);
      assert.deepEqual(batch[b].ids, cpu[b].ids, `row ${b} on the CPU`);
      batch[b].logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - cpu[b].logprobs[i]) < 1e-3));
    }
    const long = [3, 70, 140].map((n, r) => Array.from({ length: n }, (_, i) => (i * 7 + r * 3) % 50));
    const longOptions = { maxTokens: 12, temperature: 0 };
    const fromGpu = await generateBatch(longGpu, long, longOptions);
    const fromCpu = await generateBatch(longCpu, long, longOptions);
    for (let b = 0; b < long.length; b++) {
      assert.deepEqual(fromGpu[b].ids, fromCpu[b].ids, `long row ${b}`);
      fromGpu[b].logprobs.forEach((lp, i) => assert.ok(Math.abs(lp - fromCpu[b].logprobs[i]) < 1e-3));
    }
  } finally {
    onGpu.dispose();
    longGpu.dispose();
    longCpu.dispose();
  }
});
