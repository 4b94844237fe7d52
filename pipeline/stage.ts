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
import { ConfigError } from "./errors.ts";

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

/** The Deno permissions a stage needs, so the runner can name the missing flag. */
export interface Permissions {
  read?: boolean;
  write?: boolean;
  net?: boolean | string[];
  env?: boolean;
  run?: boolean;
  ffi?: boolean;
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
  /** The artifacts named by the stage's `uses`, each the nearest upstream one of its kind. */
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
  /** The validated, JSON-serialisable config. */
  readonly config: C;
  /** Permissions the stage needs, for error messages and docs. */
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
  /** A zod schema for the config; its defaults are applied and its errors name the field. */
  schema: S;
  permissions?: Permissions;
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
  const make = (config: z.input<S> | undefined, id: string): Stage<In, Out, z.output<S>> => {
    const parsed = def.schema.safeParse(config ?? {});
    if (!parsed.success) {
      const issue = parsed.error.issues[0];
      throw new ConfigError(def.name, issue.path.map(String), issue.message);
    }
    const value = parsed.data as z.output<S>;
    return Object.freeze({
      name: def.name,
      version: def.version,
      module: def.module,
      input: def.input,
      output: def.output,
      uses: Object.freeze({ ...def.uses }),
      config: value,
      permissions: def.permissions ?? {},
      fingerprint: async () => def.fingerprint ? await def.fingerprint(value) : null,
      id,
      as: (newId: string) => make(config, newId),
      run: def.run,
    });
  };
  const factory = (config?: z.input<S>) => make(config, def.name);
  return Object.assign(factory, {
    stageName: def.name,
    description: def.description ?? "",
    schema: def.schema,
  });
}
