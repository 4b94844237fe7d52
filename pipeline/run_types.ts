/**
 * What running, inspecting and collecting a pipeline takes and gives: the options the CLI flags set,
 * each stage's status, and a run's outcome. Apart from `pipeline.ts` so the command line (`command.ts`)
 * can use them without importing the runner (which imports the command line).
 * @module
 */
import type { Artifact } from "./artifact.ts";

/** What to do, as the CLI flags say it. */
export interface ExecuteOptions {
  command?: "run" | "status" | "plan" | "gc" | "report";
  /** Where `report` writes its HTML (default `<workdir>/report-<pipeline>.html`). */
  out?: string;
  /** Run this stage and the ones after it (the ones before must be built). */
  from?: string;
  /** Stop after this stage. */
  until?: string;
  /** Run only these stages (their inputs must be built). */
  only?: string[];
  /** Rerun these stages (or all selected, with `true`) even when cached. */
  force?: string[] | boolean;
  workdir?: string;
  workers?: number;
  /** Override the pipeline's executor: "local" (the worker pool) or "slurm" (its Slurm options, or defaults). */
  executor?: "local" | "slurm";
  /** No progress or summary lines on stderr. */
  quiet?: boolean;
  /** Wait for another run holding the workdir instead of exiting. */
  wait?: boolean;
  /** Aborts the run at the next safe point (the CLI wires SIGINT/SIGTERM to it). */
  signal?: AbortSignal;
  /** Seconds between plain progress lines when stderr is not a terminal (default 10). */
  progressInterval?: number;
}

/** The state of one stage, as `status` and `plan` report it. */
export interface StageStatus {
  id: string;
  stage: string;
  kind: string;
  /** done: committed and current · stale: committed under other key parts · partial: an attempt
   * can resume · pending: never built, or waiting for upstream · damaged: artifact fails its check. */
  state: "done" | "stale" | "partial" | "pending" | "damaged";
  /** What `run` would do with the current selection. */
  action: "skip" | "run" | "resume" | "not selected";
  /** Why it would run (which part of its key changed, or what is missing). */
  reasons: string[];
  key?: string;
  committedAt?: string;
  stats?: Record<string, unknown>;
  /** Done-markers of a resumable attempt. */
  checkpoints?: number;
  /** The Deno permission flags the stage's process gets (see `sandbox.ts`), once its inputs exist. */
  grant?: string[];
  /** The digest of the stage's code (`sha256-…`), what `Stage.pin` and YAML's `integrity` take. */
  code?: string;
}

/** The outcome of one stage in a run. */
export interface StageOutcome {
  id: string;
  action: "ran" | "resumed" | "cached" | "not selected";
  durationMs: number;
  artifact?: Artifact;
}

/** What `execute({ command: "run" })` returns. */
export interface RunResult {
  stages: StageOutcome[];
  /** The artifact of every stage that has one, by stage id. */
  artifacts: Record<string, Artifact>;
  journal: string;
}
