/**
 * The built-in stages, by the name a YAML pipeline uses. Modules load lazily, so a CI job that runs
 * only the data stages never loads the model code.
 * @module
 */
import type { Stage } from "../pipeline/stage.ts";

type Factory = ((config?: unknown) => Stage) & { stageName: string };

const LOADERS: Record<string, { description: string; load: () => Promise<Factory> }> = {
  crawl: {
    description: "WARC/ARC archives, local files, JSONL and the live web in; clean text documents out",
    load: async () => (await import("./crawl.ts")).crawl as unknown as Factory,
  },
};

/** Name → one-line description of every built-in stage. */
export const BUILTIN_STAGES: Record<string, string> = Object.fromEntries(
  Object.entries(LOADERS).map(([name, { description }]) => [name, description]),
);

/** The factory of a built-in stage, or undefined for an unknown name. */
export async function builtinStage(name: string): Promise<Factory | undefined> {
  return await LOADERS[name]?.load();
}
