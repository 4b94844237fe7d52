/**
 * Stage `pretrain` (tokens → model): trains a GPT-2-style decoder on the token shards of a `tokens`
 * artifact with AdamW, a warmup + cosine learning-rate schedule, gradient accumulation and clipping.
 *
 * The artifact is a Hugging Face GPT-2 model directory plus the training record:
 * - `model.safetensors`, `config.json`: the weights (HF tensor names) and architecture;
 * - `tokenizer.json`: copied from the tokens artifact, so the directory is all `kiln sample` needs;
 * - `metrics.jsonl`: one line per logged step `{step, loss, lr, gradNorm}`, plus `{step, valLoss}` after
 *   each evaluation and `{step, sample}` after each sample generation.
 *
 * Wall-clock figures stay out of the artifact, so that the same inputs give the same bytes and the
 * stages downstream stay cached: ms/step and tokens/s are in the log lines (and the run's journal),
 * and their means over the steps this attempt ran are the `msPerStep` and `tokensPerSec` stats.
 *
 * Every `checkpointEvery` steps (and on SIGINT/SIGTERM) the weights, AdamW moments, step, data
 * cursor and sampling RNG are checkpointed; a rerun resumes from there and, on the CPU backend,
 * reproduces the uninterrupted run's losses and final weights exactly.
 *
 * `precision: "mixed"` stores the matmul inputs in f16 (weights copied from the f32 master weights
 * after each step, activations cast as they are produced) and keeps accumulation, gradients and
 * AdamW in f32; it needs a backend with f16 tensors (WebGPU: `shader-f16`), else a config error.
 *
 * @example
 * ```ts
 * import { pretrain } from "./pretrain.ts";
 * pretrain({ model: { layers: 6, dim: 384, heads: 6, context: 256 }, steps: 2000, batch: 16 });
 * pretrain({ init: "models/gpt2", steps: 500, lr: 1e-4 }); // continue training a local GPT-2
 * pretrain({ init: "models/gpt2", backend: "webgpu", precision: "mixed" }); // f16 matmul inputs (shader-f16)
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { basename } from "node:path";
import { everyOption, positiveInt, sampleOptions, trainingOptions } from "../model/train_options.ts";
import { defineStage, localPaths, type StageContext } from "../pipeline/stage.ts";
import type { Artifact } from "../pipeline/artifact.ts";
import { DataError, StageError } from "../pipeline/errors.ts";
import { checkModelFits, gptConfig } from "../model/config.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { END_OF_TEXT, type Tokenizer } from "../tokenizer/tokenizer.ts";
import { initParams, type ParamLayout, paramLayout } from "../model/params.ts";
import {
  loadModelDir,
  loadTrainCheckpoint,
  saveTrainCheckpoint,
  specialTokenIds,
} from "../model/checkpoint.ts";
import { type LoaderCursor, TokenLoader } from "../model/data.ts";
import { learningRate } from "../model/schedule.ts";
import { Rng } from "../model/rng.ts";
import { type StepMetrics, Trainer } from "../model/train.ts";
import { generate } from "../model/generate.ts";
import {
  openBackend,
  type TrainingLoop,
  trainingLoop,
  writeJsonl,
  writeModelFiles,
} from "./training/loop.ts";

const schema = z.object({
  /** Architecture of a new model; `vocab` defaults to the tokenizer's vocabulary size. */
  model: z.object({
    layers: positiveInt.default(6),
    dim: positiveInt.default(384),
    heads: positiveInt.default(6),
    context: positiveInt.default(256),
    vocab: positiveInt.optional(),
  }).strict().default({ layers: 6, dim: 384, heads: 6, context: 256 }),
  /** Optimizer steps. */
  steps: positiveInt.default(2000),
  /** Sequences per micro-batch. */
  batch: positiveInt.default(8),
  /** Micro-batches per optimizer step (the effective batch is batch × gradAccum sequences). */
  gradAccum: positiveInt.default(1),
  /** `init`: a local Hugging Face GPT-2 or a kiln model to continue training; its config wins over `model`. */
  ...trainingOptions({ lr: 6e-4, warmup: 100, weightDecay: 0.1, checkpointEvery: 250 }),
  /** Validation loss on the first `batches` batches of the `val-*.bin` shards every `every` steps (0: never). */
  eval: z.object({
    every: everyOption(250),
    batches: positiveInt.default(20),
  }).strict().default({ every: 250, batches: 20 }),
  /** A sample generation every `every` steps (0: never), logged and kept in metrics.jsonl. */
  sample: z.object({
    ...sampleOptions({ every: 500, maxTokens: 64, temperature: 1 }),
    prompt: z.string().default(""),
    topK: z.number().int().min(0).default(40),
  }).strict().default({ every: 500, maxTokens: 64, prompt: "", temperature: 1, topK: 40 }),
}).strict();

/** The config of {@linkcode pretrain}. */
export type PretrainConfig = z.output<typeof schema>;

/** One line of `metrics.jsonl`. */
export type MetricsLine =
  | { step: number; loss: number; lr: number; gradNorm: number }
  | { step: number; valLoss: number }
  | { step: number; sample: string };

