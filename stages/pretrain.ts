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
import {
  backendOption,
  checkPrecision,
  optimizerOptions,
  positiveInt,
  precisionOption,
} from "../model/train_options.ts";
import { basename } from "node:path";
import { defineStage, localPaths } from "../pipeline/stage.ts";
import { DataError, InterruptedError, KilnError } from "../pipeline/errors.ts";
import { checkModelFits } from "../model/config.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { END_OF_TEXT, type Tokenizer } from "../tokenizer/tokenizer.ts";
import { createBackend } from "../kernels/device.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import {
  loadModelDir,
  loadTrainCheckpoint,
  saveTrainCheckpoint,
  modelDirFiles,
  specialTokenIds,
} from "../model/checkpoint.ts";
import { type LoaderCursor, TokenLoader } from "../model/data.ts";
import { learningRate } from "../model/schedule.ts";
import { Rng } from "../model/rng.ts";
import { Trainer } from "../model/train.ts";
import { generate } from "../model/generate.ts";

const schema = z.object({
  /** Architecture of a new model; `vocab` defaults to the tokenizer's vocabulary size. */
  model: z.object({
    layers: positiveInt.default(6),
    dim: positiveInt.default(384),
    heads: positiveInt.default(6),
    context: positiveInt.default(256),
    vocab: positiveInt.optional(),
  }).strict().default({ layers: 6, dim: 384, heads: 6, context: 256 }),
  /** Start from this model directory (a local Hugging Face GPT-2 or a kiln model); its config wins over `model`. */
  init: z.string().min(1).optional(),
  /** Optimizer steps. */
  steps: positiveInt.default(2000),
  /** Sequences per micro-batch. */
  batch: positiveInt.default(8),
  /** Tokens per sequence (default: the model's context). */
  seqLen: positiveInt.optional(),
  /** Micro-batches per optimizer step (the effective batch is batch × gradAccum sequences). */
  gradAccum: positiveInt.default(1),
  ...optimizerOptions({ lr: 6e-4, warmup: 100, weightDecay: 0.1 }),
  /** Validation loss on the first `batches` batches of the `val-*.bin` shards every `every` steps (0: never). */
  eval: z.object({
    every: z.number().int().min(0).default(250),
    batches: positiveInt.default(20),
  }).strict().default({ every: 250, batches: 20 }),
  /** A sample generation every `every` steps (0: never), logged and kept in metrics.jsonl. */
  sample: z.object({
    every: z.number().int().min(0).default(500),
    tokens: positiveInt.default(64),
    prompt: z.string().default(""),
    temperature: z.number().min(0).default(1),
    topK: z.number().int().min(0).default(40),
  }).strict().default({ every: 500, tokens: 64, prompt: "", temperature: 1, topK: 40 }),
  /** Save a resumable checkpoint every this many steps. */
  checkpointEvery: positiveInt.default(250),
  backend: backendOption,
  /** `fp32`, or `mixed`: f16 matmul inputs with f32 accumulation and master weights (needs f16 support). */
  precision: precisionOption,
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
    const tokenizer: Tokenizer | undefined = input.files().includes("tokenizer.json")
      ? await loadTokenizer(input.path("tokenizer.json"))
      : undefined;

    // The model: a fresh one, or the weights of `init`.
    const initial = cfg.init ? await loadModelDir(cfg.init) : undefined;
    const vocab = cfg.model.vocab ?? tokenizer?.vocabSize;
    if (!initial && vocab === undefined) {
      throw new KilnError(`stage "pretrain": no tokenizer.json in the tokens artifact; set model.vocab`);
    }
    const config = initial?.config ?? gptConfig({ ...cfg.model, vocab: vocab! }, "pretrain.model");
    // Weights, gradients and AdamW's two moments: refused by name before anything is allocated.
    checkModelFits(config, `stage "pretrain": config.model`, 4);
    if (tokenizer && tokenizer.vocabSize > config.vocab) {
      throw new KilnError(
        `stage "pretrain": the tokenizer has ${tokenizer.vocabSize} ids, the model's vocabulary only ${config.vocab}`,
      );
    }
    const seqLen = cfg.seqLen ?? config.context;
    if (seqLen > config.context) {
      throw new KilnError(`stage "pretrain": seqLen ${seqLen} exceeds the model's context ${config.context}`);
    }
    const layout = paramLayout(config);
    const schedule = {
      maxLr: cfg.lr,
      minLr: cfg.minLr ?? cfg.lr / 10,
      warmupSteps: cfg.warmup,
      totalSteps: cfg.steps,
    };

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
    let step = 0;
    let rng = new Rng(cfg.seed ^ 0x5eed);
    const metrics: MetricsLine[] = [];
    if (resumed) {
      step = resumed.state.step;
      loader.seek(resumed.state.cursor);
      rng = Rng.fromState(resumed.state.rng);
      metrics.push(...resumed.state.metrics);
      ctx.log(`resuming from the checkpoint at step ${step}`);
    }

    const backend = await createBackend({ backend: cfg.backend, log: (line) => ctx.log(line) });
    checkPrecision("pretrain", cfg.precision, backend);
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
      clip: cfg.clip,
      precision: cfg.precision,
    });
    try {
      const checkpoint = async () => {
        const { params, m, v } = await trainer.state();
        const state: PretrainState = { step, cursor: loader.cursor(), rng: rng.state(), metrics };
        await saveTrainCheckpoint(ctx.checkpoint, layout, { params, m, v, state });
      };
      const tokensPerStep = cfg.batch * seqLen * cfg.gradAccum;
      let windowStart = performance.now();
      let windowSteps = 0;
      const timed = { ms: 0, steps: 0 };
      const pendingLr: number[] = [];

      // Reads back the losses and gradient norms of the steps since the last read (one GPU sync).
      const flush = async () => {
        const read = await trainer.readMetrics();
        const elapsed = performance.now() - windowStart;
        const msPerStep = elapsed / Math.max(1, windowSteps);
        timed.ms += elapsed;
        timed.steps += windowSteps;
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
        windowStart = performance.now();
        windowSteps = 0;
      };

      while (step < cfg.steps) {
        for (let micro = 0; micro < cfg.gradAccum; micro++) {
          trainer.microStep(loader.next(), 1 / cfg.gradAccum);
        }
        const lr = learningRate(step, schedule);
        trainer.optimizerStep(lr);
        pendingLr.push(lr);
        step++;
        windowSteps++;
        if (step % cfg.logEvery === 0 || step === cfg.steps) await flush();
        if (valLoader && cfg.eval.every > 0 && (step % cfg.eval.every === 0 || step === cfg.steps)) {
          valLoader.seek({ epoch: 0, index: 0 });
          const batches = Math.min(cfg.eval.batches, Math.floor(valLoader.windowsPerEpoch / cfg.batch) || 1);
          const valLoss = await trainer.evalLoss(Array.from({ length: batches }, () => valLoader.next()));
          metrics.push({ step, valLoss });
          ctx.stats.set("valLoss", valLoss);
          ctx.log(`step ${step} validation loss ${valLoss.toFixed(4)}`);
        }
        if (tokenizer && cfg.sample.every > 0 && step % cfg.sample.every === 0) {
          const s = cfg.sample;
          const prompt = s.prompt ? tokenizer.encode(s.prompt) : [tokenizer.specialTokens[END_OF_TEXT] ?? 0];
          const { ids } = await generate(trainer.model, prompt, {
            maxTokens: Math.min(s.tokens, config.context - prompt.length),
            temperature: s.temperature,
            topK: s.topK,
            rng,
          });
          const sample = tokenizer.decode(ids);
          metrics.push({ step, sample });
          ctx.log(`step ${step} sample: ${JSON.stringify(sample)}`);
        }
        ctx.progress({ done: step, total: cfg.steps, unit: "steps" });
        if (step % cfg.checkpointEvery === 0 && step < cfg.steps) {
          if (pendingLr.length > 0) await flush();
          await checkpoint();
        }
        if (ctx.signal.aborted) {
          if (pendingLr.length > 0) await flush();
          await checkpoint();
          throw new InterruptedError(
            `stage "pretrain": interrupted at step ${step}; checkpointed, run again to resume`,
          );
        }
      }

      const { params } = await trainer.state();
      // HF GPT-2 layout, with the tokenizer's special token ids (config.json, generation_config.json).
      const files = modelDirFiles(layout, params, tokenizer && specialTokenIds(tokenizer));
      for (const [name, bytes] of Object.entries(files)) await ctx.out.writeFile(name, bytes);
      await ctx.out.writeText("metrics.jsonl", metrics.map((m) => JSON.stringify(m)).join("\n") + "\n");
      if (tokenizer) {
        await ctx.out.writeFile("tokenizer.json", await Deno.readFile(input.path("tokenizer.json")));
      }
      ctx.stats.set("steps", step);
      ctx.stats.set("tokens", step * tokensPerStep);
      if (timed.steps > 0) {
        ctx.stats.set("msPerStep", Math.round(timed.ms / timed.steps * 100) / 100);
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
