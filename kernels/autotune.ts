/**
 * Matmul autotuning on the user's adapter: for each shape class a matmul falls into, time every
 * candidate tile shape once, keep the fastest, and remember the choice per adapter in the user's cache
 * directory (`$KILN_CACHE_DIR`, `$XDG_CACHE_HOME`, `~/.cache`, `~/Library/Caches` or `%LOCALAPPDATA%`,
 * then `kiln/matmul-tuning.json`). `KILN_AUTOTUNE=0` turns it off (the fixed heuristic then picks).
 *
 * Every candidate accumulates each output over k = 0..k-1 in order, one FMA a term (see
 * `wgsl/matmul.ts`), so results are bit-identical whichever tile wins: tuning changes speed only,
 * and a run that tunes midway gives the same numbers as one that does not.
 *
 * The backend notes the classes its matmuls use ({@linkcode MatmulTuner.pick}) and tunes the new ones
 * at its next readback, where the caller waits for the device anyway (never inside a step).
 * @module
 */
import { type MatmulTile, TILE_CANDIDATES } from "./wgsl/matmul.ts";

/** One matmul's shape, as the tuner times it. */
export interface TuneShape {
  m: number;
  n: number;
  k: number;
  batch: number;
  transA: boolean;
  transB: boolean;
  typeA: "f32" | "f16";
  typeB: "f32" | "f16";
}

/** What a tuning pass found: per class, each candidate's time and the winner. */
export interface TuneResult {
  shapeClass: string;
  shape: TuneShape;
  ms: Record<string, number>;
  chosen: MatmulTile;
}

/** Options of {@linkcode MatmulTuner}. */
export interface TunerOptions {
  /** Tune at all (default: yes, unless `KILN_AUTOTUNE=0`). */
  enabled?: boolean;
  /** The cache file; `null` keeps choices in memory only. Default: see the module doc. */
  cacheFile?: string | null;
  /** The tiles to time (default: all of `TILE_CANDIDATES`). */
  candidates?: MatmulTile[];
}

/** Bumped whenever candidates or kernels change, so stale choices are not reused. */
const TUNER_VERSION = 1;

/** The shape class of a matmul: layouts, types, and m, n, k rounded up to powers of two. */
export function shapeClass(s: TuneShape): string {
  const log = (x: number) => Math.ceil(Math.log2(Math.max(1, x)));
  return `${s.transA ? "t" : "n"}${s.transB ? "t" : "n"}_${s.typeA}${s.typeB}_m${log(s.m)}_n${log(s.n)}_k${
    log(s.k)
  }_b${s.batch > 1 ? "n" : "1"}`;
}

/** Reads an environment variable only where access is already granted (never prompts). */
function env(name: string): string | undefined {
  try {
    if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

/** The default cache file, or null when no cache directory can be found. */
export function defaultCacheFile(): string | null {
  const home = env("HOME") ?? env("USERPROFILE");
  const dir = env("KILN_CACHE_DIR") ?? env("XDG_CACHE_HOME") ?? env("LOCALAPPDATA") ??
    (home ? (Deno.build.os === "darwin" ? `${home}/Library/Caches` : `${home}/.cache`) : undefined);
  return dir ? `${dir}/kiln/matmul-tuning.json` : null;
}

/** Whether `path` may be read (and written) without a prompt. */
function allowed(name: "read" | "write", path: string): boolean {
  try {
    return Deno.permissions.querySync({ name, path }).state === "granted";
  } catch {
    return false;
  }
}

/** Autotuned tile choices for one adapter. */
export class MatmulTuner {
  readonly enabled: boolean;
  readonly cacheFile: string | null;
  readonly candidates: MatmulTile[];
  /** Shape class → chosen tile. */
  readonly choices = new Map<string, MatmulTile>();
  /** Classes seen and not yet tuned, with a shape of each. */
  private readonly pending = new Map<string, TuneShape>();

  /** `adapterKey` names the adapter (description and limits): choices are kept per key. */
  constructor(readonly adapterKey: string, options: TunerOptions = {}) {
    this.enabled = (options.enabled ?? true) && env("KILN_AUTOTUNE") !== "0";
    this.cacheFile = options.cacheFile === undefined ? defaultCacheFile() : options.cacheFile;
    this.candidates = options.candidates ?? Object.keys(TILE_CANDIDATES) as MatmulTile[];
    if (this.enabled) {
      for (const [cls, tile] of Object.entries(this.readCache()[this.adapterKey] ?? {})) {
        if (tile in TILE_CANDIDATES) this.choices.set(cls, tile as MatmulTile);
      }
    }
  }

  /** The tuned tile of `shape`'s class, or undefined (then noting the class for the next tuning). */
  pick(shape: TuneShape): MatmulTile | undefined {
    if (!this.enabled) return undefined;
    const cls = shapeClass(shape);
    const chosen = this.choices.get(cls);
    if (chosen === undefined && !this.pending.has(cls)) this.pending.set(cls, shape);
    return chosen;
  }

  /** Whether some class waits to be tuned. */
  get hasPending(): boolean {
    return this.pending.size > 0;
  }

  /**
   * Times every candidate on each pending class with `time(shape, tile)` (ms, lower is better),
   * keeps the fastest and saves the choices.
   */
  async tune(time: (shape: TuneShape, tile: MatmulTile) => Promise<number>): Promise<TuneResult[]> {
    const results: TuneResult[] = [];
    for (const [cls, shape] of [...this.pending]) {
      this.pending.delete(cls);
      const ms: Record<string, number> = {};
      let chosen: MatmulTile | undefined;
      for (const tile of this.candidates) {
        ms[tile] = await time(shape, tile);
        if (chosen === undefined || ms[tile] < ms[chosen]) chosen = tile;
      }
      this.choices.set(cls, chosen!);
      results.push({ shapeClass: cls, shape, ms, chosen: chosen! });
    }
    if (results.length > 0) this.writeCache();
    return results;
  }

  private readCache(): Record<string, Record<string, string>> {
    if (!this.cacheFile || !allowed("read", this.cacheFile)) return {};
    try {
      const data = JSON.parse(Deno.readTextFileSync(this.cacheFile));
      return data.version === TUNER_VERSION ? data.adapters ?? {} : {};
    } catch {
      return {}; // absent or unreadable: tune afresh
    }
  }

  private writeCache() {
    const file = this.cacheFile;
    if (!file || !allowed("write", file) || !allowed("read", file)) return;
    try {
      const adapters = this.readCache();
      adapters[this.adapterKey] = Object.fromEntries(this.choices);
      Deno.mkdirSync(file.slice(0, file.lastIndexOf("/")), { recursive: true });
      const temporary = `${file}.${Deno.pid}.tmp`;
      Deno.writeTextFileSync(temporary, JSON.stringify({ version: TUNER_VERSION, adapters }, null, 1));
      Deno.renameSync(temporary, file); // atomic: concurrent processes never see half a file
    } catch {
      // a read-only cache directory: the choices stay in memory for this process
    }
  }
}
