/**
 * Stage `ppo` (reward-model → model): InstructGPT's third step. The policy starts from the SFT model,
 * the value function from the reward model; each iteration the policy samples responses to a batch of
 * prompts, the frozen reward model scores them, the frozen SFT model gives the per-token KL penalty,
 * and PPO's clipped objective updates policy and value function over several epochs of minibatches.
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
 * `entropy` (nats per response token), `responseLength`, `truncated` (fraction cut at `maxResponse`
 * without a stop token; `missingEndPenalty` lowers their scores), `rolloutPassRate` (the checker on
 * the samples, when prompts are checkable; `passRate` is the held-out one), `return`, `value` and
 * `samples` (a few prompts with their responses and scores). Wall-clock figures stay out of the
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
import { defineStage } from "../pipeline/stage.ts";
import { fingerprintFiles } from "../pipeline/files.ts";
import { DataError, InterruptedError, KilnError } from "../pipeline/errors.ts";
import { createBackend } from "../kernels/device.ts";
import { modelDirFiles, specialTokenIds } from "../model/checkpoint.ts";
import { type LoaderCursor, TokenLoader } from "../model/data.ts";
import { generateBatch } from "../model/generate.ts";
import { Rng } from "../model/rng.ts";
import { learningRate } from "../model/schedule.ts";
import { backendOption, checkPrecision, precisionOption } from "../model/train_options.ts";
import { holdOut } from "./sft/jsonl.ts";
import { CHAT_TEMPLATE_FILE } from "./sft/template.ts";
import { findTokenizer, readPolicyModel, readRewardModel } from "./ppo/artifacts.ts";
import { checkAnswer, evaluateHeldOut, type HeldOutSample, type HeldOutSummary } from "./ppo/evaluate.ts";
import { loadPpoCheckpoint, savePpoCheckpoint } from "./ppo/checkpoint.ts";
import { klController, type KLControllerState } from "./ppo/kl_controller.ts";
import { clippedPolicyLoss, clippedValueLoss } from "./ppo/math.ts";
import { Policy, ReferenceModel, ScalarModel } from "./ppo/networks.ts";
import { type Prompt, PromptCursor, type PromptCursorState, readPrompts } from "./ppo/prompts.ts";
import {
  type Episode,
  gatherResponses,
  minibatches,
  packSequences,
  processRollouts,
  type Rollout,
  scatterResponses,
} from "./ppo/rollout.ts";

const positiveInt = z.number().int().min(1);
const adamw = {
  weightDecay: z.number().min(0).default(0),
  beta1: z.number().min(0).max(1).default(0.9),
  beta2: z.number().min(0).max(1).default(0.95),
  eps: z.number().positive().default(1e-8),
  /** Clip each network's global gradient norm to this (0: off). */
  gradClip: z.number().min(0).default(1),
};

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
    every: z.number().int().min(0).default(0),
    temperature: z.number().min(0).default(0),
  }).strict().default({ fraction: 0.1, count: 32, every: 0, temperature: 0 }),
  /** PPO iterations (rollout batch + updates). */
  iterations: positiveInt.default(100),
  /** Responses sampled per iteration. */
  batch: positiveInt.default(32),
  /** Responses per PPO minibatch (one optimizer step of each network). */
  minibatch: positiveInt.default(8),
  /** Passes over each rollout batch. */
  epochs: positiveInt.default(4),
  /** Longest response, in tokens. */
  maxResponse: positiveInt.default(48),
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
   * Subtracted from the score of a response cut at `maxResponse` without a stop token (TRL's
   * `missing_eos_penalty`; in reward-model standard deviations when `normalizeReward` is on). The
   * reward model only saw finished answers, so an unfinished one gets a score it was never trained
   * to give; a policy can learn to exploit that by never stopping. 0: off.
   */
  missingEndPenalty: z.number().min(0).default(0),
  /** Policy and value learning rates (constant). */
  lr: z.number().positive().default(1e-5),
  valueLr: z.number().positive().default(1e-5),
  /**
   * Learning-rate schedule over the iterations (both networks, in proportion): linear warmup over
   * `warmup` iterations, then a cosine decay to `minLr` (× valueLr / lr for the value function) at the
   * last one. Defaults: no warmup, `minLr` = `lr`, i.e. constant.
   */
  warmup: z.number().int().min(0).default(0),
  minLr: z.number().min(0).optional(),
  ...adamw,
  /** PPO-ptx: coef × pretraining loss gradient per minibatch, on `batch` sequences of `seqLen` tokens. */
  ptx: z.object({
    coef: z.number().min(0).default(27.8),
    batch: positiveInt.default(4),
    seqLen: positiveInt.optional(),
  }).strict().default({ coef: 27.8, batch: 4 }),
  /** Seeds sampling, prompt order, minibatch order and ptx data order. */
  seed: z.number().int().min(0).default(1337),
  /** Sample responses kept in each metrics line. */
  samples: z.number().int().min(0).default(3),
  /** Tokens generated between readbacks. */
  chunk: positiveInt.default(16),
  /** Checkpoint every this many iterations. */
  checkpointEvery: positiveInt.default(1),
  backend: backendOption,
  /**
   * `fp32`, or `mixed`: every network's matmuls read f16 copies of the weights and activations, with
   * f32 accumulation, master weights, log-probs and AdamW (needs f16 support). Sampling reads the f32
   * weights.
   */
  precision: precisionOption,
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
  /** Fraction of the responses cut at `maxResponse` without a stop token. */
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

