/**
 * The built-in stages, by the name a YAML pipeline uses. Modules load lazily, so a CI job that runs
 * only the data stages never loads the model code.
 * @module
 */
import type { Stage } from "../pipeline/stage.ts";
import type { z } from "npm:zod@^4.6.7";

type Factory = ((config?: unknown) => Stage) & { stageName: string; description: string; schema: z.ZodType };

const LOADERS: Record<string, () => Promise<Factory>> = {
  crawl: async () => (await import("./crawl.ts")).crawl as unknown as Factory,
  dedupe: async () => (await import("./dedupe.ts")).dedupe as unknown as Factory,
  "quality-filter": async () => (await import("./quality_filter.ts")).qualityFilter as unknown as Factory,
  "export-parquet": async () => (await import("./export_parquet.ts")).exportParquet as unknown as Factory,
  tokenize: async () => (await import("./tokenize.ts")).tokenize as unknown as Factory,
  mix: async () => (await import("./mix.ts")).mix as unknown as Factory,
  pretrain: async () => (await import("./pretrain.ts")).pretrain as unknown as Factory,
  sft: async () => (await import("./sft.ts")).sft as unknown as Factory,
  "reward-model": async () => (await import("./reward_model.ts")).rewardModel as unknown as Factory,
  ppo: async () => (await import("./ppo.ts")).ppo as unknown as Factory,
  evaluate: async () => (await import("./evaluate.ts")).evaluate as unknown as Factory,
};

/** Every built-in stage's name and one-line description (loads every stage module). */
export async function listBuiltinStages(): Promise<[string, string][]> {
  const out: [string, string][] = [];
  for (const [name, load] of Object.entries(LOADERS)) out.push([name, (await load()).description]);
  return out;
}

/** The factory of a built-in stage, or undefined for an unknown name. */
export async function builtinStage(name: string): Promise<Factory | undefined> {
  return await LOADERS[name]?.();
}
