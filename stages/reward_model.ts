/**
 * Stage `rewardModel` (model → reward-model): InstructGPT's second step. A reward model initialised
 * from the SFT model, its unembedding replaced by a scalar head read at the last token of the
 * response (`reward_model/network.ts`), trained on comparisons (`reward_model/data.ts`) with the
 * pairwise loss −1/C(K,2)·Σ log σ(r_w − r_l − margin) where all pairs of one prompt are one batch
 * element (`reward_model/loss.ts`); `batch` prompts per optimizer step.
 *
 * Prompts are rendered with the SFT model's chat template (its `chat_template.json`), so the reward
 * model reads responses exactly as the policy writes them.
 *
 * Comparisons come from `data` (a file), from `sample`, or both (concatenated, then split into train and
 * held-out). `sample` is InstructGPT's recipe: before training, the stage samples `k` responses per
 * prompt of `sample.prompts` from its starting (SFT) model, and the checkable task's grader ranks them
 * (`reward_model/sample.ts`): empty samples are left out, identical ones merged, and a prompt whose
 * samples leave fewer than two distinct answers or all grade the same gives no comparison (counted in
 * the stats as `sample.duplicates`, `sample.empty`, `sample.dropped.*`). The rows are written to the
 * artifact as `comparisons.sampled.jsonl` (the `data` format), so what the reward model learned from
 * can be read. Sampling is seeded, and its result is checkpointed before training starts, so a resumed
 * run trains on the same comparisons.
 *
 * Metrics: training loss and pairwise accuracy per step, held-out loss and pairwise accuracy (before
 * training and every `eval.every` steps and at the end; `valAccuracy` in the stats), and the mean and
 * standard deviation of the rewards of the training responses (`reward_stats.json`, and `rewardMean`,
 * `rewardStd` in the stats), which PPO uses to normalise rewards. Wall-clock figures stay out of the
 * artifact (the same inputs give the same bytes, so PPO stays cached): ms/step is in the log lines, and
 * its mean over the steps this attempt ran is the `msPerStep` stat.
 *
 * Checkpoints every `checkpointEvery` steps (and on SIGINT/SIGTERM): trunk, head, both AdamW moments and
 * the step; the order of the comparisons is a function of the seed and epoch, so a rerun resumes exactly
 * (CPU backend: the same metrics and byte-identical weights).
 *
 * @example
 * ```ts ignore
 * pipeline("chat").pipe(pretrain(…)).pipe(sft({ data: "data/sft.jsonl" }))
 *   .pipe(rewardModel({ data: "data/comparisons.jsonl", epochs: 1, batch: 8, lr: 1e-5 }));
 * // Or on K = 4 answers per prompt sampled from the SFT model, ranked by the checker:
 * rewardModel({ sample: { prompts: "data/rm_prompts.jsonl", k: 4, temperature: 1, maxTokens: 16 } });
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { everyOption, positiveInt, trainingOptions } from "../model/train_options.ts";
import { defineStage, localPaths, type StageContext } from "../pipeline/stage.ts";
import { ConfigError, KilnError, StageError } from "../pipeline/errors.ts";
import { fingerprintFiles } from "../pipeline/files.ts";
import {
  loadTrainCheckpoint,
  saveTrainCheckpoint,
  serializeConfig,
  specialTokenIds,
} from "../model/checkpoint.ts";
import { learningRate } from "../model/schedule.ts";
import { Rng } from "../model/rng.ts";
import { modelTokenizer, startingModel } from "../model/checkpoint.ts";
import { CHAT_TEMPLATE_FILE, ChatTemplate, loadChatTemplate } from "../chat/template.ts";
import { type Comparison, parseComparisonRow, parsePrompt, readComparisons } from "./reward_model/data.ts";
import { holdOut, parseJsonl, RowError, SkipTally } from "../chat/jsonl.ts";
import { rankCandidates, sampleResponses } from "./reward_model/sample.ts";
import { checkResponse, responseScore } from "../chat/task.ts";
import type { Turn } from "../chat/data.ts";
import { GPT } from "../model/gpt.ts";
import type { LoadedModel } from "../model/checkpoint.ts";
import type { Backend } from "../kernels/backend.ts";
import { batchPairwiseLoss } from "./reward_model/loss.ts";
import { packSequences, RewardNetwork } from "./reward_model/network.ts";
import { REWARD_STATS_FILE, type RewardStats, serializeRewardModel } from "./reward_model/artifact.ts";
import { openBackend, type TrainingLoop, trainingLoop, writeJsonl } from "./training/loop.ts";
import type { ParamLayout } from "../model/params.ts";

/** The `sample` option: comparisons sampled from the starting (SFT) model, ranked by the checker. */
const sampleSchema = z.object({
  /**
   * Prompts (JSONL `{prompt}` or `{messages}` ending with a user turn, other fields ignored), each a
   * prompt of the checkable task (`sft/task.ts`), whose grader ranks the samples.
   */
  prompts: z.string().min(1),
  /** Responses sampled per prompt (InstructGPT: 4 to 9). */
  k: z.number().int().min(2).default(4),
  temperature: z.number().positive().default(1),
  topP: z.number().gt(0).max(1).default(1),
  /** Longest sampled response, in tokens. */
  maxTokens: positiveInt.default(64),
  /** Sampling seed; default the stage's `seed`. */
  seed: z.number().int().min(0).optional(),
  /** Prompts decoded together (k rows each); the samples depend on it and the seed. */
  batch: positiveInt.default(16),
}).strict();

