/**
 * Stage `sft` (model → model): supervised fine-tuning on demonstrations, InstructGPT's first step.
 *
 * Reads `{prompt, response}` or `{messages}` JSONL (`sft/data.ts`), renders each conversation with
 * kiln's chat template (`sft/template.ts`: `<|user|>…<|end|><|assistant|>…<|end|>`, configurable),
 * packs several conversations per context row with attention kept inside each one and positions
 * restarting in each (`sft/packing.ts`: the same training as one conversation per row, less padding),
 * and trains with the loss on response tokens only, for a number of epochs, AdamW with warmup + cosine.
 *
 * It starts from the upstream model artifact (pretrain's), or from `init`: a local model directory in
 * the Hugging Face GPT-2 layout (`config.json` + `model.safetensors`, e.g. a downloaded GPT-2 124M).
 * The tokenizer is `tokenizer` when set (a name or file), else the `tokenizer.json` of the model. When
 * it lacks the chat tokens the template uses (GPT-2's does), they are added as special tokens after its
 * last id and the token embedding grows by as many rows, each the mean of the existing rows
 * (`sft/vocab.ts`); the artifact carries the grown model and tokenizer, so the reward model and PPO
 * use them unchanged.
 *
 * Held-out data: the `val.data` file, or a seeded `val.fraction` of the demonstrations. Its response-only
 * loss is measured every `eval.every` steps and at the end; on `sample.count` of its prompts the model
 * answers greedily before training and at the end (and every `sample.every` steps), and for prompts of
 * kiln's checkable task (`sft/task.ts`) the checker's pass rate is recorded (`passRate` in the stats:
 * before → after shows what SFT did).
 *
 * The artifact: `model.safetensors`, `config.json` (HF GPT-2), `tokenizer.json`, `chat_template.json`
 * (the template it was trained with; the reward model and PPO render prompts with it), `metrics.jsonl`
 * (`{step, loss, lr, gradNorm, tokens}`, `{step, valLoss}`, `{step, passRate, checked}`) and
 * `samples.jsonl` (`{step, prompt, response, reference, pass?}`). Wall-clock figures stay out of the
 * artifact (the same inputs give the same bytes, so the stages downstream stay cached): ms/step is in
 * the log lines, and its mean over the steps this attempt ran is the `msPerStep` stat.
 *
 * Checkpoints every `checkpointEvery` steps (and on SIGINT/SIGTERM) hold the weights, AdamW moments and
 * the step; the data order is a pure function of the seed and the epoch, so a rerun resumes exactly
 * (on the CPU backend: the same losses and byte-identical weights).
 *
 * @example
 * ```ts ignore
 * pipeline("chat").pipe(tokenize(…)).pipe(pretrain(…))
 *   .pipe(sft({ data: "data/sft.jsonl", epochs: 3, lr: 1e-4 }));
 * // GPT-2 (with its tokenizer.json): the embedding grows from 50,257 to 50,261 rows for the chat tokens.
 * sft({ data: "data/sft.jsonl", init: "models/gpt2" });
 * // Plain-text markers instead: GPT-2's vocabulary as it is.
 * sft({ data: "data/sft.jsonl", init: "models/gpt2",
 *       template: { system: "System: ", user: "User: ", assistant: "\nAssistant: ", end: "<|endoftext|>" } });
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { everyOption, positiveInt, sampleOptions, trainingOptions } from "../model/train_options.ts";
import { defineStage, localPaths, type StageContext } from "../pipeline/stage.ts";
import { ConfigError, StageError } from "../pipeline/errors.ts";
import { fingerprintFiles } from "../pipeline/files.ts";
import {
  loadModelDir,
  loadTrainCheckpoint,
  modelTokenizer,
  saveTrainCheckpoint,
  specialTokenIds,
} from "../model/checkpoint.ts";
import { learningRate } from "../model/schedule.ts";
import { Rng } from "../model/rng.ts";
import { type StepMetrics, Trainer } from "../model/train.ts";
import { generateBatch, type Generation } from "../model/generate.ts";
import type { GPT } from "../model/gpt.ts";
import {
  openBackend,
  type TrainingLoop,
  trainingLoop,
  writeJsonl,
  writeModelFiles,
} from "./training/loop.ts";
import type { ParamLayout } from "../model/params.ts";
import { readSftData, type SftExample, type Turn } from "../chat/data.ts";
import { CHAT_TEMPLATE_FILE, ChatTemplate } from "../chat/template.ts";
import { batchRows, type Encoded, type PackedBatch, packRows, type Row } from "../chat/packing.ts";
import { checkResponse } from "../chat/task.ts";
import { holdOut } from "../chat/jsonl.ts";
import { fitVocab, withChatTokens } from "../chat/vocab.ts";

const markers = z.object({
  system: z.string().optional(),
  user: z.string().optional(),
  assistant: z.string().optional(),
  end: z.string().min(1).optional(),
}).strict();

const schema = z.object({
  /** The demonstrations (JSONL, see `sft/data.ts`). */
  data: z.string().min(1),
  /** Malformed rows: stop with an error naming them, or skip and count them in the stats. */
  onBadRow: z.enum(["error", "skip"]).default("error"),
  /** Held-out demonstrations: a file, or this fraction of `data` (seeded). */
  val: z.object({
    data: z.string().min(1).optional(),
    fraction: z.number().min(0).max(0.5).default(0.05),
  }).strict().default({ fraction: 0.05 }),
  /** Tokenizer name or file; default: the `tokenizer.json` of `init` or of the upstream model. */
  tokenizer: z.string().min(1).optional(),
  /** Chat template markers (default: the tokenizer's `<|system|>`, `<|user|>`, `<|assistant|>`, `<|end|>`). */
  template: markers.default({}),
  /** Passes over the demonstrations. */
  epochs: positiveInt.default(3),
  /** Context rows per micro-batch. */
  batch: positiveInt.default(8),
  /**
   * Pack several conversations per row (positions restart in each, so training is the same as
   * unpacked, with fewer padding tokens); false: one conversation per row.
   */
  packing: z.boolean().default(true),
  gradAccum: positiveInt.default(1),
  /**
   * `init`: start from this model directory instead of the upstream artifact: Hugging Face GPT-2 layout
   * (`config.json`, `model.safetensors`, and `tokenizer.json` unless `tokenizer` is set), e.g. a local
   * GPT-2 download or another stage's artifact. If its tokenizer lacks the chat tokens the template
   * uses, they are added and the embedding grows by one row per token, set to the mean of the existing
   * rows (logged; `embeddingRowsAdded` in the stats). A tokenizer with ordinary tokens past the model's
   * vocabulary is refused, naming both sizes. `seqLen`: tokens per context row.
   */
  ...trainingOptions({ lr: 1e-4, warmup: 10, weightDecay: 0, checkpointEvery: 100 }),
  /** Validation loss every `every` steps (0: at the end only). */
  eval: z.object({ every: everyOption(0) }).strict().default({ every: 0 }),
  /** Answers to held-out prompts (greedy unless `temperature` > 0), before, every `every` steps, and at the end. */
  sample: z.object({
    count: z.number().int().min(0).default(16),
    ...sampleOptions({ every: 0, maxTokens: 64, temperature: 0 }),
  }).strict().default({ count: 16, every: 0, maxTokens: 64, temperature: 0 }),
}).strict();

