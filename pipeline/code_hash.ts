/**
 * A stage's code: its module and, transitively, every module it imports by a relative path or URL, so
 * editing a stage (or a helper it imports) reruns it. `npm:`/`node:` specifiers carry their versions in
 * the source and are hashed by name. kiln's own runtime (`pipeline/`) is left out: changing how stages
 * are scheduled does not change what they compute.
 *
 * Remote modules are fetched by kiln itself, and the bytes it hashes are the bytes the stage process
 * runs: {@linkcode ModuleStore} keeps them in the workdir and the stage process imports that copy
 * through an import map (Deno's own module cache would run whatever it fetched first). When a host is
 * unreachable, the last copy fetched stands in for it, so a finished pipeline is still cached offline.
 *
 * Imports are found by scanning the source for static `import`/`export … from`, literal dynamic
 * `import("…")` and `new URL("…", import.meta.url)` (shard-worker modules), which is what stage
 * modules use; it needs no subprocess (`deno info`) and so no `--allow-run`.
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { KilnError } from "./errors.ts";

const RUNTIME_DIR = new URL("./", import.meta.url).href;
const IMPORT_RE =
  /(?:^|[;\s])(?:import|export)\s*(?:type\s+)?(?:[\w*{}\s,$]*?\s*from\s*)?["']([^"'\n]+)["']|import\(\s*["']([^"'\n]+)["']\s*\)|new URL\(\s*["'](\.{1,2}\/[^"'\n]+\.[mc]?[jt]sx?)["']\s*,\s*import\.meta\.url\s*\)/g;

/** The import specifiers a module's source names. */
export function importSpecifiers(source: string): string[] {
  const out: string[] = [];
  for (const m of source.matchAll(IMPORT_RE)) out.push(m[1] ?? m[2] ?? m[3]);
  return out;
}

/** A stage's module graph: its digest, the local files in it, and the remote modules' sources. */
export interface ModuleGraph {
  digest: string;
  /** Local module files (paths), kiln's runtime excluded. */
  files: string[];
  /** Remote module URL → the source that was hashed (and is what runs). */
  remote: Map<string, string>;
  /** The modules in the digest (URLs): what editing reruns the stage. */
  hashed: string[];
}

/**
 * Where remote module sources are kept (`<workdir>/modules/`): each source by its SHA-256, and the
 * newest one seen for each URL, so an unreachable host falls back to what was last fetched.
 */
export class ModuleStore {
  constructor(readonly dir: string) {}

  #latestPath(url: string) {
    return join(this.dir, "urls", sha256(url).slice(0, 32));
  }

  async latest(url: string): Promise<string | undefined> {
    try {
      const hash = (await Deno.readTextFile(this.#latestPath(url))).trim();
      return await Deno.readTextFile(join(this.dir, "sources", hash));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  async remember(url: string, source: string): Promise<void> {
    const hash = sha256(source);
    await writeOnce(join(this.dir, "sources", hash), source);
    await writeOnce(this.#latestPath(url), hash, true);
  }

  /** Where {@linkcode materialize} puts the import map of a graph with remote modules. */
  importMapPath(graph: ModuleGraph): string | undefined {
    return graph.remote.size
      ? join(resolve(this.dir), "graphs", graph.digest.slice(0, 16), "import_map.json")
      : undefined;
  }

  /**
   * Lays the graph's remote modules out as files (one folder per graph digest, one subfolder per
   * origin, so relative imports between them still resolve) and returns the import map that sends
   * each URL to its copy.
   */
  async materialize(graph: ModuleGraph): Promise<string | undefined> {
    const mapPath = this.importMapPath(graph);
    if (!mapPath) return undefined;
    const root = dirname(mapPath);
    const imports: Record<string, string> = {};
    for (const [url, source] of graph.remote) {
      const u = new URL(url);
      const file = join(
        root,
        `${u.protocol.slice(0, -1)}_${u.host.replace(":", "_")}`,
        decodeURIComponent(u.pathname),
      );
      await writeOnce(file, source);
      imports[url] = new URL(`file://${file}`).href;
    }
    await writeOnce(mapPath, JSON.stringify({ imports }, null, 1), true);
    return mapPath;
  }
}

function sha256(text: string): string {
  return createHash("sha256").update(text).digest("hex");
}

/** Writes a file atomically (a content-addressed file only when missing). */
async function writeOnce(path: string, text: string, replace = false) {
  if (!replace) {
    try {
      await Deno.stat(path);
      return;
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
  }
  await Deno.mkdir(dirname(path), { recursive: true });
  const tmp = `${path}.${crypto.randomUUID()}.tmp`;
  await Deno.writeTextFile(tmp, text);
  await Deno.rename(tmp, path);
}

async function readRemote(url: string, store?: ModuleStore): Promise<string> {
  let problem: string;
  try {
    const response = await fetch(url);
    if (response.ok) {
      const source = await response.text();
      await store?.remember(url, source);
      return source;
    }
    await response.body?.cancel();
    problem = `HTTP ${response.status}`;
  } catch (e) {
    if (e instanceof Deno.errors.NotCapable) {
      throw new KilnError(
        `cannot read stage module ${url}: kiln fetches a URL stage's code itself to hash what will run; ` +
          `allow it with --allow-net=${new URL(url).host}`,
      );
    }
    problem = (e as Error).message;
  }
  const kept = await store?.latest(url);
  if (kept !== undefined) return kept;
  throw new KilnError(`cannot read stage module ${url}: ${problem}`);
}

/**
 * The module graph of `moduleUrl`: local files read from disk, remote ones fetched (falling back to
 * `store`'s last copy when the host cannot be reached).
 */
export async function moduleGraph(moduleUrl: string, store?: ModuleStore): Promise<ModuleGraph> {
  const hash = createHash("sha256");
  const graph: ModuleGraph = { digest: "", files: [], remote: new Map(), hashed: [] };
  const sources = new Map<string, string>();
  const seen = new Set<string>(); // "h:" + url when visited as part of the code, "r:" + url via the runtime
  // kiln's runtime, and what it imports, is part of the graph (the stage's process loads it, and a remote
  // copy of kiln must be stored like any remote module) but not of the digest: a module counts in the
  // digest when the stage reaches it without passing through the runtime.
  const visit = async (url: string, viaRuntime: boolean) => {
    const hashed = !viaRuntime && !url.startsWith(RUNTIME_DIR);
    if (seen.has(`${hashed ? "h" : "r"}:${url}`)) return;
    seen.add(`${hashed ? "h" : "r"}:${url}`);
    let source = sources.get(url);
    if (source === undefined) {
      if (url.startsWith("file:")) {
        source = await Deno.readTextFile(new URL(url));
        graph.files.push(fromFileUrl(url));
      } else {
        source = await readRemote(url, store);
        graph.remote.set(url, source);
      }
      sources.set(url, source);
    }
    if (hashed) {
      hash.update(`${url.startsWith("file:") ? "" : url}\0${source}\0`);
      graph.hashed.push(url);
    }
    for (const spec of importSpecifiers(source)) {
      if (spec.startsWith(".") || spec.startsWith("/")) await visit(new URL(spec, url).href, !hashed);
      else if (/^(https?|file):/.test(spec)) await visit(spec, !hashed);
      else if (hashed) hash.update(`dep:${spec}\0`);
    }
  };
  await visit(moduleUrl, false);
  graph.digest = hash.digest("hex");
  return graph;
}
