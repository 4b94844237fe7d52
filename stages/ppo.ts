/**
 * Stage `ppo` (reward-model → model): InstructGPT's third step. The policy starts from the SFT model,
 * the value function from the reward model; each iteration the policy samples responses to a batch of
 * prompts, the frozen reward model scores them, the frozen SFT model gives the per-token KL penalty,
 * and PPO's clipped objective updates policy and value function over `ppoEpochs` passes of minibatches.
 * An iteration is three phases, a module each: rollout (`ppo/rollout.ts`), score (`ppo/score.ts`) and
 * update (`ppo/update.ts`); the loop around them is every training stage's (`training/loop.ts`).
 * With `ptx.coef > 0` (PPO-ptx) every policy minibatch also adds coef × the gradient of the
 * pretraining loss on a batch of the pretrain token shards, so the model keeps its general ability.
 *
 * The reward of a response y to prompt x is RM(x, y) − β·log(π_RL(y|x)/π_SFT(y|x)), paid per token
 * (−β·kl_t at each token, the score at the last). β is fixed (InstructGPT: 0.02) or adapted toward
 * `kl.target` (Ziegler et al.). Advantages come from GAE(γ, λ), whitened over the batch.
 *
 * Inputs: the previous stage's `reward-model` artifact; `uses.policy`, the nearest upstream `model`
 * (the SFT model: policy and reference); `uses.tokens`, the nearest `tokens` artifact (ptx shards, and
 * the tokenizer when the model directory has none). Prompts: a JSONL file (see `stages/ppo/prompts.ts`),
 * rendered with the SFT model's chat template (`chat_template.json`, as the reward model reads them).
 *
 * Held-out evaluation (`eval`, `stages/ppo/evaluate.ts`): before the first iteration, every
 * `eval.every` iterations and at the end, the policy answers held-out prompts greedily; the reward
 * model scores the answers and, for checkable prompts (an `answer` field, or kiln's task), the checker
 * grades them. Stats `rewardBefore` → `reward` and `passRateBefore` → `passRate` show what PPO did.
 *
 * Output (`model`): the policy as a Hugging Face GPT-2 directory (`model.safetensors`, `config.json`,
 * `tokenizer.json`, `chat_template.json`); `samples.jsonl`, the held-out answers
 * (`{iteration, prompt, response, reward, pass?, truncated?}`); and `metrics.jsonl`: a line per
 * evaluation (`{iteration, heldOutReward, heldOutLength, passRate?, checked}`) and one per iteration:
 * `iteration`, `reward` (mean raw reward-model score of the rollouts), `kl` (mean Σ_t log π_RL −
 * log π_SFT per response, on the samples), `nonScoreReward`, `beta`, `lr`, `policyLoss`, `valueLoss`,
 * `ptxLoss` (pretraining loss of the ptx batches), `clipFraction`, `valueClipFraction`, `approxKl`,
 * `entropy` (nats per response token), `responseLength`, `truncated` (fraction cut at `maxTokens`
 * without a stop token; `missingEndPenalty` lowers their scores), `rolloutPassRate` (the checker on
 * the samples, when prompts are checkable; `passRate` is the held-out one), `return`, `value` and
 * `samples` (`logSamples` prompts with their responses and scores). Wall-clock figures stay out of the
 * artifact, so the same inputs give the same bytes: each iteration's ms spent generating, scoring and
 * training are in its log line, and their totals over the iterations this attempt ran are the
 * `generateMs`, `scoreMs` and `trainMs` stats.
 *
 * Exact resume: every `checkpointEvery` iterations (and on SIGINT/SIGTERM) the policy, the value model,
 * both optimizers, the RNG, the KL controller, the prompt and ptx cursors and the metrics so far are
 * checkpointed as one unit; a rerun continues from there and, on the CPU backend, produces the same
 * metrics and final weights as an uninterrupted run.
 *
 * @example
 * ```ts
 * import { ppo } from "./ppo.ts";
 * ppo({ prompts: "data/prompts.jsonl", iterations: 200, kl: { beta: 0.02 } });
 * ppo({ prompts: "data/prompts.jsonl", kl: { beta: 0.05, target: 6 }, ptx: { coef: 0 } }); // adaptive β, no ptx
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { basename } from "node:path";
import { defineStage, type StageContext } from "../pipeline/stage.ts";
import { fingerprintFiles } from "../pipeline/files.ts";
import { DataError, StageError } from "../pipeline/errors.ts";
import { type LoadedModel, specialTokenIds } from "../model/checkpoint.ts";
import type { Backend } from "../kernels/backend.ts";
import { type LoaderCursor, TokenLoader } from "../model/data.ts";
import { Rng } from "../model/rng.ts";
import type { Generation } from "../model/generate.ts";
import { learningRate } from "../model/schedule.ts";
import {
  adamwOptions,
  everyOption,
  positiveInt,
  runOptions,
  scheduleOptions,
} from "../model/train_options.ts";
import { holdOut } from "../chat/jsonl.ts";
import { CHAT_TEMPLATE_FILE, type ChatTemplate } from "../chat/template.ts";
import { findTokenizer, readPolicyModel, readRewardModel, type RewardModel } from "./ppo/artifacts.ts";
import { checkAnswer, evaluateHeldOut, type HeldOutSample, type HeldOutSummary } from "./ppo/evaluate.ts";
import { loadPpoCheckpoint, savePpoCheckpoint, type TensorGroups } from "./ppo/checkpoint.ts";
import { type KLController, klController, type KLControllerState } from "./ppo/kl_controller.ts";
import { Policy, ReferenceModel, ScalarModel } from "./ppo/networks.ts";
import { type Prompt, PromptCursor, type PromptCursorState, readPrompts } from "./ppo/prompts.ts";
import { sampleRollouts } from "./ppo/rollout.ts";
import { type PpoNetworks, type ScoredBatch, scoreRollouts } from "./ppo/score.ts";
import { mean, ppoUpdate, type UpdateStats } from "./ppo/update.ts";
import {
  openBackend,
  type TrainingLoop,
  trainingLoop,
  writeJsonl,
  writeModelFiles,
} from "./training/loop.ts";

const schema = z.object({
  /** The prompt set: a JSONL file of `{prompt}` or `{messages}` rows (an `answer` field makes a row checkable). */
  prompts: z.string().min(1),
  /**
   * Held-out evaluation: the policy answers `count` prompts it does not train on (greedily unless
   * `temperature` > 0) before the first iteration, every `every` iterations and at the end; the reward
   * model scores the answers and the checkable ones are graded (see `ppo/evaluate.ts`). The prompts
   * come from the `prompts` file (a JSONL like `prompts`) or are a seeded `fraction` of `prompts`,
   * which PPO then does not train on (`count: 0` turns the evaluation and the hold-out off).
   */
  eval: z.object({
    prompts: z.string().min(1).optional(),
    fraction: z.number().min(0).max(0.5).default(0.1),
    count: z.number().int().min(0).default(32),
    every: everyOption(0),
    temperature: z.number().min(0).default(0),
  }).strict().default({ fraction: 0.1, count: 32, every: 0, temperature: 0 }),
  /** PPO iterations (rollout batch + updates). */
  iterations: positiveInt.default(100),
  /** Responses sampled per iteration. */
  batch: positiveInt.default(32),
  /** Responses per PPO minibatch (one optimizer step of each network). */
  minibatch: positiveInt.default(8),
  /** Passes over each rollout batch. */
  ppoEpochs: positiveInt.default(4),
  /** Longest response, in tokens. */
  maxTokens: positiveInt.default(48),
  /** Prompts whose chat rendering is longer are skipped (counted in the stats). */
  maxPromptTokens: positiveInt.default(96),
  temperature: z.number().positive().default(1),
  topP: z.number().gt(0).max(1).default(1),
  topK: z.number().int().min(0).default(0),
  /** β of the per-token KL penalty; with `target`, adapted toward that KL per response (Ziegler et al.). */
  kl: z.object({
    beta: z.number().min(0).default(0.02),
    target: z.number().positive().optional(),
    horizon: z.number().positive().default(10_000),
  }).strict().default({ beta: 0.02, horizon: 10_000 }),
  /** GAE discount and λ. */
  gamma: z.number().min(0).max(1).default(1),
  lambda: z.number().min(0).max(1).default(0.95),
  /** PPO's ratio clip ε and the value clip. */
  clip: z.number().positive().default(0.2),
  valueClip: z.number().positive().default(0.2),
  whitenAdvantages: z.boolean().default(true),
  /** Normalise scores with the reward model's recorded mean and std (when it has them). */
  normalizeReward: z.boolean().default(true),
  /**
   * Subtracted from the score of a response cut at `maxTokens` without a stop token (TRL's
   * `missing_eos_penalty`; in reward-model standard deviations when `normalizeReward` is on). The
   * reward model only saw finished answers, so an unfinished one gets a score it was never trained
   * to give; a policy can learn to exploit that by never stopping. 0: off.
   */
  missingEndPenalty: z.number().min(0).default(0),
  /**
   * The policy's learning rate and its schedule over the iterations (both networks, in proportion):
   * linear warmup over `warmup` iterations, then a cosine decay to `minLr` (× valueLr / lr for the
   * value function) at the last one. Defaults: no warmup, `minLr` = `lr`, i.e. constant.
   */
  ...scheduleOptions({ lr: 1e-5, warmup: 0 }),
  /** The value function's learning rate. */
  valueLr: z.number().positive().default(1e-5),
  ...adamwOptions({ weightDecay: 0 }),
  /** PPO-ptx: coef × pretraining loss gradient per minibatch, on `batch` sequences of `seqLen` tokens. */
  ptx: z.object({
    coef: z.number().min(0).default(27.8),
    batch: positiveInt.default(4),
    seqLen: positiveInt.optional(),
  }).strict().default({ coef: 27.8, batch: 4 }),
  /** Rollout samples (prompt, response, reward) kept in each iteration's metrics line. */
  logSamples: z.number().int().min(0).default(3),
  /** Tokens generated between readbacks. */
  chunk: positiveInt.default(16),
  /**
   * `seed` seeds sampling, prompt order, minibatch order and ptx data order; `checkpointEvery` counts
   * iterations; `precision: "mixed"`: every network's matmuls read f16 copies of the weights and
   * activations, with f32 accumulation, master weights, log-probs and AdamW (sampling reads the f32
   * weights).
   */
  ...runOptions({ checkpointEvery: 1 }),
}).strict();

