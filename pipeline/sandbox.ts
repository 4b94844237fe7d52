/**
 * Each stage runs in a Deno process of its own whose permission flags are exactly what the stage
 * needs, whatever the entry point (a pipeline file, the `kiln` command, a Slurm node):
 *
 * - read: its own code (the folders of its module graph, and kiln's runtime), its input artifacts,
 *   its work directory, the files its config names (what its `fingerprint` lists) and what it
 *   declares in `permissions.read`;
 * - write: its work directory only (the runner commits the output);
 * - net: the hosts it declares (and those of URLs its config names); env: `KILN_BACKEND` and what it
 *   declares; run and ffi: only when declared.
 *
 * Worker threads started inside the process (the shard pool) inherit these permissions and no more.
 * A refused permission ends the stage with a message that names it and how a stage declares it.
 * Why a process and not a worker with narrowed permissions: Deno's worker permission options are
 * unstable (a flag every user would have to pass), and a process also isolates crashes and memory.
 * What it costs is measured in BENCHMARKS.md (about 60 ms a stage).
 * @module
 */
import { dirname, isAbsolute, join, resolve, sep } from "node:path";
import { fileURLToPath as fromFileUrl } from "node:url";
import {
  ArtifactError,
  ConfigError,
  DataError,
  InterruptedError,
  KilnError,
  PermissionError,
  PipelineError,
  StageError,
} from "./errors.ts";

const KILN_ERRORS: Record<string, { prototype: KilnError }> = {
  KilnError,
  ConfigError,
  DataError,
  PipelineError,
  ArtifactError,
  PermissionError,
  StageError,
};
import type { Permissions, Progress } from "./stage.ts";

/** What the runner sends the stage process. */
export interface StageJob {
  /** The stage module's URL as the stage process imports it (a remote one maps to its stored copy). */
  module: string;
  name: string;
  id: string;
  config: unknown;
  input?: string;
  uses: Record<string, string>;
  dirs: { out: string; state: string; tmp: string };
  workers: number;
  /** Run shards as Slurm job arrays with these options; array tasks get `nodeFlags`. */
  executor?: { slurm: Record<string, unknown>; nodeFlags: string[] };
}

/** A protocol message from the stage process (one JSON line on stdout, after {@linkcode PREFIX}). */
export type StageMessage =
  | { type: "progress"; done: number; total?: number; unit?: string; bytes?: number }
  | { type: "log"; message: string }
  | { type: "stats"; stats: Record<string, unknown> }
  | { type: "done"; stats: Record<string, unknown> }
  | {
    type: "error";
    stats: Record<string, unknown>;
    error: {
      name: string;
      message: string;
      stack?: string;
      permission?: string;
      /** The error's own fields (a ConfigError's `stage` and `field`, a DataError's `file`). */
      fields?: Record<string, unknown>;
    };
  };

/** Marks protocol lines, so anything else a stage prints is passed through as output. */
export const PREFIX = "\u001ekiln:";

/** What one stage process is allowed. */
export interface Grant {
  read: string[];
  write: string[];
  net?: string[] | true;
  env: string[];
  run: string[];
  ffi: boolean;
}

/**
 * Environment variables every stage may read: kiln's own settings, and one that Deno's `node:fs`
 * glob (minimatch) reads on first use.
 */
export const KILN_ENV = [
  "KILN_AUTOTUNE",
  "KILN_BACKEND",
  "KILN_CPU_THREADS",
  "__MINIMATCH_TESTING_PLATFORM__",
];

const RUNTIME = new URL("./", import.meta.url);
const GLOB_CHARS = /[*?[\]{}]/;

/** A path or glob as a readable location: the glob's fixed leading folder, made absolute. */
function readRoot(pattern: string): string {
  const abs = isAbsolute(pattern) ? pattern : resolve(pattern);
  if (!GLOB_CHARS.test(abs)) return abs;
  const fixed = abs.slice(0, abs.search(GLOB_CHARS));
  return fixed.endsWith(sep) ? fixed.slice(0, -1) || sep : dirname(fixed);
}

