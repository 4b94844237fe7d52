/**
 * Stage `evaluate` (model → evaluation): measures a model the way GPT-2/GPT-3-style work reports it,
 * cached and resumable like any stage.
 *
 * - `perplexity`: perplexity, loss and bits per byte on held-out JSONL documents or llm.c token
 *   shards (`./evaluate/perplexity.ts`);
 * - `multipleChoice`: accuracy on HellaSwag-format JSONL (`{ctx, endings, label}`), scored as llm.c
 *   does: `accuracyNorm` by the mean log-likelihood per ending token (`acc_norm`), `accuracy` by the
 *   sum (`./evaluate/multiple_choice.ts`);
 * - `tasks`: the checker's pass rate on checkable prompts, answered greedily (`./evaluate/tasks.ts`).
 *
 * It evaluates the input model and, in the same way, every model directory the input artifact keeps
 * under `checkpoints/<name>/` and every directory in `checkpoints` (checkpoints of one run, e.g.
 * `step-00000500/`): one `metrics.jsonl` line per model, by training step, which the HTML
 * report draws as curves beside the training curves. A model's step is the `step` of its
 * `checkpoints` entry, else the number in a `step-N`/`checkpoint-N` directory name, else (for the
 * input) its `steps` stat; if any model has none, models are numbered in order instead.
 *
 * The artifact (kind `evaluation`):
 * - `evaluation.json`: `{models: [{label, dir, step, perplexity?, multipleChoice?, tasks?}]}`;
 * - `metrics.jsonl`: `{step, loss?, perplexity?, bitsPerByte?, accuracy?, accuracyNorm?, passRate?}` a model;
 * - `details/<label>/multiple_choice.jsonl` (each question's prediction and ending losses) and
 *   `details/<label>/answers.jsonl` (each task answer, graded).
 * The stats hold the input model's figures. Each model is a checkpointed unit: an interrupted
 * evaluation resumes at the next model. Wall-clock figures (tokens per second) go to the log only,
 * so the artifact is byte-identical on every run of the CPU backend.
 *
 * @example
 * ```ts
 * import { evaluate } from "./evaluate.ts";
 * evaluate({
 *   perplexity: { documents: ["data/heldout/*.jsonl"], maxTokens: 200_000 },
 *   multipleChoice: { data: "data/hellaswag_val.jsonl", limit: 1000 },
 *   tasks: { prompts: "data/prompts.jsonl" },
 *   checkpoints: [{ path: "runs/a/step-1000", step: 1000 }],
 * });
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { basename, join } from "node:path";
import { z } from "npm:zod@^4.6.7";
import { backendOption, positiveInt } from "../model/train_options.ts";
import { defineStage, localPaths, type StageContext } from "../pipeline/stage.ts";
import { InterruptedError, StageError } from "../pipeline/errors.ts";
import { expandFiles, fingerprintFiles } from "../pipeline/files.ts";
import { createBackend } from "../kernels/device.ts";
import type { Backend } from "../kernels/backend.ts";
import { loadModelDir } from "../model/checkpoint.ts";
import { GPT } from "../model/gpt.ts";
import { loadTokenizer, type Tokenizer } from "../tokenizer/mod.ts";
import { TASK_KINDS } from "../chat/task.ts";
import { loadChatTemplate } from "../chat/template.ts";
import { documentStream, perplexity, type PerplexityResult, shardStream } from "./evaluate/perplexity.ts";
import {
  type ChoiceExample,
  type ChoiceResult,
  multipleChoice,
  readMultipleChoice,
} from "./evaluate/multiple_choice.ts";
import { passRate, type PassRateResult, taskPrompts } from "./evaluate/tasks.ts";

const files = z.array(z.string().min(1)).min(1);

const schema = z.object({
  /** Further model directories to evaluate the same way (checkpoints of one run): a path, or `{path, step}`. */
  checkpoints: z.array(
    z.union([
      z.string().min(1),
      z.object({ path: z.string().min(1), step: z.number().int().min(0) }).strict(),
    ]),
  ).default([]),
  /** Perplexity and bits per byte on held-out text. */
  perplexity: z.object({
    /** JSONL document shards (paths or globs). */
    documents: files.optional(),
    /** llm.c token shards (`.bin`; paths or globs), already tokenised with the model's tokenizer. */
    tokens: files.optional(),
    /** Tokens evaluated at most (the text is cut there). */
    maxTokens: positiveInt.default(1_000_000),
    /** Window length (default: the model's context). */
    seqLen: positiveInt.optional(),
    /** Windows per forward. */
    batch: positiveInt.default(4),
  }).strict().refine((p) => p.documents || p.tokens, "set documents or tokens").optional(),
  /** Multiple-choice accuracy on HellaSwag-format JSONL. */
  multipleChoice: z.object({
    data: z.string().min(1),
    /** Questions evaluated at most (the first ones). */
    limit: positiveInt.optional(),
    /** Candidates per forward. */
    batch: positiveInt.default(8),
  }).strict().optional(),
  /** The checker's pass rate on checkable prompts (a file, or kiln's task generator). */
  tasks: z.object({
    prompts: z.string().min(1).optional(),
    generate: z.object({
      count: positiveInt.default(64),
      seed: z.number().int().min(0).default(1),
      kinds: z.array(z.enum(TASK_KINDS)).min(1).optional(),
    }).strict().optional(),
    /** Answer tokens at most. */
    maxTokens: positiveInt.default(32),
    /** Prompts decoded together. */
    batch: positiveInt.default(16),
  }).strict().refine((t) => !(t.prompts && t.generate), "set prompts or generate, not both").optional(),
  /** Tokenizer name or file; default: each model's `tokenizer.json`. */
  tokenizer: z.string().min(1).optional(),
  backend: backendOption,
}).strict().refine(
  (c) => c.perplexity || c.multipleChoice || c.tasks,
  "nothing to evaluate: set perplexity, multipleChoice or tasks",
);

