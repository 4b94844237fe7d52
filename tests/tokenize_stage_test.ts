import { strict as assert } from "node:assert";
import { z } from "npm:zod@^4.6.7";
import { pipeline } from "../pipeline/pipeline.ts";
import { defineStage } from "../pipeline/stage.ts";
import { ConfigError, InterruptedError } from "../pipeline/errors.ts";
import { listFiles } from "../pipeline/workspace.ts";
import { join } from "node:path";
import { DocumentWriter } from "../stages/documents.ts";
import { isValidation, tokenize } from "../stages/tokenize.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { readTokenShard } from "../tokenizer/shards.ts";
import { END_OF_TEXT } from "../tokenizer/tokenizer.ts";
import type { Artifact } from "../pipeline/artifact.ts";
import { BROWN_DIR, brownTexts } from "./tokenizer_corpus.ts";

const brown = (await brownTexts()).slice(0, 45);

/** Source: the first Brown samples as 3 document shards (one gzipped), plus a malformed line. */
const brownDocs = defineStage({
  name: "brown-docs",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema: z.object({ shards: z.number().int().default(3) }),
  permissions: { read: [BROWN_DIR] },
  async run(ctx) {
    const per = Math.ceil(brown.length / ctx.config.shards);
    for (let s = 0; s < ctx.config.shards; s++) {
      const name = `docs-${s}.jsonl${s === 1 ? ".gz" : ""}`;
      const writer = new DocumentWriter(await ctx.out.create(name), s === 1);
      for (const { name, text } of brown.slice(s * per, (s + 1) * per)) {
        await writer.write({ id: name, text });
      }
      await writer.close();
    }
    await ctx.out.writeText("zz-bad.jsonl", '{"id": "bad", "text": 42}\n');
  },
});

const tokenizePipeline = (config: Parameters<typeof tokenize>[0], workdir: string, shards = 3) =>
  pipeline("tokenize-test", { workdir }).pipe(brownDocs({ shards })).pipe(tokenize(config));

const run = async (config: Parameters<typeof tokenize>[0], workers = 2) => {
  const result = await tokenizePipeline(config, await Deno.makeTempDir())
    .execute({ command: "run", quiet: true, workers });
  return result.artifacts["tokenize"];
};

/** Every document's text, from the token shards, in order: split at <|endoftext|>. */
async function documentsIn(artifact: Artifact, prefix: string): Promise<string[]> {
  const tok = await loadTokenizer(artifact.path("tokenizer.json"));
  const eot = tok.specialId(END_OF_TEXT);
  const texts: string[] = [];
  for (const file of artifact.files(".bin").filter((f) => f.startsWith(prefix)).sort()) {
    const tokens = await readTokenShard(artifact.path(file));
    assert.equal(tokens[0], eot, `${file} starts with a document separator`);
    let start = 1;
    for (let i = 1; i <= tokens.length; i++) {
      if (i === tokens.length || tokens[i] === eot) {
        texts.push(tok.decode(tokens.subarray(start, i)));
        start = i + 1;
      }
    }
  }
  return texts;
}

Deno.test("tokenize trains a BPE, writes train/val llm.c shards that decode to the documents", async () => {
  const artifact = await run({ bpe: { vocabSize: 1024 }, valFraction: 0.2 });
  const val = brown.filter((d) => isValidation(d.name, 0.2));
  assert.ok(val.length > 0 && val.length < brown.length / 2, `${val.length} validation documents`);
  assert.deepEqual(
    await documentsIn(artifact, "train-"),
    brown.filter((d) => !val.includes(d)).map((d) => d.text),
  );
  assert.deepEqual(await documentsIn(artifact, "val-"), val.map((d) => d.text));
  assert.ok(artifact.files(".bin").every((f) => /^(train|val)-0000[0-2]\.bin$/.test(f)));
  const stats = artifact.stats;
  assert.equal(stats.vocabSize, 1024);
  assert.equal(stats.tokenWidth, "uint16");
  assert.equal(stats.documents, brown.length);
  assert.equal(stats.valDocuments, val.length);
  assert.equal(stats.badLines, 1);
  let tokens = 0;
  for (const f of artifact.files(".bin")) tokens += (await readTokenShard(artifact.path(f))).length;
  assert.equal(stats.tokens, tokens);
  const textBytes = brown.reduce((n, d) => n + new TextEncoder().encode(d.text).length, 0);
  assert.equal(stats.textBytes, textBytes);
  assert.equal(stats.bytesPerToken, Math.round((textBytes / (tokens - brown.length)) * 1000) / 1000);
  assert.ok((stats.bytesPerToken as number) > 2.5, `${stats.bytesPerToken} bytes per token`);
});