/** What a training checkpoint records besides weights and optimizer moments. */
interface PretrainState {
  [key: string]: unknown;
  step: number;
  cursor: LoaderCursor;
  rng: number[];
  metrics: MetricsLine[];
}

/** Token shard files of a tokens artifact, split by their `train-`/`val-` prefix. */
function shardFiles(files: string[], prefix: string): string[] {
  return files.filter((f) => basename(f).startsWith(prefix));
}

/** The tokenizer of the tokens artifact (if it has one) and the model: a fresh one, or `init`'s weights. */
async function startingModel(cfg: PretrainConfig, input: Artifact) {
  const tokenizer: Tokenizer | undefined = input.files().includes("tokenizer.json")
    ? await loadTokenizer(input.path("tokenizer.json"))
    : undefined;
  const initial = cfg.init ? await loadModelDir(cfg.init) : undefined;
  const vocab = cfg.model.vocab ?? tokenizer?.vocabSize;
  if (!initial && vocab === undefined) {
    throw new StageError("pretrain", `no tokenizer.json in the tokens artifact; set model.vocab`);
  }
  const config = initial?.config ?? gptConfig({ ...cfg.model, vocab: vocab! }, "pretrain.model");
  // Weights, gradients and AdamW's two moments: refused by name before anything is allocated.
  checkModelFits(config, `stage "pretrain": config.model`, 4);
  if (tokenizer && tokenizer.vocabSize > config.vocab) {
    throw new StageError(
      "pretrain",
      `the tokenizer has ${tokenizer.vocabSize} ids, the model's vocabulary only ${config.vocab}`,
    );
  }
  const seqLen = cfg.seqLen ?? config.context;
  if (seqLen > config.context) {
    throw new StageError("pretrain", `seqLen ${seqLen} exceeds the model's context ${config.context}`);
  }
  return { tokenizer, initial, config, seqLen, layout: paramLayout(config) };
}

/** What the step body, the evaluation, the samples and the checkpoints of a pretraining run share. */
interface PretrainRun {
  ctx: StageContext<PretrainConfig, "tokens">;
  trainer: Trainer;
  layout: ParamLayout;
  seqLen: number;
  tokenizer?: Tokenizer;
  loader: TokenLoader;
  valLoader?: TokenLoader;
  rng: Rng;
  metrics: MetricsLine[];
}

/** The step body, read-back, evaluation, samples and checkpoint of pretraining, for the training loop. */
function pretrainLoop(run: PretrainRun, start: number): TrainingLoop<StepMetrics[]> {
  const { ctx, trainer, loader, valLoader, tokenizer, rng, metrics } = run;
  const cfg = ctx.config;
  const schedule = {
    maxLr: cfg.lr,
    minLr: cfg.minLr ?? cfg.lr / 10,
    warmupSteps: cfg.warmup,
    totalSteps: cfg.steps,
  };
  const tokensPerStep = cfg.batch * run.seqLen * cfg.gradAccum;
  // The learning rate of each step whose loss is still on the device.
  const pendingLr: number[] = [];
  return {
    stage: "pretrain",
    ctx,
    unit: "steps",
    total: cfg.steps,
    start,
    logEvery: cfg.logEvery,
    checkpointEvery: cfg.checkpointEvery,
    step(done) {
      for (let micro = 0; micro < cfg.gradAccum; micro++) trainer.microStep(loader.next(), 1 / cfg.gradAccum);
      const lr = learningRate(done, schedule);
      trainer.optimizerStep(lr);
      pendingLr.push(lr);
    },
    readBack: {
      deferred: true,
      read: () => trainer.readMetrics(),
      report(read, { msPerStep }) {
        read.forEach((m, i) =>
          metrics.push({ step: m.step, loss: m.loss, lr: pendingLr[i], gradNorm: m.gradNorm })
        );
        const last = read.at(-1);
        if (last) {
          ctx.stats.set("loss", last.loss);
          ctx.log(
            `step ${last.step}/${cfg.steps} loss ${last.loss.toFixed(4)} lr ${
              pendingLr.at(-1)!.toExponential(2)
            } ` +
              `norm ${last.gradNorm.toFixed(3)} ${msPerStep.toFixed(1)} ms/step ` +
              `${Math.round(tokensPerStep * 1000 / msPerStep)} tokens/s`,
          );
        }
        pendingLr.length = 0;
      },
    },
    evaluate: valLoader &&
      { every: cfg.eval.every, end: cfg.eval.every > 0, run: (step) => evaluate(run, step) },
    sample: tokenizer && { every: cfg.sample.every, run: (step) => sample(run, step) },
    async checkpoint(step) {
      const { params, m, v } = await trainer.state();
      const state: PretrainState = { step, cursor: loader.cursor(), rng: rng.state(), metrics };
      await saveTrainCheckpoint(ctx.checkpoint, run.layout, { params, m, v, state });
    },
  };
}

