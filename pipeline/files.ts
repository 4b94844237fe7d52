/**
 * Input files that stage configs name by path or glob: expansion with a clear error when nothing
 * matches, and a fingerprint (path, size, modification time) for the cache key, so a stage whose
 * input files change reruns without kiln reading them.
 * @module
 */
import { glob } from "node:fs/promises";
import { isAbsolute, resolve } from "node:path";
import { KilnError } from "./errors.ts";

const GLOB_CHARS = /[*?[\]{}]/;

/**
 * Expands paths and globs (relative to `base`, default the working directory) into a sorted list of
 * absolute file paths. URLs (http:, https:) pass through unchanged. A pattern that matches nothing
 * is an error naming it.
 */
export async function expandFiles(patterns: string[], base: string = Deno.cwd()): Promise<string[]> {
  const out = new Set<string>();
  for (const pattern of patterns) {
    if (/^https?:\/\//.test(pattern)) {
      out.add(pattern);
      continue;
    }
    const abs = isAbsolute(pattern) ? pattern : resolve(base, pattern);
    if (!GLOB_CHARS.test(pattern)) {
      try {
        if ((await Deno.stat(abs)).isFile) {
          out.add(abs);
          continue;
        }
      } catch (e) {
        if (e instanceof Deno.errors.NotCapable) throw e;
      }
      throw new KilnError(`no such file: ${pattern}`);
    }
    let matched = 0;
    for await (const path of glob(abs)) {
      if ((await Deno.stat(path)).isFile) {
        out.add(path);
        matched++;
      }
    }
    if (!matched) throw new KilnError(`no files match ${pattern}`);
  }
  return [...out].sort();
}

/** Path, size and modification time of each file (URLs are listed by address alone). */
export async function fingerprintFiles(
  patterns: string[],
  base: string = Deno.cwd(),
): Promise<{ path: string; size?: number; mtime?: number }[]> {
  const out = [];
  for (const path of await expandFiles(patterns, base)) {
    if (/^https?:\/\//.test(path)) {
      out.push({ path });
      continue;
    }
    const info = await Deno.stat(path);
    out.push({ path, size: info.size, mtime: info.mtime?.getTime() });
  }
  return out;
}