/** The config of {@linkcode ppo}. */
export type PpoConfig = z.output<typeof schema>;

/** One line of `metrics.jsonl`. */
export interface PpoMetrics {
  iteration: number;
  reward: number;
  kl: number;
  nonScoreReward: number;
  beta: number;
  /** The policy's learning rate this iteration. */
  lr: number;
  policyLoss: number;
  valueLoss: number;
  ptxLoss?: number;
  clipFraction: number;
  valueClipFraction: number;
  approxKl: number;
  entropy: number;
  responseLength: number;
  /** Fraction of the responses cut at `maxTokens` without a stop token. */
  truncated: number;
  /** Fraction of the sampled responses the checker passes, among checkable prompts (absent if none). */
  rolloutPassRate?: number;
  return: number;
  value: number;
  samples: { prompt: string; response: string; reward: number }[];
}

/** A line of `metrics.jsonl`: an iteration's, or a held-out evaluation's. */
export type PpoMetricsLine = PpoMetrics | HeldOutSummary;

/** The JSON part of a PPO checkpoint. */
interface PpoState {
  iteration: number;
  rng: number[];
  prompts: PromptCursorState;
  ptx?: LoaderCursor;
  kl: KLControllerState;
  policyStep: number;
  valueStep: number;
  metrics: PpoMetricsLine[];
  samples: HeldOutSample[];
}

