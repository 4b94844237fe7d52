/**
 * The runtime under faults, as a user meets them: the pipeline runs as a subprocess that is killed
 * with SIGKILL at random moments, interrupted with SIGTERM, run twice at once, run without a
 * permission, and edited between runs.
 */
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { readJournal } from "../pipeline/journal.ts";
import { listFiles } from "../pipeline/workspace.ts";
import { hashFile } from "../pipeline/artifact.ts";
import { mulberry32 } from "../model/rng.ts";

const FIXTURE = new URL("./fixtures/pipeline.ts", import.meta.url).pathname;

function spawn(
  workdir: string,
  args: string[] = [],
  env: Record<string, string> = {},
  script = FIXTURE,
  flags = ["-A"],
): Deno.ChildProcess {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--no-check",
      ...flags,
      script,
      "run",
      "--workdir",
      workdir,
      "--progress-interval",
      "1",
      ...args,
    ],
    env: { NO_COLOR: "1", ...env },
    stdout: "piped",
    stderr: "piped",
  }).spawn();
}

async function finish(child: Deno.ChildProcess) {
  const { code, stdout, stderr } = await child.output();
  return { code, out: new TextDecoder().decode(stdout), err: new TextDecoder().decode(stderr) };
}

/** The SHA-256 of every file of every committed artifact, by path under the workdir's artifacts/. */
async function artifactHashes(workdir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const root = join(workdir, "artifacts");
  for (const rel of await listFiles(root)) {
    if (rel.endsWith("manifest.json")) continue; // holds commit times
    out[rel] = await hashFile(join(root, rel));
  }
  return out;
}

const SLOW = { KILN_TEST_DELAY_MS: "250", KILN_TEST_SHARDS: "6" };
const MANY = { KILN_TEST_DELAY_MS: "150", KILN_TEST_SHARDS: "40" };

Deno.test("kill -9 at 20 random moments: the final artifacts are byte-identical and no committed stage reruns", async () => {
  const reference = await Deno.makeTempDir();
  const ref = await finish(spawn(reference, ["--workers", "2"], MANY));
  assert.equal(ref.code, 0, ref.err);

  const workdir = await Deno.makeTempDir();
  const seed = Number(Deno.env.get("KILN_TEST_SEED") ?? Date.now() % 100000);
  const random = mulberry32(seed);
  // About 6 s of work in 40 short shards per stage; each attempt is killed 0.1–0.9 s after it starts.
  let kills = 0;
  for (let attempt = 0; attempt < 60 && kills < 20; attempt++) {
    const child = spawn(workdir, ["--workers", "2"], MANY);
    const timer = setTimeout(() => child.kill("SIGKILL"), 100 + random() * 800);
    const { code } = await finish(child);
    clearTimeout(timer);
    if (code === 0) break;
    kills++;
  }
  assert.ok(kills >= 20, `seed ${seed}: only ${kills} kills landed before the pipeline finished`);
  const last = await finish(spawn(workdir, ["--workers", "2"], MANY));
  assert.equal(last.code, 0, `seed ${seed}: ${last.err}`);
  assert.deepEqual(await artifactHashes(workdir), await artifactHashes(reference), `seed ${seed}`);

  // Across all runs, no stage started again after it was committed under the same key.
  const committed = new Set<string>();
  const journals = (await listFiles(join(workdir, "runs"))).sort();
  assert.ok(journals.length >= 2, "the kills happened mid-run");
  for (const name of journals) {
    for (const event of await readJournal(join(workdir, "runs", name))) {
      const id = `${event.stage}/${event.key}`;
      if (event.event === "stage-start") assert.ok(!committed.has(id), `seed ${seed}: ${id} recomputed`);
      if (event.event === "stage-commit") committed.add(id);
    }
  }
});

Deno.test("SIGTERM stops at a safe point with exit code 130, and the rerun resumes", async () => {
  const workdir = await Deno.makeTempDir();
  const child = spawn(workdir, ["--workers", "1"], SLOW);
  await new Promise((r) => setTimeout(r, 1500));
  child.kill("SIGTERM");
  const stopped = await finish(child);
  assert.equal(stopped.code, 130, stopped.err);
  assert.match(stopped.err, /run the same command again to resume/);
  const rerun = await finish(spawn(workdir, ["--workers", "1"], SLOW));
  assert.equal(rerun.code, 0, rerun.err);
  assert.match(rerun.err, /resuming from checkpoint/);
});

