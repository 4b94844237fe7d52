/**
 * Pipelines declared in YAML, the form CI jobs use:
 *
 * ```yaml
 * name: clean-web
 * workdir: .kiln            # optional; relative to the YAML file
 * workers: 2                # optional
 * stages:
 *   - stage: crawl          # a built-in stage, by name
 *     config:
 *       warc: [data/*.warc.gz]
 *   - stage: ./stages/shout.ts        # a stage module by path (relative to this file) …
 *     id: shout                       # … or by URL (https://…/stage.ts#namedExport)
 *     config: { suffix: "!" }
 * ```
 *
 * Errors name the file, line and column: a YAML syntax error, an unknown stage, a config value the
 * stage rejects (pointing at that value), kinds that do not connect.
 * @module
 */
import { isAbsolute, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { isMap, isScalar, isSeq, LineCounter, type Node, parseDocument } from "npm:yaml@^2.9.1";
import { ConfigError, PipelineError } from "./errors.ts";
import { type Pipeline, pipeline } from "./pipeline.ts";
import type { Kind, Stage } from "./stage.ts";
import { parseSlurmOptions, slurm, type SlurmExecutor } from "./slurm.ts";

/** Most alias expansions a file may make (the yaml package's default, made explicit). */
const MAX_ALIAS_COUNT = 100;

/** A stage factory as a module exports it (what `defineStage` returns). */
type AnyFactory = ((config?: unknown) => Stage) & { stageName?: string };

/** Resolves a built-in stage name to its factory; undefined when there is none. */
export type BuiltinResolver = (name: string) => Promise<AnyFactory | undefined>;

function locate(counter: LineCounter, file: string, node: Node | undefined | null): string {
  const offset = node?.range?.[0];
  if (offset === undefined) return file;
  const { line, col } = counter.linePos(offset);
  return `${file}:${line}:${col}`;
}

/** Loads a stage factory from a module path or URL (`module.ts` or `module.ts#exportName`). */
export async function importStage(spec: string, baseDir: string): Promise<AnyFactory> {
  const [path, exportName] = spec.split("#");
  const url = /^(https?|file):/.test(path)
    ? path
    : pathToFileURL(isAbsolute(path) ? path : resolve(baseDir, path)).href;
  let mod: Record<string, unknown>;
  try {
    mod = await import(url);
  } catch (e) {
    throw new PipelineError(`cannot import stage module ${url}: ${(e as Error).message.split("\n")[0]}`);
  }
  const candidates = exportName ? [mod[exportName]] : [mod.default, ...Object.values(mod)];
  const factory = candidates.find((v) => typeof v === "function" && "stageName" in (v as object));
  if (!factory) {
    throw new PipelineError(
      `${url} exports no stage${
        exportName ? ` named "${exportName}"` : ""
      } (expected a factory made by defineStage)`,
    );
  }
  return factory as AnyFactory;
}

/** Parses a YAML pipeline file into a {@linkcode Pipeline}. */
export async function loadPipelineYaml(
  file: string,
  builtin: BuiltinResolver,
): Promise<Pipeline<Kind | null>> {
  let text: string;
  try {
    text = await Deno.readTextFile(file);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new PipelineError(`${file}: no such file`);
    throw e;
  }
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: false });
  if (doc.errors.length) {
    const err = doc.errors[0];
    const { line, col } = counter.linePos(err.pos[0]);
    throw new PipelineError(`${file}:${line}:${col}: YAML syntax error: ${err.message.split("\n")[0]}`);
  }
  const root = doc.contents;
  if (!isMap(root)) throw new PipelineError(`${file}: expected a mapping with "name" and "stages"`);
  const known = new Set(["name", "workdir", "workers", "executor", "stages"]);
  for (const pair of root.items) {
    const key = isScalar(pair.key) ? String(pair.key.value) : "";
    if (!known.has(key)) {
      throw new PipelineError(
        `${locate(counter, file, pair.key as Node)}: unknown field "${key}" (expected ${
          [...known].join(", ")
        })`,
      );
    }
  }
  const name = root.get("name");
  if (typeof name !== "string") throw new PipelineError(`${file}: field "name" (a string) is required`);
  const baseDir = resolve(file, "..");
  const workdir = root.get("workdir");
  const workers = root.get("workers");
  if (workers !== undefined && (typeof workers !== "number" || workers < 1)) {
    throw new PipelineError(
      `${locate(counter, file, root.get("workers", true) as Node)}: "workers" must be a number ≥ 1`,
    );
  }
  // executor: local | slurm | { slurm: { partition: cpu, tasks: 256, … } }
  const executorNode = root.get("executor", true) as Node | undefined;
  const executorValue = executorNode ? (executorNode as { toJSON(): unknown }).toJSON() : undefined;
  let executor: SlurmExecutor | undefined;
  if (executorValue === "slurm") executor = slurm({});
  else if (executorValue && typeof executorValue === "object" && "slurm" in executorValue) {
    const keys = Object.keys(executorValue);
    if (keys.length !== 1) {
      throw new PipelineError(
        `${locate(counter, file, executorNode)}: executor: expected { slurm: {…} } alone`,
      );
    }
    executor = slurm(
      parseSlurmOptions(executorValue.slurm, `${locate(counter, file, executorNode)}: executor.slurm`),
    );
  } else if (executorValue !== undefined && executorValue !== "local") {
    throw new PipelineError(
      `${
        locate(counter, file, executorNode)
      }: executor: expected local, slurm or { slurm: { partition: …, … } }`,
    );
  }
  let p: Pipeline<Kind | null> = pipeline(name, {
    workdir: typeof workdir === "string"
      ? (isAbsolute(workdir) ? workdir : resolve(baseDir, workdir))
      : undefined,
    workers: workers as number | undefined,
    executor,
  }) as Pipeline<Kind | null>;
  const stages = root.get("stages", true);
  if (!isSeq(stages) || stages.items.length === 0) {
    throw new PipelineError(`${locate(counter, file, stages as Node)}: "stages" must be a non-empty list`);
  }
  // Plain values, aliases resolved across the whole file; an alias bomb ("billion laughs") is refused.
  let plain: { stages: { config?: unknown }[] };
  try {
    plain = doc.toJS({ maxAliasCount: MAX_ALIAS_COUNT });
  } catch (e) {
    throw new PipelineError(`${file}: ${(e as Error).message}`);
  }
  for (const item of stages.items) {
    const where = locate(counter, file, item as Node);
    if (!isMap(item)) throw new PipelineError(`${where}: each stage is a mapping with "stage" and "config"`);
    for (const pair of item.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : "";
      if (!["stage", "id", "config", "from", "integrity"].includes(key)) {
        throw new PipelineError(
          `${
            locate(counter, file, pair.key as Node)
          }: unknown field "${key}" (expected stage, id, config, from, integrity)`,
        );
      }
    }
    const spec = item.get("stage");
    if (typeof spec !== "string") {
      throw new PipelineError(`${where}: field "stage" (a name, path or URL) is required`);
    }
    const isModule = /^(\.|\/|https?:|file:)/.test(spec) || /\.[jt]s(#|$)/.test(spec);
    const factory = isModule ? await importStage(spec, baseDir) : await builtin(spec);
    if (!factory) {
      throw new PipelineError(
        `${locate(counter, file, item.get("stage", true) as Node)}: unknown stage "${spec}"`,
      );
    }
    const configNode = item.get("config", true) as Node | undefined;
    const config = configNode ? plain.stages[stages.items.indexOf(item)].config : undefined;
    try {
      JSON.stringify(config); // a config is plain data: `&a [*a]` makes a value that contains itself
    } catch {
      const at = locate(counter, file, configNode);
      throw new PipelineError(
        `${at}: config holds a value that contains itself (an alias in its own anchor)`,
      );
    }
    let stage: Stage;
    try {
      stage = factory(config ?? {});
    } catch (e) {
      if (e instanceof ConfigError) {
        const node = e.field
          ? doc.getIn(["stages", stages.items.indexOf(item), "config", ...e.field.split(".")], true)
          : undefined;
        throw new ConfigError(
          e.stage,
          e.field ? e.field.split(".") : [],
          e.detail,
          locate(counter, file, (node ?? configNode ?? item) as Node),
        );
      }
      throw e;
    }
    const id = item.get("id");
    if (id !== undefined && typeof id !== "string") {
      throw new PipelineError(`${where}: "id" must be a string`);
    }
    const integrity = item.get("integrity");
    if (integrity !== undefined && typeof integrity !== "string") {
      throw new PipelineError(`${where}: "integrity" must be a string (sha256-…)`);
    }
    // from: an earlier stage's id (this stage reads it: a branch) or { input: id } for named inputs.
    const from = item.get("from", true) as Node | undefined;
    const fromValue = from ? (from as unknown as { toJSON(): unknown }).toJSON() : undefined;
    const isBindings = (v: unknown): v is Record<string, string> =>
      !!v && typeof v === "object" && !Array.isArray(v) &&
      Object.values(v).every((x) => typeof x === "string");
    if (fromValue !== undefined && typeof fromValue !== "string" && !isBindings(fromValue)) {
      throw new PipelineError(
        `${locate(counter, file, from)}: "from" is a stage id or a mapping of input names to stage ids`,
      );
    }
    try {
      if (id) stage = stage.as(id);
      if (integrity) stage = stage.pin(integrity);
      if (fromValue !== undefined) stage = stage.from(fromValue as string | Record<string, string>);
      // A source after other stages, or a stage reading an earlier one by id, starts a branch.
      const branch = (stage.input === null && p.stages.length > 0) || stage.bindings.input !== undefined;
      // deno-lint-ignore no-explicit-any
      p = branch ? p.branch(stage) : p.pipe(stage as Stage<any, Kind, unknown>);
    } catch (e) {
      if (e instanceof PipelineError) throw new PipelineError(`${where}: ${e.message}`);
      throw e;
    }
  }
  return p;
}