/** `{ rolloutPassRate }` of sampled answers over the checkable prompts of a batch, or `{}` when none is. */
function rolloutPassRate(batch: Prompt[], answers: string[]): { rolloutPassRate?: number } {
  const verdicts = batch.map((p, i) => checkAnswer(p, answers[i])).filter((v) => v !== undefined);
  return verdicts.length ? { rolloutPassRate: verdicts.filter(Boolean).length / verdicts.length } : {};
}

/** The training and held-out prompts (rendered, too-long ones skipped and counted). */
async function readPromptSets(cfg: PpoConfig, template: ChatTemplate, context: number, ctx: PpoContext) {
  const maxTokens = Math.min(cfg.maxPromptTokens, context - 1);
  const read = await readPrompts(cfg.prompts, template, { maxTokens });
  let skippedTooLong = read.skippedTooLong;
  let { train: prompts, val: heldOut } = holdOut(
    read.prompts,
    cfg.eval.prompts || cfg.eval.count === 0 ? 0 : cfg.eval.fraction,
    cfg.seed,
  );
  if (cfg.eval.prompts && cfg.eval.count > 0) {
    const evalRead = await readPrompts(cfg.eval.prompts, template, { maxTokens });
    heldOut = evalRead.prompts;
    skippedTooLong += evalRead.skippedTooLong;
  }
  heldOut = heldOut.slice(0, cfg.eval.count);
  if (skippedTooLong > 0) ctx.log(`${skippedTooLong} prompts longer than ${maxTokens} tokens skipped`);
  ctx.stats.set("prompts", prompts.length);
  ctx.stats.set("heldOutPrompts", heldOut.length);
  ctx.stats.set("promptsSkippedTooLong", skippedTooLong);
  return { prompts, heldOut };
}

