/**
 * The settings every training stage shares (pretrain, SFT, reward model, PPO), as zod fields to spread
 * into a stage's config schema, so their names, ranges and meaning are one thing across stages:
 * {@linkcode trainingOptions} for the stages that run optimizer steps on one model (init, sequence
 * length, optimizer and schedule, read-back cadence, checkpoints, backend, precision), its parts for
 * PPO, which trains two networks per iteration ({@linkcode runOptions}, {@linkcode scheduleOptions},
 * {@linkcode adamwOptions}), and the fields of the periodic evaluation and samples
 * ({@linkcode everyOption}, {@linkcode sampleOptions}). Each stage picks its own defaults for what
 * differs between pretraining and fine-tuning.
 *
 * The names, once for all stages: `gradClip` clips the global gradient norm; `maxTokens` is the
 * longest generated response; `checkpointEvery`, `eval.every` and `sample.every` count the stage's
 * loop unit (optimizer steps; PPO: iterations); `epochs` are passes over the training data (SFT, the
 * reward model; PPO's passes over each rollout batch are `ppoEpochs`).
 *
 * @example
 * ```ts
 * import { z } from "npm:zod@^4.6.7";
 * import { trainingOptions } from "./train_options.ts";
 * const schema = z.object({ ...trainingOptions({ lr: 1e-4, warmup: 10, weightDecay: 0, checkpointEvery: 100 }) });
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

/** Every this many steps (0: never, or for some stages at the end only: see the stage). */
export function everyOption(defaultEvery: number) {
  return z.number().int().min(0).default(defaultEvery);
}

/** Peak learning rate, linear warmup and cosine decay to `minLr` over the stage's steps. */
export function scheduleOptions(defaults: { lr: number; warmup: number }) {
  return {
    /** Peak learning rate. */
    lr: z.number().positive().default(defaults.lr),
    /** Final learning rate of the cosine decay (default lr / 10; PPO: lr, i.e. constant). */
    minLr: z.number().min(0).optional(),
    /** Linear warmup steps. */
    warmup: z.number().int().min(0).default(defaults.warmup),
  };
}

/** AdamW's settings and the gradient clipping. */
export function adamwOptions(defaults: { weightDecay: number }) {
  return {
    weightDecay: z.number().min(0).default(defaults.weightDecay),
    beta1: z.number().min(0).max(1).default(0.9),
    beta2: z.number().min(0).max(1).default(0.95),
    eps: z.number().positive().default(1e-8),
    /** Clip the global gradient norm (of each network) to this (0 turns clipping off). */
    gradClip: z.number().min(0).default(1),
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

/** Seed, checkpoint interval, backend and precision: what every training stage's loop takes. */
export function runOptions(defaults: { checkpointEvery: number }) {
  return {
    /** Seeds the initialisation, the data order and the samples. */
    seed: z.number().int().min(0).default(1337),
    /** Save a resumable checkpoint every this many steps (PPO: iterations). */
    checkpointEvery: positiveInt.default(defaults.checkpointEvery),
    backend: backendOption,
    /** `fp32`, or `mixed`: f16 matmul inputs with f32 accumulation and master weights (needs f16 support). */
    precision: precisionOption,
  };
}

/**
 * The common settings of a stage that trains one model with optimizer steps (pretrain, SFT, the
 * reward model): its starting weights, sequence length, optimizer and schedule, read-back cadence,
 * checkpoints, backend and precision.
 */
export function trainingOptions(
  defaults: { lr: number; warmup: number; weightDecay: number; checkpointEvery: number },
) {
  return {
    /** Start from this model directory (Hugging Face GPT-2 layout: `config.json`, `model.safetensors`). */
    init: z.string().min(1).optional(),
    /** Tokens per sequence (default: the model's context). */
    seqLen: positiveInt.optional(),
    ...scheduleOptions(defaults),
    ...adamwOptions(defaults),
    /** Read loss and gradient norm back every this many steps (reading back stalls a GPU). */
    logEvery: positiveInt.default(10),
    ...runOptions(defaults),
  };
}

/** The periodic samples: every `every` steps (0: never, SFT: at the end), up to `maxTokens` each. */
export function sampleOptions(defaults: { every: number; maxTokens: number; temperature: number }) {
  return {
    every: everyOption(defaults.every),
    /** Longest response, in tokens. */
    maxTokens: positiveInt.default(defaults.maxTokens),
    temperature: z.number().min(0).default(defaults.temperature),
  };
}

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