const schema = z.object({
  /** The comparisons (JSONL, see `reward_model/data.ts`); optional when `sample` is set. */
  data: z.string().min(1).optional(),
  /** Comparisons sampled from the starting model and ranked by the checker (see the module doc). */
  sample: sampleSchema.optional(),
  onBadRow: z.enum(["error", "skip"]).default("error"),
  /** Held-out comparisons: a file, or this fraction of `data` (seeded). */
  val: z.object({
    data: z.string().min(1).optional(),
    fraction: z.number().min(0).max(0.5).default(0.1),
  }).strict().default({ fraction: 0.1 }),
  tokenizer: z.string().min(1).optional(),
  /** Chat markers; default: the SFT model's `chat_template.json`, else kiln's. */
  template: z.object({
    system: z.string().optional(),
    user: z.string().optional(),
    assistant: z.string().optional(),
    end: z.string().min(1).optional(),
  }).strict().optional(),
  /** InstructGPT trained its reward model for one epoch: more overfits. */
  epochs: positiveInt.default(1),
  /** Prompts (each with all its C(K,2) pairs) per optimizer step. */
  batch: positiveInt.default(8),
  /** Margin m in −log σ(r_w − r_l − m). */
  margin: z.number().min(0).default(0),
  /** `init`: start from this model directory instead of the upstream artifact; `seqLen`: the packed row length. */
  ...trainingOptions({ lr: 1e-5, warmup: 10, weightDecay: 0, checkpointEvery: 100 }),
  /** Held-out loss and pairwise accuracy before training, every `every` steps (0: never) and at the end. */
  eval: z.object({ every: everyOption(0) }).strict().default({ every: 0 }),
}).strict().refine((cfg) => cfg.data !== undefined || cfg.sample !== undefined, {
  path: ["data"],
  message:
    "missing: give a comparison file (data), comparisons to sample (sample: { prompts, k, … }), or both",
});

/** The config of {@linkcode rewardModel}. */
export type RewardModelConfig = z.output<typeof schema>;

type MetricsLine =
  | { step: number; loss: number; accuracy: number; lr: number; gradNorm?: number }
  | { step: number; valLoss: number; valAccuracy: number; pairs: number };

interface RmState {
  [key: string]: unknown;
  step: number;
  head: number[];
  headM: number[];
  headV: number[];
  metrics: MetricsLine[];
}

/** What sampling gave, checkpointed before training so a resumed run trains on the same rows. */
interface SampledState {
  [key: string]: unknown;
  rows: Record<string, unknown>[];
  counts: ReturnType<typeof rankCandidates>["counts"];
  /** Fraction of the drawn candidates the checker passes (the SFT model's sampled pass rate). */
  passRate: number;
}

/** A prompt of `sample.prompts`: its turns, and the last user turn (what the checker reads). */
interface SamplePrompt {
  turns: Turn[];
  text: string;
}

