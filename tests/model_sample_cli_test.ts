// `kiln sample` end to end: the real CLI (cli/kiln.ts) in a subprocess, on a tiny checkpoint and
// tokenizer written here; what it prints is checked against the generation API with the same settings.
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { createCpuBackend } from "../kernels/cpu.ts";
import { saveModelDir } from "../model/checkpoint.ts";
import { gptConfig } from "../model/config.ts";
import { generateBatch, type GenerateOptions } from "../model/generate.ts";
import { GPT } from "../model/gpt.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { END_OF_TEXT, Tokenizer } from "../tokenizer/tokenizer.ts";

const CLI = new URL("../cli/kiln.ts", import.meta.url).pathname;

// One token per byte (ids 0..255) and <|endoftext|> (256): the smallest tokenizer kiln loads.
const EOT = 256;
const tokenizer = new Tokenizer({
  tokens: Array.from({ length: 256 }, (_, i) => Uint8Array.of(i)),
  specialTokens: { [END_OF_TEXT]: EOT },
});
const layout = paramLayout(gptConfig({ layers: 2, dim: 32, heads: 2, context: 32, vocab: 257 }));
// Larger than GPT-2's init, so that sampling settings visibly change the samples.
const params = initParams(layout, 3).map((x) => x * 6);
const model = new GPT(createCpuBackend(), layout, params);
const dir = await Deno.makeTempDir({ prefix: "kiln-sample-test-" });
await saveModelDir(dir, layout, params);
await tokenizer.save(join(dir, "tokenizer.json"));

/** Runs `kiln sample <args>` on the CPU backend. */
async function kilnSample(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", CLI, "sample", ...args, "--backend", "cpu"],
    stdout: "piped",
    stderr: "piped",
  });
  const { code, stdout, stderr } = await command.output();
  const text = new TextDecoder();
  return { code, stdout: text.decode(stdout), stderr: text.decode(stderr) };
}

/** What the CLI should print for `prompt` under `options` (its defaults filled in), via the API. */
async function expected(prompt: string, options: Partial<GenerateOptions>): Promise<string> {
  const [row] = await generateBatch(model, [tokenizer.encode(prompt)], {
    maxTokens: 100,
    temperature: 0.8,
    topK: 40,
    topP: 1,
    seed: 1,
    stop: [EOT],
    ...options,
  });
  return prompt + tokenizer.decode(row.ids.filter((t) => t !== EOT));
}

Deno.test("kiln sample: greedy output is the decoded generation, the same on every run", async () => {
  const args = [dir, "--prompt", "Hello, ", "--temperature", "0", "--tokens", "20"];
  const [first, second] = await Promise.all([kilnSample(...args), kilnSample(...args)]);
  assert.equal(first.code, 0, first.stderr);
  assert.equal(first.stdout, (await expected("Hello, ", { temperature: 0, maxTokens: 20 })) + "\n");
  assert.ok(first.stdout.length > "Hello, \n".length, "it generated something");
  assert.equal(second.stdout, first.stdout);
});

Deno.test("kiln sample: --tokens, --seed, --temperature, --top-k, --top-p, --beams and its options are honoured", async () => {
  const prompt = "abc";
  const base = { maxTokens: 12 };
  const cases: [string[], Partial<GenerateOptions>][] = [
    [["--tokens", "5"], { maxTokens: 5 }],
    [["--seed", "7"], { ...base, seed: 7 }],
    [["--temperature", "2"], { ...base, temperature: 2 }],
    [["--top-k", "2"], { ...base, topK: 2 }],
    [["--top-p", "0.3"], { ...base, topP: 0.3 }],
    [["--beams", "3"], { ...base, beams: 3 }],
    [["--beams", "3", "--length-penalty", "0"], { ...base, beams: 3, lengthPenalty: 0 }],
    [["--beams", "2", "--early-stopping", "never"], { ...base, beams: 2, earlyStopping: "never" }],
  ];
  const baseline = await expected(prompt, base);
  const runs = await Promise.all(
    cases.map(([flags]) => kilnSample(dir, "--prompt", prompt, "--tokens", "12", ...flags)),
  );
  for (let i = 0; i < cases.length; i++) {
    const [flags, options] = cases[i];
    const want = await expected(prompt, options);
    // Each setting changes the sample here, so printing the baseline would fail the check.
    assert.notEqual(want, baseline, `${flags.join(" ")} changes the sample`);
    assert.equal(runs[i].code, 0, runs[i].stderr);
    assert.equal(runs[i].stdout, want + "\n", flags.join(" "));
  }
});

