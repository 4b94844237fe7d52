/**
 * The quality filters as one chain, datatrove style: each step sees the documents the steps before it
 * kept, drops a document with a reason or passes it on (possibly changed: C4 removes lines, PII masking
 * rewrites addresses), and counts what it did. The chain is built from plain JSON options, so a worker
 * thread can build the same chain from its shard's arguments.
 *
 * {@linkcode FILTERS} lists the built-in filters in the order they run; the stage's config schema is
 * made from it. A new filter is a module exporting a `FilterModule` (see `filter.ts`) and a line here.
 * Filters of your own (`custom.ts`) run after the rule filters, before the classifier and PII masking.
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
import { ConfigError } from "../../pipeline/errors.ts";
import type { Document } from "../documents.ts";
import { c4Module } from "./c4.ts";
import { classifierModule } from "./classifier.ts";
import { buildCustomFilter, type CustomFilterOptions } from "./custom.ts";
import type { FilterModule, FilterStep, Verdict } from "./filter.ts";
import { finewebModule } from "./fineweb.ts";
import { gopherQualityModule } from "./gopher_quality.ts";
import { gopherRepetitionModule } from "./gopher_repetition.ts";
import { languageModule } from "./language.ts";
import { lengthModule } from "./length.ts";
import { piiModule } from "./pii.ts";
import { urlsModule } from "./urls.ts";

export * from "./c4.ts";
export * from "./classifier.ts";
export * from "./custom.ts";
export * from "./filter.ts";
export * from "./fineweb.ts";
export * from "./gopher_quality.ts";
export * from "./gopher_repetition.ts";
export * from "./language.ts";
export * from "./length.ts";
export * from "./pii.ts";
export * from "./text.ts";
export * from "./urls.ts";

/** The built-in filters, in the order they run. Custom filters run before {@linkcode CUSTOM_BEFORE}. */
export const FILTERS = [
  lengthModule,
  urlsModule,
  languageModule,
  gopherRepetitionModule,
  gopherQualityModule,
  c4Module,
  finewebModule,
  classifierModule,
  piiModule,
] as const;

/** The built-in filter that custom filters run before. */
export const CUSTOM_BEFORE = "classifier";

type Builtin = (typeof FILTERS)[number];
type OptionsOf<F> = F extends FilterModule<string, unknown, infer O> ? O : never;

/**
 * Options of the chain; a built-in step runs when its key is present (settings left out take the
 * filter's defaults), then the custom filters listed.
 */
export type ChainOptions =
  & { [F in Builtin as F["name"]]?: Partial<OptionsOf<F>> }
  & { custom?: CustomFilterOptions[] };

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

/** Builds the chain (loads block lists, the language model, the classifier and custom filters as needed). */
export async function buildChain(o: ChainOptions): Promise<Chain> {
  const steps: FilterStep[] = [];
  const custom = new Map<FilterStep, number>();
  const options = o as Record<string, unknown>;
  for (const filter of FILTERS as readonly FilterModule[]) {
    if (filter.name === CUSTOM_BEFORE) {
      for (const [i, c] of (o.custom ?? []).entries()) {
        const step = await buildCustomFilter(c, i);
        custom.set(step, i);
        steps.push(step);
      }
    }
    const given = options[filter.name];
    if (given !== undefined) steps.push(await filter.build({ ...filter.defaults, ...given as object }));
  }
  // Names key the stats and the `excluded/` folders, so they must differ.
  for (const step of custom.keys()) {
    if (steps.filter((s) => s.name === step.name).length > 1) {
      throw new ConfigError(
        "quality-filter",
        ["custom", String(custom.get(step)), "name"],
        `"${step.name}" is also the name of a built-in filter: give the custom one a "name" of its own`,
      );
    }
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
