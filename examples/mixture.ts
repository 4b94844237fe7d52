/**
 * GPT-3's training mixture in miniature: the pipeline branches and meets again. A cleaned web crawl
 * (the demo's two archives, deduplicated and quality-filtered), the Brown corpus standing in for
 * "Books" and the example data's README standing in for Wikipedia, mixed into one set of token shards by
 * weight (share of the training tokens) or epochs (passes over a small, high-quality source), as GPT-3
 * did (Common Crawl 60 %, WebText2 22 %, Books 16 %, Wikipedia 3 %, with Wikipedia seen 3.4 times).
 *
 *   deno task mixture            # run it; .kiln/report-mixture.html shows the achieved shares
 *   deno task mixture status
 * @module
 */
import { brown } from "./brown.ts";
import { crawl, dedupe, mix, pipeline, pretrain, qualityFilter } from "../mod.ts";

const here = (path: string) => new URL(path, import.meta.url).pathname;

export const mixture = pipeline("mixture", { workdir: ".kiln" })
  // Branch 1: the web, cleaned.
  .pipe(crawl({ warc: [here("./data/*.warc.gz")] }).as("crawl"))
  .pipe(dedupe({}))
  .pipe(qualityFilter({ gopherRepetition: false, gopherQuality: { minDocWords: 20 } }).as("web"))
  // Branch 2: books.
  .branch(brown({ samples: 3 }).as("books"))
  // Branch 3: a small, clean reference corpus, seen several times.
  .branch(crawl({ files: [here("./data/README.md")] }).as("reference"))
  // The branches meet: books and the reference corpus 3:1 by weight, and the web text (a few hundred
  // words in these two small archives) four times over.
  .branch(mix({
    bpe: { vocabSize: 1024 },
    sources: { web: { epochs: 4 }, books: { weight: 0.75 }, reference: { weight: 0.25 } },
  }))
  .pipe(
    pretrain({
      model: { layers: 1, dim: 32, heads: 2, context: 64 },
      steps: 20,
      batch: 4,
      seqLen: 64,
      backend: "cpu",
    }),
  );

if (import.meta.main) await mixture.run();
