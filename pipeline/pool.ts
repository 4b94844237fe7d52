/**
 * The worker pool data stages use to process independent shards in parallel. Each shard task runs a
 * named export of a module (`worker.fn` in `worker.module`) in a Deno worker thread; the function
 * writes its output files through the {@linkcode OutputWriter} it is given and returns a small JSON
 * result (its stats). A finished shard is marked done in the checkpoint with its result, so a rerun
 * skips it; results come back in task order, so outputs do not depend on the worker count.
 * @module
 */
import { createHash } from "node:crypto";
import { type Checkpoint, OutputWriter } from "./workspace.ts";
import { InterruptedError, isKilnError, KilnError } from "./errors.ts";

/** What a shard's done-marker records: its result, and the size and SHA-256 of each file it wrote. */
export interface ShardDone<R = unknown> {
  result: R;
  files: Record<string, { size: number; sha256: string }>;
}

async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path);
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/** Marks a shard done together with the size and digest of every file it wrote. */
export async function markShardDone(
  checkpoint: Checkpoint,
  out: OutputWriter,
  id: string,
  result: unknown,
  written: string[],
): Promise<void> {
  const files: ShardDone["files"] = {};
  for (const rel of written) {
    const path = out.path(rel);
    files[rel] = { size: (await Deno.stat(path)).size, sha256: await sha256File(path) };
  }
  await checkpoint.markDone(id, { result, files } satisfies ShardDone);
}

/**
 * The result of a shard marked done whose files are all still there at their recorded sizes; a shard
 * whose output is missing or damaged is unmarked (and so done again).
 */
export async function doneShardResult<R>(
  checkpoint: Checkpoint,
  out: OutputWriter,
  id: string,
): Promise<{ result: R } | undefined> {
  const info = await checkpoint.doneInfo<ShardDone<R>>(id);
  if (!info || typeof info !== "object" || !("result" in info)) return undefined;
  for (const [rel, { size }] of Object.entries(info.files ?? {})) {
    const actual = await Deno.stat(out.path(rel)).then((s) => s.size, () => -1);
    if (actual !== size) {
      await checkpoint.unmark(id);
      return undefined;
    }
  }
  return { result: info.result };
}

/**
 * Before a stage commits: re-hashes every file that a done shard recorded and unmarks the shards whose
 * files changed since (their ids are returned), so damaged output is redone, never committed.
 */
export async function damagedShards(checkpoint: Checkpoint, out: OutputWriter): Promise<string[]> {
  const damaged: string[] = [];
  for (const { id, info } of await checkpoint.markers()) {
    const files = (info as Partial<ShardDone> | null)?.files;
    if (!files) continue;
    for (const [rel, { size, sha256 }] of Object.entries(files)) {
      const path = out.path(rel);
      const ok = await Deno.stat(path).then((s) => s.size === size, () => false) &&
        await sha256File(path) === sha256;
      if (!ok) {
        damaged.push(id);
        await checkpoint.unmark(id);
        await Deno.remove(path).catch(() => {});
        break;
      }
    }
  }
  return damaged;
}

/** Names the function a shard runs: a named export of a module (pass `import.meta.url`). */
export interface ShardWorker {
  module: string;
  fn: string;
}

/** One unit of work: a stable id (used for the done-marker) and JSON-serialisable arguments. */
export interface ShardTask<A> {
  id: string;
  args: A;
}

/** What a shard function receives besides its arguments. */
export interface ShardEnv {
  /** The shard's id. */
  id: string;
  /** The stage's output directory (atomic writes). */
  out: OutputWriter;
}

/** The signature a shard function exported for {@linkcode ShardWorker} must have. */
export type ShardFn<A, R> = (args: A, env: ShardEnv) => Promise<R>;

/** A message from the pool to a worker thread. */
export interface ShardRequest {
  module: string;
  fn: string;
  id: string;
  args: unknown;
  outDir: string;
  tmpDir: string;
}

/** A worker thread's answer: the shard's result and the output files it wrote. */
export type ShardReply = { ok: true; result: unknown; files: string[] } | {
  ok: false;
  error: { name: string; message: string; stack?: string };
};

/** Loads a shard function, with an error that says what is missing. */
export async function loadShardFn(worker: ShardWorker): Promise<ShardFn<unknown, unknown>> {
  const mod = await import(worker.module);
  const fn = mod[worker.fn];
  if (typeof fn !== "function") {
    throw new KilnError(`shard worker: ${worker.module} has no exported function "${worker.fn}"`);
  }
  return fn;
}

