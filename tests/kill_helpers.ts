/**
 * For the training stages' resume tests: run a pipeline script as a subprocess and SIGKILL it as soon
 * as a stage has written its first training checkpoint.
 * @module
 */
import { join } from "node:path";
import { listFiles } from "../pipeline/workspace.ts";

/** Every file under `dir` (absolute paths); none while it does not exist. */
async function filesUnder(dir: string): Promise<string[]> {
  try {
    return (await listFiles(dir)).map((rel) => join(dir, rel));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return []; // a directory the run has just removed
    throw e;
  }
}

/**
 * Runs `deno run -A --config deno.json <args>` and kills it with SIGKILL once a `train-state.json`
 * appears under `<workdir>/work/<stage>/` (or after `timeoutMs`). Returns whether the checkpoint appeared,
 * whether the stage's artifact was committed before the kill, and the subprocess's stderr.
 */
export async function killAfterCheckpoint(
  args: string[],
  workdir: string,
  stage: string,
  timeoutMs = 60_000,
): Promise<{ checkpointed: boolean; committed: boolean; stderr: string }> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", new URL("../deno.json", import.meta.url).pathname, ...args],
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let exited = false;
  child.status.then(() => (exited = true));
  let checkpointed = false;
  for (let waited = 0; waited < timeoutMs && !checkpointed && !exited; waited += 10) {
    await new Promise((r) => setTimeout(r, 10));
    checkpointed = (await filesUnder(join(workdir, "work", stage))).some((p) =>
      p.endsWith("train-state.json")
    );
  }
  if (!exited) child.kill("SIGKILL");
  const stderr = new TextDecoder().decode((await child.output()).stderr);
  const committed = (await filesUnder(join(workdir, "artifacts", stage))).length > 0;
  return { checkpointed, committed, stderr };
}
