/**
 * Pipelines: a plain value made of stages, and the runner that brings it up to date.
 *
 * ```ts
 * import { pipeline } from "./pipeline.ts";
 * import { crawl, dedupe } from "../mod.ts";
 *
 * await pipeline("clean", { workdir: ".kiln" })
 *   .pipe(crawl({ warc: ["examples/data/*.warc.gz"] }))
 *   .pipe(dedupe({}))
 *   .run(); // a CLI: run / status / plan / gc, --from, --until, --only, --force …
 * ```
 *
 * For every stage the runner computes a cache key (see `keys.ts`); a committed artifact under that
 * key means the stage is skipped. Otherwise the stage runs in a work directory that survives crashes
 * (resuming from its checkpoints), and its output is committed atomically. Workdir layout:
 * - `lock`                       one writer at a time (see `lock.ts`)
 * - `artifacts/<id>/<key16>/`    committed outputs, each with `manifest.json`
 * - `work/<id>/<key16>/`         an attempt in progress: `out/`, `state/`, `tmp/`
 * - `index/<pipeline>.json`      the key parts of each stage's last commit (for `status` and `gc`)
 * - `runs/<run>.jsonl`           the journal of each run
 * @module
 */
import { join, resolve } from "node:path";
import { type Artifact, commitArtifact, openArtifact } from "./artifact.ts";
import { type ModuleGraph, moduleGraph, ModuleStore } from "./code_hash.ts";
import { ArtifactError, InterruptedError, isKilnError, PermissionError, PipelineError } from "./errors.ts";
import {
  beyondRunner,
  grantFlags,
  runStageJobOnSlurm,
  runStageProcess,
  stageFlags,
  stageGrant,
} from "./sandbox.ts";
import { slurm, SLURM_COMMANDS, type SlurmExecutor } from "./slurm.ts";
import { Journal } from "./journal.ts";
import { cacheKey, explainChange, type KeyParts } from "./keys.ts";
import { lockWorkdir } from "./lock.ts";
import { formatDuration, ProgressReporter } from "./progress.ts";
import { renderReport, reportFileName } from "./report.ts";
import { checkName, type Kind, type Progress, type Stage } from "./stage.ts";
import { listFiles, writeFileAtomic } from "./workspace.ts";
import type { ExecuteOptions, RunResult, StageOutcome, StageStatus } from "./run_types.ts";

export type { ExecuteOptions, RunResult, StageOutcome, StageStatus };

/** Options fixed by the pipeline's author. */
export interface PipelineOptions {
  /** Where artifacts, checkpoints and journals live (default `.kiln`). */
  workdir?: string;
  /** Worker threads for data stages (default: one per core). */
  workers?: number;
  /**
   * Where data stages' shards run: the local worker pool (default) or a Slurm cluster
   * (`slurm({ partition, tasks, … })`, see `slurm.ts`). Not part of any cache key.
   */
  executor?: SlurmExecutor;
}

interface IndexEntry {
  key: string;
  parts: KeyParts;
  committedAt: string;
}
type PipelineIndex = { pipeline: string; stages: Record<string, IndexEntry> };

const KEY_DIR_LENGTH = 16;

/** A pipeline: stages in order, each taking the previous one's artifact. */
export class Pipeline<Last extends Kind | null> {
  constructor(
    readonly name: string,
    readonly options: PipelineOptions,
    readonly stages: readonly Stage[],
  ) {
    checkName("pipeline name", name);
  }

  /**
   * Appends a stage. Its `input` kind must be the kind the previous stage outputs (a type error in
   * TypeScript, a {@linkcode PipelineError} for stages loaded at run time), and its `uses` kinds must
   * be produced upstream.
   */
  // deno-lint-ignore no-explicit-any
  pipe<Out extends Kind>(stage: Stage<Last, Out, any>): Pipeline<Out> {
    return this.#append(stage as Stage, false);
  }

