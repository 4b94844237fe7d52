/**
 * The Slurm executor: a data stage's shard tasks run as one Slurm job array instead of on the local
 * worker pool, with the same contract as {@linkcode runShards} (shards already marked done are skipped,
 * every finished shard is marked done with `{ result }`, results come back in task order), so a stage
 * started on the local pool can be finished on Slurm and the other way round. Training stages use
 * {@linkcode submitJob} / {@linkcode waitForJob}: one job, optionally with GPUs and a dependency.
 *
 * How a shard call runs (`runShardsOnSlurm`):
 * - the driver writes the task files (one per array task) and a batch script into the stage's checkpoint
 *   directory (which must be on a filesystem the nodes share) and submits ONE `sbatch --parsable
 *   --array=0-N%M`;
 * - array task `rank` runs `deno run <flags> pipeline/slurm_task.ts task-<n>/<rank>.json` on its node
 *   and processes the shards it owns (rank, rank+N, …), marking each done through the checkpoint as the
 *   pool does;
 * - the driver follows the jobs with `squeue` (no `sacct`: clusters without slurmdbd lack it), reads each
 *   task's progress file for per-task progress and ETA, and resubmits the unfinished shards of a failed
 *   task up to `retries` times before failing with the task's log path and last lines;
 * - the job ids are recorded in the checkpoint directory before and after `sbatch`, so a driver killed
 *   with SIGKILL and started again adopts the jobs still queued or running and resubmits only the shards
 *   that no live task owns: a shard never runs twice at the same time, and none is lost;
 * - on abort (Ctrl-C) the driver `scancel`s its jobs and waits until they have left the queue.
 *
 * @example
 * ```ts
 * import { runShardsOnSlurm } from "./slurm.ts";
 * const results = await runShardsOnSlurm({ module: import.meta.url, fn: "countShard" }, tasks, {
 *   slurm: { partition: "cpu", maxConcurrent: 64, cpusPerTask: 2, memory: "4G", time: "1:00:00" },
 *   workers: 1, out, checkpoint, signal, read: [inputDir], log: console.log,
 * });
 * // or, as the pipeline does: slurm({ partition: "cpu" }).runShards(worker, tasks, { workers: 1, … })
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "npm:zod@^4.6.7";
import { moduleGraph } from "./code_hash.ts";
import { InterruptedError, KilnError } from "./errors.ts";
import { doneShardResult, type RunShardsOptions, type ShardTask, type ShardWorker } from "./pool.ts";
import { formatDuration } from "./progress.ts";
import { writeFileAtomic } from "./workspace.ts";

// ---- options ------------------------------------------------------------------------------------

/** Slurm's time formats: minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]. */
const SLURM_TIME = /^(\d+(:\d{1,2}){0,2}|\d+-\d+(:\d{1,2}){0,2}|UNLIMITED|INFINITE)$/;

/** The options of {@linkcode slurm}: what each array task (or single job) asks the scheduler for. */
export const slurmOptionsSchema = z.strictObject({
  /** `--partition`; the cluster's default partition when absent. */
  partition: z.string().min(1).optional(),
  /** Array size: how many array tasks share a call's shards (default: one per shard, at most 1000). */
  tasks: z.int().min(1).max(100_000).optional(),
  /** The `%M` of `--array`: at most this many array tasks run at once (default: no limit). */
  maxConcurrent: z.int().min(1).optional(),
  /** `--cpus-per-task`. */
  cpusPerTask: z.int().min(1).default(1),
  /** `--mem` per array task, e.g. `4G`, `500M`. */
  memory: z.string().regex(/^\d+[KMGT]?$/, "expected a size like 4G, 500M or 2048").optional(),
  /** `--time` limit per array task, e.g. `30`, `2:00:00`, `1-12:00`. */
  time: z.string().regex(SLURM_TIME, "expected a Slurm time: MM, MM:SS, HH:MM:SS or D-HH[:MM[:SS]]")
    .optional(),
  /** `--account`. */
  account: z.string().min(1).optional(),
  /** `--qos`. */
  qos: z.string().min(1).optional(),
  /** `--gpus` (a count or `type:count`); meant for training jobs. */
  gpus: z.union([z.int().min(1), z.string().regex(/^[\w.-]+:\d+$/, "expected a count or type:count")])
    .optional(),
  /** More sbatch arguments, passed as given (e.g. `--constraint=ssd`, `--export=ALL,FOO=1`). */
  extraArgs: z.array(z.string().regex(/^-/, "each argument starts with '-', e.g. --constraint=ssd")).default(
    [],
  ),
  /** Where Slurm writes each task's log (default: `slurm/<call>/logs` in the stage's checkpoint). */
  logDir: z.string().min(1).optional(),
  /** How many times a failed task's unfinished shards are resubmitted before the stage fails. */
  retries: z.int().min(0).default(2),
  /** How often the driver asks `squeue` (seconds). */
  pollSeconds: z.number().positive().default(2),
  /** How often the driver logs per-task progress (seconds). */
  reportSeconds: z.number().positive().default(30),
  /** The `deno` executable on the nodes (default: the driver's own, which suits a shared install). */
  deno: z.string().min(1).optional(),
});