/** The ptx batches: the pretraining token shards of the tokens artifact (undefined when ptx is off). */
function ptxLoader(ctx: PpoContext, seqLen: number, vocab: number): TokenLoader | undefined {
  const cfg = ctx.config;
  if (cfg.ptx.coef <= 0) return undefined;
  const trainShards = ctx.uses.tokens.files(".bin").filter((f) => basename(f).startsWith("train-"));
  if (trainShards.length === 0) {
    throw new DataError(
      ctx.uses.tokens.dir,
      undefined,
      "the tokens artifact has no train-*.bin shards for ptx",
    );
  }
  return new TokenLoader(trainShards.map((f) => ctx.uses.tokens.path(f)), {
    batch: cfg.ptx.batch,
    context: seqLen,
    seed: cfg.seed,
    vocab,
  });
}

/** Policy and reference from the SFT model, reward and value from the reward model, or a checkpoint. */
function createNetworks(
  backend: Backend,
  cfg: PpoConfig,
  sft: LoadedModel,
  rm: RewardModel,
  shape: { rows: number; T: number; ptxSeqLen: number },
  saved?: { groups: TensorGroups; state: PpoState },
): PpoNetworks {
  const { rows, T } = shape;
  const { beta1, beta2, eps, weightDecay, gradClip: clip, precision } = cfg;
  const optimizer = { beta1, beta2, eps, weightDecay, clip };
  const policyGroup = saved?.groups.policy;
  const valueGroup = saved?.groups.value;
  const C = sft.config.dim;
  return {
    policy: new Policy(backend, sft.layout, policyGroup?.params ?? sft.params, {
      rows,
      T,
      ptx: cfg.ptx.coef > 0 ? { batch: cfg.ptx.batch, T: shape.ptxSeqLen } : undefined,
      optimizer,
      resume: policyGroup && { step: saved!.state.policyStep, m: policyGroup.m, v: policyGroup.v },
      precision,
    }),
    reference: new ReferenceModel(backend, sft.layout, sft.params, rows, T, precision),
    reward: new ScalarModel(backend, rm.layout, rm.params, rm.head, { rows, T, precision }),
    value: new ScalarModel(
      backend,
      rm.layout,
      valueGroup?.trunk ?? rm.params,
      valueGroup ? { weight: valueGroup.head.slice(0, C), bias: valueGroup.head[C] } : rm.head,
      {
        rows,
        T,
        optimizer,
        precision,
        resume: valueGroup && {
          step: saved!.state.valueStep,
          m: [valueGroup.trunkM, valueGroup.headM],
          v: [valueGroup.trunkV, valueGroup.headV],
        },
      },
    ),
  };
}

type PpoContext = StageContext<PpoConfig, "reward-model">;

/** What the iterations, the evaluation and the checkpoints of a PPO run share. */
interface PpoRun {
  ctx: PpoContext;
  nets: PpoNetworks;
  template: ChatTemplate;
  prompts: Prompt[];
  heldOut: Prompt[];
  rows: number;
  T: number;
  rewardStats?: { mean: number; std: number };
  ptx?: TokenLoader;
  rng: Rng;
  cursor: PromptCursor;
  kl: KLController;
  metrics: PpoMetricsLine[];
  samples: HeldOutSample[];
  /** Iterations done. */
  iteration: number;
  /** Wall-clock ms spent generating, scoring and training (stats only, never in the artifact). */
  time: { generate: number; score: number; train: number };
}