function parseSamplePrompt(row: Record<string, unknown>): SamplePrompt {
  const turns = parsePrompt(row);
  const text = turns.at(-1)!.content;
  if (responseScore(text, "") === undefined) {
    throw new RowError(
      row.messages !== undefined ? "messages" : "prompt",
      "notCheckable",
      "not a prompt of the checkable task (chat/task.ts), whose grader ranks the samples",
    );
  }
  return { turns, text };
}

/**
 * The `sample` option: k responses per prompt from the starting model, ranked by the checker, as
 * comparison rows (`{prompt|messages, responses, scores}`); loaded from the checkpoint when an earlier
 * attempt sampled already.
 */
async function sampleComparisons(
  ctx: StageContext<RewardModelConfig, "model">,
  prompts: SamplePrompt[],
  initial: LoadedModel,
  template: ChatTemplate,
  backend: Backend,
): Promise<SampledState> {
  const saved = await ctx.checkpoint.load<SampledState>("sampled");
  if (saved) return saved;
  const sample = ctx.config.sample!;
  ctx.log(`sampling ${sample.k} responses for each of ${prompts.length} prompts from the starting model`);
  const model = new GPT(backend, initial.layout, initial.params, { precision: ctx.config.precision });
  let lists: (string[] | undefined)[];
  try {
    lists = await sampleResponses(model, template, prompts.map((p) => p.turns), {
      k: sample.k,
      seed: sample.seed ?? ctx.config.seed,
      maxTokens: sample.maxTokens,
      temperature: sample.temperature,
      topP: sample.topP,
      batch: sample.batch,
    });
  } finally {
    model.dispose();
  }
  const { rows, counts } = rankCandidates(prompts.map((p) => p.text), lists, (p, r) => responseScore(p, r)!);
  let passed = 0;
  lists.forEach((l, i) => passed += l?.filter((r) => checkResponse(prompts[i].text, r)).length ?? 0);
  const state: SampledState = {
    // A single user turn is written as `prompt`, anything else as the conversation.
    rows: rows.map(({ index, prompt: _, ...ranked }) => {
      const turns = prompts[index].turns;
      return { ...(turns.length === 1 ? { prompt: turns[0].content } : { messages: turns }), ...ranked };
    }),
    counts,
    passRate: counts.candidates > 0 ? passed / counts.candidates : 0,
  };
  await ctx.checkpoint.save("sampled", state);
  return state;
}

/** The file the sampled comparisons are written to in the artifact. */
export const SAMPLED_COMPARISONS_FILE = "comparisons.sampled.jsonl";

/** A comparison as token sequences (prompt ++ response ++ end marker), one per response. */
interface EncodedComparison {
  sequences: number[][];
  pairs: [number, number][];
}

/** The comparisons of `data` and of `sample`, split into train and held-out (or `val.data`). */
async function readAll(
  ctx: StageContext<RewardModelConfig, "model">,
  initial: LoadedModel,
  template: ChatTemplate,
  backend: Backend,
) {
  const cfg = ctx.config;
  const skipped = new SkipTally();
  const comparisons: Comparison[] = [];
  if (cfg.data) {
    const read = await readComparisons(cfg.data, { onBadRow: cfg.onBadRow });
    comparisons.push(...read.comparisons);
    skipped.merge(read.skipped);
  }
  if (cfg.sample) {
    const prompts = await parseJsonl(cfg.sample.prompts, parseSamplePrompt, cfg.onBadRow, skipped);
    const sampled = await sampleComparisons(ctx, prompts.map((p) => p.row), initial, template, backend);
    await ctx.out.writeText(
      SAMPLED_COMPARISONS_FILE,
      sampled.rows.map((r) => JSON.stringify(r) + "\n").join(""),
    );
    comparisons.push(...sampled.rows.map((r, i) => ({ line: i + 1, ...parseComparisonRow(r) })));
    const { dropped, ...counts } = sampled.counts;
    ctx.stats.set("sample.prompts", prompts.length);
    ctx.stats.set("sample.comparisons", sampled.rows.length);
    for (const [name, n] of Object.entries(counts)) ctx.stats.set(`sample.${name}`, n);
    for (const [name, n] of Object.entries(dropped)) ctx.stats.set(`sample.dropped.${name}`, n);
    ctx.stats.set("sample.passRate", sampled.passRate);
    ctx.log(
      `sampled comparisons: ${sampled.rows.length} of ${prompts.length} prompts (${counts.candidates} ` +
        `samples, checker pass rate ${(sampled.passRate * 100).toFixed(1)}%; ${counts.duplicates} ` +
        `duplicates merged, ${counts.empty} empty left out; prompts dropped: ${dropped.tooLong} too long, ` +
        `${dropped.tooFewResponses} with fewer than two distinct samples, ${dropped.allTied} all tied)`,
    );
  }
  if (comparisons.length === 0) {
    throw new StageError(
      "reward-model",
      `no comparisons (every sampled prompt was dropped; see the stats)`,
    );
  }
  let { train, val } = holdOut(comparisons, cfg.val.data ? 0 : cfg.val.fraction, cfg.seed);
  if (cfg.val.data) {
    const read = await readComparisons(cfg.val.data, { onBadRow: cfg.onBadRow });
    val = read.comparisons;
    skipped.merge(read.skipped);
  }
  skipped.report(ctx);
  return { train, val };
}

