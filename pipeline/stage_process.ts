/**
 * The body of a stage process (see `sandbox.ts`): reads what to run from stdin, imports the stage's
 * module, runs the stage with a context built here, and reports progress, log lines, stats and the
 * outcome to the runner as protocol lines on stdout. The process has only the permissions the runner
 * granted this stage, and so have the worker threads it starts.
 * @module
 */
import { openArtifact } from "./artifact.ts";
import { InterruptedError, isKilnError, KilnError } from "./errors.ts";
import { damagedShards, runShards } from "./pool.ts";
import { runShardsOnSlurm } from "./slurm.ts";
import { registry, type StageContext, type Stats } from "./stage.ts";
import { Checkpoint, OutputWriter } from "./workspace.ts";
import type { Artifact } from "./artifact.ts";
import { PREFIX, type StageJob, type StageMessage } from "./sandbox.ts";

const encoder = new TextEncoder();
function send(message: StageMessage) {
  Deno.stdout.writeSync(encoder.encode(PREFIX + JSON.stringify(message) + "\n"));
}

class StageStats implements Stats {
  #values: Record<string, unknown> = {};
  add(name: string, n = 1) {
    this.#values[name] = ((this.#values[name] as number) ?? 0) + n;
  }
  set(name: string, value: unknown) {
    this.#values[name] = value;
  }
  toJSON() {
    return { ...this.#values };
  }
}

/** How many times a stage reruns to redo shards whose output was damaged before the commit. */
const REPAIR_ROUNDS = 3;

/**
 * Reads the job (the first line on stdin), then keeps reading: stdin ends only when the runner is
 * gone (killed), and then this process stops at once, as if killed with it (every write is atomic).
 */
async function readJobAndWatchRunner(): Promise<string> {
  const reader = Deno.stdin.readable.getReader();
  const decoder = new TextDecoder();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) Deno.exit(1);
    text += decoder.decode(value, { stream: true });
  }
  (async () => {
    while (!(await reader.read()).done) { /* nothing else is sent */ }
    Deno.exit(137);
  })();
  return text.slice(0, text.indexOf("\n"));
}

async function main() {
  // A stage's own console output must not mix with the protocol lines.
  console.log = console.info = console.debug = console.error;
  // `--job FILE`: a Slurm batch job (no runner on stdin to watch); otherwise the job comes on stdin.
  const jobFile = Deno.args[0] === "--job" ? Deno.args[1] : undefined;
  const job: StageJob = JSON.parse(
    jobFile ? await Deno.readTextFile(jobFile) : await readJobAndWatchRunner(),
  );
  const stats = new StageStats();
  const controller = new AbortController();
  const onSignal = () => controller.abort(new InterruptedError("interrupted"));
  Deno.addSignalListener("SIGINT", onSignal);
  Deno.addSignalListener("SIGTERM", onSignal);
  try {
    await import(job.module);
    const found = registry().filter((s) => s.name === job.name);
    const entry = found.find((s) => s.module === job.module) ?? found.at(-1);
    if (!entry) {
      throw new KilnError(
        `stage "${job.id}": importing ${job.module} defines no stage named "${job.name}"; each stage runs in ` +
          `a process of its own that imports its module, so define stages at a module's top level`,
      );
    }
    const stage = entry.factory(job.config as never).as(job.id);
    const out = new OutputWriter(job.dirs.out, job.dirs.tmp);
    const checkpoint = new Checkpoint(job.dirs.state, job.dirs.tmp);
    const open = async (dir: string) => {
      const artifact = await openArtifact(dir);
      if (!artifact) throw new KilnError(`input artifact missing: ${dir}`);
      return artifact;
    };
    const uses: Record<string, Artifact> = {};
    for (const [slot, dir] of Object.entries(job.uses)) uses[slot] = await open(dir);
    const ctx: StageContext<unknown, string | null> = {
      id: job.id,
      config: stage.config,
      input: (job.input ? await open(job.input) : undefined) as Artifact,
      uses,
      out,
      checkpoint,
      signal: controller.signal,
      workers: job.workers,
      stats,
      progress: (p) => send({ type: "progress", ...p }),
      log: (message) => send({ type: "log", message }),
      runShards: (worker, tasks) => {
        const common = {
          workers: job.workers,
          out,
          checkpoint,
          signal: controller.signal,
          onProgress: (done: number, total: number) =>
            send({ type: "progress", done, total, unit: "shards" }),
        };
        return job.executor
          ? runShardsOnSlurm(worker, tasks, {
            ...common,
            slurm: job.executor.slurm,
            denoFlags: job.executor.nodeFlags,
            log: (message) => send({ type: "log", message }),
          })
          : runShards(worker, tasks, common);
      },
    };
    for (let round = 0;; round++) {
      await stage.run(ctx);
      if (controller.signal.aborted) throw new InterruptedError("interrupted");
      // Nothing damaged is committed: shards whose files changed since they were marked are redone.
      const damaged = await damagedShards(checkpoint, out);
      if (!damaged.length) break;
      if (round + 1 >= REPAIR_ROUNDS) {
        throw new KilnError(`output of ${damaged.length} shard(s) keeps failing its digest check`);
      }
      send({
        type: "log",
        message: `${damaged.length} finished shard(s) changed on disk since they were marked done; redoing ` +
          damaged.slice(0, 3).map((d) => `"${d}"`).join(", ") + (damaged.length > 3 ? ", …" : ""),
      });
    }
    send({ type: "done", stats: stats.toJSON() });
    Deno.exit(0);
  } catch (e) {
    const err = e as Error;
    const interrupted = controller.signal.aborted || e instanceof InterruptedError;
    const permission = /Requires \w+ access to/.test(String(err?.message)) ? String(err.message) : undefined;
    send({
      type: "error",
      stats: stats.toJSON(),
      error: {
        name: interrupted ? "InterruptedError" : isKilnError(e) ? err.name : err?.name ?? "Error",
        message: String(err?.message ?? e),
        stack: err?.stack,
        permission,
        fields: isKilnError(e) ? JSON.parse(JSON.stringify({ ...err })) : undefined,
      },
    });
    Deno.exit(interrupted ? 130 : 1);
  }
}

if (import.meta.main) await main();