  /**
   * Starts another branch: appends a source stage (one that takes no input), or a stage reading an
   * earlier stage named with `.from(id)`, whatever the previous stage outputs. Branches meet again in a
   * stage with named inputs (`mix({ sources: { web: …, books: … } })` reads the stages `web` and
   * `books`, or the ids `.from({ web: "quality-filter" })` binds).
   *
   * @example GPT-3's recipe in miniature: a cleaned crawl and a reference corpus, mixed by weight
   * ```ts ignore
   * pipeline("mix", { workdir: ".kiln" })
   *   .pipe(crawl({ warc: ["data/*.warc.gz"] })).pipe(dedupe({})).pipe(qualityFilter({}).as("web"))
   *   .branch(crawl({ files: ["books/*.txt"] }).as("books"))
   *   .branch(mix({ bpe: { vocabSize: 4096 }, sources: { web: { weight: 0.8 }, books: { weight: 0.2 } } }))
   *   .pipe(pretrain({ steps: 100 }));
   * ```
   */
  // deno-lint-ignore no-explicit-any
  branch<Out extends Kind>(stage: Stage<any, Out, any>): Pipeline<Out> {
    return this.#append(stage as Stage, true);
  }

  #append<Out extends Kind>(stage: Stage, branch: boolean): Pipeline<Out> {
    const prev = this.stages.at(-1);
    const where = `pipeline "${this.name}", stage "${stage.id}"`;
    if (this.stages.some((s) => s.id === stage.id)) {
      throw new PipelineError(
        `${where}: a stage with this id is already in the pipeline; give one another id`,
      );
    }
    const byId = (id: string, what: string) => {
      const found = this.stages.find((s) => s.id === id);
      if (!found) {
        throw new PipelineError(
          `${where}: ${what} names "${id}", which is not an earlier stage (earlier: ${
            this.stages.map((s) => s.id).join(", ") || "none"
          })`,
        );
      }
      return found;
    };
    if (stage.input === null && stage.bindings.input !== undefined) {
      throw new PipelineError(`${where}: takes no input, so it cannot read "${stage.bindings.input}"`);
    }
    if (branch && stage.input !== null && stage.bindings.input === undefined) {
      throw new PipelineError(`${where}: a branch starts with a source stage or a stage given .from(id)`);
    }
    const source = stage.bindings.input !== undefined ? byId(stage.bindings.input, "from") : prev;
    if (!(branch && stage.input === null) && (source?.output ?? null) !== stage.input) {
      throw new PipelineError(
        `${where}: takes ${stage.input ?? "no input"} but ${
          source ? `"${source.id}" outputs ${source.output}` : "it is the first stage"
        }`,
      );
    }
    for (const [slot, kind] of Object.entries(stage.uses)) {
      if (!this.stages.some((s) => s.output === kind)) {
        throw new PipelineError(`${where}: uses "${slot}" (${kind}), but no earlier stage outputs ${kind}`);
      }
    }
    for (const [slot, kind] of Object.entries(stage.inputs)) {
      const producer = byId(stage.bindings.inputs[slot] ?? slot, `input "${slot}"`);
      if (producer.output !== kind) {
        throw new PipelineError(
          `${where}: input "${slot}" takes ${kind} but "${producer.id}" outputs ${producer.output}`,
        );
      }
    }
    return new Pipeline<Out>(this.name, this.options, [...this.stages, stage]);
  }

  /** Runs, inspects (`status`, `plan`) or garbage-collects the pipeline, as `opts.command` says. */
  execute(opts: ExecuteOptions & { command: "status" | "plan" }): Promise<StageStatus[]>;
  execute(opts: ExecuteOptions & { command: "gc" }): Promise<{ removed: string[]; bytes: number }>;
  execute(opts: ExecuteOptions & { command: "report" }): Promise<{ path: string }>;
  execute(opts?: ExecuteOptions & { command?: "run" }): Promise<RunResult>;
  async execute(opts: ExecuteOptions = {}): Promise<unknown> {
    const runner = new Runner(this, opts);
    switch (opts.command ?? "run") {
      case "run":
        return await runner.run();
      case "status":
      case "plan":
        return await runner.inspect();
      case "gc":
        return await runner.gc();
      case "report":
        return await runner.report();
    }
    throw new PipelineError(`unknown command "${opts.command}"`);
  }

  /**
   * The pipeline file as a command-line program: parses `args` (default `Deno.args`), runs the
   * command, prints the result and exits. See `command.ts` for the commands and flags.
   */
  async run(args: string[] = Deno.args): Promise<never> {
    const { main } = await import("./command.ts");
    Deno.exit(await main(args, { pipeline: this as Pipeline<Kind | null> }));
  }
}