/** The config of {@linkcode evaluate}. */
export type EvaluateConfig = z.output<typeof schema>;

/** The figures of one model (an entry of `evaluation.json`). */
export interface ModelEvaluation {
  label: string;
  dir: string;
  step: number;
  perplexity?: PerplexityResult & { documents: number; truncated: boolean };
  multipleChoice?: Omit<ChoiceResult, "scores">;
  tasks?: Omit<PassRateResult, "answers"> & { prompts: number; skippedTooLong: number };
}

interface ModelRef {
  label: string;
  dir: string;
  step?: number;
}

/** The input model, then the checkpoints, each with a unique label and its step when known. */
function modelRefs(
  ctx: StageContext<EvaluateConfig, "model">,
): { label: string; dir: string; step: number }[] {
  const stepOf = (dir: string) =>
    /(?:step|checkpoint)[-_]?(\d+)$/.exec(basename(dir.replace(/\/+$/, "")))?.[1];
  // Checkpoints kept inside the input artifact (`checkpoints/<dir>/config.json`), then the configured ones.
  const kept = ctx.input.files("/config.json").filter((f) => /^checkpoints\/[^/]+\/config\.json$/.test(f))
    .map((f) => join(ctx.input.dir, f.slice(0, -"/config.json".length)));
  const refs: ModelRef[] = [...kept, ...ctx.config.checkpoints].map((c) => {
    const path = typeof c === "string" ? c : c.path;
    const named = stepOf(path);
    return {
      label: basename(path.replace(/\/+$/, "")) || "checkpoint",
      dir: path,
      step: typeof c === "string" ? (named === undefined ? undefined : Number(named)) : c.step,
    };
  });
  const steps = ctx.input.stats.steps;
  refs.push({ label: "model", dir: ctx.input.dir, step: typeof steps === "number" ? steps : undefined });
  const labels = new Set<string>();
  for (const ref of refs) {
    let label = ref.label.replace(/[^A-Za-z0-9._-]/g, "_");
    for (let n = 2; labels.has(label); n++) label = `${ref.label}-${n}`;
    labels.add(label);
    ref.label = label;
  }
  // By step when every model has one (the input last on ties), else in the order given.
  if (refs.every((r) => r.step !== undefined)) {
    return refs.map((r, i) => ({ ...r, i })).sort((a, b) => a.step! - b.step! || a.i - b.i)
      .map(({ label, dir, step }) => ({ label, dir, step: step! }));
  }
  return refs.map((r, i) => ({ label: r.label, dir: r.dir, step: i }));
}