/** Comparisons as token sequences; those with a response past T tokens are skipped and counted. */
function encodeAll(
  ctx: StageContext<RewardModelConfig, "model">,
  template: ChatTemplate,
  T: number,
  read: { train: Comparison[]; val: Comparison[] },
) {
  const encode = (list: Comparison[]) => {
    const kept: EncodedComparison[] = [];
    let tooLong = 0;
    for (const c of list) {
      const sequences = c.responses.map((r) => template.promptAndResponse(c.prompt, r).ids);
      if (sequences.some((s) => s.length > T)) tooLong++;
      else kept.push({ sequences, pairs: c.pairs });
    }
    return { kept, tooLong };
  };
  const trainSet = encode(read.train), valSet = encode(read.val);
  if (trainSet.tooLong + valSet.tooLong > 0) {
    ctx.stats.set("skipped.tooLong", trainSet.tooLong + valSet.tooLong);
    ctx.log(`skipped ${trainSet.tooLong + valSet.tooLong} comparisons with a response past ${T} tokens`);
  }
  if (trainSet.kept.length === 0) throw new StageError("reward-model", `no comparison fits ${T} tokens`);
  ctx.stats.set("prompts", trainSet.kept.length);
  ctx.stats.set("pairs", pairCount(trainSet.kept));
  ctx.stats.set("valPrompts", valSet.kept.length);
  return { train: trainSet.kept, val: valSet.kept };
}

const pairCount = (list: EncodedComparison[]) => list.reduce((n, c) => n + c.pairs.length, 0);

/** What the step body, the evaluation and the checkpoints of a reward-model run share. */
interface RmRun {
  ctx: StageContext<RewardModelConfig, "model">;
  network: RewardNetwork;
  layout: ParamLayout;
  train: EncodedComparison[];
  val: EncodedComparison[];
  /** Packs groups into rows of T tokens. */
  pack(groups: EncodedComparison[]): ReturnType<typeof packSequences>;
  metrics: MetricsLine[];
}

/** Splits flat rewards back into the groups they came from. */
function splitRewards(groups: EncodedComparison[], rewards: Float32Array) {
  let k = 0;
  return groups.map((g) => {
    const r = rewards.subarray(k, k + g.sequences.length);
    k += g.sequences.length;
    return { rewards: r, pairs: g.pairs };
  });
}