/** The config of {@linkcode sft}. */
export type SftConfig = z.output<typeof schema>;

/** One line of `samples.jsonl`. */
export interface SampleLine {
  step: number;
  prompt: string;
  response: string;
  reference: string;
  /** The checker's verdict, for prompts of kiln's checkable task. */
  pass?: boolean;
}

type MetricsLine =
  | { step: number; loss: number; lr: number; gradNorm: number; tokens: number }
  | { step: number; valLoss: number }
  | { step: number; passRate: number; checked: number };

interface SftState {
  [key: string]: unknown;
  step: number;
  rng: number[];
  metrics: MetricsLine[];
  samples: SampleLine[];
}

/** The prompt turns and reference answer of a held-out demonstration: everything before its last answer. */
function heldOutPrompt(example: SftExample): { turns: Turn[]; reference: string } {
  const last = example.turns.findLastIndex((t) => t.role === "assistant");
  return { turns: example.turns.slice(0, last), reference: example.turns[last].content };
}

/** Held-out prompts decoded together (the key/value cache grows with the rows: a GPT-2 row is ~100 MB). */
const ANSWER_ROWS = 32;

/** Answers held-out prompts (batches of {@linkcode ANSWER_ROWS}) and checks those of the checkable task. */
async function answerPrompts(
  model: GPT,
  template: ChatTemplate,
  prompts: { turns: Turn[]; reference: string }[],
  step: number,
  opts: { maxTokens: number; temperature: number; rng: Rng },
): Promise<SampleLine[]> {
  // A prompt that fills the context leaves no room for an answer: it is left out.
  const fits = prompts.map((p) => ({ ...p, ids: template.prompt(p.turns) }))
    .filter((p) => p.ids.length < model.config.context);
  const rows: Generation[] = [];
  for (let i = 0; i < fits.length; i += ANSWER_ROWS) {
    rows.push(
      ...await generateBatch(model, fits.slice(i, i + ANSWER_ROWS).map((p) => p.ids), {
        maxTokens: opts.maxTokens,
        temperature: opts.temperature,
        stop: template.stopIds(),
        rng: opts.rng,
      }),
    );
  }
  return fits.map(({ turns, reference }, i) => {
    const response = template.answerText(rows[i].ids);
    const prompt = turns.at(-1)?.content ?? "";
    const pass = checkResponse(prompt, response);
    return { step, prompt, response, reference, ...(pass === undefined ? {} : { pass }) };
  });
}