/** Validation loss on the first `eval.batches` batches of the val shards. */
async function evaluate({ ctx, trainer, valLoader, metrics }: PretrainRun, step: number) {
  const cfg = ctx.config;
  valLoader!.seek({ epoch: 0, index: 0 });
  const batches = Math.min(cfg.eval.batches, Math.floor(valLoader!.windowsPerEpoch / cfg.batch) || 1);
  const valLoss = await trainer.evalLoss(Array.from({ length: batches }, () => valLoader!.next()));
  metrics.push({ step, valLoss });
  ctx.stats.set("valLoss", valLoss);
  ctx.log(`step ${step} validation loss ${valLoss.toFixed(4)}`);
}

/** A sample generation from `sample.prompt` (default: the end-of-text token). */
async function sample({ ctx, trainer, tokenizer, rng, metrics }: PretrainRun, step: number) {
  const s = ctx.config.sample;
  const prompt = s.prompt ? tokenizer!.encode(s.prompt) : [tokenizer!.specialTokens[END_OF_TEXT] ?? 0];
  const { ids } = await generate(trainer.model, prompt, {
    maxTokens: Math.min(s.maxTokens, trainer.model.config.context - prompt.length),
    temperature: s.temperature,
    topK: s.topK,
    rng,
  });
  const text = tokenizer!.decode(ids);
  metrics.push({ step, sample: text });
  ctx.log(`step ${step} sample: ${JSON.stringify(text)}`);
}

/** Pretrains a GPT on a tokens artifact; see the module doc. */
export const pretrain = defineStage({
  name: "pretrain",
  version: 1,
  module: import.meta.url,
  input: "tokens",
  output: "model",
  schema,
  permissions: (config) => ({ read: localPaths(config.init) }),
  description: "GPT-2-style pretraining on token shards: AdamW, warmup + cosine, checkpoints, exact resume",
  async run(ctx) {
    const cfg = ctx.config;
    const input = ctx.input;
    const bins = input.files(".bin");
    const trainPaths = shardFiles(bins, "train-").map((f) => input.path(f));
    const valPaths = shardFiles(bins, "val-").map((f) => input.path(f));
    if (trainPaths.length === 0) {
      throw new DataError(input.dir, undefined, "the tokens artifact has no train-*.bin shards");
    }
    const { tokenizer, initial, config, seqLen, layout } = await startingModel(cfg, input);
    using loader = new TokenLoader(trainPaths, {
      batch: cfg.batch,
      context: seqLen,
      seed: cfg.seed,
      vocab: config.vocab,
    });
    using valLoader = valPaths.length > 0
      ? new TokenLoader(valPaths, { batch: cfg.batch, context: seqLen, shuffle: false, vocab: config.vocab })
      : undefined;
    if (!valLoader && cfg.eval.every > 0) ctx.log("no val-*.bin shards: validation loss is not computed");

    const resumed = await loadTrainCheckpoint<PretrainState>(ctx.checkpoint, layout);
    const step = resumed?.state.step ?? 0;
    if (resumed) {
      loader.seek(resumed.state.cursor);
      ctx.log(`resuming from the checkpoint at step ${step}`);
    }

    const backend = await openBackend("pretrain", ctx, cfg);
    ctx.log(
      `training ${layout.total.toLocaleString("en")} parameters on ${backend.name} in ${cfg.precision}: ` +
        `${cfg.steps} steps of ${cfg.batch}×${seqLen}×${cfg.gradAccum} tokens`,
    );
    const trainer = await Trainer.create(backend, layout, {
      params: resumed?.params ?? initial?.params ?? initParams(layout, cfg.seed),
      m: resumed?.m,
      v: resumed?.v,
      step,
      batch: cfg.batch,
      seqLen,
      adamw: { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay },
      clip: cfg.gradClip,
      precision: cfg.precision,
    });
    try {
      const rng = resumed ? Rng.fromState(resumed.state.rng) : new Rng(cfg.seed ^ 0x5eed);
      const metrics: MetricsLine[] = resumed?.state.metrics ?? [];
      const run = { ctx, trainer, layout, seqLen, tokenizer, loader, valLoader, rng, metrics };
      const { steps, timed } = await trainingLoop(pretrainLoop(run, step));

      // HF GPT-2 layout, with the tokenizer's special token ids (config.json, generation_config.json).
      await writeModelFiles(
        ctx,
        layout,
        (await trainer.state()).params,
        tokenizer && specialTokenIds(tokenizer),
      );
      await writeJsonl(ctx, "metrics.jsonl", metrics);
      if (tokenizer) {
        await ctx.out.writeFile("tokenizer.json", await Deno.readFile(input.path("tokenizer.json")));
      }
      const tokensPerStep = cfg.batch * seqLen * cfg.gradAccum;
      ctx.stats.set("tokens", steps * tokensPerStep);
      if (timed.steps > 0) {
        ctx.stats.set("tokensPerSec", Math.round(tokensPerStep * timed.steps * 1000 / timed.ms));
      }
      ctx.stats.set("parameters", layout.total);
      ctx.stats.set("backend", backend.name);
      ctx.stats.set("precision", cfg.precision);
    } finally {
      trainer.dispose();
    }
  },
});
