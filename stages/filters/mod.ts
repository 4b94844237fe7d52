/**
 * The quality filters as one chain, datatrove style: each step sees the documents the steps before it
 * kept, drops a document with a reason or passes it on (possibly changed: C4 removes lines, PII masking
 * rewrites addresses), and counts what it did. The chain is built from plain JSON options, so a worker
 * thread can build the same chain from its shard's arguments.
 *
 * @example
 * ```ts
 * import { buildChain } from "./mod.ts";
 * const chain = await buildChain({ gopherQuality: {}, c4: {} });
 * const verdict = chain.apply({ id: "1", text: "Some text." });
 * if ("drop" in verdict) console.log(verdict.filter, verdict.drop);
 * ```
 * @module
 */
import type { Document } from "../documents.ts";
import { C4_DEFAULTS, c4Filter, type C4Options } from "./c4.ts";
import { type ClassifierModel, paretoKeep, QualityClassifier } from "./classifier.ts";
import { FINEWEB_DEFAULTS, finewebFilter, type FineWebOptions } from "./fineweb.ts";
import {
  GOPHER_QUALITY_DEFAULTS,
  GOPHER_REPETITION_DEFAULTS,
  gopherQuality,
  type GopherQualityOptions,
  gopherRepetition,
  type GopherRepetitionOptions,
} from "./gopher.ts";
import {
  eldDetector,
  lengthFilter,
  type LengthOptions,
  maskPii,
  PII_DEFAULTS,
  type PiiOptions,
  UrlBlockList,
} from "./simple.ts";

export * from "./c4.ts";
export * from "./classifier.ts";
export * from "./fineweb.ts";
export * from "./gopher.ts";
export * from "./simple.ts";
export * from "./text.ts";

/** Options of the chain; a step runs when its key is present. Steps run in the order listed here. */
export interface ChainOptions {
  length?: LengthOptions;
  urls?: { domains?: string[]; domainFiles?: string[]; words?: string[] };
  language?: { languages: string[]; minScore: number };
  gopherRepetition?: Partial<GopherRepetitionOptions>;
  gopherQuality?: Partial<GopherQualityOptions>;
  c4?: Partial<C4Options>;
  fineweb?: Partial<FineWebOptions>;
  classifier?: {
    /** Path of `classifier.json`. */
    model: string;
    mode: "pareto" | "threshold";
    alpha: number;
    threshold: number;
    seed: number;
  };
  pii?: Partial<PiiOptions>;
}

/** A step's verdict: dropped with a reason, or kept (as `doc`, maybe changed) with counts of changes. */
export type Verdict =
  | { drop: string; meta?: Record<string, unknown> }
  | { doc: Document; changes?: Record<string, number> };

/** One filter of the chain. */
export interface FilterStep {
  name: string;
  apply(doc: Document): Verdict;
}

/** The chain's verdict on a document: dropped by a filter with a reason, or kept. */
export type ChainVerdict =
  | { filter: string; drop: string; meta?: Record<string, unknown> }
  | { doc: Document };

/** A built chain. */
export interface Chain {
  steps: FilterStep[];
  /** Runs the steps in order; `onStep` sees each step's verdict (for stats). */
  apply(doc: Document, onStep?: (step: string, verdict: Verdict, before: Document) => void): ChainVerdict;
}

const text = (name: string, f: (text: string) => string | undefined): FilterStep => ({
  name,
  apply: (doc) => {
    const reason = f(doc.text);
    return reason ? { drop: reason } : { doc };
  },
});

/** Builds the chain (loads block lists, the language model and the classifier as needed). */
export async function buildChain(o: ChainOptions): Promise<Chain> {
  const steps: FilterStep[] = [];
  if (o.length) steps.push(text("length", (t) => lengthFilter(t, o.length!)));
  if (o.urls) {
    const domains = [...o.urls.domains ?? []];
    for (const file of o.urls.domainFiles ?? []) {
      domains.push(...UrlBlockList.parseList(await Deno.readTextFile(file)));
    }
    const list = new UrlBlockList(domains, o.urls.words ?? []);
    steps.push({ name: "urls", apply: (doc) => maybeDrop(list.check(doc.url), doc) });
  }
  if (o.language) {
    const detect = await eldDetector();
    const wanted = new Set(o.language.languages);
    const minScore = o.language.minScore;
    steps.push({
      name: "language",
      apply: (doc) => {
        const { language, score } = detect(doc.text);
        if (!wanted.has(language)) return { drop: `language_${language || "unknown"}` };
        if (score < minScore) return { drop: "language_score_below_threshold" };
        return { doc: { ...doc, meta: { ...doc.meta, language, language_score: round(score) } } };
      },
    });
  }
  if (o.gopherRepetition) {
    const opts = { ...GOPHER_REPETITION_DEFAULTS, ...o.gopherRepetition };
    steps.push(text("gopher_repetition", (t) => gopherRepetition(t, opts)));
  }
  if (o.gopherQuality) {
    const opts = { ...GOPHER_QUALITY_DEFAULTS, ...o.gopherQuality };
    steps.push(text("gopher_quality", (t) => gopherQuality(t, opts)));
  }
  if (o.c4) {
    const opts = { ...C4_DEFAULTS, ...o.c4 };
    steps.push({
      name: "c4",
      apply: (doc) => {
        const r = c4Filter(doc.text, opts);
        if ("reason" in r) return { drop: r.reason };
        return { doc: r.text === doc.text ? doc : { ...doc, text: r.text }, changes: r.removedLines };
      },
    });
  }
  if (o.fineweb) {
    const opts = { ...FINEWEB_DEFAULTS, ...o.fineweb };
    steps.push(text("fineweb", (t) => finewebFilter(t, opts)));
  }
  if (o.classifier) {
    const c = o.classifier;
    const model = new QualityClassifier(JSON.parse(await Deno.readTextFile(c.model)) as ClassifierModel);
    steps.push({
      name: "classifier",
      apply: (doc) => {
        const score = model.score(doc.text);
        const keep = c.mode === "pareto" ? paretoKeep(score, doc.id, c.alpha, c.seed) : score >= c.threshold;
        return keep ? { doc: { ...doc, meta: { ...doc.meta, quality_score: round(score) } } } : {
          drop: c.mode === "pareto" ? "classifier_pareto" : "classifier_below_threshold",
          meta: { quality_score: round(score) },
        };
      },
    });
  }
  if (o.pii) {
    const opts = { ...PII_DEFAULTS, ...o.pii };
    steps.push({
      name: "pii",
      apply: (doc) => {
        const r = maskPii(doc.text, opts);
        if (!r.emails && !r.ips) return { doc };
        return { doc: { ...doc, text: r.text }, changes: { emails_masked: r.emails, ips_masked: r.ips } };
      },
    });
  }
  return {
    steps,
    apply(doc, onStep) {
      for (const step of steps) {
        const verdict = step.apply(doc);
        onStep?.(step.name, verdict, doc);
        if ("drop" in verdict) return { filter: step.name, ...verdict };
        doc = verdict.doc;
      }
      return { doc };
    },
  };
}

function maybeDrop(reason: string | undefined, doc: Document): Verdict {
  return reason ? { drop: reason } : { doc };
}

function round(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
