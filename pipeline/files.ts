/**
 * Input files that stage configs name by path or glob: expansion with a clear error when nothing
 * matches, and a fingerprint (path, size, modification time) for the cache key, so a stage whose
 * input files change reruns without kiln reading them.
 *
 * A glob reads a folder: the part of the pattern before its first wildcard. Symbolic links found in it
 * are followed only while they stay inside that folder: a link in a data folder to `/etc/passwd` or to
 * `~/.ssh/` is not an input, unless `followSymlinks` says so (a plain path names its file, links and
 * all).
 *
 * @example
 * ```ts
 * import { expandFiles } from "./files.ts";
 * const pages = await expandFiles(["examples/data/*.warc.gz"]);
 * console.log(pages.length > 0); // true
 * ```
 * @module
 */
import { glob } from "node:fs/promises";
import { isAbsolute, join, relative, resolve, sep as SEPARATOR } from "node:path";
import { KilnError } from "./errors.ts";

const GLOB_CHARS = /[*?[\]{}]/;

/** Options of {@linkcode expandFiles} and {@linkcode fingerprintFiles}. */
export interface ExpandOptions {
  /** Folder that relative patterns start from (default: the working directory). */
  base?: string;
  /** Follow symbolic links that lead outside the folder a pattern names (default false). */
  followSymlinks?: boolean;
  /** Told of each file left out because it lies outside its glob's folder (`target`: where it is). */
  onOutside?: (path: string, target: string) => void;
}

/** The folder a glob reads: its leading segments without wildcards. */
function patternRoot(abs: string): string {
  const segments = abs.split(SEPARATOR);
  const first = segments.findIndex((s) => GLOB_CHARS.test(s));
  return segments.slice(0, first).join(SEPARATOR) || SEPARATOR;
}

/** Where `path` really is, or undefined when it cannot be known (a dangling link, no permission). */
async function realPath(path: string): Promise<string | undefined> {
  try {
    return await Deno.realPath(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || e instanceof Deno.errors.NotCapable) return undefined;
    throw e;
  }
}

const inside = (path: string, folder: string) =>
  path === folder || path.startsWith(folder.endsWith(SEPARATOR) ? folder : folder + SEPARATOR);

/**
 * Expands paths and globs into a sorted list of absolute file paths. URLs (http:, https:) pass
 * through unchanged. A pattern that matches nothing is an error naming it. Files reached through a
 * symbolic link that leaves a glob's folder are left out, unless `followSymlinks` is set.
 */
export async function expandFiles(patterns: string[], options: ExpandOptions = {}): Promise<string[]> {
  const base = options.base ?? Deno.cwd();
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
    const root = options.followSymlinks ? undefined : await realPath(patternRoot(abs));
    /** Whether `path` really lies outside the glob's folder (through a link), or cannot be placed. */
    const leaves = async (path: string) => {
      if (options.followSymlinks) return false;
      const real = await realPath(path);
      if (real !== undefined && root !== undefined && inside(real, root)) return false;
      options.onOutside?.(path, real ?? "an unknown place");
      return true;
    };
    let matched = 0;
    let outside = 0;
    // Globbed from its folder: an absolute pattern would make node's glob read "/" (a sandboxed stage
    // may read only the folders its config names).
    const folder = patternRoot(abs);
    for await (const rel of glob(relative(folder, abs), { cwd: folder })) {
      const path = join(folder, rel);
      let isFile: boolean;
      try {
        isFile = (await Deno.stat(path)).isFile;
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue; // a dangling link
        throw e;
      }
      if (!isFile) continue;
      if (await leaves(path)) {
        outside++;
        continue;
      }
      out.add(path);
      matched++;
    }
    if (!matched) {
      throw new KilnError(
        outside
          ? `no files match ${pattern} inside ${patternRoot(abs)} (${outside} symbolic links leading ` +
            `outside it left out; set followSymlinks: true to follow them)`
          : `no files match ${pattern}`,
      );
    }
  }
  return [...out].sort();
}

/** Path, size and modification time of each file (URLs are listed by address alone). */
export async function fingerprintFiles(
  patterns: string[],
  options: ExpandOptions = {},
): Promise<{ path: string; size?: number; mtime?: number }[]> {
  const out = [];
  for (const path of await expandFiles(patterns, options)) {
    if (/^https?:\/\//.test(path)) {
      out.push({ path });
      continue;
    }
    const info = await Deno.stat(path);
    out.push({ path, size: info.size, mtime: info.mtime?.getTime() });
  }
  return out;
}