const concat = (vectors: ArrayLike<number>[]) => {
  const out = new Float64Array(vectors.reduce((n, v) => n + v.length, 0));
  let at = 0;
  for (const v of vectors) for (let i = 0; i < v.length; i++) out[at++] = v[i];
  return out;
};
const split = (flat: Float64Array, like: ArrayLike<number>[]) => {
  let at = 0;
  return like.map((v) => flat.subarray(at, at += v.length));
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** `{ rolloutPassRate }` of sampled answers over the checkable prompts of a batch, or `{}` when none is. */
function rolloutPassRate(batch: Prompt[], answers: string[]): { rolloutPassRate?: number } {
  const verdicts = batch.map((p, i) => checkAnswer(p, answers[i])).filter((v) => v !== undefined);
  return verdicts.length ? { rolloutPassRate: verdicts.filter(Boolean).length / verdicts.length } : {};
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
      throw new KilnError(
        `stage "ppo": the reward model (vocab ${rm.config.vocab}, context ${rm.config.context}) does not fit ` +
          `the policy (vocab ${config.vocab}, context ${config.context})`,
      );
    }
    const stop = template.stopIds();
    const maxTokens = Math.min(cfg.maxPromptTokens, config.context - 1);
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
    if (skippedTooLong > 0) {
      ctx.log(`${skippedTooLong} prompts longer than ${maxTokens} tokens skipped`);
    }
    ctx.stats.set("prompts", prompts.length);
    ctx.stats.set("heldOutPrompts", heldOut.length);
    ctx.stats.set("promptsSkippedTooLong", skippedTooLong);

    // Every sequence is prompt ++ response in one row of T positions.
    const longestPrompt = Math.max(...[...prompts, ...heldOut].map((p) => p.tokens.length));
    const T = Math.min(config.context, longestPrompt + cfg.maxResponse);
    const rows = cfg.minibatch;
    const ptxOn = cfg.ptx.coef > 0;
    const ptxSeqLen = Math.min(cfg.ptx.seqLen ?? T, config.context);
    const optimizer = {
      beta1: cfg.beta1,
      beta2: cfg.beta2,
      eps: cfg.eps,
      weightDecay: cfg.weightDecay,
      clip: cfg.gradClip,
    };
    const schedule = {
      maxLr: cfg.lr,
      minLr: cfg.minLr ?? cfg.lr,
      warmupSteps: cfg.warmup,
      totalSteps: cfg.iterations,
    };
    const rewardStats = cfg.normalizeReward ? rm.stats : undefined;
    if (cfg.normalizeReward && !rm.stats) {
      ctx.log("the reward model recorded no score statistics: scores are used unnormalised");
    }

    const trainShards = ctx.uses.tokens.files(".bin").filter((f) => basename(f).startsWith("train-"));
    if (ptxOn && trainShards.length === 0) {
      throw new DataError(
        ctx.uses.tokens.dir,
        undefined,
        "the tokens artifact has no train-*.bin shards for ptx",
      );
    }
    using ptxLoader = ptxOn
      ? new TokenLoader(trainShards.map((f) => ctx.uses.tokens.path(f)), {
        batch: cfg.ptx.batch,
        context: ptxSeqLen,
        seed: cfg.seed,
        vocab: config.vocab,
      })
      : undefined;

    // State: fresh, or the last checkpoint.
    const saved = await loadPpoCheckpoint<PpoState>(ctx.checkpoint);
    const rng = saved ? Rng.fromState(saved.state.rng) : new Rng(cfg.seed ^ 0x9e3779b9);
    const cursor = new PromptCursor(prompts.length, cfg.seed);
    if (saved) cursor.seek(saved.state.prompts);
    if (saved?.state.ptx) ptxLoader?.seek(saved.state.ptx);
    const kl = klController(cfg.kl, saved?.state.kl);
    const metrics: PpoMetricsLine[] = saved?.state.metrics ?? [];
    const samples: HeldOutSample[] = saved?.state.samples ?? [];
    let iteration = saved?.state.iteration ?? 0;
    if (saved) ctx.log(`resuming from the checkpoint after iteration ${iteration}`);

    const backend = await createBackend({ backend: cfg.backend, log: ctx.log });
    checkPrecision("ppo", cfg.precision, backend);
    const C = config.dim;
    const policyGroup = saved?.groups.policy;
    const valueGroup = saved?.groups.value;
    const policy = new Policy(backend, layout, policyGroup?.params ?? sft.params, {
      rows,
      T,
      ptx: ptxOn ? { batch: cfg.ptx.batch, T: ptxSeqLen } : undefined,
      optimizer,
      resume: policyGroup && { step: saved!.state.policyStep, m: policyGroup.m, v: policyGroup.v },
      precision: cfg.precision,
    });
    const reference = new ReferenceModel(backend, layout, sft.params, rows, T, cfg.precision);
    const reward = new ScalarModel(backend, rm.layout, rm.params, rm.head, {
      rows,
      T,
      precision: cfg.precision,
    });
    const value = new ScalarModel(
      backend,
      rm.layout,
      valueGroup?.trunk ?? rm.params,
      valueGroup ? { weight: valueGroup.head.slice(0, C), bias: valueGroup.head[C] } : rm.head,
      {
        rows,
        T,
        optimizer,
        precision: cfg.precision,
        resume: valueGroup && {
          step: saved!.state.valueStep,
          m: [valueGroup.trunkM, valueGroup.headM],
          v: [valueGroup.trunkV, valueGroup.headV],
        },
      },
    );
    ctx.log(
      `PPO on ${backend.name} in ${cfg.precision}: ${
        layout.total.toLocaleString("en")
      }-parameter policy, ${prompts.length} prompts, ` +
        `${cfg.iterations} iterations of ${cfg.batch} responses (≤ ${cfg.maxResponse} tokens), ` +
        `β ${kl.beta}${kl.adaptive ? ` → KL target ${cfg.kl.target}` : ""}, ptx ${cfg.ptx.coef}`,
    );

    const checkpoint = async () => {
      const p = await policy.state();
      const v = await value.state();
      const state: PpoState = {
        iteration,
        rng: rng.state(),
        prompts: cursor.state(),
        ptx: ptxLoader?.cursor(),
        kl: kl.state(),
        policyStep: p.step,
        valueStep: v.step,
        metrics,
        samples,
      };
      await savePpoCheckpoint(ctx.checkpoint, iteration, {
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
    };

    const evaluate = async () => {
      if (heldOut.length === 0) return;
      const result = await evaluateHeldOut(policy.gpt, reward, heldOut, {
        iteration,
        maxTokens: cfg.maxResponse,
        temperature: cfg.eval.temperature,
        seed: cfg.seed,
        rows,
        T,
        template,
        chunk: cfg.chunk,
      });
      metrics.push(result.summary);
      samples.push(...result.samples);
      const { passRate, heldOutReward } = result.summary;
      ctx.log(
        `iteration ${iteration}: held-out reward ${heldOutReward.toFixed(4)}` +
          (passRate === undefined
            ? ""
            : `, the checker passes ${(100 * passRate).toFixed(1)}% of ${result.summary.checked} answers`) +
          `; ${JSON.stringify(result.samples[0].prompt)} → ${JSON.stringify(result.samples[0].response)}`,
      );
    };

    try {
      if (iteration === 0) await evaluate();
      const time = { generate: 0, score: 0, train: 0 };
      while (iteration < cfg.iterations) {
        // 1. Rollouts: sample a response to each prompt of the batch.
        let start = performance.now();
        const batch = cursor.take(cfg.batch).map((i) => prompts[i]);
        // Every prompt fits T with maxResponse tokens after it, or fills the context (T = context).
        const generations = await generateBatch(policy.gpt, batch.map((p) => p.tokens), {
          maxTokens: cfg.maxResponse,
          temperature: cfg.temperature,
          topP: cfg.topP,
          topK: cfg.topK,
          stop,
          seed: rng.nextU32(),
          chunk: cfg.chunk,
        });
        const responses = generations.map((g) => Int32Array.from(g.ids));
        const timeGenerate = performance.now() - start;

        // 2. Score: old log-probs and entropy, reference log-probs, values, reward-model scores.
        start = performance.now();
        const rollouts: Rollout[] = [];
        const rawScores: number[] = [];
        const entropies: Float64Array[] = [];
        for (let i = 0; i < batch.length; i += rows) {
          const chunk = batch.slice(i, i + rows).map((p, j) => ({
            prompt: Int32Array.from(p.tokens),
            response: responses[i + j],
          }));
          const packed = packSequences(chunk, rows, T);
          const old = gatherResponses(await policy.logprobs(packed), packed);
          entropies.push(...await policy.responseEntropy(packed));
          const ref = gatherResponses(await reference.logprobs(packed), packed);
          const values = gatherResponses(await value.forward(packed), packed);
          const scores = await reward.forward(packed);
          chunk.forEach((s, j) => {
            const raw = scores[packed.responseStart[j] + packed.responseLength[j]];
            rawScores.push(raw);
            const penalty = generations[i + j].finish === "length" ? cfg.missingEndPenalty : 0;
            const score = (rewardStats ? (raw - rewardStats.mean) / rewardStats.std : raw) - penalty;
            rollouts.push({ ...s, logprobs: old[j], refLogprobs: ref[j], values: values[j], score });
          });
        }
        const { episodes, stats } = processRollouts(rollouts, {
          beta: kl.beta,
          gamma: cfg.gamma,
          lambda: cfg.lambda,
          whitenAdvantages: cfg.whitenAdvantages,
        });
        const timeScore = performance.now() - start;

        // 3. PPO epochs over minibatches: one policy step (+ ptx) and one value step each.
        start = performance.now();
        const lr = learningRate(iteration, schedule);
        const policyLosses: number[] = [], valueLosses: number[] = [], clipFractions: number[] = [];
        const valueClipFractions: number[] = [], approxKls: number[] = [];
        for (let epoch = 0; epoch < cfg.epochs; epoch++) {
          for (const indices of minibatches(episodes.length, cfg.minibatch, rng)) {
            const mb: Episode[] = indices.map((i) => episodes[i]);
            const packed = packSequences(mb, rows, T);
            const size = rows * T;
            const pl = await policy.policyGradient(packed, (logprobs) => {
              const r = clippedPolicyLoss(
                concat(gatherResponses(logprobs, packed)),
                concat(mb.map((e) => e.logprobs)),
                concat(mb.map((e) => e.advantages)),
                cfg.clip,
              );
              return {
                grad: scatterResponses(
                  split(
                    r.grad,
                    packed.responseStart.map((_, j) => mb[j].response),
                  ),
                  packed,
                  size,
                ),
                result: r,
              };
            });
            if (ptxLoader) policy.ptxGradient(ptxLoader.next(), cfg.ptx.coef);
            policy.step(lr);
            const vl = await value.valueGradient(packed, (values) => {
              const r = clippedValueLoss(
                concat(gatherResponses(values, packed)),
                concat(mb.map((e) => e.values)),
                concat(mb.map((e) => e.returns)),
                cfg.valueClip,
              );
              return {
                grad: scatterResponses(split(r.grad, mb.map((e) => e.response)), packed, size),
                result: r,
              };
            });
            value.step(lr * cfg.valueLr / cfg.lr);
            policyLosses.push(pl.loss);
            clipFractions.push(pl.clipFraction);
            approxKls.push(pl.approxKl);
            valueLosses.push(vl.loss);
            valueClipFractions.push(vl.clipFraction);
          }
        }
        const ptxLoss = await policy.readPtxLoss();
        const timeTrain = performance.now() - start;

        const betaUsed = kl.beta;
        kl.update(stats.klMean, episodes.length);
        iteration++;
        const line: PpoMetrics = {
          iteration,
          reward: mean(rawScores),
          kl: stats.klMean,
          nonScoreReward: stats.nonScoreReward,
          beta: betaUsed,
          lr,
          policyLoss: mean(policyLosses),
          valueLoss: mean(valueLosses),
          ...(ptxLoss === undefined ? {} : { ptxLoss }),
          clipFraction: mean(clipFractions),
          valueClipFraction: mean(valueClipFractions),
          approxKl: mean(approxKls),
          entropy: mean(entropies.flatMap((h) => Array.from(h))),
          responseLength: stats.responseLength,
          truncated: generations.filter((g) => g.finish === "length").length / generations.length,
          ...rolloutPassRate(batch, generations.map((g) => template.answerText(g.ids))),
          return: stats.returnMean,
          value: stats.valueMean,
          samples: batch.slice(0, cfg.samples).map((p, i) => ({
            prompt: p.text,
            response: template.answerText(Array.from(responses[i])),
            reward: rawScores[i],
          })),
        };
        metrics.push(line);
        time.generate += timeGenerate;
        time.score += timeScore;
        time.train += timeTrain;
        ctx.stats.set("rolloutReward", line.reward);
        ctx.stats.set("kl", line.kl);
        ctx.stats.set("beta", betaUsed);
        ctx.log(
          `iteration ${iteration}/${cfg.iterations} reward ${line.reward.toFixed(4)} kl ${
            line.kl.toFixed(4)
          } ` +
            `β ${betaUsed.toPrecision(3)} policy ${line.policyLoss.toFixed(4)} value ${
              line.valueLoss.toFixed(4)
            } ` +
            `clip ${line.clipFraction.toFixed(3)} entropy ${line.entropy.toFixed(3)} len ${
              line.responseLength.toFixed(1)
            } cut ${line.truncated.toFixed(2)}${
              line.rolloutPassRate === undefined ? "" : ` pass ${line.rolloutPassRate.toFixed(2)}`
            }; ms generate ${Math.round(timeGenerate)} score ${Math.round(timeScore)} train ${
              Math.round(timeTrain)
            }`,
        );
        if (iteration === cfg.iterations || (cfg.eval.every > 0 && iteration % cfg.eval.every === 0)) {
          await evaluate();
        }
        ctx.progress({ done: iteration, total: cfg.iterations, unit: "iterations" });
        if (iteration % cfg.checkpointEvery === 0 && iteration < cfg.iterations) await checkpoint();
        if (ctx.signal.aborted) {
          await checkpoint();
          throw new InterruptedError(
            `stage "ppo": interrupted after iteration ${iteration}; checkpointed, run again to resume`,
          );
        }
      }

      const { params } = await policy.state();
      const files = modelDirFiles(layout, params, specialTokenIds(tokenizer, template.stopIds()));
      for (const [name, bytes] of Object.entries(files)) await ctx.out.writeFile(name, bytes);
      await ctx.out.writeText("metrics.jsonl", metrics.map((m) => JSON.stringify(m)).join("\n") + "\n");
      if (samples.length) {
        await ctx.out.writeText("samples.jsonl", samples.map((m) => JSON.stringify(m)).join("\n") + "\n");
      }
      await ctx.out.writeFile("tokenizer.json", await Deno.readFile(tokenizerFile));
      await ctx.out.writeJson(CHAT_TEMPLATE_FILE, template.toJSON());
      // Held-out figures before → after (from the metrics, which a resumed run restores).
      const evals = metrics.filter((m): m is HeldOutSummary => "heldOutReward" in m);
      for (const [name, line] of [["Before", evals[0]], ["", evals.at(-1)]] as const) {
        if (!line) continue;
        ctx.stats.set(`reward${name}`, line.heldOutReward);
        if (line.passRate !== undefined) ctx.stats.set(`passRate${name}`, line.passRate);
      }
      ctx.stats.set("iterations", iteration);
      ctx.stats.set("episodes", iteration * cfg.batch);
      for (const [name, ms] of Object.entries(time)) ctx.stats.set(`${name}Ms`, Math.round(ms));
      ctx.stats.set("backend", backend.name);
      ctx.stats.set("precision", cfg.precision);
    } finally {
      policy.dispose();
      reference.dispose();
      reward.dispose();
      value.dispose();
    }
  },
});
