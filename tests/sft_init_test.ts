/**
 * `sft` with `init`: a local model directory in the Hugging Face GPT-2 layout whose tokenizer lacks
 * kiln's chat tokens (as GPT-2's does), written here at toy size: config.json, model.safetensors with
 * HF names (`transformer.` prefix, tied `lm_head.weight`), and an HF byte-level tokenizer.json with
 * `<|endoftext|>` as its only added token.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { z } from "npm:zod@^4.6.7";
import { defineStage } from "../pipeline/stage.ts";
import { pipeline } from "../pipeline/pipeline.ts";
import { gptConfig, toHFConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { type LoadedModel, loadModelDir } from "../model/checkpoint.ts";
import { serializeSafetensors } from "../model/safetensors.ts";
import { GPT } from "../model/gpt.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import {
  CHAT_TOKENS,
  END_OF_TEXT,
  loadTokenizer,
  PieceCounter,
  toHuggingFace,
  type Tokenizer,
  trainBpe,
} from "../tokenizer/mod.ts";
import { sft } from "../stages/sft.ts";
import { rewardModel } from "../stages/reward_model.ts";
import { loadChatTemplate } from "../chat/template.ts";
import { fitVocab, withChatTokens } from "../chat/vocab.ts";
import { writeData } from "./sft_fixture.ts";

const SHAPE = { layers: 1, dim: 16, heads: 2, context: 32 };
/** 256 bytes + `<|endoftext|>`: GPT-2's situation (no chat tokens) at toy size. */
const byteTokenizer = () => trainBpe(new PieceCounter(), { vocabSize: 257, specialTokens: [END_OF_TEXT] });

const SFT = {
  epochs: 3,
  batch: 4,
  lr: 1e-2,
  warmup: 2,
  logEvery: 1,
  sample: { count: 2, maxTokens: 4 },
  checkpointEvery: 100,
  backend: "cpu" as const,
};
const RM = {
  epochs: 1,
  batch: 4,
  lr: 1e-2,
  warmup: 2,
  logEvery: 1,
  checkpointEvery: 100,
  backend: "cpu" as const,
};

/** Writes an HF GPT-2-style directory (vocabulary `vocab`, tokenizer `tokenizer`) and returns its model. */
async function writeHfDir(
  dir: string,
  tokenizer: Tokenizer,
  vocab = tokenizer.vocabSize,
): Promise<LoadedModel> {
  await Deno.mkdir(dir, { recursive: true });
  const config = gptConfig({ ...SHAPE, vocab });
  const layout = paramLayout(config);
  // Larger than GPT-2's init, so the rows differ clearly from their mean.
  const params = initParams(layout, 7).map((x) => 10 * x);
  const tensors = layout.entries.map((e) => ({
    name: "transformer." + e.name,
    shape: e.shape,
    data: params.subarray(e.offset, e.offset + e.size),
  }));
  tensors.push({ ...tensors[0], name: "lm_head.weight" });
  await Deno.writeFile(join(dir, "model.safetensors"), serializeSafetensors(tensors, { format: "pt" }));
  await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(toHFConfig(config)));
  await Deno.writeTextFile(join(dir, "tokenizer.json"), JSON.stringify(toHuggingFace(tokenizer)));
  return { config, layout, params };
}

/** The sft stage's input when `init` is set: an empty model artifact (init must win over it). */
const placeholder = defineStage({
  name: "placeholder-model",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "model",
  schema: z.object({}),
  async run(ctx) {
    await ctx.out.writeText("README", "sft starts from init, not from here\n");
  },
});

const rows = (m: LoadedModel) => {
  const { offset, shape: [V, C] } = m.layout.wte;
  return Array.from({ length: V }, (_, v) => m.params.subarray(offset + v * C, offset + (v + 1) * C));
};

/** Logits of a forward over `tokens` (CPU backend). */
async function logits(m: LoadedModel, tokens: number[]): Promise<Float32Array> {
  const backend = createCpuBackend();
  const gpt = new GPT(backend, m.layout, m.params);
  const acts = gpt.activations(1, tokens.length);
  gpt.forward(acts, Int32Array.from(tokens));
  const [out] = await backend.download(acts.logits);
  return out as Float32Array;
}

