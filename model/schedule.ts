/**
 * The learning-rate schedule: linear warmup from 0 to `maxLr` over `warmupSteps`, then a cosine
 * decay to `minLr` at `totalSteps` (and `minLr` after it), as in nanoGPT and llm.c. A pure function
 * of the step, so resuming needs only the step number.
 *
 * @example
 * ```ts
 * import { learningRate } from "./schedule.ts";
 * const schedule = { maxLr: 6e-4, minLr: 6e-5, warmupSteps: 100, totalSteps: 1000 };
 * console.log(learningRate(0, schedule), learningRate(100, schedule), learningRate(1000, schedule));
 * ```
 * @module
 */

/** Parameters of the warmup + cosine schedule. */
export interface Schedule {
  maxLr: number;
  minLr: number;
  warmupSteps: number;
  totalSteps: number;
}

/** The learning rate for optimizer step `step` (0-based). */
export function learningRate(step: number, s: Schedule): number {
  if (step < s.warmupSteps) return s.maxLr * (step + 1) / s.warmupSteps;
  if (step >= s.totalSteps) return s.minLr;
  const progress = (step - s.warmupSteps) / Math.max(1, s.totalSteps - s.warmupSteps);
  return s.minLr + 0.5 * (1 + Math.cos(Math.PI * progress)) * (s.maxLr - s.minLr);
}
