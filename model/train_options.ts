/**
 * The optimizer, schedule, backend and precision settings every training stage shares (pretrain, SFT,
 * reward model; PPO the backend and precision ones), as zod fields to spread into a stage's config
 * schema, so their names, ranges and meaning are one thing. Each stage picks its own defaults for what
 * differs between pretraining and fine-tuning.
 *
 * @example
 * ```ts
 * import { z } from "npm:zod@^4.6.7";
 * import { backendOption, optimizerOptions } from "./train_options.ts";
 * const schema = z.object({ ...optimizerOptions({ lr: 1e-4, warmup: 10, weightDecay: 0 }), backend: backendOption });
 * schema.parse({}).lr; // 1e-4
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import type { Backend } from "../kernels/backend.ts";
import { ConfigError } from "../pipeline/errors.ts";
import type { Precision } from "./gpt.ts";

/** A whole number ≥ 1. */
export const positiveInt = z.number().int().min(1);

/** AdamW with linear warmup and cosine decay, gradient clipping, seeding and the read-back cadence. */
export function optimizerOptions(defaults: { lr: number; warmup: number; weightDecay: number }) {
  return {
    /** Peak learning rate. */
    lr: z.number().positive().default(defaults.lr),
    /** Final learning rate of the cosine decay (default lr / 10). */
    minLr: z.number().min(0).optional(),
    /** Linear warmup steps. */
    warmup: z.number().int().min(0).default(defaults.warmup),
    weightDecay: z.number().min(0).default(defaults.weightDecay),
    beta1: z.number().min(0).max(1).default(0.9),
    beta2: z.number().min(0).max(1).default(0.95),
    eps: z.number().positive().default(1e-8),
    /** Clip the global gradient norm to this (0 turns clipping off). */
    clip: z.number().min(0).default(1),
    /** Seeds the initialisation, the data order and the samples. */
    seed: z.number().int().min(0).default(1337),
    /** Read loss and gradient norm back every this many steps (reading back stalls a GPU). */
    logEvery: positiveInt.default(10),
  };
}

/** Compute backend: `auto` uses WebGPU when an adapter is available, else the CPU. */
export const backendOption = z.enum(["auto", "cpu", "webgpu"]).default("auto");

/**
 * Matmul precision: `fp32`, or `mixed`: f16 storage of the matmul inputs (weights and activations)
 * with f32 accumulation, master weights, gradients and optimizer. `mixed` needs f16 tensors: the CPU
 * backend has them, WebGPU only with the adapter feature `shader-f16`; without it the stage fails
 * with a config error rather than silently training in fp32.
 */
export const precisionOption = z.enum(["fp32", "mixed"]).default("fp32");

/**
 * Checks, before training, that `backend` can run `precision`: `mixed` needs f16 tensors. Otherwise
 * it destroys the backend (the stage will not use it) and throws a {@linkcode ConfigError} naming
 * `config.precision`; a silent fp32 fallback would make a run that claims mixed numbers not
 * reproducible as such.
 */
export function checkPrecision(stage: string, precision: Precision, backend: Backend): void {
  if (precision !== "mixed" || backend.hasF16) return;
  backend.destroy();
  throw new ConfigError(
    stage,
    ["precision"],
    [
      `"mixed" needs f16 tensors, which the ${backend.name} backend (${backend.description}) does not have`,
      `(WebGPU needs the adapter feature "shader-f16"); use precision "fp32", or backend "cpu" (which has f16)`,
    ].join(" "),
  );
}
