/**
 * The command line. A pipeline file is its own CLI (`deno run pipeline.ts status`); the `kiln` command
 * (`cli/kiln.ts`) is the same CLI for YAML pipelines, with a few commands of its own.
 *
 * ```
 * kiln <command> [pipeline.yaml] [flags]
 *   run      bring the pipeline up to date (the default)
 *   status   each stage: done, stale, partial or pending, and why it would rerun
 *   plan     what `run` would do, without doing it
 *   gc       remove artifacts and checkpoints no current key points to
 *   report   write an HTML report: stats, loss curves, filter funnel (--out FILE)
 *   stages   list the built-in stages
 *   sample   generate from a model directory (`kiln sample <dir> --prompt …`)
 *   score    score (prompt, response) pairs with a reward model (`kiln score <dir> …`)
 * flags: --from ID  --until ID  --only ID[,ID]  --force[=ID,ID]  --workdir DIR  --workers N
 *        --wait  --json  --quiet  --progress-interval S  --out FILE  --help
 * ```
 * Exit codes: 0 success, 1 failure, 2 usage error, 75 workdir in use, 130 interrupted.
 * @module
 */
import { dirname, resolve } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import { parseArgs } from "node:util";
import { InterruptedError, isKilnError, LockedError } from "./errors.ts";
import type { ExecuteOptions, RunResult, StageStatus } from "./run_types.ts";
import { formatDuration } from "./progress.ts";

const COMMANDS = ["run", "status", "plan", "gc", "report", "stages"] as const;
/** kiln's folder, when it is loaded from files: where `deno task kiln` runs. */
const KILN_ROOT = import.meta.url.startsWith("file:")
  ? fromFileUrl(new URL("..", import.meta.url)).replace(/\/$/, "")
  : "";
type Command = typeof COMMANDS[number];

/** What the command line needs of a pipeline: a `Pipeline`, seen by its shape (pipeline.ts imports this module). */
export interface CommandPipeline {
  readonly name: string;
  execute(opts: ExecuteOptions & { command: "status" | "plan" }): Promise<StageStatus[]>;
  execute(opts: ExecuteOptions & { command: "gc" }): Promise<{ removed: string[]; bytes: number }>;
  execute(opts: ExecuteOptions & { command: "report" }): Promise<{ path: string }>;
  execute(opts?: ExecuteOptions & { command?: "run" }): Promise<RunResult>;
}

/**
 * What the `kiln` command (cli/kiln.ts) adds to a pipeline file's CLI: pipelines from YAML files, the
 * list of built-in stages, and tools that work on a model directory rather than on a pipeline. Passed
 * in, so the runtime imports nothing from the stages and models built on it.
 */
export interface KilnCommand {
  /** Loads a YAML pipeline (its path is absolute). */
  loadYaml(file: string): Promise<CommandPipeline>;
  /** The built-in stages, one line each, or their settings as Markdown (`--docs`). */
  stages(docs: boolean): Promise<string>;
  /** `kiln sample …`, `kiln score …`. */
  tools: Record<string, () => Promise<(args: string[]) => Promise<unknown>>>;
}

const USAGE = `usage: <pipeline.ts> [command] [flags]      (a pipeline file is its own CLI)
       kiln [command] <pipeline.yaml> [flags]  (cli/kiln.ts)

commands:
  run       bring the pipeline up to date: skip cached stages, resume partial ones (default);
            then write the report (<workdir>/report-<pipeline>.html)
  status    each stage: done, stale, partial or pending, and why it would rerun
  plan      what run would do, without doing it
  gc        remove artifacts and checkpoints that no current key points to
  report    write an HTML report with each stage's stats and plots (--out FILE)
  stages    list the built-in stages (--docs: every stage's settings as Markdown, docs/stages.md)
  sample    kiln sample <model-dir> --prompt …   generate text from a checkpoint (--help)
  score     kiln score <reward-model-dir> --prompt … --response …   score responses (--help)

flags:
  --from ID            run this stage and the ones after it
  --until ID           stop after this stage
  --only ID[,ID…]      run only these stages (their inputs must be built)
  --force[=ID,…]       rerun even if cached (all selected stages, or the ones named)
  --workdir DIR        artifacts, checkpoints and journals (default .kiln)
  --workers N          worker threads for data stages (default: one per core)
  --executor local|slurm  where data stages' shards run (default: the pipeline's, else local)
  --wait               wait for another run holding the workdir instead of exiting
  --json               machine-readable output (status, plan, gc, run)
  --quiet              no progress lines
  --progress-interval S  seconds between progress lines when not on a terminal (default 10)
  --out FILE           where report writes its HTML (default <workdir>/report-<pipeline>.html)`;

