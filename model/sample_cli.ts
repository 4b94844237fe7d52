/**
 * `kiln sample <checkpoint-dir> --prompt "…"`: generates text from a model directory (a `pretrain`
 * artifact, or a local Hugging Face GPT-2 download with its tokenizer).
 *
 * @example
 * ```ts
 * import { sampleCommand } from "./sample_cli.ts";
 * await sampleCommand([".kiln/artifacts/pretrain/0123abcd", "--prompt", "Once upon a time", "--tokens", "50"]);
 * await sampleCommand([".kiln/artifacts/pretrain/0123abcd", "--prompt", "The", "--prompt", "A", "--samples", "4"]);
 * ```
 * @module
 */
import { parseArgs } from "node:util";
import { join } from "node:path";
import { KilnError } from "../pipeline/errors.ts";
import { createBackend } from "../kernels/device.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { END_OF_TEXT } from "../tokenizer/tokenizer.ts";
import { loadModelDir, readStopTokens } from "./checkpoint.ts";
import { GPT } from "./gpt.ts";
import { generateBatch } from "./generate.ts";
import type { EarlyStopping } from "./beam.ts";

/** Usage text of the command. */
export const SAMPLE_USAGE = `kiln sample <checkpoint-dir> [options]

Generates continuations of prompts with a trained model, all decoded together in one batch.

Options:
  --prompt TEXT        text to continue; repeat it for several prompts (default: start of a document)
  --tokens N           tokens to generate at most (default 100)
  --temperature T      0 for greedy decoding (default 0.8)
  --top-k K            sample among the K most likely tokens (default 40; 0: all)
  --top-p P            nucleus sampling: the most likely tokens covering P (default 1)
  --beams N            beam search with N beams (deterministic; Hugging Face's num_beams)
  --length-penalty X   beam search ranks by sum of log-probs / length^X (default 1)
  --early-stopping S   beam search stops: true (once N hypotheses finished), false (when no beam
                       can do better, HF's heuristic; default) or never
  --seed N             sampling seed (default 1)
  --samples N          samples per prompt (default 1)
  --tokenizer PATH     tokenizer file or name (default: <checkpoint-dir>/tokenizer.json, else gpt2)
  --backend B          auto, webgpu or cpu (default auto)
  --json               one JSON object a line per sample: prompt, sample, completion, ids, finish
                       (ids: the generated token ids; finish: "stop" at a stop token, else "length";
                       with --beams, score: the hypothesis's normalised log-probability)

Stop tokens: generation_config.json's eos_token_id when the directory has one, else <|endoftext|>.`;

/** A flag's value as a number, which must pass `ok` (`expects` says what it must be). */
function number(
  value: string | undefined,
  flag: string,
  fallback: number,
  ok: (n: number) => boolean,
  expects: string,
): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (value.trim() === "" || !Number.isFinite(n) || !ok(n)) {
    throw new KilnError(`kiln sample: ${flag} expects ${expects}, got "${value}"`);
  }
  return n;
}

const count = (min: number) => (n: number) => Number.isInteger(n) && n >= min;

/** `--early-stopping`: true, false or never. */
function earlyStopping(value: string | undefined): EarlyStopping {
  if (value === undefined || value === "false") return false;
  if (value === "true") return true;
  if (value === "never") return "never";
  throw new KilnError(`kiln sample: --early-stopping expects true, false or never, got "${value}"`);
}

/**
 * Runs `kiln sample` with the arguments after `sample`; writes the samples to `write` (default
 * stdout), under a `--- prompt i, sample j` line when there are several (or as JSON lines with
 * `--json`). Returns the generated
 * texts, prompt by prompt, each with its prompt in front.
 */
export async function sampleCommand(
  args: string[],
  write: (text: string) => void = (text) => console.log(text),
): Promise<string[]> {
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        prompt: { type: "string", multiple: true },
        tokens: { type: "string" },
        temperature: { type: "string" },
        "top-k": { type: "string" },
        "top-p": { type: "string" },
        beams: { type: "string" },
        "length-penalty": { type: "string" },
        "early-stopping": { type: "string" },
        seed: { type: "string" },
        samples: { type: "string" },
        tokenizer: { type: "string" },
        backend: { type: "string", default: "auto" },
        json: { type: "boolean" },
        help: { type: "boolean", short: "h" },
      },
    });
  } catch (e) {
    throw new KilnError(`kiln sample: ${(e as Error).message}\n\n${SAMPLE_USAGE}`);
  }
  const { values, positionals } = parsed;
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
  const options = {
    maxTokens: number(values.tokens, "--tokens", 100, count(0), "an integer ≥ 0"),
    temperature: number(values.temperature, "--temperature", 0.8, (t) => t >= 0, "a number ≥ 0"),
    topK: number(values["top-k"], "--top-k", 40, count(0), "an integer ≥ 0"),
    topP: number(values["top-p"], "--top-p", 1, (p) => p > 0 && p <= 1, "a number in (0, 1]"),
    beams: number(values.beams, "--beams", 1, count(1), "an integer ≥ 1"),
    lengthPenalty: number(values["length-penalty"], "--length-penalty", 1, () => true, "a number"),
    earlyStopping: earlyStopping(values["early-stopping"]),
    seed: number(values.seed, "--seed", 1, count(0), "an integer ≥ 0"),
  };
  const samples = number(values.samples, "--samples", 1, count(1), "an integer ≥ 1");
  const dir = positionals[0];
  const { layout, params } = await loadModelDir(dir);
  const own = join(dir, "tokenizer.json");
  const tokenizerSource = values.tokenizer ?? (await Deno.stat(own).then(() => own, () => "gpt2"));
  const tokenizer = await loadTokenizer(tokenizerSource);
  if (tokenizer.vocabSize > layout.config.vocab) {
    throw new KilnError(
      `kiln sample: the tokenizer (${tokenizerSource}) has ${tokenizer.vocabSize} ids, more than the ` +
        `model's vocabulary of ${layout.config.vocab}: pass the tokenizer the model was trained with (--tokenizer)`,
    );
  }
  const endOfText = tokenizer.specialTokens[END_OF_TEXT];
  const stop = (await readStopTokens(dir)) ?? (endOfText === undefined ? [] : [endOfText]);
  const texts = values.prompt ?? [""];
  const prompts = texts.map((text) => (text ? tokenizer.encode(text) : [endOfText ?? 0]));
  const backend = await createBackend({ backend: backendName, log: () => {} });
  const model = new GPT(backend, layout, params);
  try {
    const rows = await generateBatch(model, prompts.flatMap((p) => Array(samples).fill(p)), {
      ...options,
      stop,
    });
    return rows.map(({ ids, finish, score }, r) => {
      const i = Math.floor(r / samples), j = r % samples;
      const completion = tokenizer.decode(ids.filter((t) => !stop.includes(t)));
      if (values.json) {
        write(JSON.stringify({ prompt: texts[i], sample: j + 1, completion, ids, finish, score }));
      } else {
        const header = [texts.length > 1 ? `prompt ${i + 1}` : "", samples > 1 ? `sample ${j + 1}` : ""];
        const title = header.filter(Boolean).join(", ");
        write(title ? `--- ${title}\n${texts[i]}${completion}` : texts[i] + completion);
      }
      return texts[i] + completion;
    });
  } finally {
    model.dispose();
  }
}
