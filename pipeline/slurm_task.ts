/**
 * The entry point one Slurm array task runs on its node (see {@linkcode runShardsOnSlurm}):
 *
 *     deno run <flags> pipeline/slurm_task.ts <stage checkpoint>/slurm/<call>/task-<n>/<rank>.json
 *
 * It processes the shards its task file lists, one after the other, exactly as a pool worker would: a shard already marked done is skipped, a finished one is
 * marked done with `{ result }`. Its files go through {@linkcode OutputWriter} (atomic), with temporary
 * files in a directory of its own so a driver restarting on another machine cannot delete them under
 * it. It reports its progress to a small JSON file the driver reads, and exits non-zero on the first
 * failing shard, printing the shard id and the error to the task's log.
 * @module
 */
import { join } from "node:path";
import { doneShardResult, loadShardFn, markShardDone } from "./pool.ts";
import type { SlurmTaskFile, SlurmTaskProgress } from "./slurm.ts";
import { Checkpoint, OutputWriter, writeFileAtomic } from "./workspace.ts";

async function main(taskPath: string): Promise<void> {
  const spec: SlurmTaskFile = JSON.parse(await Deno.readTextFile(taskPath));
  if (spec.version !== 1) throw new Error(`${taskPath}: not a kiln task file (version ${spec.version})`);
  const tmpDir = join(spec.tmpDir, `${spec.submission}-${spec.rank}`);
  const out = new OutputWriter(spec.outDir, tmpDir);
  const checkpoint = new Checkpoint(spec.stateDir, tmpDir);
  const fn = await loadShardFn(spec);
  const progressPath = join(spec.progressDir, `${spec.submission}-${spec.rank}.json`);
  const progress: SlurmTaskProgress = { started: Date.now(), done: [], ran: 0 };
  const report = () =>
    writeFileAtomic(progressPath, new TextEncoder().encode(JSON.stringify(progress)), tmpDir);
  await report();
  for (const [k, task] of spec.tasks.entries()) {
    const started = performance.now();
    let ran = false;
    if (!(await doneShardResult(checkpoint, out, task.id))) {
      let result: unknown;
      const shardOut = new OutputWriter(spec.outDir, tmpDir);
      try {
        result = await fn(task.args, { id: task.id, out: shardOut });
      } catch (e) {
        console.error(`kiln: shard "${task.id}" failed: ${(e as Error)?.stack ?? e}`);
        Deno.exit(1);
      }
      // As the local pool does: the marker carries each file's size and digest (checked before commit).
      await markShardDone(checkpoint, shardOut, task.id, result, shardOut.written);
      progress.ran++;
      ran = true;
    }
    progress.done.push(task.index);
    await report();
    const what = ran ? `done in ${((performance.now() - started) / 1000).toFixed(2)} s` : "already done";
    console.log(`kiln: shard "${task.id}" ${what} (${k + 1}/${spec.tasks.length})`);
  }
  await Deno.remove(tmpDir, { recursive: true }).catch(() => {});
}

if (import.meta.main) {
  if (Deno.args.length !== 1) {
    console.error("usage: deno run <flags> pipeline/slurm_task.ts <task-file.json>");
    Deno.exit(2);
  }
  await main(Deno.args[0]);
}
