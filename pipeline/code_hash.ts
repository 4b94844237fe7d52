/**
 * Hashes a stage's code: its module and, transitively, every module it imports by a relative path or
 * URL, so editing a stage (or a helper it imports) reruns it. Bare and `npm:`/`node:` specifiers are
 * hashed by name (their versions are pinned by deno.json and deno.lock). kiln's own runtime
 * (`pipeline/`) is left out: changing how stages are scheduled does not change what they compute.
 *
 * Imports are found by scanning the source for static `import`/`export … from` and literal dynamic
 * `import("…")`, which is what stage modules use; it needs no subprocess (`deno info`) and so no
 * `--allow-run`.
 * @module
 */
import { createHash } from "node:crypto";

const RUNTIME_DIR = new URL("./", import.meta.url).href;
const IMPORT_RE =
  /(?:^|[;\s])(?:import|export)\s*(?:type\s+)?(?:[\w*{}\s,$]*?\s*from\s*)?["']([^"'\n]+)["']|import\(\s*["']([^"'\n]+)["']\s*\)/g;

const cache = new Map<string, Promise<string>>();

async function readModule(url: string): Promise<string> {
  if (url.startsWith("file:")) return await Deno.readTextFile(new URL(url));
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot read stage module ${url}: HTTP ${response.status}`);
  return await response.text();
}

/** The import specifiers a module's source names. */
export function importSpecifiers(source: string): string[] {
  const out: string[] = [];
  for (const m of source.matchAll(IMPORT_RE)) out.push(m[1] ?? m[2]);
  return out;
}

/** SHA-256 over the sources of `moduleUrl` and its local/remote imports (memoised per process). */
export function hashModuleGraph(moduleUrl: string): Promise<string> {
  let hit = cache.get(moduleUrl);
  if (!hit) {
    hit = hashGraph(moduleUrl);
    cache.set(moduleUrl, hit);
  }
  return hit;
}

async function hashGraph(root: string): Promise<string> {
  const seen = new Set<string>();
  const hash = createHash("sha256");
  const visit = async (url: string) => {
    if (seen.has(url) || url.startsWith(RUNTIME_DIR)) return;
    seen.add(url);
    const source = await readModule(url);
    hash.update(`${url.startsWith("file:") ? "" : url}\0${source}\0`);
    for (const spec of importSpecifiers(source)) {
      if (spec.startsWith(".") || spec.startsWith("/")) await visit(new URL(spec, url).href);
      else if (/^(https?|file):/.test(spec)) await visit(spec);
      else hash.update(`dep:${spec}\0`);
    }
  };
  await visit(root);
  return hash.digest("hex");
}