/** The iteration body, evaluation and checkpoint of PPO, for the training loop. */
function ppoLoop(run: PpoRun): TrainingLoop<never> {
  const cfg = run.ctx.config;
  return {
    stage: "ppo",
    ctx: run.ctx,
    unit: "iterations",
    total: cfg.iterations,
    start: run.iteration,
    checkpointEvery: cfg.checkpointEvery,
    step: (done) => iterate(run, done),
    evaluate: { every: cfg.eval.every, before: true, end: true, run: () => evaluate(run) },
    checkpoint: () => checkpoint(run),
  };
}

/** One PPO iteration: rollout, score, update; then its metrics line. */
async function iterate(run: PpoRun, done: number) {
  const { ctx, nets, rng, kl } = run;
  const cfg = ctx.config;
  // 1. Rollouts: sample a response to each prompt of the batch.
  let start = performance.now();
  const { batch, generations } = await sampleRollouts(nets.policy.gpt, run.prompts, run.cursor, cfg.batch, {
    maxTokens: cfg.maxTokens,
    temperature: cfg.temperature,
    topP: cfg.topP,
    topK: cfg.topK,
    stop: run.template.stopIds(),
    seed: rng.nextU32(),
    chunk: cfg.chunk,
  });
  const generate = performance.now() - start;

  // 2. Score: old log-probs and entropy, reference log-probs, values, reward-model scores.
  start = performance.now();
  const scored = await scoreRollouts(nets, batch.map((p) => p.tokens), generations, {
    rows: run.rows,
    T: run.T,
    rewardStats: run.rewardStats,
    missingEndPenalty: cfg.missingEndPenalty,
    beta: kl.beta,
    gamma: cfg.gamma,
    lambda: cfg.lambda,
    whitenAdvantages: cfg.whitenAdvantages,
  });
  const score = performance.now() - start;

  // 3. PPO epochs over minibatches: one policy step (+ ptx) and one value step each.
  start = performance.now();
  const schedule = {
    maxLr: cfg.lr,
    minLr: cfg.minLr ?? cfg.lr,
    warmupSteps: cfg.warmup,
    totalSteps: cfg.iterations,
  };
  const lr = learningRate(done, schedule);
  const update = await ppoUpdate(nets.policy, nets.value, scored.episodes, {
    ppoEpochs: cfg.ppoEpochs,
    minibatch: cfg.minibatch,
    rows: run.rows,
    T: run.T,
    clip: cfg.clip,
    valueClip: cfg.valueClip,
    lr,
    valueLr: lr * cfg.valueLr / cfg.lr,
    ptx: run.ptx && { loader: run.ptx, coef: cfg.ptx.coef },
    rng,
  });
  const train = performance.now() - start;

  const beta = kl.beta;
  kl.update(scored.stats.klMean, scored.episodes.length);
  run.iteration = done + 1;
  record(run, { batch, generations, scored, update, lr, beta, ms: { generate, score, train } });
}

/** What one iteration did, for its metrics line. */
interface Iteration {
  batch: Prompt[];
  generations: Generation[];
  scored: ScoredBatch;
  update: UpdateStats;
  lr: number;
  /** The KL coefficient the iteration used (before the controller's update). */
  beta: number;
  /** Wall-clock ms of its three phases. */
  ms: { generate: number; score: number; train: number };
}

