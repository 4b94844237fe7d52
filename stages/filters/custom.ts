/**
 * Filters of your own: a module that exports a function `(doc, config) => true | "reason"` (true keeps
 * the document, a string drops it with that reason, false drops it too), or an object
 * `{ schema?, build(config) }` whose `build` returns such a function once per shard (to compile patterns
 * or load a word list once; `schema`, a zod schema, validates the config). The quality-filter stage
 * names it by module and export, with its config:
 *
 * ```ts
 * // no_shouting.ts
 * export function noShouting(doc: { text: string }, config: { maxUpper: number }) {
 *   const letters = doc.text.replace(/[^\p{L}]/gu, "");
 *   const upper = letters.replace(/[^\p{Lu}]/gu, "").length;
 *   return upper <= config.maxUpper * letters.length || "too_much_upper_case";
 * }
 * // pipeline.ts
 * import { qualityFilter } from "../quality_filter.ts"; // kiln's mod.ts, from your project
 * qualityFilter({
 *   custom: [{ module: import.meta.resolve("./no_shouting.ts"), export: "noShouting", config: { maxUpper: 0.5 } }],
 * });
 * ```
 *
 * Custom filters run after the rule filters (Gopher, C4, FineWeb) and before the classifier and PII
 * masking, in the order listed. The module and everything it imports are part of the stage's cache key
 * (editing it reruns the stage; import little, since kiln's `mod.ts` would bring all of kiln in), and
 * the stage's process may read them and nothing else of yours. A module is a local file (a path,
 * relative to the working directory, or a `file:` URL): kiln runs exactly the code it hashed, which it
 * cannot promise for a URL it does not fetch itself.
 * @module
 */
import { basename, extname, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { z } from "npm:zod@^4.6.7";
import { ConfigError, KilnError } from "../../pipeline/errors.ts";
import { validateConfig } from "../../pipeline/stage.ts";
import type { Document } from "../documents.ts";
import type { FilterStep } from "./filter.ts";

/**
 * A filter's verdict on one document: `true` keeps it, a string drops it with that reason (`false`
 * drops it with the filter's name as the reason).
 */
export type FilterResult = boolean | string;

/** A filter of your own as a plain function of the document and the config given in the pipeline. */
export type DocumentFilter<C = Record<string, unknown>> = (doc: Document, config: C) => FilterResult;

/** A filter of your own with a config schema (zod) and a setup step run once per shard. */
export interface UserFilterModule<C = Record<string, unknown>> {
  /** Validates the config (defaults applied); errors name the field as `custom.<i>.config.<field>`. */
  schema?: z.ZodType<C>;
  build(config: C): ((doc: Document) => FilterResult) | Promise<(doc: Document) => FilterResult>;
}

/** A filter name: letters, digits, `_`, `-`, `.` (it names a folder, `excluded/<name>/`). */
const NAME = /^[A-Za-z0-9_][\w.-]*$/;

/** The `custom` field of the quality-filter stage's config. */
export const customSchema = z.array(z.strictObject({
  /** The module: a local path (relative to the working directory) or a `file:` URL. */
  module: z.string().refine((m) => !/^[a-z][a-z0-9+.-]*:/i.test(m) || m.startsWith("file:"), {
    message: "a custom filter's module must be a local file (a path or a file: URL)",
  }),
  /** The export: a function `(doc, config) => true | "reason"` or `{ schema?, build(config) }`. */
  export: z.string().default("default"),
  /** Its name in the stats and in `excluded/<name>/` (default: the export's name, or the file's). */
  name: z.string().regex(NAME, 'use letters, digits, "_", "-" or "."').optional(),
  /** Its settings, handed to it as they are (or validated by its `schema`). */
  config: z.record(z.string(), z.unknown()).default({}),
})).superRefine((filters, ctx) => {
  const seen = new Set<string>();
  filters.forEach((f, i) => {
    const name = customName(f);
    if (seen.has(name)) {
      ctx.addIssue({
        code: "custom",
        path: [i, "name"],
        message: `two custom filters are named "${name}": give one a "name" of its own`,
      });
    }
    seen.add(name);
  });
});

/** One custom filter as configured. */
export type CustomFilterConfig = z.output<typeof customSchema>[number];

/** What a shard worker builds a custom filter from: the module as a `file:` URL, its export, name and config. */
export interface CustomFilterOptions {
  module: string;
  export: string;
  name: string;
  config: Record<string, unknown>;
}

/** The name a custom filter goes by. */
export function customName(f: { module: string; export: string; name?: string }): string {
  if (f.name) return f.name;
  if (f.export !== "default") return f.export;
  const file = f.module.startsWith("file:") ? fileURLToPath(f.module) : f.module;
  return basename(file, extname(file)).replace(/[^\w.-]/g, "_");
}

/**
 * The path of a configured module, as given (a relative one is resolved when used: a YAML pipeline's
 * paths are relative to its file, the folder the command changes to before running).
 */
export function customPath(module: string): string {
  return module.startsWith("file:") ? fileURLToPath(module) : module;
}

/** The options shard workers build the custom filters from. */
export function customOptions(filters: CustomFilterConfig[]): CustomFilterOptions[] {
  return filters.map((f) => ({
    module: pathToFileURL(resolve(customPath(f.module))).href,
    export: f.export,
    name: customName(f),
    config: f.config,
  }));
}

/**
 * Imports a custom filter and builds its step. Errors name the filter's place in the config
 * (`custom.<index>`); `index` is its position in the list.
 */
export async function buildCustomFilter(o: CustomFilterOptions, index: number): Promise<FilterStep> {
  const fail = (field: string[], detail: string) =>
    new ConfigError("quality-filter", ["custom", String(index), ...field], detail);
  let mod: Record<string, unknown>;
  try {
    mod = await import(o.module);
  } catch (e) {
    throw fail(["module"], `cannot import ${o.module}: ${(e as Error).message.split("\n")[0]}`);
  }
  const value = mod[o.export];
  let test: (doc: Document) => unknown;
  if (typeof value === "function") {
    test = (doc) => (value as DocumentFilter)(doc, o.config);
  } else if (value && typeof value === "object" && typeof (value as UserFilterModule).build === "function") {
    const filter = value as UserFilterModule;
    let config: Record<string, unknown> = o.config;
    if (filter.schema) {
      try {
        config = validateConfig("quality-filter", filter.schema, o.config) as Record<string, unknown>;
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        throw fail(["config", ...e.field ? e.field.split(".") : []], e.detail);
      }
    }
    test = await filter.build(config);
  } else {
    throw fail(
      ["export"],
      `${o.module} exports ${
        value === undefined ? `nothing named "${o.export}"` : `a ${typeof value} as "${o.export}"`
      }; ` +
        'expected a function (doc, config) => true | "reason", or { schema?, build(config) }',
    );
  }
  return {
    name: o.name,
    apply: (doc) => {
      const verdict = test(doc);
      if (verdict === true) return { doc };
      if (verdict === false) return { drop: o.name };
      if (typeof verdict === "string" && verdict) return { drop: verdict };
      throw new KilnError(
        `${o.module}: custom filter "${o.name}" returned ${
          verdict instanceof Promise ? "a promise" : JSON.stringify(verdict) ?? String(verdict)
        } for document "${doc.id}"; it must return true to keep, or a reason (a non-empty string) or false to drop, synchronously`,
      );
    },
  };
}