/** Options as a user writes them (defaults not yet applied). */
export type SlurmOptionsInput = z.input<typeof slurmOptionsSchema>;
/** Options after validation. */
export type SlurmOptions = z.output<typeof slurmOptionsSchema>;

/** Validates Slurm options; a bad value is one {@linkcode KilnError} naming the field. */
export function parseSlurmOptions(options: unknown, where = "slurm executor"): SlurmOptions {
  const parsed = slurmOptionsSchema.safeParse(options ?? {});
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0];
  const field = issue.path.map(String).join(".");
  throw new KilnError(`${where}: ${field ? field + ": " : ""}${issue.message}`);
}

/** The executor value `pipeline(name, { executor: slurm({ … }) })` takes. */
export interface SlurmExecutor {
  readonly kind: "slurm";
  readonly options: SlurmOptions;
  /** {@linkcode runShardsOnSlurm} with these options. */
  runShards<A, R>(
    worker: ShardWorker,
    tasks: ShardTask<A>[],
    opts: Omit<SlurmRunOptions, "slurm">,
  ): Promise<R[]>;
}

/** The Slurm client programs the driver runs (a stage's process is granted these under Slurm). */
export const SLURM_COMMANDS = ["sbatch", "scancel", "squeue"];

/**
 * The Slurm executor with validated options.
 * @example
 * ```ts
 * const executor = slurm({ partition: "cpu", tasks: 256, maxConcurrent: 64, memory: "4G", time: "2:00:00" });
 * ```
 */
export function slurm(options: SlurmOptionsInput = {}): SlurmExecutor {
  const parsed = parseSlurmOptions(options);
  return {
    kind: "slurm",
    options: parsed,
    runShards: (worker, tasks, opts) => runShardsOnSlurm(worker, tasks, { ...opts, slurm: parsed }),
  };
}

// ---- talking to Slurm ---------------------------------------------------------------------------

