/**
 * The worker pool data stages use to process independent shards in parallel. Each shard task runs a
 * named export of a module (`worker.fn` in `worker.module`) in a Deno worker thread; the function
 * writes its output files through the {@linkcode OutputWriter} it is given and returns a small JSON
 * result (its stats). A finished shard is marked done in the checkpoint with its result, so a rerun
 * skips it; results come back in task order, so outputs do not depend on the worker count.
 * @module
 */
import type { Checkpoint, OutputWriter } from "./workspace.ts";
import { InterruptedError, isKilnError, KilnError } from "./errors.ts";

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

/** A worker thread's answer. */
export type ShardReply = { ok: true; result: unknown } | {
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
    const info = await opts.checkpoint.doneInfo<{ result: R }>(tasks[i].id);
    if (info !== undefined) results[i] = info.result;
    else pending.push(i);
  }
  let done = tasks.length - pending.length;
  opts.onProgress?.(done, tasks.length);
  const finish = async (i: number, result: R) => {
    await opts.checkpoint.markDone(tasks[i].id, { result });
    results[i] = result;
    opts.onProgress?.(++done, tasks.length);
  };
  // Errors keep kiln's one-line form for KilnErrors (also when they crossed a thread as plain data).
  const wrap = (i: number, e: unknown) => {
    const err = e as Error;
    const message = `shard "${tasks[i].id}": ${err.message}`;
    if (isKilnError(err)) return new KilnError(message);
    return Object.assign(new Error(message), { stack: err.stack });
  };

  if (opts.workers <= 1 || pending.length <= 1) {
    const fn = pending.length ? await loadShardFn(worker) : undefined;
    for (const i of pending) {
      if (opts.signal.aborted) throw new InterruptedError("interrupted");
      let result: R;
      try {
        result = await fn!(tasks[i].args, { id: tasks[i].id, out: opts.out }) as R;
      } catch (e) {
        throw wrap(i, e);
      }
      await finish(i, result);
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
            await finish(i, reply.result as R);
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