Deno.test("two concurrent runs on one workdir: the second exits with a clear message, the first completes", async () => {
  const workdir = await Deno.makeTempDir();
  const first = spawn(workdir, [], SLOW);
  // Wait until the first run holds the lock (it writes its pid into the lock file).
  for (let i = 0; i < 100; i++) {
    const text = await Deno.readTextFile(join(workdir, "lock")).catch(() => "");
    if (text.includes('"pid"')) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const second = await finish(spawn(workdir, [], SLOW));
  assert.equal(second.code, 75);
  assert.match(
    second.err,
    /is in use by pid \d+, started .*pipeline\.ts run .*; wait for it to finish, or pass --wait/,
  );
  const waiting = spawn(workdir, ["--wait"], SLOW);
  const firstDone = await finish(first);
  assert.equal(firstDone.code, 0, firstDone.err);
  const waited = await finish(waiting);
  assert.equal(waited.code, 0, waited.err);
  assert.match(waited.err, /waiting for the run holding/);
  assert.match(waited.err, /cached/);
});

Deno.test("a missing permission names the flag to add", async () => {
  const workdir = await Deno.makeTempDir();
  const script = new URL("./fixtures/net_pipeline.ts", import.meta.url).pathname;
  const result = await finish(
    spawn(workdir, [], { KILN_TEST_URL: "http://127.0.0.1:65000/" }, script, [
      "--allow-read",
      "--allow-write",
      "--allow-env",
    ]),
  );
  assert.equal(result.code, 1);
  assert.match(
    result.err,
    /stage "fetch-page" needs net access 127\.0\.0\.1, which kiln itself was not given/,
  );
  assert.match(result.err, /run kiln with --allow-net=127\.0\.0\.1/);
});

Deno.test("editing a stage's code reruns it and, when its output changes, its downstream", async () => {
  // A copy of the fixtures at the same depth, so their relative imports of the runtime still resolve.
  const dir = await Deno.makeTempDir({ dir: new URL(".", import.meta.url).pathname, prefix: ".tmp-code-" });
  try {
    for (const name of ["pipeline.ts", "numbers.ts", "upper.ts", "summary.ts"]) {
      const source = await Deno.readTextFile(new URL(`./fixtures/${name}`, import.meta.url));
      await Deno.writeTextFile(join(dir, name), source);
    }
    const workdir = await Deno.makeTempDir();
    const script = join(dir, "pipeline.ts");
    assert.equal((await finish(spawn(workdir, [], {}, script))).code, 0);
    // An edit that changes what the stage computes.
    const source = await Deno.readTextFile(join(dir, "upper.ts"));
    await Deno.writeTextFile(join(dir, "upper.ts"), source.replace("toUpperCase()", "toLowerCase()"));
    const status = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-check", "-A", script, "status", "--workdir", workdir, "--json"],
      stdout: "piped",
    }).output();
    const states = JSON.parse(new TextDecoder().decode(status.stdout));
    assert.deepEqual(states.map((s: { state: string }) => s.state), ["done", "stale", "stale"]);
    assert.deepEqual(states[1].reasons, ["code changed"]);
    const rerun = await finish(spawn(workdir, [], {}, script));
    assert.equal(rerun.code, 0, rerun.err);
    assert.match(rerun.err, /numbers: cached/);
    assert.match(rerun.err, /▶ upper: running/);
    assert.match(rerun.err, /▶ summary: running/);

    // An edit that changes nothing it computes (a comment): the stage reruns, and since its output is
    // byte-identical, the stages after it stay cached (their input digests did not change).
    await Deno.writeTextFile(join(dir, "upper.ts"), "// a comment\n", { append: true });
    const again = await finish(spawn(workdir, [], {}, script));
    assert.match(again.err, /▶ upper: running/);
    assert.match(again.err, /summary: cached/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a YAML typo and an invalid config value: one clear error naming file and line, exit code 1", async () => {
  const dir = await Deno.makeTempDir();
  const file = join(dir, "bad.yaml");
  await Deno.writeTextFile(file, "name: bad\nstages:\n  - stage: numbrs\n");
  const cli = new URL("../cli/kiln.ts", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-check", "-A", cli, "run", file],
    stderr: "piped",
  }).output();
  assert.equal(out.code, 1);
  const err = new TextDecoder().decode(out.stderr);
  assert.match(err, /bad\.yaml:3:\d+: unknown stage "numbrs"/);
  assert.equal(err.trim().split("\n").length, 1, err);
});

Deno.test("progress on a non-terminal: plain periodic lines with counts, no ANSI codes", async () => {
  const workdir = await Deno.makeTempDir();
  const result = await finish(spawn(workdir, ["--workers", "1"], SLOW));
  assert.equal(result.code, 0, result.err);
  assert.match(result.err, /\[numbers\] \d+\/6 shards · [\d.]+ shards\/s · .*elapsed/);
  assert.ok(!result.err.includes("\x1b"), "no escape codes in a log");
});