interface CommandOutput {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs a Slurm client command; a missing command or permission is a KilnError that says what to do. */
async function slurmCommand(cmd: string, args: string[]): Promise<CommandOutput> {
  try {
    const out = await new Deno.Command(cmd, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .output();
    const decoder = new TextDecoder();
    return { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new KilnError(
        `slurm: \`${cmd}\` is not on PATH; run kiln on a machine with the Slurm client commands (a login node)`,
      );
    }
    if (e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied) {
      throw new KilnError(`slurm: running \`${cmd}\` needs --allow-run=sbatch,squeue,scancel`);
    }
    throw e;
  }
}

const shellQuote = (s: string) => `'${s.replaceAll("'", `'\\''`)}'`;

/** What sbatch needs besides the options: name, script, log pattern, array spec, dependency. */
interface SbatchRequest {
  name: string;
  script: string;
  output: string;
  array?: string;
  dependency?: string[];
}

function sbatchArgs(options: SlurmOptions, req: SbatchRequest): string[] {
  const args = [
    "--parsable",
    `--job-name=${req.name}`,
    `--output=${req.output}`,
    // A node failure must come back to kiln (which resubmits the unfinished shards), not be requeued
    // by Slurm behind its back: a requeued task could run next to kiln's resubmission.
    "--no-requeue",
    "--kill-on-invalid-dep=yes",
    `--cpus-per-task=${options.cpusPerTask}`,
  ];
  if (req.array) args.push(`--array=${req.array}`);
  if (req.dependency?.length) args.push(`--dependency=afterok:${req.dependency.join(":")}`);
  if (options.partition) args.push(`--partition=${options.partition}`);
  if (options.memory) args.push(`--mem=${options.memory}`);
  if (options.time) args.push(`--time=${options.time}`);
  if (options.account) args.push(`--account=${options.account}`);
  if (options.qos) args.push(`--qos=${options.qos}`);
  if (options.gpus !== undefined) args.push(`--gpus=${options.gpus}`);
  args.push(...options.extraArgs, req.script);
  return args;
}

/** Submits a batch script; returns the job id, or throws one KilnError carrying sbatch's own words. */
async function sbatch(options: SlurmOptions, req: SbatchRequest): Promise<string> {
  const out = await slurmCommand("sbatch", sbatchArgs(options, req));
  const id = out.stdout.trim().split(";")[0];
  if (out.code !== 0 || !/^\d+$/.test(id)) {
    const why = out.stderr.trim().split("\n").filter(Boolean).map((l) => l.replace(/^sbatch: error: /, ""));
    throw new KilnError(
      `slurm: the cluster refused job "${req.name}": ${why.join("; ") || `sbatch exited with ${out.code}`}`,
    );
  }
  return id;
}

/** States after which a job (or array task) will not run again. Everything else is live. */
const FINISHED = new Set([
  "COMPLETED",
  "FAILED",
  "TIMEOUT",
  "CANCELLED",
  "OUT_OF_MEMORY",
  "NODE_FAIL",
  "BOOT_FAIL",
  "DEADLINE",
  "PREEMPTED",
  "SPECIAL_EXIT",
  "REVOKED",
]);

/** What squeue says about one job or array task. */
export interface JobState {
  state: string;
  reason: string;
  node: string;
}

/**
 * The states of `jobIds`' tasks, keyed `job_task` (array tasks) or `job` (single jobs). Uses squeue's
 * text format (`--json` ignores filters in Slurm 22.05); `-r` lists pending array tasks one by one; `-t
 * all` keeps finished jobs visible for the cluster's MinJobAge. Jobs Slurm has forgotten are absent.
 */
export async function queueStates(jobIds: string[]): Promise<Map<string, JobState>> {
  const states = new Map<string, JobState>();
  if (!jobIds.length) return states;
  const out = await slurmCommand("squeue", [
    "-h",
    "-r",
    "-t",
    "all",
    "-j",
    jobIds.join(","),
    "-o",
    "%F|%K|%T|%N|%r",
  ]);
  if (out.code !== 0) {
    // squeue fails when none of the ids is known any more (all purged): that is an answer, not an error.
    if (/Invalid job id/i.test(out.stderr)) return states;
    throw new KilnError(`slurm: squeue failed (exit ${out.code}): ${out.stderr.trim()}`);
  }
  for (const line of out.stdout.split("\n")) {
    const [job, task, state, node, reason] = line.trim().split("|");
    if (!job || !state) continue;
    const key = /^\d+$/.test(task ?? "") ? `${job}_${task}` : job;
    states.set(key, { state: state.replace(/\+$/, ""), node: node ?? "", reason: reason ?? "" });
  }
  return states;
}

/** Whether a job state means the job may still run. */
export const isLive = (state: string): boolean => !FINISHED.has(state);

async function scancel(jobIds: string[]): Promise<void> {
  if (jobIds.length) await slurmCommand("scancel", jobIds);
}

/** Cancels `jobIds` and waits (up to `waitS`) until none of their tasks is live. */
async function cancelAndWait(jobIds: string[], waitS = 60): Promise<void> {
  if (!jobIds.length) return;
  await scancel(jobIds);
  const deadline = performance.now() + waitS * 1000;
  while (performance.now() < deadline) {
    const states = await queueStates(jobIds).catch(() => new Map<string, JobState>());
    if (![...states.values()].some((s) => isLive(s.state))) return;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/** The last `lines` lines of a log file, or a note that it cannot be read. */
export async function logTail(path: string, lines = 20): Promise<string> {
  try {
    const file = await Deno.open(path);
    try {
      const size = (await file.stat()).size;
      const start = Math.max(0, size - 16_384);
      await file.seek(start, Deno.SeekMode.Start);
      const buf = new Uint8Array(size - start);
      let read = 0;
      while (read < buf.length) {
        const n = await file.read(buf.subarray(read));
        if (n === null) break;
        read += n;
      }
      const text = new TextDecoder().decode(buf.subarray(0, read)).trimEnd();
      return text.split("\n").slice(-lines).map((l) => "  | " + l).join("\n") || "  | (empty log)";
    } finally {
      file.close();
    }
  } catch (e) {
    return `  (log not readable: ${(e as Error).message})`;
  }
}

/** Sleeps `ms`, waking early when `signal` aborts. */
function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", wake);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    signal.addEventListener("abort", wake, { once: true });
  });
}

// ---- what the driver and the node share ---------------------------------------------------------

/**
 * What one array task reads: `task-<submission>/<rank>.json`, written by the driver before it submits.
 * One small file per rank, so a 1000-task array over 90,000 shards does not have every node parse the
 * whole list.
 */
export interface SlurmTaskFile {
  version: 1;
  module: string;
  fn: string;
  outDir: string;
  stateDir: string;
  /** Each array task writes its temporary files in `<tmpDir>/<submission>-<rank>/`. */
  tmpDir: string;
  /** Each array task reports to `<progressDir>/<submission>-<rank>.json`. */
  progressDir: string;
  submission: number;
  rank: number;
  /** The shards this rank owns, in order; `index` is the shard's position in the call's task list. */
  tasks: { index: number; id: string; args: unknown }[];
}

/** What an array task reports about itself (rewritten atomically as it goes). */
export interface SlurmTaskProgress {
  /** Epoch ms when the task started on its node. */
  started: number;
  /** Shard indices this task has finished (or found finished). */
  done: number[];
  /** How many of those it actually ran (for the ETA). */
  ran: number;
}

/**
 * Deno permission flags for array tasks: read `read` and `write`, write `write`, read the variables
 * `env`. Without `denoFlags`, {@linkcode runShardsOnSlurm} reads the stage's output and checkpoint
 * directories, kiln's modules, the directories of the shard module's import graph and `read`, and
 * writes only the stage's two directories.
 */
export function nodeDenoFlags(paths: { read: string[]; write: string[]; env?: string[] }): string[] {
  const unique = (xs: string[]) => [...new Set(xs.map((p) => resolve(p)))].join(",");
  const flags = ["--no-prompt", `--allow-read=${unique([...paths.read, ...paths.write])}`];
  if (paths.write.length) flags.push(`--allow-write=${unique(paths.write)}`);
  if (paths.env?.length) flags.push(`--allow-env=${paths.env.join(",")}`);
  return flags;
}

/** kiln's own folder, when kiln is loaded from files (nodes then read its modules there). */
const KILN_ROOT = import.meta.url.startsWith("file:")
  ? fileURLToPath(new URL("..", import.meta.url))
  : undefined;
const TASK_ENTRY = new URL("./slurm_task.ts", import.meta.url);

// ---- shard arrays -------------------------------------------------------------------------------

/** One array task, as the driver last saw it (passed to `onTasks`). */
export interface ArrayTaskStatus {
  /** `job_task`, e.g. `4711_3`. */
  name: string;
  state: string;
  node: string;
  reason: string;
  shards: number;
  done: number;
  etaSeconds?: number;
  log: string;
}

/** Options of {@linkcode runShardsOnSlurm}: the pool's options plus where and how to submit. */
export interface SlurmRunOptions extends RunShardsOptions {
  /** Validated options (`slurm({…}).options`, or a plain object validated here). */
  slurm: SlurmOptions | SlurmOptionsInput;
  /**
   * Exact Deno permission flags for the array tasks (the stage sandbox's). Default:
   * {@linkcode nodeDenoFlags} over the stage's output and checkpoint directories, kiln's modules, the
   * directories of the shard module's import graph and `read`.
   */
  denoFlags?: string[];
  /** More paths array tasks may read under the default flags (input artifacts, files a config names). */
  read?: string[];
  /** Progress lines for people: submissions, adoptions, failures, per-task progress with ETA. */
  log?: (message: string) => void;
  /** Every array task's state, after each poll. */
  onTasks?: (tasks: ArrayTaskStatus[]) => void;
}

/** A submitted (or about to be submitted) job array, as recorded in `jobs.json`. */
interface Submission {
  n: number;
  name: string;
  jobId?: string;
  size: number;
  /** Shard indices; rank r owns shards[r], shards[r + size], … */
  shards: number[];
  logPattern: string;
  /** Ranks the driver has already judged (finished, shards checked): not judged again after a restart. */
  judged: number[];
}

/** The driver's record of one shard call, in the checkpoint (survives a SIGKILL of the driver). */
interface CallState {
  submissions: Submission[];
  /** Failed attempts per shard index. */
  failures: Record<string, number>;
}

const DEFAULT_MAX_TASKS = 1000; // Slurm's default MaxArraySize is 1001 (indices 0–1000)

/**
 * {@linkcode runShards} on a Slurm cluster: runs `tasks` as a job array, skipping tasks already marked
 * done, and returns their results in task order. Throws a {@linkcode KilnError} when the cluster refuses
 * the submission or a shard keeps failing (with the task's log path and last lines), and
 * {@linkcode InterruptedError} when `signal` aborts (after cancelling its jobs); finished shards stay
 * marked done either way, so a rerun — on Slurm or on the local pool — continues where this one stopped.
 */
export async function runShardsOnSlurm<A, R>(
  worker: ShardWorker,
  tasks: ShardTask<A>[],
  opts: SlurmRunOptions,
): Promise<R[]> {
  const options = parseSlurmOptions(opts.slurm);
  const ids = new Set<string>();
  for (const task of tasks) {
    if (ids.has(task.id)) throw new KilnError(`shard ids must be unique; "${task.id}" appears twice`);
    ids.add(task.id);
  }
  const total = tasks.length;
  const done = new Set<number>();
  for (let i = 0; i < total; i++) {
    if (await doneShardResult(opts.checkpoint, opts.out, tasks[i].id)) done.add(i);
  }
  opts.onProgress?.(done.size, total);
  if (done.size < total) await new ShardArrayDriver(worker, tasks, opts, options, done).run();
  const results = new Array<R>(total);
  for (let i = 0; i < total; i++) {
    const info = await opts.checkpoint.doneInfo<{ result: R }>(tasks[i].id);
    if (info === undefined) {
      throw new KilnError(`slurm: shard "${tasks[i].id}" finished without a done-marker`);
    }
    results[i] = info.result;
  }
  return results;
}

/** Follows one shard call's job arrays until every shard is done. */
class ShardArrayDriver<A> {
  readonly dir: string;
  readonly statePath: string;
  readonly logDir: string;
  readonly callId: string;
  state: CallState = { submissions: [], failures: {} };
  /** Array tasks seen live in the last poll, keyed `n:rank`. */
  live = new Set<string>();
  /** Per submission, the shards each rank owns: shards[rank], shards[rank + size], … */
  owners = new Map<number, number[][]>();
  lastReport = 0;
  lastDone: number;

  constructor(
    readonly worker: ShardWorker,
    readonly tasks: ShardTask<A>[],
    readonly opts: SlurmRunOptions,
    readonly options: SlurmOptions,
    readonly done: Set<number>,
  ) {
    // One directory per distinct call (module, function, tasks), so a stage may run several shard calls.
    this.callId = createHash("sha256")
      .update(JSON.stringify([worker.module, worker.fn, tasks]))
      .digest("hex").slice(0, 16);
    this.dir = join(opts.checkpoint.dir, "slurm", this.callId);
    this.statePath = join(this.dir, "jobs.json");
    this.logDir = resolve(options.logDir ?? join(this.dir, "logs"));
    this.lastDone = done.size;
  }

  log(message: string) {
    this.opts.log?.(message);
  }

  async saveState() {
    await writeFileAtomic(
      this.statePath,
      new TextEncoder().encode(JSON.stringify(this.state)),
      join(this.dir, "tmp"),
    );
  }

  async run(): Promise<void> {
    await Deno.mkdir(this.logDir, { recursive: true });
    await Deno.mkdir(join(this.dir, "progress"), { recursive: true });
    try {
      this.state = JSON.parse(await Deno.readTextFile(this.statePath));
      await this.adopt();
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    }
    let finished = false;
    try {
      while (true) {
        if (this.opts.signal.aborted) throw new InterruptedError("interrupted");
        await this.poll();
        const unowned = await this.unownedShards();
        if (unowned.length) await this.submit(unowned);
        else if (!this.live.size) break;
        await sleep(this.options.pollSeconds * 1000, this.opts.signal);
      }
      finished = true;
    } finally {
      if (!finished) {
        // Interrupted or failed: leave nothing running behind (done markers stay for the rerun).
        const jobIds = this.liveJobIds();
        if (jobIds.length) {
          this.log(`slurm: cancelling job${jobIds.length > 1 ? "s" : ""} ${jobIds.join(", ")}`);
          await cancelAndWait(jobIds).catch(() => {});
        }
      }
    }
  }

  /** Jobs with tasks not yet seen finished (cancelling a finished one is harmless). */
  liveJobIds(): string[] {
    return this.state.submissions.filter((s) => s.jobId && s.judged.length < s.size).map((s) => s.jobId!);
  }

  ownedBy(sub: Submission, rank: number): number[] {
    let ranks = this.owners.get(sub.n);
    if (!ranks) {
      ranks = Array.from({ length: sub.size }, () => []);
      sub.shards.forEach((shard, k) => ranks![k % sub.size].push(shard));
      this.owners.set(sub.n, ranks);
    }
    return ranks[rank];
  }

  /** After a restart: find jobs whose submission the old driver recorded but whose id it did not. */
  async adopt() {
    const lines = (
      out: CommandOutput,
    ) => [...new Set(out.stdout.split("\n").map((l) => l.trim()).filter(Boolean))];
    for (const sub of this.state.submissions) {
      if (sub.jobId) continue;
      const found = lines(await slurmCommand("squeue", ["-h", "-t", "all", "-n", sub.name, "-o", "%F"]));
      if (found.length === 1) sub.jobId = found[0];
    }
    // A recorded id now naming another job (the cluster's state was reset and ids restarted) is not ours.
    const recorded = this.state.submissions.filter((s) => s.jobId).map((s) => s.jobId!);
    const names = new Map<string, string>();
    if (recorded.length) {
      const out = await slurmCommand("squeue", ["-h", "-t", "all", "-j", recorded.join(","), "-o", "%F|%j"]);
      for (const [job, name] of lines(out).map((l) => l.split("|"))) names.set(job, name);
    }
    for (const sub of this.state.submissions) {
      const name = sub.jobId ? names.get(sub.jobId) : undefined;
      if (name !== undefined && name !== sub.name) sub.jobId = undefined;
    }
    this.state.submissions = this.state.submissions.filter((s) => s.jobId);
    await this.saveState();
    const jobs = this.state.submissions.map((s) => s.jobId);
    if (jobs.length) this.log(`slurm: found earlier job${jobs.length > 1 ? "s" : ""} ${jobs.join(", ")}`);
  }

  /** Asks squeue about every task not yet judged; judges finished ones; reports progress. */
  async poll() {
    const pending = this.state.submissions.filter((s) => s.judged.length < s.size);
    const states = await queueStates(pending.map((s) => s.jobId!));
    const statuses: ArrayTaskStatus[] = [];
    this.live.clear();
    let judgedAny = false;
    for (const sub of pending) {
      const judged = new Set(sub.judged);
      for (let rank = 0; rank < sub.size; rank++) {
        if (judged.has(rank)) continue;
        const name = `${sub.jobId}_${rank}`;
        const state = states.get(name) ?? { state: "GONE", node: "", reason: "no longer known to squeue" };
        // Only a running or finished task has progress to read (pending ones: thousands of misses).
        const progress = state.state === "PENDING" ? undefined : await this.readProgress(sub, rank);
        for (const i of progress?.done ?? []) this.done.add(i);
        const owned = this.ownedBy(sub, rank);
        const status: ArrayTaskStatus = {
          name,
          state: state.state,
          node: state.node,
          reason: state.reason,
          shards: owned.length,
          done: owned.filter((i) => this.done.has(i)).length,
          log: this.logPath(sub, rank),
        };
        if (progress?.ran && state.state === "RUNNING") {
          const perShard = (Date.now() - progress.started) / 1000 / progress.ran;
          status.etaSeconds = perShard * (status.shards - status.done);
        }
        statuses.push(status);
        if (isLive(state.state)) {
          this.live.add(`${sub.n}:${rank}`);
        } else {
          await this.judge(sub, rank, owned, status);
          judgedAny = true;
        }
      }
    }
    if (judgedAny) await this.saveState();
    if (this.done.size !== this.lastDone) {
      this.lastDone = this.done.size;
      this.opts.onProgress?.(this.done.size, this.tasks.length);
    }
    this.opts.onTasks?.(statuses);
    this.report(statuses);
  }

  /** A task finished: its shards are done, or they count a failure and go back to be resubmitted. */
  async judge(sub: Submission, rank: number, owned: number[], status: ArrayTaskStatus) {
    sub.judged.push(rank);
    const unfinished: number[] = [];
    for (const i of owned) {
      if (this.done.has(i)) continue;
      if (await this.opts.checkpoint.isDone(this.tasks[i].id)) this.done.add(i);
      else unfinished.push(i);
    }
    if (!unfinished.length) return;
    const attempts = Math.max(
      ...unfinished.map((i) => (this.state.failures[i] = (this.state.failures[i] ?? 0) + 1)),
    );
    const shardList = unfinished.slice(0, 3).map((i) => `"${this.tasks[i].id}"`).join(", ") +
      (unfinished.length > 3 ? ` and ${unfinished.length - 3} more` : "");
    const what = `${status.state}${status.reason && status.reason !== "None" ? ` (${status.reason})` : ""}`;
    if (attempts > this.options.retries) {
      await this.saveState();
      throw new KilnError(
        `slurm: array task ${status.name} ended ${what} with shard${unfinished.length > 1 ? "s" : ""} ` +
          `${shardList} unfinished, after ${attempts} attempt${attempts > 1 ? "s" : ""} ` +
          `(retries: ${this.options.retries}); log: ${status.log}\n${await logTail(status.log)}`,
      );
    }
    this.log(
      `slurm: array task ${status.name} ended ${what}; resubmitting ${shardList} ` +
        `(attempt ${attempts + 1} of ${this.options.retries + 1}); log: ${status.log}`,
    );
  }

  /** Shards not done and owned by no live task: they need a (new) submission. */
  async unownedShards(): Promise<number[]> {
    const owned = new Set<number>();
    for (const key of this.live) {
      const [n, rank] = key.split(":").map(Number);
      const sub = this.state.submissions.find((s) => s.n === n)!;
      for (const i of this.ownedBy(sub, rank)) owned.add(i);
    }
    const unowned: number[] = [];
    for (let i = 0; i < this.tasks.length; i++) {
      if (this.done.has(i) || owned.has(i)) continue;
      // Done-markers are the truth (a task may finish a shard between two polls).
      if (await this.opts.checkpoint.isDone(this.tasks[i].id)) this.done.add(i);
      else unowned.push(i);
    }
    return unowned;
  }

  logPath(sub: Submission, rank: number): string {
    return sub.logPattern.replace("%A", sub.jobId ?? "%A").replace("%a", String(rank));
  }

  async readProgress(sub: Submission, rank: number): Promise<SlurmTaskProgress | undefined> {
    try {
      return JSON.parse(await Deno.readTextFile(join(this.dir, "progress", `${sub.n}-${rank}.json`)));
    } catch {
      return undefined; // not started yet (or the file is being replaced: read again next poll)
    }
  }

  /** Writes the task file and script, records the submission, submits, records the job id. */
  async submit(shards: number[]) {
    const n = this.state.submissions.reduce((m, s) => Math.max(m, s.n + 1), 0);
    const size = Math.min(this.options.tasks ?? DEFAULT_MAX_TASKS, shards.length);
    const name = `kiln-${this.worker.fn}-${this.callId.slice(0, 8)}-${n}`;
    const sub: Submission = {
      n,
      name,
      size,
      shards,
      logPattern: join(this.logDir, `${name}_%A_%a.log`),
      judged: [],
    };
    const taskDir = join(this.dir, `task-${n}`);
    const scriptPath = join(this.dir, `task-${n}.sh`);
    const encoder = new TextEncoder();
    const tmp = join(this.dir, "tmp");
    for (let rank = 0; rank < size; rank++) {
      const taskFile: SlurmTaskFile = {
        version: 1,
        module: this.worker.module,
        fn: this.worker.fn,
        outDir: resolve(this.opts.out.outDir),
        stateDir: resolve(this.opts.checkpoint.dir),
        tmpDir: tmp,
        progressDir: join(this.dir, "progress"),
        submission: n,
        rank,
        tasks: this.ownedBy(sub, rank).map((i) => ({
          index: i,
          id: this.tasks[i].id,
          args: this.tasks[i].args,
        })),
      };
      await writeFileAtomic(join(taskDir, `${rank}.json`), encoder.encode(JSON.stringify(taskFile)), tmp);
    }
    await writeFileAtomic(scriptPath, encoder.encode(await this.script(taskDir, n)), tmp);
    // Recorded before sbatch: a driver killed right after sbatch finds its job again by name.
    this.state.submissions.push(sub);
    await this.saveState();
    const array = `0-${size - 1}${this.options.maxConcurrent ? `%${this.options.maxConcurrent}` : ""}`;
    try {
      sub.jobId = await sbatch(this.options, { name, script: scriptPath, output: sub.logPattern, array });
    } catch (e) {
      this.state.submissions.pop();
      this.owners.delete(n);
      await this.saveState();
      throw e;
    }
    await this.saveState();
    for (let rank = 0; rank < size; rank++) this.live.add(`${n}:${rank}`);
    this.log(
      `slurm: submitted job ${sub.jobId} (${shards.length} shard${shards.length > 1 ? "s" : ""} on ` +
        `${size} array task${size > 1 ? "s" : ""}${
          this.options.maxConcurrent ? `, ${this.options.maxConcurrent} at a time` : ""
        }); logs: ${sub.logPattern}`,
    );
  }

  /** The batch script: exec deno on the node entry point with the array rank's task file. */
  async script(taskDir: string, n: number): Promise<string> {
    let flags = this.opts.denoFlags;
    if (!flags) {
      // Deno checks read permission for a dynamically imported module and every local file it imports.
      const graph = await moduleGraph(this.worker.module);
      const read = [
        ...KILN_ROOT ? [KILN_ROOT] : [],
        ...graph.files.map((f) => dirname(f)),
        ...(this.opts.read ?? []),
      ];
      flags = nodeDenoFlags({ read, write: [this.opts.out.outDir, this.opts.checkpoint.dir] });
    }
    const entry = TASK_ENTRY.protocol === "file:" ? fileURLToPath(TASK_ENTRY) : TASK_ENTRY.href;
    let deno = this.options.deno;
    if (!deno) {
      try {
        deno = Deno.execPath();
      } catch {
        deno = "deno";
      }
    }
    const command = [deno, "run", ...flags, entry].map(shellQuote).join(" ");
    return `#!/bin/sh\n# kiln: shards of ${this.worker.fn} (${this.worker.module}), submission ${n}\n` +
      `export NO_COLOR=1\nexec ${command} ${shellQuote(taskDir)}/"$SLURM_ARRAY_TASK_ID".json\n`;
  }