/** Paths and URL hosts named anywhere in a fingerprint (`fingerprintFiles` entries and the like). */
function namedInputs(value: unknown, paths: Set<string>, hosts: Set<string>) {
  if (typeof value === "string") {
    if (/^https?:\/\//.test(value)) hosts.add(new URL(value).hostname);
    else if (isAbsolute(value)) paths.add(value);
  } else if (Array.isArray(value)) {
    for (const v of value) namedInputs(v, paths, hosts);
  } else if (value && typeof value === "object") {
    for (const v of Object.values(value)) namedInputs(v, paths, hosts);
  }
}

/** Drops paths inside other paths of the list (a folder's grant covers what is under it). */
function minimal(paths: Iterable<string>): string[] {
  const sorted = [...new Set(paths)].sort();
  return sorted.filter((p) => !sorted.some((q) => q !== p && (p.startsWith(q + sep) || q === sep)));
}

/** The grant of a stage, from what it reads and declares. */
export function stageGrant(opts: {
  permissions: Permissions;
  codeFiles: string[];
  /** The import map of its stored remote modules, if any. */
  importMap?: string;
  inputs: string[];
  workDir: string;
  /** The stage's fingerprint (files its config names). */
  external: unknown;
  /** Extra programs the executor needs (Slurm's commands). */
  run?: string[];
}): Grant {
  const paths = new Set<string>();
  const hosts = new Set<string>();
  namedInputs(opts.external, paths, hosts);
  const p = opts.permissions;
  for (const pattern of p.read ?? []) paths.add(readRoot(pattern));
  for (const file of opts.codeFiles) paths.add(dirname(file));
  if (RUNTIME.protocol === "file:") paths.add(fromFileUrl(RUNTIME).replace(/\/$/, ""));
  if (opts.importMap) paths.add(dirname(opts.importMap));
  for (const dir of opts.inputs) paths.add(resolve(dir));
  paths.add(resolve(opts.workDir));
  let net: Grant["net"];
  if (p.net === true) net = true;
  else {
    for (const host of p.net ?? []) hosts.add(host);
    if (hosts.size) net = [...hosts].sort();
  }
  return {
    read: minimal(paths),
    write: [resolve(opts.workDir)],
    net,
    env: [...new Set([...KILN_ENV, ...p.env ?? []])].sort(),
    run: [...new Set([...p.run ?? [], ...opts.run ?? []])].sort(),
    ffi: p.ffi ?? false,
  };
}

/**
 * The runner's own permissions are the ceiling: a stage gets no more than the process that runs it was
 * given. Returns what a grant asks beyond that, as the flag that would allow it, or undefined.
 */
export function beyondRunner(grant: Grant): string | undefined {
  const has = (d: Deno.PermissionDescriptor) => Deno.permissions.querySync(d).state === "granted";
  for (const path of grant.read) if (!has({ name: "read", path })) return `--allow-read=${path}`;
  for (const path of grant.write) if (!has({ name: "write", path })) return `--allow-write=${path}`;
  if (grant.net === true && !has({ name: "net" })) return "--allow-net";
  for (const host of grant.net === true ? [] : grant.net ?? []) {
    if (!has({ name: "net", host })) return `--allow-net=${host}`;
  }
  for (const variable of grant.env) {
    if (variable !== "__MINIMATCH_TESTING_PLATFORM__" && !has({ name: "env", variable })) {
      return `--allow-env=${variable}`;
    }
  }
  for (const command of grant.run) if (!has({ name: "run", command })) return `--allow-run=${command}`;
  if (grant.ffi && !has({ name: "ffi" })) return "--allow-ffi";
  return undefined;
}

/** The Deno flags of a grant. */
export function grantFlags(grant: Grant): string[] {
  const list = (flag: string, items: string[]) => {
    const bad = items.find((i) => i.includes(","));
    if (bad) {
      throw new KilnError(`cannot grant ${flag} for "${bad}": Deno's permission lists cannot hold a comma`);
    }
    return `${flag}=${items.join(",")}`;
  };
  // Free memory, so a stage can refuse a model that does not fit before allocating it.
  const flags = [
    list("--allow-read", grant.read),
    list("--allow-write", grant.write),
    "--allow-sys=systemMemoryInfo",
  ];
  if (grant.net === true) flags.push("--allow-net");
  else if (grant.net?.length) flags.push(list("--allow-net", grant.net));
  if (grant.env.length) flags.push(list("--allow-env", grant.env));
  if (grant.run.length) flags.push(list("--allow-run", grant.run));
  if (grant.ffi) flags.push("--allow-ffi");
  return flags;
}

/** Every flag of a stage's process (a Slurm array task gets the same, less `--allow-run`). */
export function stageFlags(grant: Grant, importMap: string | undefined): string[] {
  const flags = ["--no-prompt", "--no-lock", "--no-config", ...grantFlags(grant)];
  if (importMap) flags.push(`--import-map=${importMap}`);
  return flags;
}

/** How a refused permission is granted to a stage, for the error message. */
function howToGrant(kind: string): string {
  switch (kind) {
    case "read":
      return "a stage reads its inputs, its code and the files its config names (its fingerprint); " +
        "declare other paths with `permissions: { read: [...] }` in defineStage";
    case "write":
      return "a stage writes only through ctx.out and ctx.checkpoint (its work directory)";
    case "net":
      return 'declare the hosts with `permissions: { net: ["host"] }` in defineStage';
    case "env":
      return 'declare the variables with `permissions: { env: ["NAME"] }` in defineStage';
    case "run":
      return 'declare the programs with `permissions: { run: ["program"] }` in defineStage';
    default:
      return `declare it in defineStage's \`permissions\``;
  }
}

/** Callbacks of {@linkcode runStageProcess}. */
export interface StageProcessHooks {
  signal: AbortSignal;
  progress(p: Progress): void;
  log(message: string): void;
}

/** Reads a stage process's protocol lines: progress and log lines go to `hooks`, the outcome is kept. */
class StageMessages {
  last?: StageMessage;
  stats: Record<string, unknown> = {};
  #buffer = "";
  #decoder = new TextDecoder();

  constructor(readonly hooks: StageProcessHooks, readonly passThrough: boolean) {}

  push(chunk: Uint8Array) {
    this.#buffer += this.#decoder.decode(chunk, { stream: true });
    let nl;
    while ((nl = this.#buffer.indexOf("\n")) >= 0) {
      this.#line(this.#buffer.slice(0, nl));
      this.#buffer = this.#buffer.slice(nl + 1);
    }
  }

  end() {
    if (this.#buffer) this.#line(this.#buffer);
    this.#buffer = "";
  }

  #line(line: string) {
    if (!line.startsWith(PREFIX)) {
      if (line && this.passThrough) console.error(line);
      return;
    }
    const message = JSON.parse(line.slice(PREFIX.length)) as StageMessage;
    if (message.type === "progress") {
      const { type: _, ...p } = message;
      this.hooks.progress(p);
    } else if (message.type === "log") this.hooks.log(message.message);
    else {
      this.last = message;
      this.stats = message.stats;
    }
  }

  /** The stage's stats when it finished, else its error as the runner reports it. */
  outcome(jobId: string, ended: string): Record<string, unknown> {
    const { last, stats } = this;
    if (last?.type === "done") return stats;
    if (this.hooks.signal.aborted || last?.type === "error" && last.error.name === "InterruptedError") {
      throw new InterruptedError("interrupted");
    }
    if (last?.type === "error") {
      const { name, message, stack, permission, fields } = last.error;
      if (permission) {
        const kind = permission.match(/Requires (\w+) access/)?.[1] ?? "";
        const what = permission.split("\n")[0].replace(/, run again with.*$/, "").replace(/^.*Requires /, "");
        throw Object.assign(
          new PermissionError(`stage "${jobId}" was refused ${what}: ${howToGrant(kind)}`),
          { stats },
        );
      }
      // kiln's errors keep their class (a ConfigError stays one) and their one-line message.
      const kilnClass = KILN_ERRORS[name];
      const err = kilnClass
        ? Object.assign(Object.setPrototypeOf(new KilnError(message), kilnClass.prototype), fields, { name })
        : Object.assign(new Error(message), { stack: `${name}: ${message}\n${stack ?? ""}` });
      throw Object.assign(err, { stats });
    }
    throw Object.assign(new KilnError(`stage "${jobId}": ${ended}`), { stats });
  }
}

/**
 * Runs a stage in its own process under `grant` and resolves with its stats; rejects with the
 * stage's error (kiln errors keep their one-line form), a {@linkcode PermissionError} naming what
 * was refused, or {@linkcode InterruptedError}.
 */
export async function runStageProcess(
  job: StageJob,
  grant: Grant,
  importMap: string | undefined,
  hooks: StageProcessHooks,
): Promise<Record<string, unknown>> {
  const args = ["run", "--quiet", ...stageFlags(grant, importMap), STAGE_PROCESS];
  const child = new Deno.Command(Deno.execPath(), {
    args,
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  // The job goes as one line; stdin stays open, and its end tells the stage process that the runner
  // is gone (kill -9), so it stops instead of writing on behind a new run's back.
  const stdin = child.stdin.getWriter();
  await stdin.write(new TextEncoder().encode(JSON.stringify(job) + "\n"));
  const stop = () => {
    try {
      child.kill("SIGTERM");
    } catch { /* already gone */ }
  };
  hooks.signal.addEventListener("abort", stop, { once: true });
  const messages = new StageMessages(hooks, true);
  try {
    for await (const chunk of child.stdout) messages.push(chunk);
    messages.end();
    const status = await child.status;
    if (messages.last?.type === "done" && status.code !== 0) messages.last = undefined;
    return messages.outcome(job.id, `its process ended with ${status.signal ?? `exit code ${status.code}`}`);
  } finally {
    hooks.signal.removeEventListener("abort", stop);
    await stdin.close().catch(() => {});
    try {
      child.kill("SIGKILL");
    } catch { /* already gone */ }
  }
}

const STAGE_PROCESS = new URL("./stage_process.ts", import.meta.url).href;

/**
 * Runs a stage as one Slurm batch job (a training stage under the Slurm executor, with its `gpus`):
 * the same stage process, reading its job from a file in the work directory, with the same grant less
 * starting processes; its protocol lines are read from the job's log as it runs. A job this work
 * directory already submitted and that is still queued or running (the driver was killed) is adopted.
 */
export async function runStageJobOnSlurm(
  job: StageJob,
  grant: Grant,
  importMap: string | undefined,
  hooks: StageProcessHooks,
  slurm: Record<string, unknown>,
): Promise<Record<string, unknown>> {
  const { submitJob, waitForJob, queueStates, isLive } = await import("./slurm.ts");
  const dir = join(job.dirs.state, "slurm-job");
  await Deno.mkdir(dir, { recursive: true });
  const [jobFile, log, idFile] = ["job.json", "stage.log", "job-id"].map((n) => join(dir, n));
  let jobId = await Deno.readTextFile(idFile).then((t) => t.trim(), () => undefined);
  if (jobId && !isLive((await queueStates([jobId])).get(jobId)?.state ?? "GONE")) jobId = undefined;
  if (jobId) hooks.log(`adopting Slurm job ${jobId} (log: ${log})`);
  else {
    await Deno.writeTextFile(jobFile, JSON.stringify(job));
    await Deno.remove(log).catch(() => {});
    const flags = stageFlags({ ...grant, run: [] }, importMap);
    const deno = typeof slurm.deno === "string" ? slurm.deno : Deno.execPath();
    jobId = await submitJob(slurm, {
      name: `kiln-${job.id}`,
      command: [deno, "run", "--quiet", ...flags, STAGE_PROCESS, "--job", jobFile],
      log,
    });
    await Deno.writeTextFile(idFile, jobId);
    hooks.log(`submitted Slurm job ${jobId} (log: ${log})`);
  }
  // Follow the log while the job runs: its progress and log lines are the stage's.
  const messages = new StageMessages(hooks, false);
  let offset = 0;
  const follow = async () => {
    const bytes = await Deno.readFile(log).catch(() => new Uint8Array());
    if (bytes.length > offset) messages.push(bytes.subarray(offset));
    offset = Math.max(offset, bytes.length);
  };
  let failure: unknown;
  const timer = setInterval(() => follow().catch(() => {}), 1000);
  try {
    await waitForJob(jobId, { signal: hooks.signal, log, onState: () => follow() });
  } catch (e) {
    failure = e;
  } finally {
    clearInterval(timer);
  }
  await follow();
  messages.end();
  await Deno.remove(idFile).catch(() => {});
  if (failure instanceof InterruptedError) throw failure;
  if (failure && !messages.last) throw failure;
  return messages.outcome(job.id, `Slurm job ${jobId} ended without a result; log: ${log}`);
}