Deno.test("sft init: a GPT-2-layout dir without chat tokens gets them, a grown embedding, and trains", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const data = await writeData(dir);
    await writeHfDir(join(dir, "gpt2-toy"), byteTokenizer());
    const result = await pipeline("init", { workdir: join(dir, "work"), workers: 1 })
      .pipe(placeholder({}))
      .pipe(sft({ ...SFT, data: data.sft, init: join(dir, "gpt2-toy") }))
      .pipe(rewardModel({ ...RM, data: data.comparisons }))
      .execute({ command: "run", quiet: true });
    const s = result.artifacts["sft"];

    // The tokenizer carries the four chat tokens after GPT-2-style's 257 ids; the model has their rows.
    const tokenizer = await loadTokenizer(s.path("tokenizer.json"));
    assert.equal(tokenizer.vocabSize, 261);
    assert.deepEqual(
      Object.values(CHAT_TOKENS).map((t) => tokenizer.specialTokens[t]),
      [257, 258, 259, 260],
    );
    const trained = await loadModelDir(s.dir);
    assert.deepEqual(trained.config, { ...SHAPE, vocab: 261 });
    assert.deepEqual(trained.layout.wte.shape, [261, 16]);
    assert.equal(JSON.parse(await s.readText("config.json")).vocab_size, 261);
    assert.equal(s.stats.embeddingRowsAdded, 4);
    // The template renders the markers as single ids (not "<|user|>" spelled out in bytes).
    const template = await loadChatTemplate(s.dir, tokenizer);
    assert.deepEqual(template.prompt([{ role: "user", content: "hi" }]), [258, 104, 105, 260, 259]);
    assert.deepEqual(template.stopIds(), [260, 256]);

    const metrics = (await s.readText("metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l));
    const losses = metrics.filter((m) => "loss" in m).map((m) => m.loss as number);
    assert.ok(losses.length >= 20);
    assert.ok(losses.at(-1)! < 0.8 * losses[0], `loss ${losses[0]} → ${losses.at(-1)}`);
    // The reward model downstream took the grown vocabulary as it is.
    assert.equal(JSON.parse(await result.artifacts["reward-model"].readText("config.json")).vocab_size, 261);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sft init: the grown model is the original plus mean rows, the same logits on old tokens", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const original = await writeHfDir(dir, byteTokenizer());
    const { tokenizer, added } = withChatTokens(byteTokenizer(), {});
    assert.deepEqual(added, Object.values(CHAT_TOKENS));
    const fitted = fitVocab("sft", await loadModelDir(dir), tokenizer, added);
    assert.deepEqual(fitted.rows, [257, 258, 259, 260]);
    assert.match(fitted.note!, /added 4 chat tokens.*grew the token embedding by 4 rows \(257 → 261\)/);
    const grown = rows(fitted.model), old = rows(original);
    for (let v = 0; v < 257; v++) assert.deepEqual(grown[v], old[v], `row ${v}`);
    for (let c = 0; c < 16; c++) {
      const mean = old.reduce((sum, row) => sum + row[c], 0) / 257;
      for (const v of fitted.rows) assert.ok(Math.abs(grown[v][c] - mean) < 1e-6, `row ${v}[${c}]`);
    }
    for (const e of original.layout.entries.filter((e) => e.name !== "wte.weight")) {
      const f = fitted.model.layout.get(e.name);
      assert.deepEqual(
        fitted.model.params.subarray(f.offset, f.offset + f.size),
        original.params.subarray(e.offset, e.offset + e.size),
        e.name,
      );
    }
    // Every logit of an old token is the same; the new tokens score the mean row's logit.
    const tokens = [72, 105, 32, 256, 7];
    const before = await logits(original, tokens), after = await logits(fitted.model, tokens);
    for (let t = 0; t < tokens.length; t++) {
      assert.deepEqual(after.subarray(t * 261, t * 261 + 257), before.subarray(t * 257, (t + 1) * 257));
    }

    // A padded vocabulary (264 rows for 257 ids): the chat tokens take padding rows; nothing grows.
    const paddedDir = join(dir, "padded");
    const padded = await writeHfDir(paddedDir, byteTokenizer(), 264);
    const fit = fitVocab("sft", await loadModelDir(paddedDir), tokenizer, added);
    assert.equal(fit.model.config.vocab, 264);
    assert.deepEqual(fit.rows, [257, 258, 259, 260]);
    assert.match(fit.note!, /gave them 4 unused padding rows/);
    assert.deepEqual(rows(fit.model)[263], rows(padded)[263]);
    assert.notDeepEqual(rows(fit.model)[257], rows(padded)[257]);

    // Nothing to add: the model as it was.
    const same = fitVocab("sft", original, byteTokenizer(), []);
    assert.equal(same.model, original);
    assert.equal(same.note, undefined);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sft init: the stage starts from the grown model (lr 1e-9 leaves it as fitVocab made it)", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const data = await writeData(dir);
    const init = join(dir, "gpt2-toy");
    await writeHfDir(init, byteTokenizer());
    const result = await pipeline("init", { workdir: join(dir, "work"), workers: 1 })
      .pipe(placeholder({}))
      .pipe(sft({ ...SFT, epochs: 1, lr: 1e-9, data: data.sft, init }))
      .execute({ command: "run", quiet: true });
    const saved = await loadModelDir(result.artifacts["sft"].dir);
    const { tokenizer, added } = withChatTokens(byteTokenizer(), {});
    const expected = fitVocab("sft", await loadModelDir(init), tokenizer, added).model;
    assert.equal(saved.params.length, expected.params.length);
    let worst = 0;
    for (let i = 0; i < saved.params.length; i++) {
      worst = Math.max(worst, Math.abs(saved.params[i] - expected.params[i]));
    }
    assert.ok(worst < 1e-6, `largest change ${worst}`);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("sft init: plain-text markers keep the vocabulary; a tokenizer that is not the model's is refused", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const data = await writeData(dir);
    const init = join(dir, "gpt2-toy");
    await writeHfDir(init, byteTokenizer());
    // (Short markers: a conversation fits the toy model's 32-token context.)
    const text = { system: "S:", user: "Q:", assistant: "\nA:", end: END_OF_TEXT };
    const result = await pipeline("init", { workdir: join(dir, "work"), workers: 1 })
      .pipe(placeholder({}))
      .pipe(sft({ ...SFT, data: data.sft, init, template: text }))
      .execute({ command: "run", quiet: true });
    const s = result.artifacts["sft"];
    assert.equal((await loadModelDir(s.dir)).config.vocab, 257);
    const tokenizer = await loadTokenizer(s.path("tokenizer.json"));
    assert.equal(tokenizer.vocabSize, 257);
    assert.deepEqual(Object.keys(tokenizer.specialTokens), [END_OF_TEXT]);
    assert.equal(s.stats.embeddingRowsAdded, undefined);
    const losses = (await s.readText("metrics.jsonl")).trim().split("\n").map((l) => JSON.parse(l))
      .filter((m) => "loss" in m).map((m) => m.loss as number);
    assert.ok(losses.at(-1)! < 0.8 * losses[0], `loss ${losses[0]} → ${losses.at(-1)}`);

    // A tokenizer with ordinary tokens past the model's 257 rows (BPE merges) is not this model's.
    const counter = new PieceCounter();
    counter.add("the quick brown fox jumps over the lazy dog ".repeat(20));
    const other = trainBpe(counter, { vocabSize: 280, specialTokens: [END_OF_TEXT] });
    const otherFile = join(dir, "other.json");
    await other.save(otherFile);
    await assert.rejects(
      pipeline("init", { workdir: join(dir, "work2"), workers: 1 })
        .pipe(placeholder({}))
        .pipe(sft({ ...SFT, data: data.sft, init, tokenizer: otherFile }))
        .execute({ command: "run", quiet: true }),
      (e: Error) => {
        assert.match(
          e.message,
          /tokenizer has 280 ids \(284 with the 4 chat tokens added\) but the model's vocabulary only 257/,
        );
        assert.match(e.message, /id 257 is an ordinary token/);
        return true;
      },
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
