/**
 * The demo pipeline: InstructGPT's recipe end to end, at toy scale so it runs in seconds on a laptop
 * CPU. Real web archives in (examples/data/*.warc.gz), then dedupe and quality filter; a second branch
 * of books (the Brown corpus, examples/brown.ts), since two small archives hold only a few hundred
 * words of real text; the two mixed into token shards with a BPE tokenizer trained on both (GPT-3's
 * mixture in miniature: the small, clean web text seen four times), a tiny GPT pretrained on them,
 * and the three alignment steps on the checkable arithmetic/string task of examples/data/*.jsonl
 * (made by examples/make_rlhf_data.ts).
 *
 *   deno task demo              # run it (again: every stage is cached)
 *   deno task demo status       # what is done, and why a stage would rerun
 *   deno task demo plan         # what a run would do
 *
 * The models are far too small to learn much: the demo shows the pipeline's shape, caching and
 * resumption, not model quality. Scale `model`, `steps` and the data up for real runs.
 * @module
 */
import { crawl, dedupe, mix, pipeline, ppo, pretrain, qualityFilter, rewardModel, sft } from "../mod.ts";
import { brown } from "./brown.ts";

const data = (name: string) => new URL(`./data/${name}`, import.meta.url).pathname;
const model = { layers: 1, dim: 32, heads: 2, context: 48 };
// The CPU backend makes the demo's numbers the same to the bit on every machine; "auto" (the default)
// trains on a GPU where there is one.
const backend = "cpu";

/** The demo pipeline as a value: `deno run` runs it as a CLI; tests run it in a workdir of their own. */
export const demo = pipeline("demo", { workdir: ".kiln" })
  .pipe(crawl({ warc: [data("*.warc.gz")] }))
  .pipe(dedupe({}))
  .pipe(qualityFilter({ gopherRepetition: false, gopherQuality: { minDocWords: 20 } }))
  .branch(brown({ samples: 12 }).as("books"))
  .branch(
    mix({
      bpe: { vocabSize: 400 },
      valFraction: 0.1,
      sources: { web: { epochs: 4 }, books: { weight: 1 } },
    })
      .from({ web: "quality-filter" }),
  )
  .pipe(
    pretrain({
      model,
      steps: 30,
      batch: 4,
      seqLen: 32,
      warmup: 5,
      logEvery: 5,
      checkpointEvery: 10,
      backend,
    }),
  )
  .pipe(sft({ data: data("sft.jsonl"), epochs: 1, batch: 8, lr: 1e-2, warmup: 2, logEvery: 5, backend }))
  .pipe(rewardModel({ data: data("comparisons.jsonl"), epochs: 1, batch: 8, lr: 1e-2, warmup: 2, backend }))
  .pipe(
    ppo({
      prompts: data("prompts.jsonl"),
      iterations: 2,
      batch: 8,
      minibatch: 4,
      ppoEpochs: 1,
      maxTokens: 8,
      backend,
    }),
  );

if (import.meta.main) await demo.run();