/** The step body, read-back, evaluation and checkpoint of reward-model training, for the training loop. */
function rmLoop(run: RmRun, start: number): TrainingLoop<number> {
  const { ctx, network, train, metrics } = run;
  const cfg = ctx.config;
  // Steps: every epoch a seeded permutation of the prompts, `batch` prompts a step.
  const n = train.length;
  const stepsPerEpoch = Math.ceil(n / cfg.batch);
  const totalSteps = stepsPerEpoch * cfg.epochs;
  const orders = new Map<number, Uint32Array>();
  const stepGroups = (step: number) => {
    const epoch = Math.floor(step / stepsPerEpoch), s = step % stepsPerEpoch;
    if (!orders.has(epoch)) {
      orders.set(
        epoch,
        new Rng((cfg.seed * 1_000_003 + epoch) >>> 0).shuffle(Uint32Array.from({ length: n }, (_, i) => i)),
      );
    }
    return Array.from(orders.get(epoch)!.subarray(s * cfg.batch, (s + 1) * cfg.batch), (i) => train[i]);
  };
  const schedule = { maxLr: cfg.lr, minLr: cfg.minLr ?? cfg.lr / 10, warmupSteps: cfg.warmup, totalSteps };
  // The metrics line of the last step, which gets the gradient norm at a read-back.
  let line!: Extract<MetricsLine, { loss: number }>;
  return {
    stage: "reward-model",
    ctx,
    unit: "steps",
    total: totalSteps,
    start,
    logEvery: cfg.logEvery,
    checkpointEvery: cfg.checkpointEvery,
    async step(done) {
      const groups = stepGroups(done);
      let result!: ReturnType<typeof batchPairwiseLoss>;
      await network.gradient(run.pack(groups), (rewards) => {
        result = batchPairwiseLoss(splitRewards(groups, rewards), cfg.margin);
        const flat = new Float64Array(rewards.length);
        let k = 0;
        for (const g of result.grads) for (const x of g) flat[k++] = x;
        return flat;
      });
      const lr = learningRate(done, schedule);
      network.step(lr);
      // The loss is on the host already; the gradient norm is read with it every logEvery steps.
      line = { step: done + 1, loss: result.loss, accuracy: result.correct / result.pairs, lr };
      metrics.push(line);
      ctx.stats.set("loss", result.loss);
    },
    readBack: {
      read: () => network.gradNorm(),
      report(gradNorm, { msPerStep }) {
        line.gradNorm = gradNorm;
        ctx.log(
          `step ${line.step}/${totalSteps} loss ${line.loss.toFixed(4)} accuracy ${
            (line.accuracy * 100).toFixed(0)
          }% ` +
            `lr ${line.lr.toExponential(2)} ${msPerStep.toFixed(1)} ms/step`,
        );
      },
    },
    evaluate: run.val.length > 0
      ? { every: cfg.eval.every, before: true, end: true, run: (step) => evaluate(run, step) }
      : undefined,
    async checkpoint(step) {
      const s = await network.state();
      const state: RmState = {
        step,
        head: Array.from(s.params[1]),
        headM: Array.from(s.m[1]),
        headV: Array.from(s.v[1]),
        metrics,
      };
      await saveTrainCheckpoint(ctx.checkpoint, run.layout, {
        params: s.params[0],
        m: s.m[0],
        v: s.v[0],
        state,
      });
    },
  };
}

/** Held-out loss and pairwise accuracy. */
async function evaluate({ ctx, network, val, pack, metrics }: RmRun, step: number) {
  const cfg = ctx.config;
  let loss = 0, correct = 0, pairs = 0;
  for (let i = 0; i < val.length; i += cfg.batch) {
    const groups = val.slice(i, i + cfg.batch);
    const r = batchPairwiseLoss(splitRewards(groups, await network.rewards(pack(groups))), cfg.margin);
    loss += r.loss * groups.length;
    correct += r.correct;
    pairs += r.pairs;
  }
  const line = { step, valLoss: loss / val.length, valAccuracy: correct / pairs, pairs };
  metrics.push(line);
  ctx.stats.set(step === 0 ? "valAccuracyBefore" : "valAccuracy", line.valAccuracy);
  ctx.stats.set(step === 0 ? "valLossBefore" : "valLoss", line.valLoss);
  ctx.log(
    `step ${step}: held-out pairwise accuracy ${(line.valAccuracy * 100).toFixed(1)}% (${pairs} pairs), ` +
      `loss ${line.valLoss.toFixed(4)}`,
  );
}