/** Starts a pipeline. */
export function pipeline(name: string, options: PipelineOptions = {}): Pipeline<null> {
  return new Pipeline<null>(name, options, []);
}

/** Runs one command over one pipeline. */
class Runner {
  readonly workdir: string;
  readonly workers: number;
  readonly stages: readonly Stage[];
  readonly selected: Set<string>;
  readonly forced: Set<string>;
  readonly reporter: ProgressReporter;
  readonly executor?: SlurmExecutor;
  #artifacts = new Map<string, Artifact>();
  #verified = new Set<string>();
  #parts = new Map<string, KeyParts>();
  #graphs = new Map<string, ModuleGraph>();
  #modules: ModuleStore;

  constructor(readonly pipeline: Pipeline<Kind | null>, readonly opts: ExecuteOptions) {
    this.workdir = opts.workdir ?? pipeline.options.workdir ?? ".kiln";
    this.workers = Math.max(
      1,
      opts.workers ?? pipeline.options.workers ?? navigator.hardwareConcurrency ?? 1,
    );
    const ids = pipeline.stages.map((s) => s.id);
    const check = (id: string, flag: string) => {
      if (!ids.includes(id)) {
        throw new PipelineError(`${flag} ${id}: no such stage; stages are ${ids.join(", ") || "(none)"}`);
      }
      return ids.indexOf(id);
    };
    let selected = ids;
    if (opts.only?.length) {
      for (const id of opts.only) check(id, "--only");
      selected = ids.filter((id) => opts.only!.includes(id));
    } else {
      const from = opts.from ? check(opts.from, "--from") : 0;
      const until = opts.until ? check(opts.until, "--until") : ids.length - 1;
      selected = ids.slice(from, until + 1);
    }
    const lastSelected = Math.max(...selected.map((id) => ids.indexOf(id)), -1);
    this.stages = pipeline.stages.slice(0, lastSelected + 1);
    this.selected = new Set(selected);
    if (Array.isArray(opts.force)) { for (const id of opts.force) check(id, "--force"); }
    this.forced = new Set(opts.force === true ? selected : Array.isArray(opts.force) ? opts.force : []);
    this.reporter = new ProgressReporter({ quiet: opts.quiet, intervalS: opts.progressInterval });
    this.#modules = new ModuleStore(join(this.workdir, "modules"));
    this.executor = opts.executor === "local"
      ? undefined
      : opts.executor === "slurm"
      ? pipeline.options.executor ?? slurm({})
      : pipeline.options.executor;
  }