/** Pass rate of the checkable prompts among samples, or undefined when none is checkable. */
function passRate(samples: SampleLine[]): { passRate: number; checked: number } | undefined {
  const checked = samples.filter((s) => s.pass !== undefined);
  if (checked.length === 0) return undefined;
  return { passRate: checked.filter((s) => s.pass).length / checked.length, checked: checked.length };
}

/** The micro-batches (lists of rows) of every optimizer step of every epoch, from the seed alone. */
function planSteps(n: number, encoded: Encoded[], cfg: SftConfig, T: number): Row[][][] {
  const steps: Row[][][] = [];
  const perStep = cfg.batch * cfg.gradAccum;
  for (let epoch = 0; epoch < cfg.epochs; epoch++) {
    const order = new Rng((cfg.seed * 1_000_003 + epoch) >>> 0).shuffle(
      Uint32Array.from({ length: n }, (_, i) => i),
    );
    const rows = packRows(Array.from(order, (i) => encoded[i]), T, cfg.packing).map((row) =>
      row.map((j) => order[j])
    );
    for (let s = 0; s < rows.length; s += perStep) {
      const stepRows = rows.slice(s, s + perStep);
      const micro: Row[][] = [];
      for (let m = 0; m < stepRows.length; m += cfg.batch) micro.push(stepRows.slice(m, m + cfg.batch));
      steps.push(micro);
    }
  }
  return steps;
}

async function fingerprint(cfg: SftConfig) {
  return await fingerprintFiles([cfg.data, ...(cfg.val.data ? [cfg.val.data] : [])]);
}

/** The tokenizer (with the chat tokens the template uses), the starting model fitted to it, the template. */
async function chatModel(ctx: StageContext<SftConfig, "model">) {
  const cfg = ctx.config;
  const source = await modelTokenizer("sft", cfg.tokenizer, [cfg.init, ctx.input.dir]);
  // A tokenizer without kiln's chat tokens (GPT-2's) gets those the template uses, and the model's
  // embedding the rows for them (sft/vocab.ts).
  const { tokenizer, added } = withChatTokens(source.tokenizer, cfg.template);
  const fitted = fitVocab("sft", await loadModelDir(cfg.init ?? ctx.input.dir), tokenizer, added);
  if (fitted.note) ctx.log(fitted.note);
  if (fitted.rows.length > 0) ctx.stats.set("embeddingRowsAdded", fitted.rows.length);
  let template: ChatTemplate;
  try {
    template = new ChatTemplate(tokenizer, cfg.template);
  } catch (e) {
    throw new ConfigError("sft", ["template"], (e as Error).message);
  }
  const { context } = fitted.model.config;
  const T = cfg.seqLen ?? context;
  if (T > context) throw new ConfigError("sft", ["seqLen"], `${T} exceeds the model's context ${context}`);
  return { tokenizer, tokenizerFile: source.file, initial: fitted.model, template, T };
}

