/**
 * The Slurm executor against a real single-node cluster (scripts/slurm-cluster.sh; `.ci/run` starts it
 * and sets KILN_SLURM=1). Without one, every cluster test is skipped with a message saying how to run it.
 */
import { deepStrictEqual, ok, rejects, strictEqual, throws } from "node:assert/strict";
import { join } from "node:path";
import { InterruptedError, KilnError } from "../pipeline/errors.ts";
import { runShards } from "../pipeline/pool.ts";
import {
  type ArrayTaskStatus,
  isLive,
  queueStates,
  runShardsOnSlurm,
  slurm,
  submitJob,
  waitForJob,
} from "../pipeline/slurm.ts";
import { listFiles } from "../pipeline/workspace.ts";
import {
  executions,
  makeShards,
  runOnSlurm,
  type ShoutArgs,
  type ShoutResult,
  workspace,
} from "./fixtures/slurm_shard.ts";

function clusterMissing(): string | undefined {
  if (!Deno.env.get("KILN_SLURM")) return "KILN_SLURM is not set";
  try {
    new Deno.Command("squeue", { args: ["-h"], stdout: "null", stderr: "null" }).outputSync();
  } catch {
    return "squeue is not on PATH";
  }
  return undefined;
}
const missing = clusterMissing();
if (missing) {
  console.log(
    `slurm tests skipped: ${missing}. Run them with a local cluster: ` +
      `scripts/slurm-cluster.sh start && eval "$(scripts/slurm-cluster.sh env)" && ` +
      `KILN_SLURM=1 deno test -A tests/slurm_test.ts`,
  );
}
const onCluster = { ignore: missing !== undefined, sanitizeResources: false, sanitizeOps: false };

/** Runs the shards on the local pool (two threads) into `root/<name>`: the reference output. */
async function runLocally(root: string, name: string, tasks: { id: string; args: ShoutArgs }[]) {
  const ws = await workspace(join(root, name));
  const results = await runShards<ShoutArgs, ShoutResult>(
    { module: new URL("./fixtures/slurm_shard.ts", import.meta.url).href, fn: "shoutShard" },
    tasks.map((t) => ({ ...t, args: { ...t.args, trace: ws.trace } })),
    { workers: 2, out: ws.out, checkpoint: ws.checkpoint, signal: new AbortController().signal },
  );
  return { results, out: ws.out.outDir, trace: ws.trace };
}

/** Asserts two output directories hold the same files with the same bytes. */
async function assertSameFiles(a: string, b: string) {
  const files = await listFiles(a);
  deepStrictEqual(await listFiles(b), files);
  ok(files.length > 0);
  for (const f of files) deepStrictEqual(await Deno.readFile(join(b, f)), await Deno.readFile(join(a, f)), f);
}

/** Live tasks of the jobs named in a driver's jobs.json under `dir`. */
async function liveTasks(dir: string): Promise<string[]> {
  const jobIds: string[] = [];
  for (const f of await listFiles(dir)) {
    if (!f.endsWith("jobs.json")) continue;
    const state = JSON.parse(await Deno.readTextFile(join(dir, f)));
    for (const s of state.submissions) if (s.jobId) jobIds.push(s.jobId);
  }
  const states = await queueStates(jobIds);
  return [...states].filter(([, s]) => isLive(s.state)).map(([k]) => k);
}

Deno.test("slurm options are validated, naming the field", () => {
  throws(
    () => slurm({ memory: "lots" }),
    (e: Error) => e instanceof KilnError && /memory: expected a size/.test(e.message),
  );
  throws(() => slurm({ time: "1h" }), /time: expected a Slurm time/);
  throws(() => slurm({ extraArgs: ["constraint=ssd"] }), /extraArgs\.0: each argument starts with '-'/);
  // @ts-expect-error: a misspelt option is an error, not silently ignored
  throws(() => slurm({ partiton: "cpu" }), /partiton/);
  strictEqual(slurm({ time: "1-12:00", memory: "4G", gpus: "a100:2" }).options.cpusPerTask, 1);
});