  /** Logs per-task progress every `reportSeconds`: a summary and the running tasks, slowest first. */
  report(statuses: ArrayTaskStatus[]) {
    const now = performance.now();
    if (!this.opts.log || now - this.lastReport < this.options.reportSeconds * 1000) return;
    this.lastReport = now;
    const count = (pred: (s: ArrayTaskStatus) => boolean) => statuses.filter(pred).length;
    const running = statuses.filter((s) => s.state === "RUNNING")
      .sort((a, b) => (b.etaSeconds ?? Infinity) - (a.etaSeconds ?? Infinity));
    // Why tasks wait, when it is not just their turn (e.g. a time limit over the partition's maximum).
    const reasons = [...new Set(statuses.filter((s) => s.state === "PENDING").map((s) => s.reason))]
      .filter((r) => !["None", "Priority", "Resources", "JobArrayTaskLimit", ""].includes(r));
    this.log(
      `slurm: ${this.done.size}/${this.tasks.length} shards done; array tasks: ${running.length} running, ` +
        `${count((s) => s.state === "PENDING")} pending${
          reasons.length ? ` (${reasons.join(", ")})` : ""
        }, ` +
        `${count((s) => !isLive(s.state))} finished`,
    );
    for (const s of running.slice(0, 5)) {
      const eta = s.etaSeconds === undefined ? "" : `, ETA ${formatDuration(s.etaSeconds)}`;
      this.log(`  ${s.name} on ${s.node}: ${s.done}/${s.shards} shards${eta}`);
    }
  }
}