async function run(ctx: StageContext<RewardModelConfig, "model">) {
  const cfg = ctx.config;
  const { tokenizer } = await modelTokenizer("reward-model", cfg.tokenizer, [cfg.init, ctx.input.dir]);
  const initial = await startingModel("reward-model", cfg.init, ctx.input.dir, tokenizer);
  const { config, layout } = initial;
  let template: ChatTemplate;
  try {
    template = cfg.template
      ? new ChatTemplate(tokenizer, cfg.template)
      : await loadChatTemplate(cfg.init ?? ctx.input.dir, tokenizer);
  } catch (e) {
    throw new ConfigError("reward-model", ["template"], (e as Error).message);
  }
  const T = cfg.seqLen ?? config.context;
  if (T > config.context) {
    throw new ConfigError("reward-model", ["seqLen"], `${T} exceeds the model's context ${config.context}`);
  }

  const backend = await openBackend("reward-model", ctx, cfg);
  const { train, val } = encodeAll(ctx, template, T, await readAll(ctx, initial, template, backend));
  const pad = tokenizer.specialTokens["<|endoftext|>"] ?? 0;
  const pack = (groups: EncodedComparison[]) => packSequences(groups.flatMap((g) => g.sequences), T, pad);

  const resumed = await loadTrainCheckpoint<RmState>(ctx.checkpoint, layout);
  const step = resumed?.state.step ?? 0;
  const metrics: MetricsLine[] = resumed?.state.metrics ?? [];
  if (resumed) ctx.log(`resuming from the checkpoint at step ${step}`);
  // The head starts as HF's GPT2ForSequenceClassification's does: normal(0, 0.02).
  const headRng = new Rng(cfg.seed ^ 0x4ead);
  const head = Float32Array.from({ length: config.dim }, () => 0.02 * headRng.normal());

  ctx.log(
    `training a reward model of ${layout.total.toLocaleString("en")} parameters on ${backend.name} ` +
      `in ${cfg.precision}: ${train.length} prompts, ${pairCount(train)} pairs, ` +
      `${Math.ceil(train.length / cfg.batch) * cfg.epochs} steps`,
  );
  const { beta1, beta2, eps, weightDecay, gradClip: clip } = cfg;
  const network = new RewardNetwork(backend, layout, initial.params, head, T, {
    optimizer: { beta1, beta2, eps, weightDecay, clip },
    precision: cfg.precision,
    resume: resumed && {
      step: resumed.state.step,
      params: [resumed.params, Float32Array.from(resumed.state.head)],
      m: [resumed.m, Float32Array.from(resumed.state.headM)],
      v: [resumed.v, Float32Array.from(resumed.state.headV)],
    },
  });
  try {
    await trainingLoop(rmLoop({ ctx, network, layout, train, val, pack, metrics }, step));

    // Reward statistics over every training response, for PPO's normalisation.
    const all: number[] = [];
    for (let i = 0; i < train.length; i += cfg.batch) {
      all.push(...await network.rewards(pack(train.slice(i, i + cfg.batch))));
    }
    const mean = all.reduce((a, b) => a + b, 0) / all.length;
    const std = Math.sqrt(all.reduce((a, b) => a + (b - mean) ** 2, 0) / all.length);
    const stats: RewardStats = { mean, std, count: all.length };

    const weights = await network.weights();
    await ctx.out.writeFile("model.safetensors", serializeRewardModel(layout, weights.params, weights.head));
    await ctx.out.writeFile("config.json", serializeConfig(config, specialTokenIds(tokenizer)));
    await ctx.out.writeText("tokenizer.json", JSON.stringify(tokenizer.toJSON()));
    await ctx.out.writeJson(CHAT_TEMPLATE_FILE, template.toJSON());
    await ctx.out.writeJson(REWARD_STATS_FILE, stats);
    await writeJsonl(ctx, "metrics.jsonl", metrics);
    ctx.stats.set("rewardMean", mean);
    ctx.stats.set("rewardStd", std);
    ctx.stats.set("backend", backend.name);
    ctx.stats.set("precision", cfg.precision);
  } finally {
    network.dispose();
  }
}

/** The input files, for the cache key; a missing one is a config error naming its field. */
async function fingerprint(cfg: RewardModelConfig) {
  const files: [string[], string | undefined][] = [
    [["data"], cfg.data],
    [["val", "data"], cfg.val.data],
    [["sample", "prompts"], cfg.sample?.prompts],
  ];
  const out = [];
  for (const [field, path] of files) {
    if (path === undefined) continue;
    try {
      out.push(...await fingerprintFiles([path]));
    } catch (e) {
      if (e instanceof KilnError) throw new ConfigError("reward-model", field, e.message);
      throw e;
    }
  }
  return out;
}

/** Trains a reward model on comparisons; see the module doc. */
export const rewardModel = defineStage({
  name: "reward-model",
  version: 2,
  module: import.meta.url,
  input: "model",
  output: "reward-model",
  schema,
  permissions: (config) => ({ read: localPaths(config.init, config.tokenizer) }),
  description:
    "Reward model on ranked comparisons: InstructGPT's pairwise loss over all C(K,2) pairs per prompt",
  fingerprint,
  run,
});
