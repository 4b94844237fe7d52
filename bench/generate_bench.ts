/**
 * Rollout throughput of generation: tokens/s of a batch of prompts decoded together by
 * `generateBatch`, against the same prompts one `generate` call each (what PPO did), on each backend.
 *
 *   deno run -A bench/generate_bench.ts [reps=5] [backends=cpu,webgpu] [size=auto|tiny|gpt2]
 *
 * Sizes: `tiny` (the model bench's config: 2 layers, 64 wide, 4 heads, context 32, vocabulary 256;
 * 16 prompts of 4–12 tokens, 16 new tokens each) and `gpt2` (GPT-2 small, 124M, random weights; 64
 * prompts of 16–64 tokens, 64 new tokens each). `auto`: gpt2 on a hardware GPU, tiny on the CPU
 * backend and on software adapters (llvmpipe would take hours on GPT-2).
 *
 * No stop token, so every row generates all its tokens; temperature 1, chunk 16. Tokens/s counts
 * generated tokens; the prompts' prefill is in the time. One warm-up round (JIT, shader
 * compilation), then the median of `reps` rounds, the two ways alternating.
 * @module
 */
import type { Backend } from "../kernels/backend.ts";
import { createBackend } from "../kernels/device.ts";
import { GPT2_SIZES, gptConfig } from "../model/config.ts";
import { generate, generateBatch } from "../model/generate.ts";
import { GPT } from "../model/gpt.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Rng } from "../model/rng.ts";

const SIZES = {
  tiny: {
    config: gptConfig({ layers: 2, dim: 64, heads: 4, context: 32, vocab: 256 }),
    rows: 16,
    promptLengths: [4, 12],
    newTokens: 16,
  },
  gpt2: {
    config: gptConfig({ ...GPT2_SIZES.gpt2, vocab: 50257 }),
    rows: 64,
    promptLengths: [16, 64],
    newTokens: 64,
  },
};

const reps = Number(Deno.args[0] ?? 5);
const backends = (Deno.args[1] ?? "cpu,webgpu").split(",") as ("cpu" | "webgpu")[];
const sizeArg = Deno.args[2] ?? "auto";

function sizeFor(backend: Backend): keyof typeof SIZES {
  if (sizeArg === "tiny" || sizeArg === "gpt2") return sizeArg;
  const software = backend.name === "cpu" ||
    /llvmpipe|lavapipe|swiftshader|software/i.test(backend.description);
  return software ? "tiny" : "gpt2";
}

/** Median ms of each way over `reps` rounds, alternating (so load from elsewhere hits both alike). */
async function medians(ways: (() => Promise<unknown>)[]): Promise<number[]> {
  for (const run of ways) await run(); // warm-up
  const times = ways.map(() => [] as number[]);
  for (let i = 0; i < reps; i++) {
    for (let w = 0; w < ways.length; w++) {
      const start = performance.now();
      await ways[w]();
      times[w].push(performance.now() - start);
    }
  }
  return times.map((t) => t.sort((a, b) => a - b)[Math.floor(t.length / 2)]);
}

for (const name of backends) {
  let backend;
  try {
    backend = await createBackend({ backend: name, log: () => {} });
  } catch (e) {
    console.log(`${name}: skipped (${(e as Error).message})`);
    continue;
  }
  const size = sizeFor(backend);
  const { config, rows, promptLengths: [shortest, longest], newTokens } = SIZES[size];
  const rng = new Rng(1);
  const prompts = Array.from(
    { length: rows },
    (_, i) =>
      Array.from({ length: shortest + (i % (longest - shortest + 1)) }, () => rng.below(config.vocab)),
  );
  const options = { maxTokens: newTokens, temperature: 1, seed: 1 };
  const layout = paramLayout(config);
  const model = new GPT(backend, layout, initParams(layout, 1));
  const [single, batched] = await medians([
    async () => {
      for (const prompt of prompts) await generate(model, prompt, options);
    },
    () => generateBatch(model, prompts, options),
  ]);
  const rate = (ms: number) => `${(rows * newTokens / (ms / 1000)).toFixed(0)} tokens/s`;
  console.log(`${backend.name} (${backend.description}), ${size}, ${rows} prompts × ${newTokens} tokens:`);
  console.log(`  ${rows} generate calls:   ${single.toFixed(0)} ms, ${rate(single)}`);
  console.log(
    `  one generateBatch:   ${batched.toFixed(0)} ms, ${rate(batched)} (${(single / batched).toFixed(1)}×)`,
  );
  model.dispose();
}