Deno.test(
  "shards run as a job array give byte-identical output to the local pool, and continue a local run",
  onCluster,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-slurm-" });
    const tasks = await makeShards(root, 16);
    const local = await runLocally(root, "local", tasks);
    // Another stage attempt: five shards already done by the local pool, the rest on Slurm.
    const started = await runLocally(root, "mixed", tasks.slice(0, 5));
    const messages: string[] = [];
    const results = await runOnSlurm(root, "mixed", tasks, { tasks: 4, maxConcurrent: 2 }, {
      log: (m) => messages.push(m),
    });
    deepStrictEqual(started.results, local.results.slice(0, 5));
    deepStrictEqual(results, local.results);
    await assertSameFiles(local.out, join(root, "mixed", "out"));
    const runs = await executions(join(root, "mixed", "trace"));
    strictEqual(runs.size, 16);
    ok([...runs.values()].every((n) => n === 1), "each shard ran exactly once (the local five not again)");
    ok(
      messages.some((m) => /submitted job \d+ \(11 shards on 4 array tasks, 2 at a time\)/.test(m)),
      messages.join("\n"),
    );
    deepStrictEqual(await liveTasks(root), []);
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test("an array task that fails is resubmitted and the result is the same", onCluster, async () => {
  const root = await Deno.makeTempDir({ prefix: "kiln-slurm-" });
  const tasks = await makeShards(root, 6);
  const local = await runLocally(root, "local", tasks);
  const messages: string[] = [];
  const results = await runOnSlurm(root, "retry", tasks, { tasks: 3 }, {
    log: (m) => messages.push(m),
    failOnce: `s004@${join(root, "failed-once")}`,
  });
  deepStrictEqual(results, local.results);
  await assertSameFiles(local.out, join(root, "retry", "out"));
  strictEqual(await Deno.readTextFile(join(root, "failed-once")), "failed once\n");
  const runs = await executions(join(root, "retry", "trace"));
  strictEqual(runs.get("s004"), 2);
  strictEqual(runs.get("s001"), 1, "the failed task's finished shard is not run again");
  ok(
    messages.some((m) => /ended FAILED .*resubmitting "s004" \(attempt 2 of 3\); log: .*\.log/.test(m)),
    messages.join("\n"),
  );
  await Deno.remove(root, { recursive: true });
});

Deno.test(
  "a shard that keeps failing fails the call with the task's log path and last lines",
  onCluster,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-slurm-" });
    const tasks = await makeShards(root, 2);
    tasks[1].args.input = join(root, "input", "missing.jsonl");
    await rejects(runOnSlurm(root, "broken", tasks, { retries: 1 }), (e: Error) => {
      ok(e instanceof KilnError);
      ok(
        /array task \d+_\d+ ended FAILED .*shard "s001" unfinished, after 2 attempts \(retries: 1\); log: \S+\.log/
          .test(e.message),
        e.message,
      );
      ok(/\| kiln: shard "s001" failed: NotFound/.test(e.message), e.message);
      return true;
    });
    await Deno.remove(root, { recursive: true });
  },
);

/**
 * 12 slow shards: the local reference, then a driver subprocess submitting them to Slurm, killed with
 * SIGKILL once 3 shards are done.
 */
async function killDriverMidArray() {
  const root = await Deno.makeTempDir({ prefix: "kiln-slurm-" });
  const tasks = await makeShards(root, 12, 600);
  const local = await runLocally(
    root,
    "local",
    tasks.map((t) => ({ ...t, args: { ...t.args, delayMs: 0 } })),
  );
  const driver = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", new URL("./fixtures/slurm_shard.ts", import.meta.url).pathname, root, "12", "600"],
    stdout: "null",
    stderr: "null",
  }).spawn();
  const done = join(root, "slurm", "state", "done");
  for (let waited = 0; (await listFiles(done)).length < 3; waited += 50) {
    ok(waited < 60_000, "the array made no progress within 60 s");
    await new Promise((r) => setTimeout(r, 50));
  }
  driver.kill("SIGKILL");
  await driver.status;
  return { root, tasks, local, done };
}

