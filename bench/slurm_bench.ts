/**
 * The Slurm executor against the local worker pool on the same shards: dedupe's per-shard step (MinHash
 * signatures, 14×8, plus the exact hash) over 64 shards, and the same 64 shards with no work at all
 * (the per-task overhead alone). Needs a running cluster (scripts/slurm-cluster.sh start; SLURM_CONF).
 *
 *     deno run -A bench/slurm_bench.ts [shards=64] [docsPerShard=400]
 * @module
 */
import { join } from "node:path";
import { runShards, type ShardTask } from "../pipeline/pool.ts";
import { nodeDenoFlags, runShardsOnSlurm, type SlurmOptionsInput } from "../pipeline/slurm.ts";
import { Checkpoint, listFiles, OutputWriter } from "../pipeline/workspace.ts";
import type { SignatureArgs } from "../stages/dedupe/shards.ts";

/** A shard that does nothing: what remains is the executor's own cost. */
export function noopShard(): Promise<number> {
  return Promise.resolve(0);
}

// Guarded: the pool's worker threads import this module for noopShard.
if (import.meta.main) await main();

async function main() {
  const shards = Number(Deno.args[0] ?? 64);
  const docsPerShard = Number(Deno.args[1] ?? 400);
  const root = await Deno.makeTempDir({ prefix: "kiln-slurm-bench-" });
  const signatures = {
    module: new URL("../stages/dedupe/shards.ts", import.meta.url).href,
    fn: "signatureShard",
  };
  const noop = { module: new URL("./slurm_bench.ts", import.meta.url).href, fn: "noopShard" };

  // Deterministic documents (~1 KB each) from a small vocabulary, with near-duplicates across shards.
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32;
  const vocab = Array.from({ length: 2000 }, (_, i) => `w${i.toString(36)}`);
  const base = Array.from(
    { length: 200 },
    () => Array.from({ length: 170 }, () => vocab[(rand() * 2000) | 0]),
  );
  await Deno.mkdir(join(root, "input"));
  const tasks: ShardTask<SignatureArgs>[] = [];
  for (let s = 0; s < shards; s++) {
    const lines = Array.from({ length: docsPerShard }, (_, d) => {
      const words = [...base[(rand() * base.length) | 0]];
      for (let k = 0; k < 20; k++) words[(rand() * words.length) | 0] = vocab[(rand() * 2000) | 0];
      return JSON.stringify({ id: `s${s}-${d}`, text: words.join(" ") });
    });
    const path = join(root, "input", `${String(s).padStart(5, "0")}.jsonl`);
    await Deno.writeTextFile(path, lines.join("\n") + "\n");
    const name = `signatures/${String(s).padStart(5, "0")}`;
    tasks.push({
      id: `signatures:${s}`,
      args: {
        path,
        bandsFile: `${name}.bands`,
        idsFile: `${name}.ids.json`,
        minhash: { shingleWords: 5, bands: 14, rows: 8, seed: 1 },
        exact: true,
        gpu: false,
      },
    });
  }

  function stage(name: string) {
    const dir = join(root, name);
    return {
      out: new OutputWriter(join(dir, "out"), join(dir, "tmp")),
      checkpoint: new Checkpoint(join(dir, "state"), join(dir, "tmp")),
      signal: new AbortController().signal,
      workers: 2,
    };
  }

  async function time<T>(label: string, run: () => Promise<T>): Promise<number> {
    const t0 = performance.now();
    await run();
    const s = (performance.now() - t0) / 1000;
    console.log(`${label.padEnd(52)} ${s.toFixed(2)} s`);
    return s;
  }

  const onSlurm = <A>(name: string, worker: typeof noop, work: ShardTask<A>[], slurm: SlurmOptionsInput) => {
    const ws = stage(name);
    return runShardsOnSlurm(worker, work, {
      ...ws,
      slurm: { pollSeconds: 0.5, ...slurm },
      read: [join(root, "input")],
      denoFlags: nodeDenoFlags({
        read: [new URL("..", import.meta.url).pathname, join(root, "input")],
        write: [ws.out.outDir, ws.checkpoint.dir],
      }),
    });
  };

  const empty = tasks.map((t) => ({ id: t.id, args: {} }));
  console.log(`${shards} shards × ${docsPerShard} documents; node: ${navigator.hardwareConcurrency} CPUs`);
  const pool = await time(
    "dedupe signatures, local pool (2 workers)",
    () => runShards(signatures, tasks, stage("pool")),
  );
  const one = await time(
    `dedupe signatures, Slurm: ${shards} array tasks (1 shard each)`,
    () => onSlurm("slurm-64", signatures, tasks, {}),
  );
  const eight = await time(
    "dedupe signatures, Slurm: 8 array tasks",
    () => onSlurm("slurm-8", signatures, tasks, { tasks: 8 }),
  );
  const noopPool = await time(
    "no-op shards, local pool (2 workers)",
    () => runShards(noop, empty, stage("noop-pool")),
  );
  const noopSlurm = await time(
    `no-op shards, Slurm: ${shards} array tasks`,
    () => onSlurm("noop-slurm", noop, empty, {}),
  );

  for (const name of ["slurm-64", "slurm-8"]) {
    const files = await listFiles(join(root, "pool", "out"));
    for (const f of files) {
      const a = await Deno.readFile(join(root, "pool", "out", f));
      const b = await Deno.readFile(join(root, name, "out", f));
      if (a.length !== b.length || a.some((x, i) => x !== b[i])) {
        throw new Error(`${name}/${f} differs from the pool's`);
      }
    }
    console.log(`${name}: ${files.length} files byte-identical to the pool's`);
  }
  const slots = navigator.hardwareConcurrency;
  console.log(
    `per-task overhead (no-op, ${slots} slots): ${((noopSlurm - noopPool) * slots / shards).toFixed(2)} s`,
  );
  console.log(
    `per-task overhead (dedupe, ${shards} tasks): ${((one - pool) * slots / shards).toFixed(2)} s; ` +
      `(8 tasks): ${((eight - pool) * slots / 8).toFixed(2)} s`,
  );
  await Deno.remove(root, { recursive: true });
}