  #artifactDir(id: string, key: string) {
    return join(this.workdir, "artifacts", id, key.slice(0, KEY_DIR_LENGTH));
  }
  #workDir(id: string, key: string) {
    return join(this.workdir, "work", id, key.slice(0, KEY_DIR_LENGTH));
  }
  #indexPath(name = this.pipeline.name) {
    return join(this.workdir, "index", `${name}.json`);
  }

  async #readIndex(path = this.#indexPath()): Promise<PipelineIndex> {
    try {
      return JSON.parse(await Deno.readTextFile(path));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return { pipeline: this.pipeline.name, stages: {} };
      if (e instanceof SyntaxError) {
        // The index only explains changes; a damaged one costs explanations, never data.
        return { pipeline: this.pipeline.name, stages: {} };
      }
      throw e;
    }
  }

  async #writeIndex(index: PipelineIndex) {
    await Deno.mkdir(join(this.workdir, "index"), { recursive: true });
    await writeFileAtomic(this.#indexPath(), new TextEncoder().encode(JSON.stringify(index, null, 1)));
  }

  /** The stage whose artifact feeds `slot` of stage `i` ("input" = the previous one). */
  #producer(i: number, kind: Kind): Stage {
    for (let j = i - 1; j >= 0; j--) {
      if (this.pipeline.stages[j].output === kind) return this.pipeline.stages[j];
    }
    throw new PipelineError(`stage "${this.pipeline.stages[i].id}": no upstream stage outputs ${kind}`);
  }

  #slots(i: number): Record<string, Stage> {
    const stages = this.pipeline.stages;
    const stage = stages[i];
    const byId = (id: string) => stages.find((s) => s.id === id)!;
    const slots: Record<string, Stage> = {};
    if (stage.input !== null) {
      slots.input = stage.bindings.input !== undefined ? byId(stage.bindings.input) : stages[i - 1];
    }
    for (const [slot, kind] of Object.entries(stage.uses)) slots[slot] = this.#producer(i, kind);
    for (const slot of Object.keys(stage.inputs)) slots[slot] = byId(stage.bindings.inputs[slot] ?? slot);
    return slots;
  }

  /** Key parts of stage `i`, or undefined while an input has no committed artifact. */
  async #keyParts(i: number): Promise<KeyParts | undefined> {
    const stage = this.pipeline.stages[i];
    const inputs: Record<string, string> = {};
    for (const [slot, producer] of Object.entries(this.#slots(i))) {
      const artifact = this.#artifacts.get(producer.id);
      if (!artifact) return undefined;
      inputs[slot] = artifact.digest;
    }
    let graph: ModuleGraph;
    try {
      graph = await moduleGraph(stage.module, this.#modules);
    } catch (e) {
      throw this.#wrap(stage, e, "reading its code");
    }
    this.#graphs.set(stage.id, graph);
    const code = graph.digest;
    if (stage.integrity && stage.integrity !== `sha256-${code}`) {
      throw new PipelineError(
        `stage "${stage.id}": the code of ${stage.module} (and what it imports) does not match its pinned ` +
          `integrity: expected ${stage.integrity}, got sha256-${code}`,
      );
    }
    const parts: KeyParts = {
      name: stage.name,
      version: stage.version,
      code,
      config: JSON.parse(JSON.stringify(stage.config ?? null)),
      external: await stage.fingerprint().catch((e) => {
        throw this.#wrap(stage, e, "checking its input files");
      }),
      inputs,
    };
    this.#parts.set(stage.id, parts);
    return parts;
  }

  /** What the process of stage `i` may do (its inputs are committed, its key parts computed). */
  #grant(i: number, key: string) {
    const stage = this.pipeline.stages[i];
    const graph = this.#graphs.get(stage.id)!;
    return stageGrant({
      permissions: stage.permissions,
      codeFiles: graph.files,
      importMap: this.#modules.importMapPath(graph),
      inputs: Object.values(this.#slots(i)).map((p) => this.#artifacts.get(p.id)!.dir),
      workDir: this.#workDir(stage.id, key),
      external: this.#parts.get(stage.id)?.external,
      run: this.executor ? SLURM_COMMANDS : [],
    });
  }

  /** The committed artifact under `key`, undefined if none; a damaged one is reported via `damaged`. */
  async #committed(id: string, key: string): Promise<{ artifact?: Artifact; damaged?: string }> {
    let artifact: Artifact | undefined;
    try {
      artifact = await openArtifact(this.#artifactDir(id, key));
    } catch (e) {
      if (e instanceof ArtifactError) return { damaged: e.message };
      throw e;
    }
    if (!artifact) return {};
    if (artifact.key !== key) return { damaged: "manifest names another key" };
    const problem = await artifact.quickCheck();
    return problem ? { damaged: problem } : { artifact };
  }

  #wrap(stage: Stage, e: unknown, doing: string): Error {
    // The runner itself was refused (reading a config's files or a stage's code): name the flag.
    if (e instanceof Deno.errors.NotCapable || (e as Error)?.name === "NotCapable") {
      const message = (e as Error).message.replace(
        /, run again with the (--allow-\w+) flag/,
        "; run kiln with $1",
      );
      return new PermissionError(
        `stage "${stage.id}": kiln was refused ${message.replace(/^Requires /, "")} while ${doing}`,
      );
    }
    if (e instanceof InterruptedError || isKilnError(e)) return e as Error;
    return new Error(`stage "${stage.id}" failed while ${doing}: ${(e as Error)?.message ?? e}`, {
      cause: e,
    });
  }

  async inspect(): Promise<StageStatus[]> {
    const index = await this.#readIndex();
    const out: StageStatus[] = [];
    const willRun = new Set<string>();
    for (let i = 0; i < this.pipeline.stages.length; i++) {
      const stage = this.pipeline.stages[i];
      const selected = this.selected.has(stage.id);
      const status: StageStatus = {
        id: stage.id,
        stage: stage.name,
        kind: stage.output,
        state: "pending",
        action: selected ? "run" : "not selected",
        reasons: [],
      };
      out.push(status);
      const upstream = Object.values(this.#slots(i)).filter((p) =>
        willRun.has(p.id) || !this.#artifacts.has(p.id)
      );
      const parts = upstream.length ? undefined : await this.#keyParts(i);
      const previous = index.stages[stage.id];
      if (!parts) {
        status.reasons.push(
          ...upstream.map((p) =>
            `waits for "${p.id}", which ${willRun.has(p.id) ? "will run" : "is not built"}`
          ),
        );
        if (previous) status.state = "stale";
        if (selected) willRun.add(stage.id);
        continue;
      }
      const key = cacheKey(parts);
      status.key = key;
      status.grant = grantFlags(this.#grant(i, key));
      status.code = `sha256-${parts.code}`;
      const { artifact, damaged } = await this.#committed(stage.id, key);
      if (artifact) {
        this.#artifacts.set(stage.id, artifact);
        status.state = "done";
        status.committedAt = artifact.manifest.committedAt;
        status.stats = artifact.stats;
        if (selected && this.forced.has(stage.id)) status.reasons.push("forced");
        else status.action = selected ? "skip" : "not selected";
        if (status.action === "run") willRun.add(stage.id);
        continue;
      }
      if (damaged) {
        status.state = "damaged";
        status.reasons.push(`artifact damaged: ${damaged}`);
      } else if (previous && previous.key !== key) {
        status.state = "stale";
        status.reasons.push(...explainChange(previous.parts, parts));
      } else {
        status.reasons.push("never built");
      }
      const done = await listFiles(join(this.#workDir(stage.id, key), "state", "done"));
      if (done.length || await exists(join(this.#workDir(stage.id, key), "state"))) {
        status.state = status.state === "damaged" ? "damaged" : "partial";
        status.checkpoints = done.length;
        if (selected) status.action = "resume";
      }
      if (selected) willRun.add(stage.id);
    }
    return out;
  }

  async run(): Promise<RunResult> {
    const lock = await lockWorkdir(this.workdir, {
      wait: this.opts.wait,
      onWait: (holder) =>
        this.reporter.line(`waiting for the run holding ${this.workdir} (pid ${holder?.pid ?? "?"})…`),
    });
    const runId = `${new Date().toISOString().replaceAll(":", "-")}-${Deno.pid}`;
    const journal = new Journal(this.workdir, runId);
    const outcomes: StageOutcome[] = [];
    try {
      if (lock.tookOverFrom) {
        this.reporter.line(
          `note: the previous run (pid ${lock.tookOverFrom.pid}, started ${lock.tookOverFrom.startedAt}) ended without ` +
            `releasing ${this.workdir}; resuming from its checkpoints`,
        );
      }
      await journal.write("run-start", {
        pipeline: this.pipeline.name,
        stages: this.stages.map((s) => s.id),
        selected: [...this.selected],
        pid: Deno.pid,
        tookOverFrom: lock.tookOverFrom,
      });
      const index = await this.#readIndex();
      let rebuilds = 0;
      for (let i = 0; i < this.stages.length; i++) {
        const stage = this.stages[i];
        this.opts.signal?.throwIfAborted?.();
        const parts = await this.#keyParts(i);
        if (!parts) {
          const missing = Object.values(this.#slots(i)).filter((p) => !this.#artifacts.has(p.id)).map((p) =>
            p.id
          );
          throw new PipelineError(
            `stage "${stage.id}" needs the artifact of ${
              missing.map((m) => `"${m}"`).join(", ")
            }, which is not built; ` +
              `run without --from/--only first`,
          );
        }
        const key = cacheKey(parts);
        const selected = this.selected.has(stage.id);
        const { artifact, damaged } = await this.#committed(stage.id, key);
        if (damaged) {
          this.reporter.line(`! ${stage.id}: artifact damaged (${damaged}); rebuilding`);
          await journal.write("artifact-damaged", { stage: stage.id, key, problem: damaged });
          await this.#discard(this.#artifactDir(stage.id, key));
        }
        if (artifact && !(selected && this.forced.has(stage.id))) {
          this.#artifacts.set(stage.id, artifact);
          await Deno.remove(this.#workDir(stage.id, key), { recursive: true }).catch(() => {});
          if (index.stages[stage.id]?.key !== key) {
            index.stages[stage.id] = { key, parts, committedAt: artifact.manifest.committedAt };
            await this.#writeIndex(index);
          }
          if (selected) this.reporter.line(`· ${stage.id}: cached (${key.slice(0, 8)})`);
          outcomes.push({
            id: stage.id,
            action: selected ? "cached" : "not selected",
            durationMs: 0,
            artifact,
          });
          await journal.write("stage-cached", { stage: stage.id, key });
          continue;
        }
        if (!selected) {
          throw new PipelineError(
            `stage "${stage.id}" is not built for its current config and inputs; run it first (without --from/--only)`,
          );
        }
        // Inputs are read now: check every digest so a damaged upstream artifact is rebuilt, not used.
        const bad = await this.#verifyInputs(i, journal);
        if (bad !== undefined) {
          if (++rebuilds > this.stages.length) throw new ArtifactError("artifacts keep failing verification");
          i = bad - 1;
          continue;
        }
        const outcome = await this.#runStage(i, key, parts, journal);
        outcomes.push(outcome);
        index.stages[stage.id] = { key, parts, committedAt: outcome.artifact!.manifest.committedAt };
        await this.#writeIndex(index);
      }
      await journal.write("run-end", { ok: true });
      return { stages: outcomes, artifacts: Object.fromEntries(this.#artifacts), journal: journal.path };
    } catch (e) {
      const interrupted = e instanceof InterruptedError || (e as Error)?.name === "AbortError";
      await journal.write(interrupted ? "run-interrupted" : "run-failed", {
        error: String((e as Error)?.message ?? e),
      });
      throw interrupted && !(e instanceof InterruptedError)
        ? new InterruptedError("interrupted; progress is checkpointed, run again to resume")
        : e;
    } finally {
      this.reporter.clear();
      await journal.flush();
      lock.release();
    }
  }

  /** Verifies the artifacts stage `i` reads; on damage, discards it and returns its stage's index. */
  async #verifyInputs(i: number, journal: Journal): Promise<number | undefined> {
    for (const producer of Object.values(this.#slots(i))) {
      const artifact = this.#artifacts.get(producer.id)!;
      if (this.#verified.has(artifact.dir)) continue;
      const problem = await artifact.verify();
      if (problem) {
        this.reporter.line(`! ${producer.id}: artifact damaged (${problem}); rebuilding it`);
        await journal.write("artifact-damaged", { stage: producer.id, key: artifact.key, problem });
        await this.#discard(artifact.dir);
        this.#artifacts.delete(producer.id);
        return this.pipeline.stages.indexOf(producer);
      }
      this.#verified.add(artifact.dir);
    }
    return undefined;
  }

  /** Moves a directory out of the way and deletes it (the rename makes it vanish atomically). */
  async #discard(dir: string) {
    const trash = join(this.workdir, "trash", crypto.randomUUID());
    await Deno.mkdir(join(this.workdir, "trash"), { recursive: true });
    try {
      await Deno.rename(dir, trash);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return;
      throw e;
    }
    await Deno.remove(trash, { recursive: true });
  }

  async #runStage(i: number, key: string, parts: KeyParts, journal: Journal): Promise<StageOutcome> {
    const stage = this.stages[i];
    const base = this.#workDir(stage.id, key);
    const dirs = { out: join(base, "out"), state: join(base, "state"), tmp: join(base, "tmp") };
    const resumed = await exists(dirs.state);
    await Deno.remove(dirs.tmp, { recursive: true }).catch(() => {});
    for (const dir of Object.values(dirs)) await Deno.mkdir(dir, { recursive: true });
    const controller = new AbortController();
    const onAbort = () => controller.abort(new InterruptedError("interrupted"));
    this.opts.signal?.addEventListener("abort", onAbort, { once: true });
    let lastJournaled = 0;
    const progress = (p: Progress) => {
      this.reporter.update(p);
      const now = performance.now();
      if (now - lastJournaled > 5000) {
        lastJournaled = now;
        journal.write("progress", { stage: stage.id, ...p });
      }
    };
    const slots = this.#slots(i);
    const uses: Record<string, string> = {};
    for (const [slot, producer] of Object.entries(slots)) {
      if (slot !== "input") uses[slot] = resolve(this.#artifacts.get(producer.id)!.dir);
    }
    const graph = this.#graphs.get(stage.id)!;
    const importMap = await this.#modules.materialize(graph);
    const grant = this.#grant(i, key);
    const missing = beyondRunner(grant);
    if (missing) {
      throw new PermissionError(
        `stage "${stage.id}" needs ${missing.replace(/^--allow-(\w+)=?/, "$1 access ")}`.trimEnd() +
          `, which kiln itself was not given: run kiln with ${missing} (a stage gets no more than the runner has)`,
      );
    }
    const started = performance.now();
    this.reporter.start(stage.id);
    this.reporter.line(
      `▶ ${stage.id}: ${resumed ? "resuming from checkpoint" : "running"} (${key.slice(0, 8)})`,
    );
    await journal.write("stage-start", { stage: stage.id, key, resumed, parts, grant: grantFlags(grant) });
    let stats: Record<string, unknown>;
    try {
      // Under Slurm, a stage that trains a model runs as one batch job (with the executor's GPUs);
      // data stages run here and send their shards out as job arrays.
      const asJob = this.executor && (stage.output === "model" || stage.output === "reward-model");
      stats = await (asJob ? runStageJobOnSlurm : runStageProcess)(
        {
          module: stage.module,
          name: stage.name,
          id: stage.id,
          config: stage.config,
          input: slots.input ? resolve(this.#artifacts.get(slots.input.id)!.dir) : undefined,
          uses,
          dirs: { out: resolve(dirs.out), state: resolve(dirs.state), tmp: resolve(dirs.tmp) },
          workers: this.workers,
          // Array tasks on the nodes get the stage's own permissions, less starting processes.
          executor: this.executor
            ? {
              slurm: this.executor.options,
              nodeFlags: stageFlags(grant, importMap).filter((f) => !f.startsWith("--allow-run")),
            }
            : undefined,
        },
        grant,
        importMap,
        {
          signal: controller.signal,
          progress,
          log: (message: string) => {
            this.reporter.line(`  ${stage.id}: ${message}`);
            journal.write("log", { stage: stage.id, message });
          },
        },
        this.executor?.options ?? {},
      );
    } catch (e) {
      const err = controller.signal.aborted
        ? new InterruptedError("interrupted")
        : this.#wrap(stage, e, "running");
      await journal.write(err instanceof InterruptedError ? "stage-interrupted" : "stage-failed", {
        stage: stage.id,
        error: err.message,
        stats: (e as { stats?: unknown })?.stats ?? {},
      });
      throw err;
    } finally {
      this.opts.signal?.removeEventListener("abort", onAbort);
      this.reporter.finish();
    }
    const durationMs = performance.now() - started;
    await Deno.remove(dirs.tmp, { recursive: true }).catch(() => {});
    const finalDir = this.#artifactDir(stage.id, key);
    await this.#discard(finalDir);
    await Deno.mkdir(join(finalDir, ".."), { recursive: true });
    const artifact = await commitArtifact(dirs.out, finalDir, {
      stage: stage.id,
      kind: stage.output,
      key,
      stats,
      durationMs: Math.round(durationMs),
    });
    await Deno.remove(base, { recursive: true });
    this.#artifacts.set(stage.id, artifact);
    this.#verified.add(artifact.dir);
    await journal.write("stage-commit", {
      stage: stage.id,
      key,
      digest: artifact.digest,
      files: Object.keys(artifact.manifest.files).length,
      stats: artifact.stats,
      durationMs: Math.round(durationMs),
    });
    this.reporter.line(`✓ ${stage.id}: ${formatDuration(durationMs / 1000)}${summarize(artifact.stats)}`);
    return { id: stage.id, action: resumed ? "resumed" : "ran", durationMs, artifact };
  }

  /** Writes the HTML report of the current state (see `report.ts`). */
  async report(): Promise<{ path: string }> {
    const statuses = await this.inspect();
    const html = await renderReport(this.pipeline.name, statuses, Object.fromEntries(this.#artifacts));
    const path = this.opts.out ?? join(this.workdir, reportFileName(this.pipeline.name));
    await writeFileAtomic(path, new TextEncoder().encode(html));
    return { path };
  }

  async gc(): Promise<{ removed: string[]; bytes: number }> {
    const lock = await lockWorkdir(this.workdir, { wait: this.opts.wait });
    try {
      const keep = new Set<string>();
      for (const status of await this.inspect()) {
        if (status.key) keep.add(`${status.id}/${status.key.slice(0, KEY_DIR_LENGTH)}`);
      }
      // Other pipelines sharing the workdir keep what their index points to.
      for (const name of await listFiles(join(this.workdir, "index"))) {
        if (name === `${this.pipeline.name}.json`) continue;
        const other = await this.#readIndex(join(this.workdir, "index", name));
        for (const [id, entry] of Object.entries(other.stages)) {
          keep.add(`${id}/${entry.key.slice(0, KEY_DIR_LENGTH)}`);
        }
      }
      const removed: string[] = [];
      let bytes = 0;
      for (const area of ["artifacts", "work"]) {
        for (const id of await dirNames(join(this.workdir, area))) {
          for (const key of await dirNames(join(this.workdir, area, id))) {
            if (keep.has(`${id}/${key}`)) continue;
            const dir = join(this.workdir, area, id, key);
            bytes += await dirSize(dir);
            await this.#discard(dir);
            removed.push(join(area, id, key));
          }
        }
      }
      await Deno.remove(join(this.workdir, "trash"), { recursive: true }).catch(() => {});
      return { removed, bytes };
    } finally {
      lock.release();
    }
  }
}

function summarize(stats: Record<string, unknown>): string {
  const shown = Object.entries(stats).filter(([, v]) => typeof v === "number").slice(0, 5);
  return shown.length
    ? " · " + shown.map(([k, v]) => `${k} ${Number.isInteger(v) ? v : (v as number).toFixed(4)}`).join(" · ")
    : "";
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return false;
    throw e;
  }
}

async function dirNames(path: string): Promise<string[]> {
  try {
    return (await Array.fromAsync(Deno.readDir(path))).filter((e) => e.isDirectory).map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

async function dirSize(path: string): Promise<number> {
  let total = 0;
  for (const rel of await listFiles(path)) total += (await Deno.stat(join(path, rel))).size;
  return total;
}