Deno.test("kiln sample: several prompts and samples decode in one batch; --json gives their token ids", async () => {
  const args = [dir, "--prompt", "ab", "--prompt", "xyz q", "--samples", "2"];
  const [plain, json] = await Promise.all([kilnSample(...args), kilnSample(...args, "--json")]);
  assert.equal(plain.code, 0, plain.stderr);
  assert.equal(json.code, 0, json.stderr);
  const prompts = ["ab", "ab", "xyz q", "xyz q"];
  const rows = await generateBatch(model, prompts.map((p) => tokenizer.encode(p)), {
    maxTokens: 100,
    temperature: 0.8,
    topK: 40,
    seed: 1,
    stop: [EOT],
  });
  const completions = rows.map((row) => tokenizer.decode(row.ids.filter((t) => t !== EOT)));
  assert.notEqual(completions[0], completions[1], "two samples of a prompt differ");
  const titles = ["prompt 1, sample 1", "prompt 1, sample 2", "prompt 2, sample 1", "prompt 2, sample 2"];
  assert.equal(
    plain.stdout,
    titles.map((title, r) => `--- ${title}\n${prompts[r]}${completions[r]}\n`).join(""),
  );
  assert.deepEqual(
    json.stdout.trimEnd().split("\n").map((line) => JSON.parse(line)),
    rows.map((row, r) => ({
      prompt: prompts[r],
      sample: (r % 2) + 1,
      completion: completions[r],
      ids: row.ids,
      finish: row.finish,
    })),
  );
});

Deno.test("kiln sample: stops at generation_config.json's eos_token_id", async () => {
  const withStops = await Deno.makeTempDir({ prefix: "kiln-sample-stops-" });
  try {
    for (const name of ["config.json", "model.safetensors", "tokenizer.json"]) {
      await Deno.copyFile(join(dir, name), join(withStops, name));
    }
    const prompt = "Hello, ";
    const [free] = await generateBatch(model, [tokenizer.encode(prompt)], { maxTokens: 20, temperature: 0 });
    const stop = free.ids[5];
    await Deno.writeTextFile(
      join(withStops, "generation_config.json"),
      JSON.stringify({ eos_token_id: [stop, EOT] }),
    );
    const run = await kilnSample(
      withStops,
      "--prompt",
      prompt,
      "--temperature",
      "0",
      "--tokens",
      "20",
      "--json",
    );
    assert.equal(run.code, 0, run.stderr);
    const line = JSON.parse(run.stdout);
    assert.deepEqual(line.ids, free.ids.slice(0, free.ids.indexOf(stop) + 1));
    assert.equal(line.finish, "stop");
  } finally {
    await Deno.remove(withStops, { recursive: true });
  }
});

Deno.test("kiln sample: a missing or damaged checkpoint and bad flags give one clear line and exit 1", async () => {
  const damaged = await Deno.makeTempDir({ prefix: "kiln-sample-damaged-" });
  for (const name of ["config.json", "model.safetensors", "tokenizer.json"]) {
    await Deno.copyFile(join(dir, name), join(damaged, name));
  }
  const weights = await Deno.readFile(join(damaged, "model.safetensors"));
  weights[weights.length - 100] ^= 0x40;
  await Deno.writeFile(join(damaged, "model.safetensors"), weights);
  const missing = join(dir, "no-such-model");
  const cases: [string[], RegExp][] = [
    [[missing], /not a model directory \(no config\.json\)/],
    [[damaged], /model\.safetensors: damaged safetensors file: tensor data does not match its SHA-256/],
    [[dir, "--top-p", "0"], /--top-p expects a number in \(0, 1\], got "0"/],
    [[dir, "--tokens", "2.5"], /--tokens expects an integer ≥ 0, got "2.5"/],
    [[dir, "--early-stopping", "soon"], /--early-stopping expects true, false or never, got "soon"/],
    [[dir, "--colour"], /kiln sample: Unknown option '--colour'/],
    [[dir, "--prompt", "x".repeat(40)], /the prompt has 40 tokens, but the model's context is 32/],
    [
      [dir, "--tokenizer", "gpt2"],
      /the tokenizer \(gpt2\) has 50257 ids, more than the model's vocabulary of 257/,
    ],
  ];
  try {
    const runs = await Promise.all(cases.map(([args]) => kilnSample(...args)));
    for (let i = 0; i < cases.length; i++) {
      const { code, stdout, stderr } = runs[i];
      assert.equal(code, 1, cases[i][0].join(" "));
      assert.equal(stdout, "");
      assert.match(stderr, cases[i][1]);
      assert.match(stderr, /^error: /);
      assert.doesNotMatch(stderr, /\n\s+at /, "no stack trace");
    }
  } finally {
    await Deno.remove(damaged, { recursive: true });
  }
});

Deno.test("kiln sample: cleanup", async () => {
  model.dispose();
  await Deno.remove(dir, { recursive: true });
});
