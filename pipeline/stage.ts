/**
 * The stage contract: what every kiln stage is, and what the runner hands it while it runs.
 *
 * A stage is a plain value made by a factory that {@linkcode defineStage} returns. It has a stable
 * name, a version, the URL of its own module (so an edited stage reruns), a validated JSON config,
 * the kind of artifact it takes from the previous stage, the kinds it reads from further upstream
 * (`uses`), and the kind it outputs. The runner decides from those alone whether the stage is up to
 * date; the stage's `run` only writes files into `ctx.out` and records progress in `ctx.checkpoint`.
 *
 * @example A stage that upper-cases every document
 * ```ts
 * import { z } from "npm:zod@^4.6.7";
 * import { defineStage } from "./stage.ts";
 *
 * export const upper = defineStage({
 *   name: "upper",
 *   version: 1,
 *   module: import.meta.url,
 *   input: "documents",
 *   output: "documents",
 *   schema: z.object({ suffix: z.string().default("") }),
 *   async run(ctx) {
 *     for (const file of ctx.input.files(".jsonl")) {
 *       if (await ctx.checkpoint.isDone(file)) continue;
 *       const text = await Deno.readTextFile(ctx.input.path(file));
 *       await ctx.out.writeText(file, text.toUpperCase() + ctx.config.suffix);
 *       await ctx.checkpoint.markDone(file);
 *     }
 *   },
 * });
 * ```
 * @module
 */
import type { z } from "npm:zod@^4.6.7";
import type { Artifact } from "./artifact.ts";
import type { Checkpoint, OutputWriter } from "./workspace.ts";
import type { ShardTask, ShardWorker } from "./pool.ts";
import { ConfigError, PipelineError } from "./errors.ts";

/**
 * The kinds of artifact the built-in stages exchange. A stage from elsewhere may use any other
 * string; the type checker then holds it to the same rule: a stage's `input` must equal the kind
 * the previous stage outputs.
 */
export type Kind =
  | "documents"
  | "tokens"
  | "model"
  | "reward-model"
  | (string & Record<never, never>);

/**
 * What a stage may do beyond the grant every stage gets. Each stage runs in its own Deno process
 * (see `sandbox.ts`) that may read its own code, its input artifacts and the files its config names
 * (what its `fingerprint` lists), and write only its own work directory; everything else is
 * declared here, usually as a function of the config (`(config) => ({ net: hostsOf(config.urls) })`).
 */
export interface Permissions {
  /** Further files or directories it reads (a glob stands for the directory it starts in). */
  read?: string[];
  /** Hosts it connects to (`example.org`, `127.0.0.1:8080`), or `true` for any host. */
  net?: string[] | true;
  /** Environment variables it reads. */
  env?: string[];
  /** Programs it runs. */
  run?: string[];
  /** Native libraries it loads. */
  ffi?: boolean;
}

/**
 * The local paths among config values (paths, globs or lists of them; URLs and unset values left out),
 * for a stage's `permissions.read`.
 */
export function localPaths(...values: (string | string[] | undefined | null | false)[]): string[] {
  return values.flat().filter((v): v is string =>
    typeof v === "string" && !/^[a-z][a-z0-9+.-]*:\/\//i.test(v)
  );
}

/**
 * The host names of URLs, for a stage's `permissions.net` (any port: a crawl's host scope ignores
 * ports, and resolving a name is allowed only for a grant without one).
 */