// ---- single jobs (training stages) --------------------------------------------------------------

/** One batch job: a command to run on a node, optionally after other jobs succeeded. */
export interface JobRequest {
  /** Job name (shown by squeue). */
  name: string;
  /** The command and its arguments (quoted for the shell here). */
  command: string[];
  /** Where Slurm writes the job's output (stdout and stderr). */
  log: string;
  /** Job ids that must succeed first (`--dependency=afterok:…`; a failed one cancels this job). */
  after?: string[];
  /** Where the batch script is written (default: next to the log). */
  scriptPath?: string;
}

/**
 * Submits one job (a training stage: `gpus` in the options) and returns its id. A refusal is one
 * {@linkcode KilnError} with sbatch's message.
 * @example
 * ```ts
 * const id = await submitJob(slurm({ gpus: 1, time: "4:00:00" }).options, {
 *   name: "kiln-pretrain", command: ["deno", "run", "-A", "train.ts"], log: "/shared/logs/pretrain.log",
 * });
 * await waitForJob(id, { signal, log: "/shared/logs/pretrain.log" });
 * ```
 */
export async function submitJob(options: SlurmOptions | SlurmOptionsInput, req: JobRequest): Promise<string> {
  const parsed = parseSlurmOptions(options);
  const script = req.scriptPath ?? req.log.replace(/(\.log)?$/, ".sh");
  await Deno.mkdir(dirname(resolve(req.log)), { recursive: true });
  await writeFileAtomic(
    resolve(script),
    new TextEncoder().encode(`#!/bin/sh\nexec ${req.command.map(shellQuote).join(" ")}\n`),
  );
  return await sbatch(parsed, {
    name: req.name,
    script: resolve(script),
    output: resolve(req.log),
    dependency: req.after,
  });
}

/**
 * Waits until job `jobId` has finished. Resolves when it COMPLETED; throws a {@linkcode KilnError} with
 * the log's last lines otherwise; cancels the job and throws {@linkcode InterruptedError} on abort.
 */
export async function waitForJob(
  jobId: string,
  opts: { signal: AbortSignal; log: string; pollSeconds?: number; onState?: (state: JobState) => void },
): Promise<void> {
  let last = "";
  while (true) {
    if (opts.signal.aborted) {
      await cancelAndWait([jobId]).catch(() => {});
      throw new InterruptedError("interrupted");
    }
    const state = (await queueStates([jobId])).get(jobId) ??
      { state: "GONE", node: "", reason: "no longer known to squeue" };
    if (state.state !== last) opts.onState?.(state);
    last = state.state;
    if (state.state === "COMPLETED") return;
    if (!isLive(state.state)) {
      throw new KilnError(
        `slurm: job ${jobId} ended ${state.state} (${state.reason}); log: ${opts.log}\n${await logTail(
          opts.log,
        )}`,
      );
    }
    await sleep((opts.pollSeconds ?? 2) * 1000, opts.signal);
  }
}