/** Evaluates the input model (and `checkpoints`); see the module doc. */
export const evaluate = defineStage({
  name: "evaluate",
  version: 1,
  module: import.meta.url,
  input: "model",
  output: "evaluation",
  schema,
  permissions: (c) => ({
    read: localPaths(
      c.checkpoints.map((x) => (typeof x === "string" ? x : x.path)),
      c.perplexity?.documents,
      c.perplexity?.tokens,
      c.multipleChoice?.data,
      c.tasks?.prompts,
      c.tokenizer?.includes("/") ? c.tokenizer : undefined,
    ),
  }),
  fingerprint: async (c) => {
    const dirs = c.checkpoints.map((x) => (typeof x === "string" ? x : x.path));
    return await fingerprintFiles([
      ...dirs.flatMap((d) => [`${d}/model.safetensors`, `${d}/config.json`]),
      ...(c.perplexity?.documents ?? []),
      ...(c.perplexity?.tokens ?? []),
      ...(c.multipleChoice ? [c.multipleChoice.data] : []),
      ...(c.tasks?.prompts ? [c.tasks.prompts] : []),
      ...(c.tokenizer?.includes("/") ? [c.tokenizer] : []),
    ]);
  },
  description: "Perplexity, bits per byte, HellaSwag-style accuracy and checker pass rate, per checkpoint",
  async run(ctx) {
    const cfg = ctx.config;
    const refs = modelRefs(ctx);
    const backend = await createBackend({ backend: cfg.backend, log: (line) => ctx.log(line) });
    const data = new EvaluationData(cfg);
    const results: ModelEvaluation[] = [];
    for (const [i, ref] of refs.entries()) {
      const unit = `model:${ref.label}`;
      let result = await ctx.checkpoint.doneInfo<ModelEvaluation>(unit);
      if (!result) {
        result = await evaluateModel(ctx, backend, data, ref);
        await ctx.checkpoint.markDone(unit, result);
      }
      results.push(result);
      ctx.progress({ done: i + 1, total: refs.length, unit: "models" });
      if (ctx.signal.aborted && i + 1 < refs.length) {
        throw new InterruptedError(
          `stage "evaluate": interrupted after ${i + 1} of ${refs.length} models; run again to resume`,
        );
      }
    }
    await ctx.out.writeJson("evaluation.json", { models: results });
    await ctx.out.writeText(
      "metrics.jsonl",
      results.map((r) => JSON.stringify(metricsLine(r))).join("\n") + "\n",
    );
    const last = results.find((r) => r.dir === ctx.input.dir)!;
    for (const [name, value] of Object.entries(metricsLine(last))) {
      if (name !== "step") ctx.stats.set(name, value);
    }
    ctx.stats.set("models", results.length);
  },
});

/** A model's figures as one `metrics.jsonl` line (what the report plots against `step`). */
function metricsLine(r: ModelEvaluation): Record<string, number> {
  const line: Record<string, number> = { step: r.step };
  if (r.perplexity) {
    line.loss = r.perplexity.loss;
    line.perplexity = r.perplexity.perplexity;
    if (r.perplexity.bitsPerByte !== undefined) line.bitsPerByte = r.perplexity.bitsPerByte;
  }
  if (r.multipleChoice) {
    line.accuracy = r.multipleChoice.accuracy;
    line.accuracyNorm = r.multipleChoice.accuracyNorm;
  }
  if (r.tasks?.passRate !== undefined) line.passRate = r.tasks.passRate;
  return line;
}

/** The evaluation data, read once and tokenised once per tokenizer (models of one run share it). */
class EvaluationData {
  private readonly streams = new Map<string, Awaited<ReturnType<typeof documentStream>>>();
  private choices?: ChoiceExample[];

  constructor(readonly cfg: EvaluateConfig) {}

  async stream(tokenizer: Tokenizer | undefined, key: string) {
    const p = this.cfg.perplexity!;
    const cached = this.streams.get(key);
    if (cached) return cached;
    let stream;
    if (p.documents) {
      if (!tokenizer) throw new StageError("evaluate", `perplexity.documents needs a tokenizer`);
      stream = await documentStream(await expandFiles(p.documents), tokenizer, { maxTokens: p.maxTokens });
    } else {
      stream = await shardStream(await expandFiles(p.tokens!), { maxTokens: p.maxTokens });
    }
    this.streams.set(key, stream);
    return stream;
  }

  async multipleChoice(): Promise<ChoiceExample[]> {
    const m = this.cfg.multipleChoice!;
    return this.choices ??= await readMultipleChoice(m.data, m.limit);
  }
}