export function urlHosts(urls: string[]): string[] {
  return [...new Set(urls.filter((u) => /^https?:\/\//.test(u)).map((u) => new URL(u).hostname))].sort();
}

/** A progress update: how many of how many units are done, and optionally bytes processed. */
export interface Progress {
  done: number;
  total?: number;
  unit?: string;
  bytes?: number;
}

/** Counters and figures a stage reports; kept in the artifact's manifest and the run journal. */
export interface Stats {
  /** Adds `n` (default 1) to a counter. */
  add(name: string, n?: number): void;
  /** Sets a figure (a number, string or small JSON value). */
  set(name: string, value: unknown): void;
  /** Everything recorded so far. */
  toJSON(): Record<string, unknown>;
}

/** What the runner hands a running stage. */
export interface StageContext<C, In extends Kind | null = Kind | null> {
  /** This stage's id in the pipeline (its name unless renamed). */
  readonly id: string;
  /** The validated config, defaults filled in. */
  readonly config: C;
  /** The previous stage's committed artifact (digests verified before the stage started). */
  readonly input: In extends null ? undefined : Artifact;
  /**
   * Named upstream artifacts: each slot of the stage's `uses` (the nearest upstream artifact of its
   * kind) and of its `inputs` (the artifact of the stage the slot is bound to).
   */
  readonly uses: Readonly<Record<string, Artifact>>;
  /** Where the output goes. Files appear atomically; the runner commits them when `run` returns. */
  readonly out: OutputWriter;
  /** Done-markers and small state blobs that survive a crash; cleared once the stage commits. */
  readonly checkpoint: Checkpoint;
  /** Aborted on SIGINT/SIGTERM: stop at the next safe point, after checkpointing. */
  readonly signal: AbortSignal;
  /** Number of worker threads data stages should use (default: one per core). */
  readonly workers: number;
  /** Counters and figures for the manifest, journal and report. */
  readonly stats: Stats;
  /** Reports progress (throttled by the runner; call as often as convenient). */
  progress(update: Progress): void;
  /** A line for the log and the journal. */
  log(message: string): void;
  /**
   * Runs independent shard tasks on the worker pool, skipping the ones a previous attempt finished.
   * Results come back in task order, whatever the worker count, so outputs stay deterministic.
   */
  runShards<A, R>(worker: ShardWorker, tasks: ShardTask<A>[]): Promise<R[]>;
}

/** A stage instance: a plain value a pipeline is made of. */
export interface Stage<In extends Kind | null = Kind | null, Out extends Kind = Kind, C = unknown> {
  /** Stable name, also the default id in a pipeline. */
  readonly name: string;
  /** Bump when the stage's output changes meaning; part of the cache key. */
  readonly version: number;
  /** URL of the module defining the stage (its code, and what it imports, is hashed into the key). */
  readonly module: string;
  /** Kind of the previous stage's artifact, or null for a source stage. */
  readonly input: In;
  /** Kind of the artifact this stage produces. */
  readonly output: Out;
  /** Named upstream artifacts by kind, resolved to the nearest earlier stage with that output. */
  readonly uses: Readonly<Record<string, Kind>>;
  /**
   * Named inputs bound to stages by id (a merge: several branches in one stage): slot → kind. Each slot
   * reads the stage whose id is the slot's name, unless {@linkcode Stage.from} binds it to another.
   */
  readonly inputs: Readonly<Record<string, Kind>>;
  /** Which stage ids feed this one: its main input (default: the previous stage) and named inputs. */
  readonly bindings: Readonly<{ input?: string; inputs: Readonly<Record<string, string>> }>;
  /**
   * A copy reading its main input from the stage with this id (a branch off an earlier stage), or
   * binding named inputs to stage ids (`{ web: "quality-filter", books: "books-dedupe" }`).
   */
  from(binding: string | Record<string, string>): Stage<In, Out, C>;
  /** The validated, JSON-serialisable config. */
  readonly config: C;
  /** What the stage may do beyond its default grant (resolved from its config). */
  readonly permissions: Permissions;
  /**
   * Describes the external inputs the config names (files: see `fingerprintFiles`), so the cache key
   * covers them; undefined when the stage reads only artifacts.
   */
  fingerprint(): Promise<unknown>;
  /** The id in the pipeline; defaults to `name`. */
  readonly id: string;
  /** A copy of this stage with another id (to use one stage twice in a pipeline). */
  as(id: string): Stage<In, Out, C>;
  /** The code digest this stage is pinned to, if any (see {@linkcode Stage.pin}). */
  readonly integrity?: string;
  /**
   * A copy pinned to a code digest (`sha256-<hex>`, as `kiln plan --json` shows it under `code`): if the
   * module or anything it imports changes, the run stops with an error naming the module, instead of
   * running other code. For stages loaded by URL.
   */
  pin(integrity: string): Stage<In, Out, C>;
  /** Does the work. */
  run(ctx: StageContext<C, In>): Promise<void>;
}

/** What {@linkcode defineStage} takes. */
export interface StageDefinition<In extends Kind | null, Out extends Kind, S extends z.ZodType> {
  name: string;
  version: number;
  /** Pass `import.meta.url`. */
  module: string;
  input: In;
  output: Out;
  uses?: Record<string, Kind>;
  /** Named inputs bound by stage id (slot → kind), a value or a function of the config. */
  inputs?: Record<string, Kind> | ((config: z.output<S>) => Record<string, Kind>);
  /** A zod schema for the config; its defaults are applied and its errors name the field. */
  schema: S;
  /** What the stage needs beyond its default grant; a function of the validated config, or a value. */
  permissions?: Permissions | ((config: z.output<S>) => Permissions);
  /** External inputs the config names, for the cache key (e.g. `fingerprintFiles(config.files)`). */
  fingerprint?: (config: z.output<S>) => Promise<unknown>;
  /** One line for `kiln stages` and the docs. */
  description?: string;
  run(ctx: StageContext<z.output<S>, In>): Promise<void>;
}

/** A stage factory: call it with a config to get a {@linkcode Stage}. */
export interface StageFactory<In extends Kind | null, Out extends Kind, S extends z.ZodType> {
  (config?: z.input<S>): Stage<In, Out, z.output<S>>;
  readonly stageName: string;
  readonly description: string;
  readonly schema: S;
}

/**
 * Defines a stage. The returned factory validates its config (a {@linkcode ConfigError} names the
 * offending field) and returns a plain {@linkcode Stage} value.
 */
export function defineStage<In extends Kind | null, Out extends Kind, S extends z.ZodType>(
  def: StageDefinition<In, Out, S>,
): StageFactory<In, Out, S> {
  const make = (
    config: z.input<S> | undefined,
    id: string,
    integrity?: string,
    bindings: Stage["bindings"] = { inputs: {} },
  ): Stage<In, Out, z.output<S>> => {
    if (integrity !== undefined && !/^sha256-[0-9a-f]{64}$/.test(integrity)) {
      throw new PipelineError(
        `stage "${id}": integrity "${integrity}" is not of the form sha256-<64 hex digits>`,
      );
    }
    checkName("stage id", id);
    const value = validateConfig(def.name, def.schema, config ?? {}) as z.output<S>;
    const permissions = typeof def.permissions === "function" ? def.permissions(value) : def.permissions;
    return Object.freeze({
      name: def.name,
      version: def.version,
      module: def.module,
      input: def.input,
      output: def.output,
      uses: Object.freeze({ ...def.uses }),
      inputs: Object.freeze({ ...(typeof def.inputs === "function" ? def.inputs(value) : def.inputs) }),
      bindings,
      config: value,
      permissions: permissions ?? {},
      fingerprint: async () => def.fingerprint ? await def.fingerprint(value) : null,
      id,
      integrity,
      as: (newId: string) => make(config, newId, integrity, bindings),
      pin: (digest: string) => make(config, id, digest, bindings),
      from: (binding: string | Record<string, string>) =>
        make(
          config,
          id,
          integrity,
          typeof binding === "string"
            ? { ...bindings, input: binding }
            : { ...bindings, inputs: { ...bindings.inputs, ...binding } },
        ),
      run: def.run,
    });
  };
  const factory = (config?: z.input<S>) => make(config, def.name);
  const stageFactory = Object.assign(factory, {
    stageName: def.name,
    description: def.description ?? "",
    schema: def.schema,
  });
  registry().push({
    module: def.module,
    name: def.name,
    factory: stageFactory as StageFactory<Kind | null, Kind, z.ZodType>,
  });
  return stageFactory;
}

/**
 * Every stage defined in this process, so a sandboxed stage process can find the factory of the stage
 * it is asked to run by module and name after importing the module (also for stages a module defines
 * without exporting them). Global, so that two copies of kiln (one imported by a URL stage) share it.
 */
export function registry(): {
  module: string;
  name: string;
  factory: StageFactory<Kind | null, Kind, z.ZodType>;
}[] {
  const key = Symbol.for("kiln.stages");
  const g = globalThis as unknown as Record<symbol, ReturnType<typeof registry>>;
  return g[key] ??= [];
}

/** Pipeline names and stage ids: a letter, digit or "_" first, then those or "-" and ".". */
export function checkName(what: string, name: string): void {
  if (!/^[A-Za-z0-9_][\w.-]*$/.test(name)) {
    throw new PipelineError(
      `${what} "${name}": use letters, digits, "-", "_" or "." only, starting with a letter, digit or "_"`,
    );
  }
}

/**
 * Validates a stage config: defaults filled in, an unknown field is an error that suggests the nearest
 * valid name, and a wrong value says what was expected (inside unions too).
 */
export function validateConfig(stage: string, schema: z.ZodType, config: unknown): unknown {
  const unknown = unknownFields(schema, config, []);
  if (unknown) {
    const hint = unknown.suggestion ? `; did you mean "${unknown.suggestion}"?` : "";
    throw new ConfigError(
      stage,
      unknown.path,
      `unknown field${hint} (valid here: ${unknown.valid.join(", ") || "none"})`,
    );
  }
  const parsed = schema.safeParse(config);
  if (parsed.success) return parsed.data;
  const issue = deepestIssue(parsed.error.issues);
  throw new ConfigError(stage, issue.path.map(String), describeIssue(issue, config));
}

// zod's internal definition, as far as the walk below needs it.
type Def = {
  type: string;
  shape?: Record<string, z.ZodType>;
  innerType?: z.ZodType;
  in?: z.ZodType;
  element?: z.ZodType;
  options?: z.ZodType[];
  catchall?: z.ZodType;
};
const defOf = (schema: z.ZodType) => (schema as unknown as { _zod: { def: Def } })._zod.def;

interface UnknownField {
  path: string[];
  suggestion?: string;
  valid: string[];
}

/** The first field of `value` that `schema` does not declare (zod itself drops those silently). */
function unknownFields(schema: z.ZodType, value: unknown, path: string[]): UnknownField | undefined {
  const def = defOf(schema);
  switch (def.type) {
    case "optional":
    case "nullable":
    case "default":
    case "prefault":
    case "readonly":
    case "catch":
    case "nonoptional":
      return value === undefined || value === null ? undefined : unknownFields(def.innerType!, value, path);
    case "pipe":
      return unknownFields(def.in!, value, path);
    case "array":
      if (!Array.isArray(value)) return undefined;
      for (let i = 0; i < value.length; i++) {
        const found = unknownFields(def.element!, value[i], [...path, String(i)]);
        if (found) return found;
      }
      return undefined;
    case "union": {
      // Fine if any branch accepts every field; otherwise report the branch that comes closest.
      let best: UnknownField | undefined;
      const isObject = !!value && typeof value === "object" && !Array.isArray(value);
      for (const option of def.options!.filter((o) => !isObject || takesObjects(o))) {
        const found = unknownFields(option, value, path);
        if (!found) return undefined;
        if (!best || found.path.length > best.path.length) best = found;
      }
      return best;
    }
    case "object": {
      if (!value || typeof value !== "object" || Array.isArray(value)) return undefined;
      const shape = def.shape!;
      const valid = Object.keys(shape);
      for (const [key, v] of Object.entries(value)) {
        if (key in shape) {
          const found = unknownFields(shape[key], v, [...path, key]);
          if (found) return found;
        } else if (!def.catchall || defOf(def.catchall).type === "never") {
          return { path: [...path, key], suggestion: nearest(key, valid), valid };
        }
      }
      return undefined;
    }
    default:
      return undefined;
  }
}

/** Whether a schema describes an object (with fields), under its wrappers. */
function takesObjects(schema: z.ZodType): boolean {
  const def = defOf(schema);
  if (def.innerType) return takesObjects(def.innerType);
  if (def.in) return takesObjects(def.in);
  return ["object", "record", "any", "unknown"].includes(def.type);
}

/** The valid name closest to `name` (edit distance ≤ a third of its length), if any. */
function nearest(name: string, valid: string[]): string | undefined {
  let best: string | undefined;
  let bestDistance = Math.max(2, Math.floor(name.length / 3)) + 1;
  for (const candidate of valid) {
    const d = editDistance(name.toLowerCase(), candidate.toLowerCase());
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) {
      const swap = i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]
        ? prev[j - 2] ?? 0
        : Infinity;
      row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1), swap + 1);
    }
    prev = row;
  }
  return prev[b.length];
}

type Issue = z.core.$ZodIssue;

/** Inside a union, the issue of the branch that got furthest into the value. */
function deepestIssue(issues: readonly Issue[]): Issue {
  let best = issues[0];
  for (const issue of issues) {
    if (issue.code === "invalid_union" && issue.errors.length) {
      for (const branch of issue.errors) {
        const inner = deepestIssue(branch);
        const candidate = { ...inner, path: [...issue.path, ...inner.path] } as Issue;
        if (candidate.path.length > best.path.length || best.code === "invalid_union") best = candidate;
      }
    } else if (issue.path.length > best.path.length) best = issue;
  }
  return best;
}

function describeIssue(issue: Issue, config: unknown): string {
  let value: unknown = config;
  for (const key of issue.path) value = (value as Record<PropertyKey, unknown> | undefined)?.[key as string];
  const shown = value === undefined ? "" : ` (got ${JSON.stringify(value)?.slice(0, 60)})`;
  if (issue.code === "invalid_type") {
    return `expected ${issue.expected}${value === undefined ? ", got nothing" : shown}`;
  }
  return issue.message + shown;
}
