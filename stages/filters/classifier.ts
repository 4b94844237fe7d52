/**
 * GPT-3's quality classifier (Brown et al. 2020, appendix A): logistic regression over hashed word
 * n-gram features, trained to tell a high-quality reference corpus (positives) from the raw crawl
 * (negatives). A crawl document is kept when `pareto(α) > 1 − score` (α = 9 in GPT-3), which keeps
 * mostly high scores but some low ones, or, in threshold mode, when `score ≥ threshold`.
 *
 * As a filter (`classifier: { reference }`), it is trained once, before the shards run, on the
 * reference (text files, split into documents at blank lines, or JSONL document shards: the
 * positives) against a seeded sample of the input (the negatives), and saved as `classifier.json` in
 * the artifact; `classifier: { model }` uses a saved one instead.
 *
 * Written here, not taken from npm: the job needs sparse hashed features and a deterministic, seeded
 * trainer whose model is a small JSON file, which the general ML packages there do not offer together.
 *
 * @example
 * ```ts
 * import { QualityClassifier, trainClassifier } from "./classifier.ts";
 * const { model } = trainClassifier(["A well written sentence about the weather."], ["CLICK HERE $$$"], {});
 * const classifier = new QualityClassifier(model);
 * classifier.score("Another sentence about the weather.");
 * ```
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { ConfigError } from "../../pipeline/errors.ts";
import { expandFiles } from "../../pipeline/files.ts";
import { fmix32, hashWord } from "../hashing.ts";
import { isDocumentShard, readDocuments } from "../documents.ts";
import { mulberry32 } from "../../model/rng.ts";
import { filterModule, optional, type PrepareContext, round } from "./filter.ts";

/** A trained classifier, as saved in `classifier.json`. */
export interface ClassifierModel {
  format: "kiln-quality-classifier/1";
  /** Number of hashed feature buckets (a power of two). */
  features: number;
  /** Word n-grams used: 1 … ngrams. */
  ngrams: number;
  bias: number;
  /** Float32 weights, little-endian, base64. */
  weights: string;
  /** How it was trained and how well it did on held-out documents. */
  training?: Record<string, unknown>;
}

/** Training settings. */
export interface TrainOptions {
  /** log2 of the number of feature buckets (default 18). */
  featureBits?: number;
  ngrams?: number;
  epochs?: number;
  learningRate?: number;
  l2?: number;
  seed?: number;
  /** Fraction of each class held out to measure accuracy and AUC (default 0.1). */
  holdOut?: number;
}

/** A sparse feature vector: bucket indices and their values (L2-normalised log counts). */
export interface Features {
  index: Uint32Array;
  value: Float32Array;
}

const TOKEN = /[\p{L}\p{N}]+/gu;

/** Hashed n-gram features of a text: lower-cased word 1…n-grams, log(1 + count), L2-normalised. */
export function features(text: string, bits: number, ngrams: number): Features {
  const mask = (1 << bits) - 1;
  const words = (text.toLowerCase().match(TOKEN) ?? []).map(hashWord);
  const counts = new Map<number, number>();
  for (let i = 0; i < words.length; i++) {
    let h = 0x3c6ef372;
    for (let n = 0; n < ngrams && i + n < words.length; n++) {
      h = fmix32(Math.imul(h, 0x01000193) ^ words[i + n] ^ n);
      counts.set(h & mask, (counts.get(h & mask) ?? 0) + 1);
    }
  }
  const index = new Uint32Array(counts.size);
  const value = new Float32Array(counts.size);
  let norm = 0, k = 0;
  for (const [i, c] of [...counts].sort((a, b) => a[0] - b[0])) {
    index[k] = i;
    value[k] = Math.log1p(c);
    norm += value[k] * value[k++];
  }
  norm = Math.sqrt(norm) || 1;
  for (let i = 0; i < value.length; i++) value[i] /= norm;
  return { index, value };
}

function sigmoid(z: number): number {
  return 1 / (1 + Math.exp(-z));
}

function shuffle<T>(items: T[], random: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [items[i], items[j]] = [items[j], items[i]];
  }
  return items;
}

/** Area under the ROC curve: the chance a random positive scores above a random negative. */
export function auc(scores: number[], labels: number[]): number {
  const order = scores.map((s, i) => [s, labels[i]]).sort((a, b) => a[0] - b[0]);
  let rankSum = 0, positives = 0;
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j < order.length && order[j][0] === order[i][0]) j++;
    const rank = (i + j + 1) / 2; // average rank of ties, 1-based
    for (let k = i; k < j; k++) {
      if (order[k][1] === 1) {
        rankSum += rank;
        positives++;
      }
    }
    i = j;
  }
  const negatives = order.length - positives;
  return (rankSum - positives * (positives + 1) / 2) / (positives * negatives);
}

/**
 * Trains the classifier with SGD on the logistic loss, classes weighted to count equally, and reports
 * accuracy (at 0.5) and AUC on the held-out documents.
 */