/** A model directory's tokenizer: the `tokenizer` option, else its own `tokenizer.json`. */
async function modelTokenizer(
  cfg: EvaluateConfig,
  dir: string,
): Promise<{ tokenizer?: Tokenizer; key: string }> {
  const source = cfg.tokenizer ?? `${dir}/tokenizer.json`;
  try {
    const bytes = cfg.tokenizer && !cfg.tokenizer.includes("/")
      ? new TextEncoder().encode(source)
      : await Deno.readFile(source);
    return { tokenizer: await loadTokenizer(source), key: createHash("sha256").update(bytes).digest("hex") };
  } catch (e) {
    if (e instanceof Deno.errors.NotFound && !cfg.tokenizer) return { key: "none" };
    throw e;
  }
}

async function evaluateModel(
  ctx: StageContext<EvaluateConfig, "model">,
  backend: Backend,
  data: EvaluationData,
  ref: { label: string; dir: string; step: number },
): Promise<ModelEvaluation> {
  const cfg = ctx.config;
  const { layout, params } = await loadModelDir(ref.dir);
  const { tokenizer, key } = await modelTokenizer(cfg, ref.dir);
  if (tokenizer && tokenizer.vocabSize > layout.config.vocab) {
    throw new StageError(
      "evaluate",
      `the tokenizer has ${tokenizer.vocabSize} ids, more than the vocabulary of the model ` +
        `in ${ref.dir} (${layout.config.vocab}); set the "tokenizer" option to the one it was trained with`,
    );
  }
  const needTokenizer = (what: string) => {
    if (!tokenizer) {
      throw new StageError(
        "evaluate",
        `${what} needs a tokenizer: ${ref.dir} has no tokenizer.json; set "tokenizer"`,
      );
    }
    return tokenizer;
  };
  const model = new GPT(backend, layout, params);
  const result: ModelEvaluation = { label: ref.label, dir: ref.dir, step: ref.step };
  const timed = async <T>(what: string, units: string, count: (r: T) => number, work: () => Promise<T>) => {
    const start = performance.now();
    const r = await work();
    const seconds = (performance.now() - start) / 1000;
    ctx.log(
      `${ref.label}: ${what}: ${count(r)} ${units} in ${seconds.toFixed(1)} s (${
        (count(r) / seconds).toFixed(0)
      } ${units}/s)`,
    );
    return r;
  };
  try {
    if (cfg.perplexity) {
      const p = cfg.perplexity;
      const stream = await data.stream(tokenizer, key);
      const seqLen = Math.min(p.seqLen ?? layout.config.context, layout.config.context);
      const r = await timed(
        "perplexity",
        "tokens",
        (r: PerplexityResult) => r.tokens,
        () => perplexity(model, stream.tokens, { seqLen, batch: p.batch, tokenizer }),
      );
      result.perplexity = { ...r, documents: stream.documents, truncated: stream.truncated };
    }
    if (cfg.multipleChoice) {
      const m = cfg.multipleChoice;
      const examples = await data.multipleChoice();
      const r = await timed(
        "multiple choice",
        "questions",
        (r: ChoiceResult) => r.examples,
        () =>
          multipleChoice(model, needTokenizer("multipleChoice"), examples, { batch: m.batch, file: m.data }),
      );
      const { scores, ...figures } = r;
      await ctx.out.writeText(
        `details/${ref.label}/multiple_choice.jsonl`,
        scores.map((s) => JSON.stringify(s)).join("\n") + "\n",
      );
      result.multipleChoice = figures;
    }
    if (cfg.tasks) {
      const t = cfg.tasks;
      const template = await loadChatTemplate(ref.dir, needTokenizer("tasks"));
      const maxPrompt = layout.config.context - t.maxTokens;
      if (maxPrompt < 1) {
        throw new StageError(
          "evaluate",
          `tasks.maxTokens ${t.maxTokens} leaves no room for a prompt in the context of ${layout.config.context}`,
        );
      }
      const { prompts, skippedTooLong } = await taskPrompts(t, template, { maxTokens: maxPrompt });
      const r = await timed(
        "tasks",
        "answers",
        (r: PassRateResult) => r.answers.length,
        () => passRate(model, template, prompts, { maxTokens: t.maxTokens, batch: t.batch }),
      );
      const { answers, ...figures } = r;
      await ctx.out.writeText(
        `details/${ref.label}/answers.jsonl`,
        answers.map((a) => JSON.stringify(a)).join("\n") + "\n",
      );
      result.tasks = { ...figures, prompts: prompts.length, skippedTooLong };
    }
  } finally {
    model.dispose();
  }
  return result;
}