/** The demonstrations read, split and encoded; conversations longer than a row are skipped and counted. */
async function readData(ctx: StageContext<SftConfig, "model">, template: ChatTemplate, T: number) {
  const cfg = ctx.config;
  const { examples, skipped } = await readSftData(cfg.data, { onBadRow: cfg.onBadRow });
  let { train, val } = holdOut(examples, cfg.val.data ? 0 : cfg.val.fraction, cfg.seed);
  if (cfg.val.data) {
    const read = await readSftData(cfg.val.data, { onBadRow: cfg.onBadRow });
    val = read.examples;
    skipped.merge(read.skipped);
  }
  skipped.report(ctx);
  const encode = (list: SftExample[]) => {
    const kept: Encoded[] = [];
    let tooLong = 0;
    for (const ex of list) {
      const r = template.render(ex.turns);
      if (r.ids.length > T) tooLong++;
      else kept.push(r);
    }
    return { kept, tooLong };
  };
  const trainSet = encode(train), valSet = encode(val);
  const tooLong = trainSet.tooLong + valSet.tooLong;
  if (tooLong > 0) {
    ctx.stats.set("skipped.tooLong", tooLong);
    ctx.log(`skipped ${tooLong} conversations longer than ${T} tokens`);
  }
  if (trainSet.kept.length === 0) {
    throw new StageError("sft", `no training conversation fits ${T} tokens`);
  }
  ctx.stats.set("examples", trainSet.kept.length);
  ctx.stats.set("valExamples", valSet.kept.length);
  return {
    train: trainSet.kept,
    val: valSet.kept,
    heldOut: val.slice(0, cfg.sample.count).map(heldOutPrompt),
  };
}

/** What the step body, the evaluation, the samples and the checkpoints of an SFT run share. */
interface SftRun {
  ctx: StageContext<SftConfig, "model">;
  trainer: Trainer;
  layout: ParamLayout;
  template: ChatTemplate;
  T: number;
  pad: number;
  train: Encoded[];
  plan: Row[][][];
  valBatches: PackedBatch[];
  heldOut: { turns: Turn[]; reference: string }[];
  rng: Rng;
  metrics: MetricsLine[];
  samples: SampleLine[];
}

/** The step body, read-back, evaluation, samples and checkpoint of SFT, for the training loop. */
function sftLoop(run: SftRun, start: number): TrainingLoop<StepMetrics[]> {
  const { ctx, trainer, plan, metrics } = run;
  const cfg = ctx.config;
  const totalSteps = plan.length;
  const schedule = { maxLr: cfg.lr, minLr: cfg.minLr ?? cfg.lr / 10, warmupSteps: cfg.warmup, totalSteps };
  // The learning rate and tokens of each step whose loss is still on the device.
  const pending: { lr: number; tokens: number }[] = [];
  return {
    stage: "sft",
    ctx,
    unit: "steps",
    total: totalSteps,
    start,
    logEvery: cfg.logEvery,
    checkpointEvery: cfg.checkpointEvery,
    step(done) {
      const micro = plan[done];
      let tokens = 0;
      for (const rows of micro) {
        const b = batchRows(rows, run.train, cfg.batch, run.T, run.pad);
        tokens += b.tokens;
        trainer.microStep(b, 1 / micro.length);
      }
      const lr = learningRate(done, schedule);
      trainer.optimizerStep(lr);
      pending.push({ lr, tokens });
    },
    readBack: {
      deferred: true,
      read: () => trainer.readMetrics(),
      report(read, { msPerStep }) {
        read.forEach((m, i) =>
          metrics.push({ step: m.step, loss: m.loss, gradNorm: m.gradNorm, ...pending[i] })
        );
        const last = read.at(-1);
        if (last) {
          ctx.stats.set("loss", last.loss);
          ctx.log(
            `step ${last.step}/${totalSteps} loss ${last.loss.toFixed(4)} norm ${last.gradNorm.toFixed(3)} ${
              msPerStep.toFixed(1)
            } ms/step`,
          );
        }
        pending.length = 0;
      },
    },
    evaluate: run.valBatches.length > 0
      ? {
        every: cfg.eval.every,
        end: true,
        async run(step) {
          const loss = await trainer.evalLoss(run.valBatches);
          metrics.push({ step, valLoss: loss });
          ctx.stats.set("valLoss", loss);
          ctx.log(`step ${step} validation loss ${loss.toFixed(4)}`);
        },
      }
      : undefined,
    sample: { every: cfg.sample.every, before: true, end: true, run: (step) => sample(run, step) },
    async checkpoint(step) {
      const { params, m, v } = await trainer.state();
      const state = { step, rng: run.rng.state(), metrics, samples: run.samples };
      await saveTrainCheckpoint(ctx.checkpoint, run.layout, { params, m, v, state });
    },
  };
}

