import { strict as assert } from "node:assert";
import { InterruptedError } from "../pipeline/errors.ts";
import type { StageContext } from "../pipeline/stage.ts";
import { type TrainingLoop, trainingLoop } from "../stages/training/loop.ts";

/** A stage context with what the loop uses: stats, progress, the abort signal. */
function fakeContext(signal = new AbortController().signal) {
  const stats: Record<string, unknown> = {};
  const progress: number[] = [];
  const ctx = {
    signal,
    stats: { set: (k: string, v: unknown) => stats[k] = v, add: () => {}, toJSON: () => stats },
    progress: (p: { done: number }) => progress.push(p.done),
    log: () => {},
  } as unknown as StageContext<unknown>;
  return { ctx, stats, progress };
}

/** A loop that records, in order, what happened at which step. */
function recordingLoop(
  events: string[],
  over: Partial<TrainingLoop<number[]>> & { ctx: StageContext<unknown> },
) {
  let pending: number[] = [];
  const loop: TrainingLoop<number[]> = {
    stage: "test",
    unit: "steps",
    total: 6,
    start: 0,
    logEvery: 4,
    checkpointEvery: 3,
    step(done) {
      pending.push(done + 1);
    },
    readBack: {
      deferred: true,
      read: () => {
        const read = pending;
        pending = [];
        return Promise.resolve(read);
      },
      report: (read, window) => {
        assert.equal(window.steps, read.length);
        events.push(`loss ${read.join(",")}`);
      },
    },
    evaluate: {
      every: 2,
      before: true,
      end: true,
      run: (s) => Promise.resolve(void events.push(`eval ${s}`)),
    },
    sample: { every: 5, run: (s) => Promise.resolve(void events.push(`sample ${s}`)) },
    checkpoint: (s) => Promise.resolve(void events.push(`checkpoint ${s}`)),
    ...over,
  };
  return loop;
}

Deno.test("training loop: evaluation before/every/end, deferred metrics read first, checkpoints before the last step", async () => {
  const { ctx, stats, progress } = fakeContext();
  const events: string[] = [];
  const result = await trainingLoop(recordingLoop(events, { ctx }));
  assert.deepEqual(events, [
    "eval 0",
    "loss 1,2",
    "eval 2",
    "loss 3",
    "checkpoint 3",
    "loss 4",
    "eval 4",
    "loss 5",
    "sample 5",
    "loss 6",
    "eval 6",
  ]);
  assert.deepEqual(progress, [1, 2, 3, 4, 5, 6]);
  assert.equal(result.steps, 6);
  assert.equal(result.timed.steps, 6);
  assert.equal(stats.steps, 6);
  assert.equal(typeof stats.msPerStep, "number");
});

Deno.test("training loop: a resumed run skips the 'before' events and starts at its step", async () => {
  const { ctx } = fakeContext();
  const events: string[] = [];
  await trainingLoop(recordingLoop(events, { ctx, start: 4 }));
  assert.deepEqual(events, ["loss 5", "sample 5", "loss 6", "eval 6"]);
});

Deno.test("training loop: an abort checkpoints at the step it finishes, then throws InterruptedError", async () => {
  const controller = new AbortController();
  const { ctx } = fakeContext(controller.signal);
  const events: string[] = [];
  const loop = recordingLoop(events, { ctx, unit: "iterations" });
  const step = loop.step;
  loop.step = (done) => {
    step(done);
    if (done === 4) controller.abort(); // during the 5th step
  };
  await assert.rejects(
    trainingLoop(loop),
    (e: Error) =>
      e instanceof InterruptedError &&
      e.message === `stage "test": interrupted after iteration 5; checkpointed, run again to resume`,
  );
  assert.deepEqual(events.slice(-3), ["loss 5", "sample 5", "checkpoint 5"]);
});

Deno.test("training loop: metrics a step body records itself are read back only at log steps", async () => {
  const { ctx } = fakeContext();
  const events: string[] = [];
  const reads: number[] = [];
  const loop = recordingLoop(events, { ctx, total: 5, logEvery: 2, checkpointEvery: 100 });
  loop.readBack = { read: () => Promise.resolve([]), report: (_, w) => void reads.push(w.steps) };
  await trainingLoop(loop);
  // Steps 2 and 4 are log steps, 5 the last; evaluation at 2 and 4 and the sample at 5 read nothing extra.
  assert.deepEqual(reads, [2, 2, 1]);
});