Deno.test(
  "kill -9 of the driver mid-array, then a rerun adopts the running job: same output, no shard twice",
  onCluster,
  async () => {
    const { root, tasks, local, done } = await killDriverMidArray();
    const doneAtKill = (await listFiles(done)).length;
    ok(doneAtKill < 12, "killed mid-array");
    const messages: string[] = [];
    const seen: ArrayTaskStatus[] = [];
    const results = await runOnSlurm(root, "slurm", tasks, { tasks: 4, maxConcurrent: 2 }, {
      log: (m) => messages.push(m),
      onTasks: (statuses) => seen.push(...statuses),
    });
    deepStrictEqual(results, local.results);
    await assertSameFiles(local.out, join(root, "slurm", "out"));
    ok(messages.some((m) => /found earlier job \d+/.test(m)), messages.join("\n"));
    ok(!messages.some((m) => /submitted job/.test(m)), "the rerun submitted nothing: " + messages.join("\n"));
    ok(
      seen.some((s) => s.state === "RUNNING" && s.shards === 3 && (s.etaSeconds ?? 0) > 0),
      "per-task progress with an ETA",
    );
    const runs = await executions(join(root, "slurm", "trace"));
    strictEqual(runs.size, 12);
    ok([...runs.values()].every((n) => n === 1), "no shard ran twice");
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test(
  "kill -9 of the driver, jobs cancelled too: a rerun resubmits only the unfinished shards",
  onCluster,
  async () => {
    const { root, tasks, local, done } = await killDriverMidArray();
    const jobs = await liveTasks(root);
    ok(jobs.length > 0, "the killed driver's job still runs");
    const jobId = jobs[0].split("_")[0];
    await new Deno.Command("scancel", { args: [jobId] }).output();
    while ((await liveTasks(root)).length) await new Promise((r) => setTimeout(r, 100));
    const finished = new Set((await executions(join(root, "slurm", "trace"))).keys());
    const doneBefore = (await listFiles(done)).length;
    const messages: string[] = [];
    const results = await runOnSlurm(root, "slurm", tasks, { tasks: 4, maxConcurrent: 2 }, {
      log: (m) => messages.push(m),
    });
    deepStrictEqual(results, local.results);
    await assertSameFiles(local.out, join(root, "slurm", "out"));
    const resubmitted = messages.map((m) => /submitted job \d+ \((\d+) shards?/.exec(m)?.[1]).filter(Boolean);
    deepStrictEqual(resubmitted, [String(12 - doneBefore)], messages.join("\n"));
    const runs = await executions(join(root, "slurm", "trace"));
    strictEqual(runs.size, 12);
    ok([...runs.values()].every((n) => n <= 2), "a shard runs again only if it was in flight");
    const twice = [...runs].filter(([, n]) => n === 2).map(([id]) => id);
    ok(twice.every((id) => finished.has(id)), "only shards that had started ran twice");
    ok(twice.length <= 2, `at most the 2 in flight ran twice: ${twice}`);
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test(
  "abort cancels the jobs (none left in the queue); the local pool finishes the stage",
  onCluster,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-slurm-" });
    const tasks = await makeShards(root, 6, 2000);
    const controller = new AbortController();
    const call = runOnSlurm(root, "abort", tasks, { tasks: 3 }, {
      signal: controller.signal,
      log: (m) => /submitted job/.test(m) && setTimeout(() => controller.abort(), 1500),
    });
    await rejects(call, InterruptedError);
    deepStrictEqual(await liveTasks(root), [], "no live jobs left after abort");
    const fast = tasks.map((t) => ({ ...t, args: { ...t.args, delayMs: 0 } }));
    const local = await runLocally(root, "local", fast);
    const resumed = await runLocally(root, "abort", fast);
    deepStrictEqual(resumed.results, local.results);
    await assertSameFiles(local.out, join(root, "abort", "out"));
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test(
  "under the default node flags a task reads its stage, its code and `read`, and nothing else",
  onCluster,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-slurm-" });
    const tasks = await makeShards(root, 3);
    const local = await runLocally(root, "local", tasks);
    const run = async (name: string, work: typeof tasks) => {
      const ws = await workspace(join(root, name));
      return await runShardsOnSlurm<ShoutArgs, ShoutResult>(
        { module: new URL("./fixtures/slurm_shard.ts", import.meta.url).href, fn: "shoutShard" },
        work,
        {
          slurm: { pollSeconds: 0.25, retries: 0 },
          workers: 1,
          out: ws.out,
          checkpoint: ws.checkpoint,
          signal: new AbortController().signal,
          read: [join(root, "input")],
        },
      );
    };
    deepStrictEqual(await run("allowed", tasks), local.results);
    await assertSameFiles(local.out, join(root, "allowed", "out"));
    const outside = join(await Deno.makeTempDir({ prefix: "kiln-outside-" }), "secret.jsonl");
    await Deno.copyFile(tasks[0].args.input, outside);
    await rejects(
      run("refused", [{ id: "outside", args: { ...tasks[0].args, input: outside } }]),
      (e: Error) => /Requires read access to "[^"]*secret\.jsonl"/.test(e.message),
    );
    await Deno.remove(root, { recursive: true });
    await Deno.remove(join(outside, ".."), { recursive: true });
  },
);

Deno.test(
  "a submission the cluster refuses is one clear error with sbatch's message",
  onCluster,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-slurm-" });
    const tasks = await makeShards(root, 2);
    await rejects(
      runOnSlurm(root, "partition", tasks, { partition: "no-such-partition" }),
      (e: Error) =>
        e instanceof KilnError && /cluster refused job .*Invalid partition name specified/.test(e.message),
    );
    await rejects(
      runOnSlurm(root, "cpus", tasks, { cpusPerTask: 4096 }),
      (e: Error) =>
        e instanceof KilnError &&
        /cluster refused job .*More processors requested than permitted/.test(e.message),
    );
    // Nothing half-recorded: a rerun with a valid partition submits and finishes.
    const results = await runOnSlurm(root, "partition", tasks, {});
    strictEqual(results.length, 2);
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test(
  "single jobs: one that succeeds, one that fails with its log, one cancelled by a failed dependency",
  onCluster,
  async () => {
    const root = await Deno.makeTempDir({ prefix: "kiln-slurm-" });
    const signal = new AbortController().signal;
    const log = (name: string) => join(root, `${name}.log`);
    const job = (name: string, script: string, after?: string[]) =>
      submitJob({}, { name, command: ["sh", "-c", script], log: log(name), after });
    const good = await job("kiln-test-good", "echo trained");
    const bad = await job("kiln-test-bad", "echo 'loss is NaN' >&2; exit 3");
    const after = await job("kiln-test-after", "echo never", [bad]);
    await waitForJob(good, { signal, log: log("kiln-test-good"), pollSeconds: 0.25 });
    strictEqual(await Deno.readTextFile(log("kiln-test-good")), "trained\n");
    await rejects(
      waitForJob(bad, { signal, log: log("kiln-test-bad"), pollSeconds: 0.25 }),
      (e: Error) => e instanceof KilnError && /job \d+ ended FAILED .*\n {2}\| loss is NaN/.test(e.message),
    );
    await rejects(
      waitForJob(after, { signal, log: log("kiln-test-after"), pollSeconds: 0.25 }),
      (e: Error) => /ended CANCELLED \(DependencyNeverSatisfied\)/.test(e.message),
    );
    await Deno.remove(root, { recursive: true });
  },
);

Deno.test(
  "examples/ci/pipeline.yaml with --executor slurm: the same artifacts as the local pool, and it resumes either way",
  onCluster,
  async () => {
    const cli = new URL("../cli/kiln.ts", import.meta.url).pathname;
    const yaml = new URL("../examples/ci/pipeline.yaml", import.meta.url).pathname;
    const kiln = async (workdir: string, ...args: string[]) => {
      const out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-lock",
          "-A",
          cli,
          "run",
          yaml,
          "--workdir",
          workdir,
          "--quiet",
          "--json",
          ...args,
        ],
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(out.stdout);
      deepStrictEqual(out.code, 0, new TextDecoder().decode(out.stderr));
      return JSON.parse(text) as { stages: { id: string; action: string; artifact: string }[] };
    };
    const digest = async (dir: string) =>
      JSON.parse(await Deno.readTextFile(join(dir, "manifest.json"))).digest;
    const local = await kiln(await Deno.makeTempDir(), "--executor", "local");
    const onSlurm = await kiln(await Deno.makeTempDir(), "--executor", "slurm");
    for (const [i, stage] of local.stages.entries()) {
      deepStrictEqual(await digest(onSlurm.stages[i].artifact), await digest(stage.artifact), stage.id);
    }
    // The executor is not part of any key: a workdir built locally is cached on Slurm.
    const workdir = await Deno.makeTempDir();
    await kiln(workdir, "--executor", "local", "--until", "crawl");
    const continued = await kiln(workdir, "--executor", "slurm");
    deepStrictEqual(continued.stages.map((s) => s.action), ["cached", "ran", "ran"]);
    for (const [i, stage] of local.stages.entries()) {
      deepStrictEqual(await digest(continued.stages[i].artifact), await digest(stage.artifact), stage.id);
    }
  },
);

Deno.test(
  "the demo up to pretrain on Slurm: data stages as arrays, pretrain as one batch job, the same artifacts",
  onCluster,
  async () => {
    const { demo } = await import("../examples/demo.ts");
    const local = await demo.execute({ workdir: await Deno.makeTempDir(), until: "pretrain", quiet: true });
    const onSlurm = await demo.execute({
      workdir: await Deno.makeTempDir(),
      until: "pretrain",
      executor: "slurm",
      quiet: true,
    });
    for (const id of ["crawl", "dedupe", "quality-filter", "books", "mix", "pretrain"]) {
      deepStrictEqual(onSlurm.artifacts[id].digest, local.artifacts[id].digest, id);
    }
    const journal = await Deno.readTextFile(onSlurm.journal);
    ok(/submitted Slurm job \d+/.test(journal), "pretrain ran as a batch job");
  },
);
