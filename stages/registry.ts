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
  dedupe: {
    description: "exact and MinHash-LSH near-duplicate removal (datatrove's defaults)",
    load: async () => (await import("./dedupe.ts")).dedupe as unknown as Factory,
  },
  "quality-filter": {
    description:
      "Gopher, C4 and FineWeb rules, a GPT-3-style classifier, language, length, URL and PII filters",
    load: async () => (await import("./quality_filter.ts")).qualityFilter as unknown as Factory,
  },
  tokenize: {
    description: "trains or loads a byte-level BPE tokenizer; writes llm.c token shards",
    load: async () => (await import("./tokenize.ts")).tokenize as unknown as Factory,
  },
  pretrain: {
    description: "trains a GPT-2-architecture model on token shards",
    load: async () => (await import("./pretrain.ts")).pretrain as unknown as Factory,
  },
  sft: {
    description: "supervised fine-tuning on (prompt, response) demonstrations",
    load: async () => (await import("./sft.ts")).sft as unknown as Factory,
  },
  "reward-model": {
    description: "a reward model trained on ranked comparisons (all C(K,2) pairs per prompt)",
    load: async () => (await import("./reward_model.ts")).rewardModel as unknown as Factory,
  },
  ppo: {
    description: "PPO against the reward model with a per-token KL penalty and the ptx term",
    load: async () => (await import("./ppo.ts")).ppo as unknown as Factory,
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