Deno.test("tokenize output is byte-identical with 1 and 3 workers", async () => {
  const one = await run({ bpe: { vocabSize: 600 } }, 1);
  const three = await run({ bpe: { vocabSize: 600 } }, 3);
  assert.deepEqual(one.manifest.files, three.manifest.files);
  assert.equal(one.digest, three.digest);
});

Deno.test("an interrupted tokenize resumes from its finished shards and gives the same output", async () => {
  const config = { tokenizer: "gpt2", valFraction: 0.1 };
  const reference = await tokenizePipeline(config, await Deno.makeTempDir(), 15)
    .execute({ command: "run", quiet: true, workers: 1 });
  const workdir = await Deno.makeTempDir();
  const controller = new AbortController();
  // Interrupt as soon as the first shard's done-marker is written (tokenize's state dir).
  const poll = setInterval(async () => {
    const done = (await listFiles(join(workdir, "work", "tokenize")).catch(() => [])).filter((f) =>
      f.includes("state/done/")
    );
    if (done.length) controller.abort();
  }, 2);
  try {
    await assert.rejects(
      tokenizePipeline(config, workdir, 15).execute({
        command: "run",
        quiet: true,
        workers: 1,
        signal: controller.signal,
      }),
      InterruptedError,
    );
  } finally {
    clearInterval(poll);
  }
  const resumed = await tokenizePipeline(config, workdir, 15).execute({
    command: "run",
    quiet: true,
    workers: 1,
  });
  assert.equal(resumed.stages.find((s) => s.id === "tokenize")?.action, "resumed");
  assert.deepEqual(resumed.artifacts.tokenize.manifest.files, reference.artifacts.tokenize.manifest.files);
});

Deno.test("tokenize with GPT-2's vocabulary gives tiktoken's ids, plus the chat tokens", async () => {
  const artifact = await run({ tokenizer: "gpt2", valFraction: 0 });
  const gpt2 = await loadTokenizer("gpt2");
  const first = await readTokenShard(artifact.path("train-00000.bin"));
  assert.ok(first instanceof Uint16Array);
  assert.deepEqual([...first.subarray(0, 1 + gpt2.encode(brown[0].text).length)], [
    50256,
    ...gpt2.encode(brown[0].text),
  ]);
  const saved = await loadTokenizer(artifact.path("tokenizer.json"));
  assert.equal(saved.vocabSize, 50261);
  assert.equal(saved.specialId("<|assistant|>"), 50259);
  assert.deepEqual(artifact.files(".bin").filter((f) => f.startsWith("val-")), []);
});

Deno.test("tokenize with cl100k_base writes uint32 shards", async () => {
  const artifact = await run({ tokenizer: "cl100k_base", valFraction: 0 });
  assert.equal(artifact.stats.tokenWidth, "uint32");
  const tokens = await readTokenShard(artifact.path("train-00002.bin"));
  assert.ok(tokens instanceof Uint32Array);
  assert.equal(tokens[0], 100257);
});

Deno.test("tokenize config errors name the field", async () => {
  assert.throws(() => tokenize({ bpe: { vocabSize: 100 } }), (e: unknown) => {
    assert.ok(e instanceof ConfigError);
    assert.equal(e.field, "bpe.vocabSize");
    return true;
  });
  await assert.rejects(run({}), /stage "tokenize": config\.bpe: give bpe: \{ vocabSize \} to train/);
  await assert.rejects(
    run({ bpe: { vocabSize: 300, specialTokens: ["<|user|>"] } }),
    /config\.bpe\.specialTokens: must include <\|endoftext\|>/,
  );
  await assert.rejects(
    run({ tokenizer: "/nonexistent/tok.json" }),
    /\/nonexistent\/tok\.json: no such file \(nor a tokenizer name: gpt2, cl100k_base\)/,
  );
});