export function trainClassifier(
  positives: string[],
  negatives: string[],
  opts: TrainOptions,
): { model: ClassifierModel; heldOut: { accuracy: number; auc: number; documents: number } } {
  const bits = opts.featureBits ?? 18, ngrams = opts.ngrams ?? 2, epochs = opts.epochs ?? 5;
  const lr0 = opts.learningRate ?? 0.5, l2 = opts.l2 ?? 1e-4, holdOut = opts.holdOut ?? 0.1;
  if (!positives.length || !negatives.length) {
    throw new Error(
      `training needs both classes (${positives.length} positives, ${negatives.length} negatives)`,
    );
  }
  const random = mulberry32(opts.seed ?? 1);
  type Example = { x: Features; y: number; weight: number };
  const split = (texts: string[], y: number) => {
    const examples = shuffle(texts.map((t) => ({ x: features(t, bits, ngrams), y, weight: 0 })), random);
    const held = Math.floor(examples.length * holdOut);
    return { test: examples.slice(0, held), train: examples.slice(held) };
  };
  const pos = split(positives, 1), neg = split(negatives, 0);
  const train: Example[] = [...pos.train, ...neg.train];
  for (const e of pos.train) e.weight = train.length / (2 * pos.train.length);
  for (const e of neg.train) e.weight = train.length / (2 * neg.train.length);

  const w = new Float32Array(1 << bits);
  let bias = 0, step = 0;
  for (let epoch = 0; epoch < epochs; epoch++) {
    for (const e of shuffle(train, random)) {
      const lr = lr0 / (1 + step++ / train.length);
      let z = bias;
      for (let k = 0; k < e.x.index.length; k++) z += w[e.x.index[k]] * e.x.value[k];
      const g = (sigmoid(z) - e.y) * e.weight;
      for (let k = 0; k < e.x.index.length; k++) {
        const i = e.x.index[k];
        w[i] -= lr * (g * e.x.value[k] + l2 * w[i]);
      }
      bias -= lr * g;
    }
  }
  const model: ClassifierModel = {
    format: "kiln-quality-classifier/1",
    features: 1 << bits,
    ngrams,
    bias,
    weights: encodeWeights(w),
  };
  const test = [...pos.test, ...neg.test];
  const classifier = new QualityClassifier(model);
  const scores = test.map((e) => classifier.scoreFeatures(e.x));
  const correct = test.filter((e, i) => (scores[i] >= 0.5 ? 1 : 0) === e.y).length;
  const heldOut = {
    documents: test.length,
    accuracy: test.length ? correct / test.length : NaN,
    auc: pos.test.length && neg.test.length ? auc(scores, test.map((e) => e.y)) : NaN,
  };
  model.training = {
    positives: positives.length,
    negatives: negatives.length,
    epochs,
    held_out: heldOut,
  };
  return { model, heldOut };
}

