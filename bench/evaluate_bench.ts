/**
 * Throughput of the evaluate stage's measurements and of beam search, on random weights:
 * perplexity (tokens scored per second), HellaSwag-format multiple choice (questions per second, on
 * tests/fixtures/hellaswag_tiny.jsonl: 8 questions × 4 endings of ~60–100 byte tokens) and beam
 * search (generated tokens per second, 4 beams, no stop token).
 *
 *   deno run -A bench/evaluate_bench.ts [backend=cpu] [size=tiny|demo] [tokens=4096]
 *
 * Sizes: `tiny` (2 layers, 64 wide, 4 heads, context 128, byte vocabulary of 261) and `demo` (the
 * demo pipeline's model: 6 layers, 384 wide, 6 heads, context 256; vocabulary 8192). Text is a byte
 * stream of English-like words, scored in windows of the full context, batch 4. One warm-up, then
 * the median of 3 rounds.
 * @module
 */
import { createBackend } from "../kernels/device.ts";
import { gptConfig } from "../model/config.ts";
import { beamSearch } from "../model/beam.ts";
import { GPT } from "../model/gpt.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { DEFAULT_SPECIAL_TOKENS, Tokenizer } from "../tokenizer/tokenizer.ts";
import { perplexity } from "../stages/evaluate/perplexity.ts";
import { multipleChoice, readMultipleChoice } from "../stages/evaluate/multiple_choice.ts";

const backendName = (Deno.args[0] ?? "cpu") as "cpu" | "webgpu" | "auto";
const size = Deno.args[1] ?? "tiny";
const tokens = Number(Deno.args[2] ?? 4096);

const tokenizer = new Tokenizer({
  tokens: Array.from({ length: 256 }, (_, i) => Uint8Array.of(i)),
  specialTokens: Object.fromEntries(DEFAULT_SPECIAL_TOKENS.map((t, i) => [t, 256 + i])),
});
const config = size === "demo"
  ? gptConfig({ layers: 6, dim: 384, heads: 6, context: 256, vocab: 8192 })
  : gptConfig({ layers: 2, dim: 64, heads: 4, context: 128, vocab: 261 });
const layout = paramLayout(config);
const backend = await createBackend({ backend: backendName, log: () => {} });
const model = new GPT(backend, layout, initParams(layout, 1));
const words = [
  "the",
  "model",
  "reads",
  "a",
  "stream",
  "of",
  "bytes",
  "and",
  "predicts",
  "each",
  "next",
  "one",
];
let text = "";
for (let i = 0; text.length < tokens; i++) text += words[(i * 7 + (i >> 3)) % words.length] + " ";
const stream = tokenizer.encode(text.slice(0, tokens));
const examples = await readMultipleChoice(
  new URL("../tests/fixtures/hellaswag_tiny.jsonl", import.meta.url).pathname,
);

async function median(work: () => Promise<void>): Promise<number> {
  await work();
  const times: number[] = [];
  for (let i = 0; i < 3; i++) {
    const start = performance.now();
    await work();
    times.push((performance.now() - start) / 1000);
  }
  return times.sort((a, b) => a - b)[1];
}

const ppl = await median(async () => {
  await perplexity(model, stream, { seqLen: config.context, batch: 4, tokenizer });
});
const mc = await median(async () => {
  await multipleChoice(model, tokenizer, examples, { batch: 8 });
});
const beamTokens = Math.min(32, config.context - 8);
const beam = await median(async () => {
  await beamSearch(model, [1, 2, 3, 4, 5, 6, 7, 8], { beams: 4, maxTokens: beamTokens });
});
console.log(
  `backend ${backend.name} (${backend.description}), ${size}: ${
    layout.total.toLocaleString("en")
  } parameters`,
);
console.log(
  `perplexity:      ${(stream.length / ppl).toFixed(0)} tokens/s (${stream.length} tokens, ${
    ppl.toFixed(2)
  } s)`,
);
console.log(
  `multiple choice: ${(examples.length / mc).toFixed(1)} questions/s (${examples.length} questions, ${
    mc.toFixed(2)
  } s)`,
);
console.log(
  `beam search:     ${(beamTokens / beam).toFixed(1)} tokens/s (4 beams, ${beamTokens} tokens, ${
    beam.toFixed(2)
  } s)`,
);
model.dispose();