/** The model's answers to the held-out prompts, and the checker's pass rate on the checkable ones. */
async function sample(run: SftRun, step: number) {
  const { ctx } = run;
  if (run.heldOut.length === 0) return;
  const lines = await answerPrompts(run.trainer.model, run.template, run.heldOut, step, {
    ...ctx.config.sample,
    rng: run.rng,
  });
  run.samples.push(...lines);
  const rate = passRate(lines);
  if (rate) {
    run.metrics.push({ step, ...rate });
    ctx.stats.set(step === 0 ? "passRateBefore" : "passRate", rate.passRate);
    ctx.log(
      `step ${step}: the checker passes ${rate.checked} held-out answers at ${
        (rate.passRate * 100).toFixed(1)
      }%`,
    );
  }
  ctx.log(`step ${step} sample: ${JSON.stringify(lines[0]?.prompt)} → ${JSON.stringify(lines[0]?.response)}`);
}

async function run(ctx: StageContext<SftConfig, "model">) {
  const cfg = ctx.config;
  const { tokenizer, tokenizerFile, initial, template, T } = await chatModel(ctx);
  const { layout } = initial;
  const { train, val, heldOut } = await readData(ctx, template, T);
  const pad = tokenizer.specialTokens["<|endoftext|>"] ?? 0;
  const plan = planSteps(train.length, train, cfg, T);
  const valRows = packRows(val, T, cfg.packing);

  const resumed = await loadTrainCheckpoint<SftState>(ctx.checkpoint, layout);
  const step = resumed?.state.step ?? 0;
  if (resumed) ctx.log(`resuming from the checkpoint at step ${step}`);

  const backend = await openBackend("sft", ctx, cfg);
  ctx.log(
    `fine-tuning ${layout.total.toLocaleString("en")} parameters on ${backend.name} in ${cfg.precision}: ` +
      `${train.length} conversations, ${plan.length} steps over ${cfg.epochs} epochs of ` +
      `${cfg.batch}×${T}×${cfg.gradAccum}`,
  );
  const trainer = await Trainer.create(backend, layout, {
    params: resumed?.params ?? initial.params,
    m: resumed?.m,
    v: resumed?.v,
    step,
    batch: cfg.batch,
    seqLen: T,
    adamw: { beta1: cfg.beta1, beta2: cfg.beta2, eps: cfg.eps, weightDecay: cfg.weightDecay },
    clip: cfg.gradClip,
    masked: true,
    precision: cfg.precision,
  });
  // The held-out batches (response-only loss: token-weighted over all of them, see Trainer.evalLoss).
  const valBatches: PackedBatch[] = [];
  for (let r = 0; r < valRows.length; r += cfg.batch) {
    const b = batchRows(valRows.slice(r, r + cfg.batch), val, cfg.batch, T, pad);
    if (b.tokens > 0) valBatches.push(b);
  }
  try {
    const rng = resumed ? Rng.fromState(resumed.state.rng) : new Rng(cfg.seed ^ 0x5eed);
    const metrics: MetricsLine[] = resumed?.state.metrics ?? [];
    const samples: SampleLine[] = resumed?.state.samples ?? [];
    const run = {
      ctx,
      trainer,
      layout,
      template,
      T,
      pad,
      train,
      plan,
      valBatches,
      heldOut,
      rng,
      metrics,
      samples,
    };
    await trainingLoop(sftLoop(run, step));

    const { params } = await trainer.state();
    await writeModelFiles(ctx, layout, params, specialTokenIds(tokenizer, template.stopIds()));
    await ctx.out.writeText("tokenizer.json", JSON.stringify(tokenizer.toJSON()));
    await ctx.out.writeJson(CHAT_TEMPLATE_FILE, template.toJSON());
    await writeJsonl(ctx, "metrics.jsonl", metrics);
    await writeJsonl(ctx, "samples.jsonl", samples);
    ctx.stats.set("parameters", layout.total);
    ctx.stats.set("backend", backend.name);
    ctx.stats.set("precision", cfg.precision);
    if (tokenizerFile) ctx.stats.set("tokenizer", tokenizerFile);
  } finally {
    trainer.dispose();
  }
}

/** Supervised fine-tuning on demonstrations; see the module doc. */
export const sft = defineStage({
  name: "sft",
  version: 3,
  module: import.meta.url,
  input: "model",
  output: "model",
  schema,
  permissions: (config) => ({ read: localPaths(config.init, config.tokenizer) }),
  description: "Supervised fine-tuning on chat demonstrations: response-only loss, packing, exact resume",
  fingerprint,
  run,
});