/** An iteration's metrics line, stats and log line. */
function record(run: PpoRun, it: Iteration) {
  const { ctx } = run;
  const cfg = ctx.config;
  const { batch, generations, beta } = it;
  const { stats, rawScores } = it.scored;
  const answers = generations.map((g) => run.template.answerText(g.ids));
  const line: PpoMetrics = {
    iteration: run.iteration,
    reward: mean(rawScores),
    kl: stats.klMean,
    nonScoreReward: stats.nonScoreReward,
    beta,
    lr: it.lr,
    ...it.update,
    entropy: mean(it.scored.entropies.flatMap((h) => Array.from(h))),
    responseLength: stats.responseLength,
    truncated: generations.filter((g) => g.finish === "length").length / generations.length,
    ...rolloutPassRate(batch, answers),
    return: stats.returnMean,
    value: stats.valueMean,
    samples: batch.slice(0, cfg.logSamples).map((p, i) => ({
      prompt: p.text,
      response: answers[i],
      reward: rawScores[i],
    })),
  };
  run.metrics.push(line);
  for (const phase of ["generate", "score", "train"] as const) run.time[phase] += it.ms[phase];
  ctx.stats.set("rolloutReward", line.reward);
  ctx.stats.set("kl", line.kl);
  ctx.stats.set("beta", beta);
  ctx.log(
    `iteration ${run.iteration}/${cfg.iterations} reward ${line.reward.toFixed(4)} kl ${
      line.kl.toFixed(4)
    } ` +
      `β ${beta.toPrecision(3)} policy ${line.policyLoss.toFixed(4)} value ${line.valueLoss.toFixed(4)} ` +
      `clip ${line.clipFraction.toFixed(3)} entropy ${line.entropy.toFixed(3)} ` +
      `len ${line.responseLength.toFixed(1)} cut ${line.truncated.toFixed(2)}` +
      (line.rolloutPassRate === undefined ? "" : ` pass ${line.rolloutPassRate.toFixed(2)}`) +
      `; ms generate ${Math.round(it.ms.generate)} score ${Math.round(it.ms.score)} train ${
        Math.round(it.ms.train)
      }`,
  );
}

/** The policy's greedy answers to the held-out prompts, scored and checked (`ppo/evaluate.ts`). */
async function evaluate(run: PpoRun) {
  if (run.heldOut.length === 0) return;
  const { ctx } = run;
  const cfg = ctx.config;
  const result = await evaluateHeldOut(run.nets.policy.gpt, run.nets.reward, run.heldOut, {
    iteration: run.iteration,
    maxTokens: cfg.maxTokens,
    temperature: cfg.eval.temperature,
    seed: cfg.seed,
    rows: run.rows,
    T: run.T,
    template: run.template,
    chunk: cfg.chunk,
  });
  run.metrics.push(result.summary);
  run.samples.push(...result.samples);
  const { passRate, heldOutReward, checked } = result.summary;
  ctx.log(
    `iteration ${run.iteration}: held-out reward ${heldOutReward.toFixed(4)}` +
      (passRate === undefined
        ? ""
        : `, the checker passes ${(100 * passRate).toFixed(1)}% of ${checked} answers`) +
      `; ${JSON.stringify(result.samples[0].prompt)} → ${JSON.stringify(result.samples[0].response)}`,
  );
}

/** Policy, value model, both optimizers, RNG, KL controller, cursors and metrics, as one unit. */
async function checkpoint(run: PpoRun) {
  const p = await run.nets.policy.state();
  const v = await run.nets.value.state();
  const state: PpoState = {
    iteration: run.iteration,
    rng: run.rng.state(),
    prompts: run.cursor.state(),
    ptx: run.ptx?.cursor(),
    kl: run.kl.state(),
    policyStep: p.step,
    valueStep: v.step,
    metrics: run.metrics,
    samples: run.samples,
  };
  await savePpoCheckpoint(run.ctx.checkpoint, run.iteration, {
    policy: { params: p.params, m: p.m, v: p.v },
    value: {
      trunk: v.params[0],
      head: v.params[1],
      trunkM: v.m[0],
      headM: v.m[1],
      trunkV: v.v[0],
      headV: v.v[1],
    },
  }, state);
}

