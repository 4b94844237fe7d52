/**
 * Greedy generation on the CPU backend, 6 layers × 384 (vocab 8192, context 256, random weights):
 * tokens/s of one prompt against 8 prompts decoded together (`generateBatch`), prefill included.
 *
 *   deno run -A bench/cpu_generate_bench.ts [--matmul simd|reference] [--threads N] [--tokens 64]
 * @module
 */
import { parseArgs } from "node:util";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { generateBatch } from "../model/generate.ts";
import { GPT } from "../model/gpt.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Rng } from "../model/rng.ts";

const args = parseArgs({
  args: Deno.args,
  options: {
    matmul: { type: "string", default: "simd" },
    threads: { type: "string" },
    tokens: { type: "string", default: "64" },
  },
}).values;

const config = gptConfig({ layers: 6, dim: 384, heads: 6, context: 256, vocab: 8192 });
const layout = paramLayout(config);
const backend = createCpuBackend({
  matmul: args.matmul as "simd" | "reference",
  threads: args.threads ? Number(args.threads) : undefined,
});
const model = new GPT(backend, layout, initParams(layout, 1));
const rng = new Rng(3);
const prompts = Array.from({ length: 8 }, () => Array.from({ length: 16 }, () => rng.below(config.vocab)));
const maxTokens = Number(args.tokens);

async function tokensPerSecond(rows: number): Promise<number> {
  const start = performance.now();
  const out = await generateBatch(model, prompts.slice(0, rows), { maxTokens, temperature: 0 });
  const generated = out.reduce((n, g) => n + g.ids.length, 0);
  return generated * 1000 / (performance.now() - start);
}

await tokensPerSecond(1); // warm-up
const one = await tokensPerSecond(1), eight = await tokensPerSecond(8);
console.log(
  `kiln cpu greedy 6×384 (${backend.description}), ${maxTokens} new tokens: 1 prompt ${
    one.toFixed(1)
  } tokens/s, ` +
    `8 prompts ${eight.toFixed(1)} tokens/s (${(eight / one).toFixed(2)}×)`,
);
