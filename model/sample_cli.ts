/**
 * `kiln sample <checkpoint-dir> --prompt "…"`: generates text from a model directory (a `pretrain`
 * artifact, or a local Hugging Face GPT-2 download with its tokenizer).
 *
 * @example
 * ```ts
 * import { sampleCommand } from "./sample_cli.ts";
 * await sampleCommand([".kiln/artifacts/pretrain/0123abcd", "--prompt", "Once upon a time", "--tokens", "50"]);
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { KilnError } from "../pipeline/errors.ts";
import { createBackend } from "../kernels/device.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { END_OF_TEXT } from "../tokenizer/tokenizer.ts";
import { loadModelDir } from "./checkpoint.ts";
import { GPT } from "./gpt.ts";
import { generate } from "./generate.ts";

/** Usage text of the command. */
export const SAMPLE_USAGE = `kiln sample <checkpoint-dir> [options]

Generates a continuation of a prompt with a trained model.

Options:
  --prompt TEXT        text to continue (default: start of a document)
  --tokens N           tokens to generate at most (default 100)
  --temperature T      0 for greedy decoding (default 0.8)
  --top-k K            sample among the K most likely tokens (default 40; 0: all)
  --top-p P            nucleus sampling: the most likely tokens covering P (default 1)
  --beams N            beam search with N beams (deterministic)
  --seed N             sampling seed (default 1)
  --samples N          how many samples to print (default 1)
  --tokenizer PATH     tokenizer file or name (default: <checkpoint-dir>/tokenizer.json, else gpt2)
  --backend B          auto, webgpu or cpu (default auto)`;

function number(value: string | undefined, flag: string, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n)) throw new KilnError(`kiln sample: ${flag} expects a number, got "${value}"`);
  return n;
}

/**
 * Runs `kiln sample` with the arguments after `sample`; writes the samples to `write` (default
 * stdout). Returns the generated texts.
 */
export async function sampleCommand(
  args: string[],
  write: (text: string) => void = (text) => console.log(text),
): Promise<string[]> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      prompt: { type: "string", default: "" },
      tokens: { type: "string" },
      temperature: { type: "string" },
      "top-k": { type: "string" },
      "top-p": { type: "string" },
      beams: { type: "string" },
      seed: { type: "string" },
      samples: { type: "string" },
      tokenizer: { type: "string" },
      backend: { type: "string", default: "auto" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    write(SAMPLE_USAGE);
    return [];
  }
  if (positionals.length !== 1) {
    throw new KilnError(`kiln sample: expected one checkpoint directory\n\n${SAMPLE_USAGE}`);
  }
  const backendName = values.backend;
  if (backendName !== "auto" && backendName !== "cpu" && backendName !== "webgpu") {
    throw new KilnError(`kiln sample: --backend must be auto, webgpu or cpu, got "${backendName}"`);
  }
  const dir = positionals[0];
  const { layout, params } = await loadModelDir(dir);
  const own = join(dir, "tokenizer.json");
  const tokenizerSource = values.tokenizer ?? (await Deno.stat(own).then(() => own, () => "gpt2"));
  const tokenizer = await loadTokenizer(tokenizerSource);
  const backend = await createBackend({ backend: backendName, log: () => {} });
  const model = new GPT(backend, layout, params);
  const endOfText = tokenizer.specialTokens[END_OF_TEXT];
  const prompt = values.prompt ? tokenizer.encode(values.prompt) : [endOfText ?? 0];
  const samples = number(values.samples, "--samples", 1);
  const seed = number(values.seed, "--seed", 1);
  const texts: string[] = [];
  try {
    for (let i = 0; i < samples; i++) {
      const { ids } = await generate(model, prompt, {
        maxTokens: number(values.tokens, "--tokens", 100),
        temperature: number(values.temperature, "--temperature", 0.8),
        topK: number(values["top-k"], "--top-k", 40),
        topP: number(values["top-p"], "--top-p", 1),
        beams: number(values.beams, "--beams", 1),
        stop: endOfText === undefined ? [] : [endOfText],
        seed: seed + i,
      });
      const text = values.prompt + tokenizer.decode(ids.filter((t) => t !== endOfText));
      texts.push(text);
      write(samples > 1 ? `--- sample ${i + 1}\n${text}` : text);
    }
  } finally {
    model.dispose();
  }
  return texts;
}
