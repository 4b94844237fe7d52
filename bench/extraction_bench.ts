/**
 * Main-text extraction quality and speed on `../shared/data/extraction` (trafilatura's evaluation set:
 * 990 real pages, raw bytes). Prints F1, precision, recall and accuracy with the metric of the set's
 * README, and pages/s for what the crawl stage does per page: charset decoding, extraction and
 * language identification, on one core (this thread) — per second of wall time and per second of
 * this process's CPU time (the fair figure on a shared machine), the median of three passes over the
 * set. Then the time to extract the text and the links of pages of 50,000 to 200,000 nested
 * elements, which grows linearly.
 *
 *   deno run -A bench/extraction_bench.ts            # the whole set, then deep nesting
 *   deno run -A bench/extraction_bench.ts --passes 5 # the median of 5 timed passes (default 3)
 *   deno run -A bench/extraction_bench.ts --worst 20 # also list the 20 pages with the lowest F1
 *
 * The set is skipped with a message when it is absent (users don't have it).
 * @module
 */
import { gunzipSync } from "node:zlib";
import process from "node:process";
import { pageText } from "../stages/crawl/sources.ts";
import { detectLanguage, extractText } from "../stages/crawl/extract.ts";
import { extractLinks } from "../stages/crawl/crawler.ts";

/** Where the evaluation set lives, relative to this repository. */
export const EXTRACTION_SET = new URL("../../shared/data/extraction/", import.meta.url).pathname;

interface EvalPage {
  file: string;
  with: string[];
  without: string[];
}

/** Counts of the set's metric (README): segments found or not, summed over pages. */
export interface Counts {
  tp: number;
  fp: number;
  tn: number;
  fn: number;
}

/** Scores of one run over the set. */
export interface ExtractionScores extends Counts {
  pages: number;
  precision: number;
  recall: number;
  accuracy: number;
  f1: number;
  /** Pages per second for decode + extract + language id (gunzip and scoring not counted). */
  pagesPerSecond: number;
  /** The same per second of this process's CPU time (user + system). */
  pagesPerCpuSecond: number;
  /** Timed passes over the set: the speeds above are the median ones (the texts are the same). */
  passes: number;
  /** Per page: url, file and its own counts, to find the worst pages. */
  perPage: { url: string; file: string; counts: Counts }[];
}

const normalise = (s: string) => s.replace(/\s+/g, " ").trim();

/** The metric of the set's README for one page. */
export function scorePage(text: string, page: EvalPage): Counts {
  const extracted = normalise(text);
  const c = { tp: 0, fp: 0, tn: 0, fn: 0 };
  for (const segment of page.with) extracted.includes(normalise(segment)) ? c.tp++ : c.fn++;
  for (const segment of page.without) extracted.includes(normalise(segment)) ? c.fp++ : c.tn++;
  return c;
}

/** Whether the evaluation set is present. */
export async function haveExtractionSet(): Promise<boolean> {
  return await Deno.stat(`${EXTRACTION_SET}evaldata.json`).then(() => true, () => false);
}

/**
 * Runs the crawl stage's page path (decode, extract, language id) over the set and scores it, timing
 * `passes` passes (a shared machine's speed varies from one second to the next).
 */