/** Options of {@linkcode runShards}. */
export interface RunShardsOptions {
  workers: number;
  out: OutputWriter;
  checkpoint: Checkpoint;
  signal: AbortSignal;
  /** Called after each shard finishes (or is found done), with counts. */
  onProgress?: (done: number, total: number) => void;
}

/**
 * Runs `tasks` on up to `workers` threads (in-process when `workers` is 1), skipping tasks already
 * marked done. Throws the first shard error (with the shard id), or {@linkcode InterruptedError}
 * when `signal` aborts; finished shards stay marked done either way.
 */
export async function runShards<A, R>(
  worker: ShardWorker,
  tasks: ShardTask<A>[],
  opts: RunShardsOptions,
): Promise<R[]> {
  const ids = new Set<string>();
  for (const task of tasks) {
    if (ids.has(task.id)) throw new KilnError(`shard ids must be unique; "${task.id}" appears twice`);
    ids.add(task.id);
  }
  const results = new Array<R>(tasks.length);
  const pending: number[] = [];
  for (let i = 0; i < tasks.length; i++) {
    const done = await doneShardResult<R>(opts.checkpoint, opts.out, tasks[i].id);
    if (done) results[i] = done.result;
    else pending.push(i);
  }
  let done = tasks.length - pending.length;
  opts.onProgress?.(done, tasks.length);
  const finish = async (i: number, result: R, written: string[]) => {
    await markShardDone(opts.checkpoint, opts.out, tasks[i].id, result, written);
    results[i] = result;
    opts.onProgress?.(++done, tasks.length);
  };
  // Errors keep kiln's one-line form for KilnErrors (also when they crossed a thread as plain data).
  const wrap = (i: number, e: unknown) => {
    const err = e as Error;
    const message = `shard "${tasks[i].id}": ${err.message}`;
    if (isKilnError(err)) return new KilnError(message);
    // A refused permission keeps its name, so the runner can say which permission and how to grant it.
    return Object.assign(new Error(message), {
      stack: err.stack,
      name: err.name === "NotCapable" ? err.name : "Error",
    });
  };

  if (opts.workers <= 1 || pending.length <= 1) {
    const fn = pending.length ? await loadShardFn(worker) : undefined;
    for (const i of pending) {
      if (opts.signal.aborted) throw new InterruptedError("interrupted");
      let result: R;
      const out = new OutputWriter(opts.out.outDir, opts.out.tmpDir);
      try {
        result = await fn!(tasks[i].args, { id: tasks[i].id, out }) as R;
      } catch (e) {
        throw wrap(i, e);
      }
      await finish(i, result, out.written);
    }
    return results;
  }

  const threads: Worker[] = [];
  try {
    await new Promise<void>((resolve, reject) => {
      let next = 0;
      let running = 0;
      let failed = false;
      const fail = (e: unknown) => {
        failed = true;
        reject(e);
      };
      opts.signal.addEventListener("abort", () => fail(new InterruptedError("interrupted")), { once: true });
      const feed = (thread: Worker) => {
        if (failed) return;
        if (next >= pending.length) {
          if (running === 0) resolve();
          return;
        }
        const i = pending[next++];
        running++;
        thread.onmessage = async (event: MessageEvent<ShardReply>) => {
          const reply = event.data;
          if (!reply.ok) {
            return fail(wrap(i, Object.assign(new Error(reply.error.message), reply.error)));
          }
          try {
            await finish(i, reply.result as R, reply.files);
          } catch (e) {
            return fail(e);
          }
          running--;
          feed(thread);
        };
        thread.onerror = (event) => {
          event.preventDefault();
          fail(wrap(i, new Error(event.message)));
        };
        const request: ShardRequest = {
          module: worker.module,
          fn: worker.fn,
          id: tasks[i].id,
          args: tasks[i].args,
          outDir: opts.out.outDir,
          tmpDir: opts.out.tmpDir,
        };
        thread.postMessage(request);
      };
      const count = Math.min(opts.workers, pending.length);
      for (let t = 0; t < count; t++) {
        const thread = new Worker(new URL("./shard_worker.ts", import.meta.url), { type: "module" });
        threads.push(thread);
        feed(thread);
      }
    });
  } finally {
    for (const thread of threads) thread.terminate();
  }
  return results;
}
