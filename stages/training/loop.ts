/**
 * The training loop every training stage runs (pretrain, SFT, the reward model, PPO): the stage gives
 * its setup and its step body, the loop owns the rest, the same way for all four:
 *
 * - the schedule: steps from where a resumed run left off to `total`, progress after each;
 * - the metrics window: a read-back every `logEvery` steps and at the last (one GPU sync for the
 *   steps since the previous one), with the mean ms a step over the window; wall-clock figures go to
 *   the log and the `msPerStep` stat, never into the artifact;
 * - evaluation and samples: before training (step 0 of a fresh run), every `every` steps, and at the
 *   last step, as the stage asks; metrics the step bodies leave on the device are read back first,
 *   so every metrics line of a step comes before that step's evaluation and sample lines;
 * - checkpoints every `checkpointEvery` steps before the last, and on SIGINT/SIGTERM at the step it
 *   finishes, after which it throws {@linkcode InterruptedError} (a rerun resumes there);
 * - the end: the `steps` (PPO: `iterations`) and `msPerStep` stats.
 *
 * {@linkcode openBackend}, {@linkcode writeModelFiles} and {@linkcode writeJsonl} are the other parts
 * the stages share: the backend with its precision check, and the files of the artifact.
 *
 * @example
 * ```ts ignore
 * await trainingLoop({
 *   stage: "pretrain", ctx, unit: "steps", total: cfg.steps, start: step, logEvery: cfg.logEvery,
 *   checkpointEvery: cfg.checkpointEvery,
 *   step: () => { trainer.microStep(loader.next(), 1); trainer.optimizerStep(lr); },
 *   readBack: { read: () => trainer.readMetrics(), report: (read, window) => ctx.log(`${window.msPerStep} ms/step`) },
 *   checkpoint: (step) => save(step),
 * });
 * ```
 * @module
 */
import type { StageContext } from "../../pipeline/stage.ts";
import { InterruptedError } from "../../pipeline/errors.ts";
import { createBackend } from "../../kernels/device.ts";
import type { Backend } from "../../kernels/backend.ts";
import type { Precision } from "../../model/gpt.ts";
import type { ParamLayout } from "../../model/params.ts";
import { modelDirFiles } from "../../model/checkpoint.ts";
import type { SpecialTokenIds } from "../../model/config.ts";
import { checkPrecision } from "../../model/train_options.ts";

/** Something the loop does at some steps: evaluation, or samples. */
export interface Periodic {
  /** Every this many steps (0: not periodically). */
  every: number;
  /** Also before the first step of a fresh run (step 0). */
  before?: boolean;
  /** Also after the last step. */
  end?: boolean;
  run(step: number): Promise<void>;
}

/** The steps of one read-back window. */
export interface MetricsWindow {
  /** Steps read back. */
  steps: number;
  /** Mean wall-clock ms a step over them, the read-back included. */
  msPerStep: number;
}

/** What a stage gives {@linkcode trainingLoop}. */
export interface TrainingLoop<R> {
  /** The stage's name, for messages. */
  stage: string;
  ctx: StageContext<unknown>;
  /** What one step is: an optimizer step, or a PPO iteration. */
  unit: "steps" | "iterations";
  total: number;
  /** Steps done already (a resumed run), 0 on a fresh one. */
  start: number;
  checkpointEvery: number;
  /** Read back every this many steps (default 1). */
  logEvery?: number;
  /** One step; `step` is the number of steps done before it. */
  step(step: number): Promise<void> | void;
  /**
   * Reads back the metrics of the steps since the last read (`read`), then records and logs them
   * (`report`). Metrics a step body leaves on the device (`deferred`: pretrain's and SFT's losses)
   * are also read before an evaluation, a sample or a checkpoint.
   */
  readBack?: { deferred?: boolean; read(): Promise<R>; report(read: R, window: MetricsWindow): void };
  evaluate?: Periodic;
  sample?: Periodic;
  /** Saves everything a rerun needs to continue after `step` steps. */
  checkpoint(step: number): Promise<void>;
}

/** What {@linkcode trainingLoop} did: the steps done, and the wall-clock ms of those this attempt read back. */
export interface LoopResult {
  steps: number;
  timed: { ms: number; steps: number };
}

/** Runs the steps of a training stage; see the module doc. */
export async function trainingLoop<R>(loop: TrainingLoop<R>): Promise<LoopResult> {
  const { ctx, total, unit } = loop;
  const logEvery = loop.logEvery ?? 1;
  let step = loop.start;
  let windowStart = performance.now();
  let windowSteps = 0;
  const timed = { ms: 0, steps: 0 };
  const readBack = async () => {
    if (!loop.readBack) return;
    const read = await loop.readBack.read();
    const elapsed = performance.now() - windowStart;
    timed.ms += elapsed;
    timed.steps += windowSteps;
    loop.readBack.report(read, { steps: windowSteps, msPerStep: elapsed / Math.max(1, windowSteps) });
    windowStart = performance.now();
    windowSteps = 0;
  };
  // Deferred metrics go first, so a step's lines precede what else is recorded at that step.
  const flush = async () => {
    if (loop.readBack?.deferred && windowSteps > 0) await readBack();
  };
  const due = (p: Periodic | undefined) =>
    p !== undefined && ((p.every > 0 && step % p.every === 0) || (p.end === true && step === total));

  if (step === 0) {
    for (const p of [loop.evaluate, loop.sample]) if (p?.before) await p.run(0);
    windowStart = performance.now();
  }
  while (step < total) {
    await loop.step(step);
    step++;
    windowSteps++;
    if (step % logEvery === 0 || step === total) await readBack();
    for (const p of [loop.evaluate, loop.sample]) {
      if (!due(p)) continue;
      await flush();
      await p!.run(step);
    }
    ctx.progress({ done: step, total, unit });
    const aborted = ctx.signal.aborted;
    if (aborted || (step % loop.checkpointEvery === 0 && step < total)) {
      await flush();
      await loop.checkpoint(step);
    }
    if (aborted) {
      const where = unit === "iterations" ? `after iteration ${step}` : `at step ${step}`;
      throw new InterruptedError(
        `stage "${loop.stage}": interrupted ${where}; checkpointed, run again to resume`,
      );
    }
  }
  ctx.stats.set(unit, step);
  if (timed.steps > 0) ctx.stats.set("msPerStep", Math.round(timed.ms / timed.steps * 100) / 100);
  return { steps: step, timed };
}

/** The stage's backend, checked to run `precision` (else a config error naming it). */
export async function openBackend(
  stage: string,
  ctx: StageContext<unknown>,
  cfg: { backend: "auto" | "cpu" | "webgpu"; precision: Precision },
): Promise<Backend> {
  const backend = await createBackend({ backend: cfg.backend, log: (line) => ctx.log(line) });
  checkPrecision(stage, cfg.precision, backend);
  return backend;
}

/** Writes the Hugging Face GPT-2 model files (`model.safetensors`, `config.json`, …) into the artifact. */
export async function writeModelFiles(
  ctx: StageContext<unknown>,
  layout: ParamLayout,
  params: Float32Array,
  tokens?: SpecialTokenIds,
): Promise<void> {
  for (const [name, bytes] of Object.entries(modelDirFiles(layout, params, tokens))) {
    await ctx.out.writeFile(name, bytes);
  }
}

/** Writes `lines` as a JSONL file of the artifact (`metrics.jsonl`, `samples.jsonl`). */
export async function writeJsonl(ctx: StageContext<unknown>, name: string, lines: unknown[]) {
  await ctx.out.writeText(name, lines.map((l) => JSON.stringify(l)).join("\n") + "\n");
}