export async function evaluateExtraction(dir = EXTRACTION_SET, passes = 1): Promise<ExtractionScores> {
  const evaldata: Record<string, EvalPage> = JSON.parse(await Deno.readTextFile(`${dir}evaldata.json`));
  const entries = Object.entries(evaldata);
  const raw = entries.map(([, page]) =>
    new Uint8Array(gunzipSync(Deno.readFileSync(`${dir}pages/${page.file}`)))
  );
  let texts: string[] = [];
  // Warm up the JIT on the first 100 pages (a crawl stage worker sees thousands), then time them all.
  for (const bytes of raw.slice(0, 100)) detectLanguage(pageText(bytes, "text/html").text);
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let pass = 0; pass < passes; pass++) {
    texts = [];
    const start = performance.now();
    const cpuStart = process.cpuUsage();
    for (const bytes of raw) {
      const { text } = pageText(bytes, "text/html");
      detectLanguage(text);
      texts.push(text);
    }
    const used = process.cpuUsage(cpuStart);
    cpu.push((used.user + used.system) / 1e6);
    wall.push((performance.now() - start) / 1000);
  }
  const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
  const total: Counts = { tp: 0, fp: 0, tn: 0, fn: 0 };
  const perPage = entries.map(([url, page], i) => {
    const counts = scorePage(texts[i], page);
    total.tp += counts.tp, total.fp += counts.fp, total.tn += counts.tn, total.fn += counts.fn;
    return { url, file: page.file, counts };
  });
  const precision = total.tp / (total.tp + total.fp);
  const recall = total.tp / (total.tp + total.fn);
  return {
    ...total,
    pages: entries.length,
    precision,
    recall,
    accuracy: (total.tp + total.tn) / (total.tp + total.fp + total.tn + total.fn),
    f1: (2 * precision * recall) / (precision + recall),
    pagesPerSecond: entries.length / median(wall),
    pagesPerCpuSecond: entries.length / median(cpu),
    passes,
    perPage,
  };
}

/** Milliseconds (wall and CPU) to extract the text and the links of `depth` nested `<div>`s. */
export function deepNesting(
  depth: number,
): { bytes: number; textMs: number; textCpuMs: number; linksMs: number } {
  const html = "<div>".repeat(depth) + '<p>deep <a href="/x">link</a></p>' + "</div>".repeat(depth);
  let start = performance.now();
  const cpuStart = process.cpuUsage();
  extractText(html);
  const cpu = process.cpuUsage(cpuStart);
  const textMs = performance.now() - start;
  start = performance.now();
  extractLinks(html, "https://example.com/");
  return {
    bytes: html.length,
    textMs,
    textCpuMs: (cpu.user + cpu.system) / 1000,
    linksMs: performance.now() - start,
  };
}

if (import.meta.main) {
  const f = (x: number) => x.toFixed(3);
  if (!(await haveExtractionSet())) {
    console.log(`skipping the extraction set: ${EXTRACTION_SET} is absent`);
  } else {
    const passesAt = Deno.args.indexOf("--passes");
    const s = await evaluateExtraction(
      EXTRACTION_SET,
      passesAt >= 0 ? Number(Deno.args[passesAt + 1]) || 3 : 3,
    );
    console.log(
      `${s.pages} pages: F1 ${f(s.f1)}  precision ${f(s.precision)}  recall ${f(s.recall)}  accuracy ${
        f(s.accuracy)
      }  (TP ${s.tp} FP ${s.fp} TN ${s.tn} FN ${s.fn})  ${s.pagesPerSecond.toFixed(0)} pages/s wall, ${
        s.pagesPerCpuSecond.toFixed(0)
      } pages per CPU second (median of ${s.passes} passes)`,
    );
    const worstAt = Deno.args.indexOf("--worst");
    if (worstAt >= 0) {
      const n = Number(Deno.args[worstAt + 1] ?? 20);
      const pageF1 = ({ tp, fp, fn }: Counts) => (tp === 0 ? 0 : (2 * tp) / (2 * tp + fp + fn));
      for (const p of [...s.perPage].sort((a, b) => pageF1(a.counts) - pageF1(b.counts)).slice(0, n)) {
        const { tp, fp, tn, fn } = p.counts;
        console.log(`${p.file}  F1 ${f(pageF1(p.counts))}  TP ${tp} FP ${fp} TN ${tn} FN ${fn}  ${p.url}`);
      }
      Deno.exit(0);
    }
  }
  deepNesting(10_000); // warm up
  for (const depth of [50_000, 100_000, 200_000]) {
    const d = deepNesting(depth);
    console.log(
      `${depth} nested elements (${(d.bytes / 1e6).toFixed(1)} MB): text ${d.textMs.toFixed(0)} ms (CPU ${
        d.textCpuMs.toFixed(0)
      } ms), links ${d.linksMs.toFixed(0)} ms`,
    );
  }
}
