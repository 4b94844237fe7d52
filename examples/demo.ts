/**
 * The demo pipeline: real web archives in, through every stage that has landed.
 *
 *   deno task demo              # run it (again: every stage is cached)
 *   deno task demo status       # what is done, and why a stage would rerun
 *   deno task demo report       # .kiln/report.html
 * @module
 */
import { crawl, pipeline } from "../mod.ts";

const data = new URL("./data/", import.meta.url).pathname;

await pipeline("demo", { workdir: ".kiln" })
  .pipe(crawl({ warc: [`${data}*.warc.gz`] }))
  .run();
