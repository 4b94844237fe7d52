/**
 * A complete stage in one file, as the README shows it: upper-cases every document and appends a
 * suffix, one shard at a time on the worker pool. Use it from a pipeline file or YAML
 * (`stage: ./examples/shout.ts`), or serve it and import it by URL.
 * @module
 */
import { defineStage, documentShards, DocumentWriter, readDocuments, z } from "../mod.ts";
import type { ShardEnv } from "../mod.ts";

export const shout = defineStage({
  name: "shout",
  version: 1, // bump when the output changes meaning
  module: import.meta.url, // its code is part of the cache key
  input: "documents",
  output: "documents",
  schema: z.object({ suffix: z.string().default("!") }), // errors name the field
  description: "upper-cases every document (an example stage)",
  async run(ctx) {
    // One task per document shard (documentShards leaves out what an earlier stage set aside under
    // excluded/), on the worker pool; finished shards are skipped on a rerun and results come back in
    // task order, so the output is the same with any number of workers.
    const tasks = documentShards(ctx.input).map((f) => ({
      id: f,
      args: { path: ctx.input.path(f), name: f, suffix: ctx.config.suffix },
    }));
    const counts = await ctx.runShards<ShoutArgs, number>(
      { module: import.meta.url, fn: "shoutShard" },
      tasks,
    );
    ctx.stats.set("documents", counts.reduce((a, b) => a + b, 0));
  },
});

interface ShoutArgs {
  path: string;
  name: string;
  suffix: string;
}

/** The shard function: reads one input shard, writes one output shard (atomically). */
export async function shoutShard(args: ShoutArgs, env: ShardEnv): Promise<number> {
  const writer = new DocumentWriter(await env.out.create(args.name), args.name.endsWith(".gz")); // atomic
  for await (const { doc } of readDocuments(args.path)) {
    await writer.write({ ...doc, text: doc.text.toUpperCase() + args.suffix });
  }
  await writer.close();
  return writer.count;
}