/** InstructGPT's PPO(-ptx) stage; see the module doc. */
export const ppo = defineStage({
  name: "ppo",
  version: 2,
  module: import.meta.url,
  input: "reward-model",
  output: "model",
  uses: { policy: "model", tokens: "tokens" },
  schema,
  fingerprint: (config) =>
    fingerprintFiles([config.prompts, ...(config.eval.prompts ? [config.eval.prompts] : [])]),
  description:
    "InstructGPT PPO(-ptx): KL-penalised RM reward, GAE, clipped policy/value losses, exact resume",
  async run(ctx) {
    const cfg = ctx.config;
    const { tokenizer, file: tokenizerFile } = await findTokenizer(ctx.uses.policy, ctx.uses.tokens);
    const sft = await readPolicyModel(ctx.uses.policy, tokenizer);
    const rm = await readRewardModel(ctx.input);
    const { config, layout, template } = sft;
    if (rm.config.vocab !== config.vocab || rm.config.context < config.context) {
      throw new StageError(
        "ppo",
        `the reward model (vocab ${rm.config.vocab}, context ${rm.config.context}) does not fit ` +
          `the policy (vocab ${config.vocab}, context ${config.context})`,
      );
    }
    const { prompts, heldOut } = await readPromptSets(cfg, template, config.context, ctx);
    // Every sequence is prompt ++ response in one row of T positions.
    const longestPrompt = Math.max(...[...prompts, ...heldOut].map((p) => p.tokens.length));
    const T = Math.min(config.context, longestPrompt + cfg.maxTokens);
    const rows = cfg.minibatch;
    const ptxSeqLen = Math.min(cfg.ptx.seqLen ?? T, config.context);
    const rewardStats = cfg.normalizeReward ? rm.stats : undefined;
    if (cfg.normalizeReward && !rm.stats) {
      ctx.log("the reward model recorded no score statistics: scores are used unnormalised");
    }
    using ptx = ptxLoader(ctx, ptxSeqLen, config.vocab);

    // State: fresh, or the last checkpoint.
    const saved = await loadPpoCheckpoint<PpoState>(ctx.checkpoint);
    const cursor = new PromptCursor(prompts.length, cfg.seed);
    if (saved) cursor.seek(saved.state.prompts);
    if (saved?.state.ptx) ptx?.seek(saved.state.ptx);
    const iteration = saved?.state.iteration ?? 0;
    if (saved) ctx.log(`resuming from the checkpoint after iteration ${iteration}`);

    const backend = await openBackend("ppo", ctx, cfg);
    const nets = createNetworks(backend, cfg, sft, rm, { rows, T, ptxSeqLen }, saved);
    const kl = klController(cfg.kl, saved?.state.kl);
    ctx.log(
      `PPO on ${backend.name} in ${cfg.precision}: ${layout.total.toLocaleString("en")}-parameter policy, ` +
        `${prompts.length} prompts, ${cfg.iterations} iterations of ${cfg.batch} responses ` +
        `(≤ ${cfg.maxTokens} tokens), β ${kl.beta}${kl.adaptive ? ` → KL target ${cfg.kl.target}` : ""}, ` +
        `ptx ${cfg.ptx.coef}`,
    );
    try {
      const run: PpoRun = {
        ctx,
        nets,
        template,
        prompts,
        heldOut,
        rows,
        T,
        rewardStats,
        ptx,
        rng: saved ? Rng.fromState(saved.state.rng) : new Rng(cfg.seed ^ 0x9e3779b9),
        cursor,
        kl,
        metrics: saved?.state.metrics ?? [],
        samples: saved?.state.samples ?? [],
        iteration,
        time: { generate: 0, score: 0, train: 0 },
      };
      await trainingLoop(ppoLoop(run));

      const { params } = await nets.policy.state();
      await writeModelFiles(ctx, layout, params, specialTokenIds(tokenizer, template.stopIds()));
      await writeJsonl(ctx, "metrics.jsonl", run.metrics);
      if (run.samples.length) await writeJsonl(ctx, "samples.jsonl", run.samples);
      await ctx.out.writeFile("tokenizer.json", await Deno.readFile(tokenizerFile));
      await ctx.out.writeJson(CHAT_TEMPLATE_FILE, template.toJSON());
      // Held-out figures before → after (from the metrics, which a resumed run restores).
      const evals = run.metrics.filter((m): m is HeldOutSummary => "heldOutReward" in m);
      for (const [name, line] of [["Before", evals[0]], ["", evals.at(-1)]] as const) {
        if (!line) continue;
        ctx.stats.set(`reward${name}`, line.heldOutReward);
        if (line.passRate !== undefined) ctx.stats.set(`passRate${name}`, line.passRate);
      }
      ctx.stats.set("episodes", run.iteration * cfg.batch);
      for (const [name, ms] of Object.entries(run.time)) ctx.stats.set(`${name}Ms`, Math.round(ms));
      ctx.stats.set("backend", backend.name);
      ctx.stats.set("precision", cfg.precision);
    } finally {
      for (const net of Object.values(nets)) net.dispose();
    }
  },
});