/** Runs the CLI of a pipeline file (`pipeline`) or the `kiln` command (`kiln`); returns the exit code. */
export async function main(
  args: string[],
  opts: { pipeline?: CommandPipeline; kiln?: KilnCommand } = {},
): Promise<number> {
  const tools = opts.kiln?.tools ?? {};
  if (!opts.pipeline && args[0] in tools) {
    try {
      await (await tools[args[0]]())(args.slice(1));
      return 0;
    } catch (e) {
      return report(e);
    }
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: args.map((a) => (a === "--force" ? "--force=*" : a)),
      allowPositionals: true,
      options: {
        from: { type: "string" },
        until: { type: "string" },
        only: { type: "string", multiple: true },
        force: { type: "string", multiple: true },
        workdir: { type: "string" },
        workers: { type: "string" },
        wait: { type: "boolean" },
        json: { type: "boolean" },
        quiet: { type: "boolean" },
        "progress-interval": { type: "string" },
        out: { type: "string" },
        help: { type: "boolean", short: "h" },
        docs: { type: "boolean" },
        executor: { type: "string" },
      },
    });
  } catch (e) {
    console.error(`${(e as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const command = (COMMANDS as readonly string[]).includes(positionals[0] ?? "")
    ? positionals.shift() as Command
    : "run";
  if (command === "stages") {
    if (!opts.kiln) {
      console.error(`"stages" lists kiln's built-in stages: run it with the kiln command\n\n${USAGE}`);
      return 2;
    }
    console.log(await opts.kiln.stages(values.docs ?? false));
    return 0;
  }
  // Paths on the command line are relative to where the command was typed: `deno task kiln` runs in
  // kiln's folder and says where it was called from in INIT_CWD (which any process it starts inherits,
  // so it counts only while the working directory is kiln's own).
  const invokedFrom = (Deno.cwd() === KILN_ROOT && envVar("INIT_CWD")) || Deno.cwd();
  const fromInvocation = (path?: string) => path === undefined ? undefined : resolve(invokedFrom, path);
  let p = opts.pipeline;
  if (!p) {
    const file = fromInvocation(positionals.shift());
    if (!file || !opts.kiln) {
      console.error(`kiln ${command}: name a pipeline YAML file\n\n${USAGE}`);
      return 2;
    }
    try {
      p = await opts.kiln.loadYaml(file);
    } catch (e) {
      return report(e);
    }
    // Paths inside a YAML pipeline (its workdir, and the paths in stage configs) are relative to the
    // YAML file's folder, wherever the command runs from.
    Deno.chdir(dirname(file));
  }
  if (positionals.length) {
    console.error(`unexpected argument "${positionals[0]}"\n\n${USAGE}`);
    return 2;
  }
  const workers = values.workers === undefined ? undefined : Number(values.workers);
  if (workers !== undefined && !(Number.isInteger(workers) && workers >= 1)) {
    console.error(`--workers ${values.workers}: expected a whole number ≥ 1`);
    return 2;
  }
  if (values.executor !== undefined && values.executor !== "local" && values.executor !== "slurm") {
    console.error(`--executor ${values.executor}: expected local or slurm`);
    return 2;
  }
  const split = (list?: string[]) => list?.flatMap((v) => v.split(",")).map((v) => v.trim()).filter(Boolean);
  const force = split(values.force);
  const common = {
    from: values.from,
    until: values.until,
    only: split(values.only),
    force: force?.includes("*") ? true : force,
    workdir: fromInvocation(values.workdir),
    workers,
    executor: values.executor as "local" | "slurm" | undefined,
    wait: values.wait,
    quiet: values.quiet || values.json,
    progressInterval: values["progress-interval"] ? Number(values["progress-interval"]) : undefined,
  };

  try {
    if (command === "status" || command === "plan") {
      const statuses = await p.execute({ ...common, command });
      if (values.json) console.log(JSON.stringify(statuses, null, 2));
      else printStatus(p, statuses, command);
      return 0;
    }
    if (command === "report") {
      const { path } = await p.execute({ ...common, command, out: fromInvocation(values.out) });
      console.log(values.json ? JSON.stringify({ path }) : `wrote ${path}`);
      return 0;
    }
    if (command === "gc") {
      const result = await p.execute({ ...common, command });
      if (values.json) console.log(JSON.stringify(result, null, 2));
      else {console.log(
          `removed ${result.removed.length} director${result.removed.length === 1 ? "y" : "ies"}, ${
            (result.bytes / 1e6).toFixed(1)
          } MB`,
        );}
      return 0;
    }
    const controller = new AbortController();
    let signals = 0;
    const onSignal = () => {
      if (++signals > 1) Deno.exit(130);
      console.error("\nstopping at the next safe point (checkpointing); press Ctrl-C again to stop at once");
      controller.abort(new InterruptedError("interrupted"));
    };
    Deno.addSignalListener("SIGINT", onSignal);
    Deno.addSignalListener("SIGTERM", onSignal);
    try {
      const result = await p.execute({ ...common, command: "run", signal: controller.signal });
      // Every successful run leaves an up-to-date report beside its artifacts.
      const report = await p.execute({ ...common, command: "report" });
      if (!common.quiet) console.error(`report: ${report.path}`);
      if (values.json) {
        console.log(JSON.stringify(
          {
            journal: result.journal,
            stages: result.stages.map((s) => ({
              id: s.id,
              action: s.action,
              durationMs: Math.round(s.durationMs),
              artifact: s.artifact?.dir,
            })),
          },
          null,
          2,
        ));
      }
      return 0;
    } finally {
      Deno.removeSignalListener("SIGINT", onSignal);
      Deno.removeSignalListener("SIGTERM", onSignal);
    }
  } catch (e) {
    return report(e);
  }
}

