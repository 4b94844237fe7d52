/**
 * What a built-in quality filter is: a module exporting one {@linkcode FilterModule} (its config field,
 * the schema of that field, its defaults and how to build its step), listed once in `FILTERS` in
 * `mod.ts`. The stage's config schema, permissions, cache-key files and the chain are all made from
 * that list, so a new filter is one file and one line.
 *
 * @example A filter that drops documents with too few lines
 * ```ts
 * import { z } from "npm:zod@^4.6.7";
 * import { filterModule, textStep, toggle } from "./filter.ts";
 *
 * export const linesModule = filterModule({
 *   name: "lines",
 *   schema: toggle({ minLines: z.number().int().min(0) }, false),
 *   defaults: { minLines: 3 },
 *   build: (o: { minLines: number }) =>
 *     textStep("lines", (t) => t.split("\n").length < o.minLines ? "too_few_lines" : undefined),
 * });
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import type { Document } from "../documents.ts";

/** A step's verdict: dropped with a reason, or kept (as `doc`, maybe changed) with counts of changes. */
export type Verdict =
  | { drop: string; meta?: Record<string, unknown> }
  | { doc: Document; changes?: Record<string, number> };

/** One filter of the chain, as built in a shard worker. */
export interface FilterStep {
  /** Its name in the stats and in `excluded/<name>/`. */
  name: string;
  apply(doc: Document): Verdict;
}

/** What the stage hands a filter's {@linkcode FilterModule.prepare} (a part of the stage's context). */
export interface PrepareContext {
  /** The input's document shards (paths). */
  inputs: string[];
  out: {
    exists(rel: string): Promise<boolean>;
    path(rel: string): string;
    writeJson(rel: string, v: unknown): Promise<void>;
  };
  stats: { set(name: string, value: unknown): void };
  log(message: string): void;
}

/** A built-in filter. `Value` is its config field's validated value, `Options` what its step is built from. */
export interface FilterModule<Name extends string = string, Value = unknown, Options = unknown> {
  /** Its field in the stage's config and in the chain's options (`c4`, `gopherQuality`). */
  name: Name;
  /** The schema of its config field; its default says whether the filter runs when the field is left out. */
  schema: z.ZodType<Value>;
  /** The settings it runs with (the paper's, as datatrove has them); the config overrides some. */
  defaults: Partial<Options>;
  /** A config field that switches this filter off together with others of its group (`gopher: false`). */
  group?: string;
  /** Files its config names: the stage may read them, and they are part of its cache key. */
  files?(value: Value): string[];
  /**
   * From the config field to the JSON options the shard workers build the step from; undefined leaves
   * it out. Runs once in the stage before the shards (the classifier trains here). By default `false`
   * is off, `true` the defaults, an object some settings.
   */
  prepare?(
    value: Value,
    ctx: PrepareContext,
  ): Promise<Partial<Options> | undefined> | Partial<Options> | undefined;
  /** Builds the step from its defaults overridden by the prepared options (in each shard worker). */
  build(options: Options): FilterStep | Promise<FilterStep>;
}

/** Declares a filter module, keeping its name, group and types for the stage's config type. */
export function filterModule<Name extends string, S extends z.ZodType, Options, Group extends string = never>(
  m: FilterModule<Name, z.output<S>, Options> & { schema: S; group?: Group },
): FilterModule<Name, z.output<S>, Options> & { schema: S; group?: Group } {
  return m;
}

/** A config field that is `true` (the defaults), `false` (off) or an object overriding some settings. */
export const toggle = <T extends z.ZodRawShape>(shape: T, on: boolean) =>
  z.union([z.boolean(), z.strictObject(shape).partial()]).default(on);

/** A config field that is `false` (off, the default) or an object of settings. */
export const optional = <T extends z.ZodType>(settings: T) =>
  z.union([z.literal(false), settings]).default(false);

/** A non-negative ratio or threshold. */
export const ratio = z.number().min(0);

/** A step that drops a document when `reason(text)` gives a reason. */
export function textStep(name: string, reason: (text: string) => string | undefined): FilterStep {
  return {
    name,
    apply: (doc) => {
      const why = reason(doc.text);
      return why ? { drop: why } : { doc };
    },
  };
}

/** Rounds a score for `meta` (four decimals). */
export function round(x: number): number {
  return Math.round(x * 1e4) / 1e4;
}