function encodeWeights(w: Float32Array): string {
  const bytes = new Uint8Array(w.buffer, w.byteOffset, w.byteLength);
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** A loaded classifier: scores documents in [0, 1] (1: like the reference corpus). */
export class QualityClassifier {
  readonly #weights: Float32Array;
  readonly #bits: number;

  constructor(readonly model: ClassifierModel) {
    if (model.format !== "kiln-quality-classifier/1") {
      throw new Error(`not a kiln quality classifier (format ${JSON.stringify(model.format)})`);
    }
    const bytes = Uint8Array.from(atob(model.weights), (c) => c.charCodeAt(0));
    this.#weights = new Float32Array(bytes.buffer);
    this.#bits = Math.log2(model.features);
    if (this.#weights.length !== model.features || !Number.isInteger(this.#bits)) {
      throw new Error(`classifier has ${this.#weights.length} weights for ${model.features} features`);
    }
  }

  scoreFeatures(x: Features): number {
    let z = this.model.bias;
    for (let k = 0; k < x.index.length; k++) z += this.#weights[x.index[k]] * x.value[k];
    return sigmoid(z);
  }

  score(text: string): number {
    return this.scoreFeatures(features(text, this.#bits, this.model.ngrams));
  }
}

/**
 * GPT-3's keep rule: a Lomax (numpy's `pareto`) draw with shape `alpha` exceeds `1 − score`. The
 * uniform draw is a hash of `seed` and the document id, so the decision is the same in any worker.
 */
export function paretoKeep(score: number, id: string, alpha: number, seed: number): boolean {
  const u = (fmix32(hashWord(id) ^ fmix32(seed)) + 0.5) / 4294967296;
  return Math.pow(u, -1 / alpha) - 1 > 1 - score;
}

/** What the classifier filter's step is built from: the saved model and the keep rule. */
export interface ClassifierFilterOptions {
  /** Path of `classifier.json`. */
  model: string;
  mode: "pareto" | "threshold";
  alpha: number;
  threshold: number;
  seed: number;
}

const patterns = (p: string | string[] | undefined) => p === undefined ? [] : Array.isArray(p) ? p : [p];

const classifierSchema = z.strictObject({
  /** Reference corpus (positives): paths or globs of text files or JSONL document shards. */
  reference: z.union([z.string(), z.array(z.string())]).optional(),
  /** A saved `classifier.json` to use instead of training. */
  model: z.string().optional(),
  mode: z.enum(["pareto", "threshold"]).default("pareto"),
  /** Shape of the Pareto draw (GPT-3: 9). */
  alpha: z.number().gt(0).default(9),
  threshold: z.number().min(0).max(1).default(0.5),
  seed: z.number().int().default(1),
  featureBits: z.number().int().min(8).max(24).default(18),
  ngrams: z.number().int().min(1).max(5).default(2),
  epochs: z.number().int().min(1).default(5),
  /** At most this many documents per class are used for training (a seeded sample). */
  maxDocuments: z.number().int().min(10).default(20_000),
}).refine((c) => (c.reference === undefined) !== (c.model === undefined), {
  message: "give either reference (to train) or model (a saved classifier.json)",
});

/** `classifier: { reference }` (train) or `{ model }` (a saved one), and the keep rule; off by default. */
export const classifierModule = filterModule({
  name: "classifier",
  schema: optional(classifierSchema),
  defaults: { mode: "pareto", alpha: 9, threshold: 0.5, seed: 1 } as Partial<ClassifierFilterOptions>,
  files: (c) => c ? [...patterns(c.reference), ...patterns(c.model)] : [],
  prepare: async (c, ctx) => {
    if (!c) return undefined;
    const model = await prepareClassifier(c, ctx);
    return { model, mode: c.mode, alpha: c.alpha, threshold: c.threshold, seed: c.seed };
  },
  build: async (c: ClassifierFilterOptions) => {
    const model = new QualityClassifier(JSON.parse(await Deno.readTextFile(c.model)) as ClassifierModel);
    return {
      name: "classifier",
      apply: (doc) => {
        const score = model.score(doc.text);
        const keep = c.mode === "pareto" ? paretoKeep(score, doc.id, c.alpha, c.seed) : score >= c.threshold;
        return keep ? { doc: { ...doc, meta: { ...doc.meta, quality_score: round(score) } } } : {
          drop: c.mode === "pareto" ? "classifier_pareto" : "classifier_below_threshold",
          meta: { quality_score: round(score) },
        };
      },
    };
  },
});

/** Trains the classifier (or copies the given one) into the artifact; returns its path. */
async function prepareClassifier(c: z.output<typeof classifierSchema>, ctx: PrepareContext): Promise<string> {
  if (await ctx.out.exists("classifier.json")) return ctx.out.path("classifier.json");
  let model: ClassifierModel;
  if (c.model) {
    try {
      model = JSON.parse(await Deno.readTextFile(c.model));
      new QualityClassifier(model);
    } catch (e) {
      throw new ConfigError("quality-filter", ["classifier", "model"], `${c.model}: ${(e as Error).message}`);
    }
  } else {
    const random = mulberry32(c.seed);
    const positives = sampler(c.maxDocuments, random);
    for (const file of await expandFiles(patterns(c.reference))) {
      for await (const text of referenceTexts(file)) positives.add(text);
    }
    const negatives = sampler(c.maxDocuments, random);
    for (const path of ctx.inputs) {
      for await (const { doc } of readDocuments(path)) negatives.add(doc.text);
    }
    const trained = trainClassifier(positives.items, negatives.items, {
      featureBits: c.featureBits,
      ngrams: c.ngrams,
      epochs: c.epochs,
      seed: c.seed,
    });
    model = trained.model;
    ctx.log(
      `classifier trained on ${positives.items.length} reference and ${negatives.items.length} crawl documents; held out: accuracy ${
        trained.heldOut.accuracy.toFixed(3)
      }, AUC ${trained.heldOut.auc.toFixed(3)}`,
    );
  }
  ctx.stats.set("classifier", model.training ?? { model: c.model });
  await ctx.out.writeJson("classifier.json", model);
  return ctx.out.path("classifier.json");
}

/** Reservoir sampling: a seeded, uniform sample of at most `size` items from a stream. */
function sampler(size: number, random: () => number) {
  const items: string[] = [];
  let seen = 0;
  return {
    items,
    add(item: string) {
      seen++;
      if (items.length < size) items.push(item);
      else {
        const j = Math.floor(random() * seen);
        if (j < size) items[j] = item;
      }
    },
  };
}

/** Documents of a reference file: each document of a JSONL shard, or a text file's blank-line-separated chunks of up to ~20,000 characters. */
async function* referenceTexts(file: string): AsyncGenerator<string> {
  if (isDocumentShard(file)) {
    for await (const { doc } of readDocuments(file)) yield doc.text;
    return;
  }
  let chunk = "";
  for (const paragraph of (await Deno.readTextFile(file)).split(/\n\s*\n/)) {
    if (chunk && chunk.length + paragraph.length > 20_000) {
      yield chunk;
      chunk = "";
    }
    chunk += (chunk ? "\n\n" : "") + paragraph.trim();
  }
  if (chunk.trim()) yield chunk;
}