/** An environment variable, or undefined when unset or not granted (no prompt). */
function envVar(name: string): string | undefined {
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
  return Deno.env.get(name);
}

/** An error the operating system or Deno's permissions raised (one of `Deno.errors`). */
function isSystemError(e: unknown): boolean {
  return Object.values(Deno.errors).some((cls) => e instanceof cls) || /\(os error \d+\)/.test(String(e));
}

function report(e: unknown): number {
  if (e instanceof InterruptedError) {
    console.error(`interrupted: progress is checkpointed; run the same command again to resume`);
    return 130;
  }
  if (e instanceof LockedError) {
    console.error(`error: ${e.message}`);
    return 75;
  }
  // kiln's own errors, and what the system refuses (a full disk, a permission the runner lacks), are
  // expected: one line. Anything else is a bug: its origin follows, for the report.
  if (isKilnError(e) || isSystemError(e)) {
    console.error(`error: ${(e as Error).message}`);
    return 1;
  }
  // An unexpected error: one line first, then where it came from, for a bug report.
  const err = e as Error;
  console.error(`error: ${err?.message ?? err}`);
  const origin = (err?.cause as Error)?.stack ?? err?.stack;
  if (origin) {
    console.error(origin.split("\n").slice(err?.cause ? 0 : 1).map((l) => "  " + l.trim()).join("\n"));
  }
  return 1;
}

function printStatus(p: CommandPipeline, statuses: StageStatus[], command: "status" | "plan") {
  const width = Math.max(8, ...statuses.map((s) => s.id.length)) + 2;
  console.log(`pipeline ${p.name}`);
  for (const s of statuses) {
    const detail: string[] = [];
    if (command === "status") {
      if (s.state === "done" && s.committedAt) {
        detail.push(`built ${formatDuration((Date.now() - Date.parse(s.committedAt)) / 1000)} ago`);
      }
      if (s.checkpoints !== undefined) {
        detail.push(`resumable, ${s.checkpoints} checkpoint${s.checkpoints === 1 ? "" : "s"}`);
      }
      detail.push(...s.reasons);
      console.log(`  ${s.id.padEnd(width)}${s.state.padEnd(9)}${detail.join("; ")}`);
    } else {
      console.log(`  ${s.action.padEnd(14)}${s.id.padEnd(width)}${s.reasons.join("; ")}`);
    }
  }
}
