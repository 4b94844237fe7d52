/**
 * Text generation from a {@linkcode GPT}: greedy, temperature, top-k and top-p sampling for a batch of
 * prompts decoded together, with a key/value cache, on either backend; `beams > 1` hands over to
 * {@linkcode beamSearch} (./beam.ts), which follows Hugging Face's beam search.
 *
 * {@linkcode generateBatch} runs all prompts through the model in one forward (right-padded to the
 * longest: attention is causal, so a row's real tokens never see its padding), then decodes every
 * row together, one token a step, each at its own position (row b's k-th new token sits at position
 * `len_b + k`). Rows end independently, on a stop token or at their token limit.
 *
 * Sampling stays on the device: each step's tokens are drawn by the backend's sampling op and fed
 * straight into the next step's embedding, and the tokens (with their log-probabilities, which PPO
 * needs) are read back in chunks of `chunk` steps, so a GPU is not stalled once per token; generation
 * ends at the first chunk boundary where every row has finished.
 *
 * The cache keeps every position's q/k/v projections per layer, so a new token costs one row of
 * each matmul, and attention is the backend's single-query `attentionDecode` over each row's own
 * cached prefix (one dispatch a layer for all rows, O(prefix·C) per token), which also writes each
 * row's new q/k/v into its cache slot at that row's own position.
 *
 * @example
 * ```ts
 * import { createCpuBackend } from "../kernels/cpu.ts";
 * import { gptConfig } from "./config.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * import { GPT } from "./gpt.ts";
 * import { generate, generateBatch } from "./generate.ts";
 * const layout = paramLayout(gptConfig({ layers: 2, dim: 32, heads: 2, context: 64, vocab: 100 }));
 * const model = new GPT(createCpuBackend(), layout, initParams(layout, 1));
 * const options = { maxTokens: 10, temperature: 0.8, topP: 0.9, seed: 7 };
 * const rows = await generateBatch(model, [[1, 2, 3], [4, 5]], options);
 * console.log(rows[1].ids, rows[1].logprobs, rows[1].finish);
 * const greedy = await generate(model, [1, 2, 3], { maxTokens: 10, temperature: 0, stop: [0] });
 * const beam = await generate(model, [1, 2, 3], { maxTokens: 10, beams: 4, stop: [0], earlyStopping: false });
 * ```
 * @module
 */
import type { Tensor } from "../kernels/backend.ts";
import { KilnError } from "../pipeline/errors.ts";
import type { GPT } from "./gpt.ts";
import type { Rng } from "./rng.ts";
import { beamSearch, type EarlyStopping } from "./beam.ts";

/** Options of {@linkcode generateBatch} and {@linkcode generate}. */
export interface GenerateOptions {
  /** Tokens to generate at most per prompt (fewer when a stop token comes, or the context is full). */
  maxTokens: number;
  /** 0 means greedy (argmax). Default 1. */
  temperature?: number;
  /** Sample among the k most likely tokens only (0: all). */
  topK?: number;
  /** Sample among the most likely tokens covering probability p (1: all). */
  topP?: number;
  /**
   * Beam search with this many beams (Hugging Face's `num_beams`; deterministic, temperature/topK/topP
   * are ignored); see ./beam.ts. Its beams are the batch, so several prompts are searched one after
   * the other.
   */
  beams?: number;
  /** Beam search ranks hypotheses by sum of log-probs / generated length^lengthPenalty. Default 1. */
  lengthPenalty?: number;
  /** When beam search stops (Hugging Face's `early_stopping`: true, false or "never"). Default false. */
  earlyStopping?: EarlyStopping;
  /** A row ends after any of these tokens (it is included in the output). */
  stop?: number[];
  /**
   * Sampling seed. Row b's draws are a function of (seed, b, step) alone, so its sample does not
   * depend on the other rows, and `generate(p)` equals `generateBatch([p])[0]` for the same seed.
   */
  seed?: number;
  /** Or draw the seed from this generator (advancing it), e.g. a training run's saved RNG. */
  rng?: Rng;
  /** Tokens generated between readbacks. Default 16. */
  chunk?: number;
}

/** The generated continuation of one prompt (the prompt excluded). */
export interface Generation {
  ids: number[];
  /** log π(token) of each generated token under the sampling distribution (temperature applied). */
  logprobs: number[];
  /** "stop": it ended with a stop token (the last of `ids`); "length": `maxTokens` or the context. */
  finish: "stop" | "length";
  /** Beam search only: the hypothesis's sum of log-probs / length^lengthPenalty (HF's `sequences_scores`). */
  score?: number;
}

/**
 * The cached forward of `rows` sequences decoded together: a key/value cache per layer, and work
 * buffers big enough for the prefill (every prompt position at once) or a decode step (one
 * position per row).
 */
export class Decoder {
  private readonly owned: Tensor[] = [];
  /** Positions a cache row holds: the longest prompt plus the new tokens, at most the context. */
  readonly span: number;
  /** Per layer `[rows, span, 3C]`: q/k/v of every position so far. */
  readonly cache: Tensor[];
  /** u32 `[rows]`: each row's newest token, the input of the next {@linkcode step}. */
  readonly tokens: Tensor;
  /** `[rows, V]`: each row's next-token logits. */
  readonly logits: Tensor;
  /** Longest prompt: the prefill's row stride. */
  private readonly width: number;
  /** Each row's prompt length: where its first new token goes. */
  private readonly starts: number[];
  private readonly promptTokens: Tensor;
  /** u32 `[steps, rows]`: position of each row's k-th new token, and that plus one (its cache length). */
  private readonly positions: Tensor;
  private readonly lengths: Tensor;
  private readonly x: Tensor;
  private readonly ln: Tensor;
  private readonly mean: Tensor;
  private readonly rstd: Tensor;
  private readonly qkv: Tensor;
  private readonly atty: Tensor;
  private readonly lse: Tensor;
  private readonly fch: Tensor;
  private readonly last: Tensor;

  /**
   * A decoder for `rows` sequences continuing `prompts` by up to `maxTokens` tokens (rows past the
   * prompts continue the first: beam search fills them by copying cache rows).
   */
  constructor(
    readonly model: GPT,
    readonly prompts: number[][],
    maxTokens: number,
    readonly rows = prompts.length,
  ) {
    const { layers: L, dim: C, heads: NH, vocab: V } = model.config;
    const bk = model.backend;
    const alloc = (n: number, dtype: "f32" | "u32" = "f32") => {
      const t = bk.alloc(n, dtype);
      this.owned.push(t);
      return t;
    };
    this.width = Math.max(...prompts.map((p) => p.length));
    const T = this.span = Math.min(model.config.context, this.width + maxTokens);
    const n = Math.max(prompts.length * this.width, rows);
    this.cache = Array.from({ length: L }, () => alloc(rows * T * 3 * C));
    this.tokens = alloc(rows, "u32");
    this.logits = alloc(rows * V);
    this.promptTokens = alloc(prompts.length * this.width, "u32");
    this.x = alloc(n * C);
    this.ln = alloc(n * C);
    this.mean = alloc(n);
    this.rstd = alloc(n);
    this.qkv = alloc(n * 3 * C);
    this.atty = alloc(n * C);
    this.lse = alloc(n * NH);
    this.fch = alloc(n * 4 * C);
    this.last = alloc(rows * C);
    this.starts = Array.from({ length: rows }, (_, r) => (prompts[r] ?? prompts[0]).length);
    // Every step's positions go up once, so a step records no upload (on WebGPU, no submit).
    const steps = T - Math.min(...this.starts);
    const positions = new Uint32Array(steps * rows);
    for (let k = 0; k < steps; k++) {
      for (let r = 0; r < rows; r++) positions[k * rows + r] = this.position(r, k);
    }
    this.positions = alloc(steps * rows, "u32");
    this.lengths = alloc(steps * rows, "u32");
    bk.upload(this.positions, positions);
    bk.upload(this.lengths, positions.map((p) => p + 1));
  }

  /**
   * Runs the prompts through the model in one forward, right-padded to the longest: fills the cache
   * rows and the logits of each prompt's last position.
   */
  prefill(): void {
    const { backend: bk, p } = this.model;
    const { dim: C, heads: NH } = this.model.config;
    const T = this.span, P = this.prompts.length, W = this.width;
    const padded = new Uint32Array(P * W);
    this.prompts.forEach((prompt, r) => padded.set(prompt, r * W));
    bk.upload(this.promptTokens, padded);
    bk.encoderForward(this.x, this.promptTokens, p.wte, p.wpe, { B: P, T: W, C });
    this.blocks(P * W, (cache) => {
      bk.attentionForward(this.atty, this.lse, this.qkv, { B: P, T: W, C, NH });
      this.prompts.forEach((prompt, r) => {
        const n = prompt.length * 3 * C;
        bk.copy(bk.view(cache, r * T * 3 * C, n), bk.view(this.qkv, r * W * 3 * C, n));
      });
    });
    this.prompts.forEach((prompt, r) => {
      bk.copy(bk.view(this.last, r * C, C), bk.view(this.x, (r * W + prompt.length - 1) * C, C));
    });
    this.head(this.last, P);
  }

  /**
   * Where row r's k-th new token (k from 0) goes. A row past its last position (finished, its
   * output ignored) keeps rewriting the last slot.
   */
  private position(r: number, k: number): number {
    return Math.min(this.starts[r] + k, this.span - 1);
  }

  /** Feeds `tokens` as every row's k-th new token (k from 0): extends the cache, writes the logits. */
  step(k: number): void {
    const { backend: bk, p } = this.model;
    const { dim: C, heads: NH } = this.model.config;
    const T = this.span, R = this.rows;
    const positions = bk.view(this.positions, k * R, R);
    bk.encoderForward(this.x, this.tokens, p.wte, p.wpe, { B: R, T: 1, C, positions });
    const longest = Math.min(this.width + k + 1, T);
    this.blocks(R, (cache) => {
      // attentionDecode writes each row's new q/k/v into the cache at its own position first.
      bk.attentionDecode(this.atty, cache, {
        B: R,
        C,
        NH,
        T: longest,
        Tmax: T,
        lengths: bk.view(this.lengths, k * R, R),
        append: bk.view(this.qkv, 0, R * 3 * C),
      });
    });
    this.head(this.x, R);
  }

  /**
   * The transformer blocks over `m` positions of the residual stream `x`; `attend(cache)` reads
   * `qkv`, stores it in the layer's cache and writes `atty`.
   */
  private blocks(m: number, attend: (cache: Tensor) => void): void {
    const { backend: bk, p } = this.model;
    const C = this.model.config.dim;
    for (let l = 0; l < this.model.config.layers; l++) {
      const w = p.layers[l];
      bk.layernormForward(this.ln, this.mean, this.rstd, this.x, w.ln1w, w.ln1b, { rows: m, C });
      bk.matmul(this.qkv, this.ln, w.qkvw, { m, n: 3 * C, k: C, bias: w.qkvb });
      attend(this.cache[l]);
      bk.matmul(this.x, this.atty, w.attprojw, { m, n: C, k: C, bias: w.attprojb, accumulate: true });
      bk.layernormForward(this.ln, this.mean, this.rstd, this.x, w.ln2w, w.ln2b, { rows: m, C });
      bk.matmul(this.fch, this.ln, w.fcw, { m, n: 4 * C, k: C, bias: w.fcb });
      const live = bk.view(this.fch, 0, m * 4 * C); // the m rows in use, not the prefill-sized buffer
      bk.geluForward(live, live);
      bk.matmul(this.x, this.fch, w.fcprojw, { m, n: C, k: 4 * C, bias: w.fcprojb, accumulate: true });
    }
  }

  /** Final LayerNorm and the tied LM head over `rows` positions of `x`, into `logits`. */
  private head(x: Tensor, rows: number): void {
    const { backend: bk, p } = this.model;
    const { dim: C, vocab: V } = this.model.config;
    bk.layernormForward(this.ln, this.mean, this.rstd, x, p.lnfw, p.lnfb, { rows, C });
    bk.matmul(this.logits, this.ln, p.wte, { m: rows, n: V, k: C, transB: true });
  }

  /** Row r's cache (positions 0..pos) becomes old row `order[r]`'s, in every layer (beam reordering). */
  copyRows(order: number[], pos: number, scratch: Tensor[]): void {
    const bk = this.model.backend;
    const C = this.model.config.dim, T = this.span;
    const n = (pos + 1) * 3 * C;
    for (let l = 0; l < this.cache.length; l++) {
      for (let r = 0; r < this.rows; r++) {
        bk.copy(bk.view(scratch[l], r * n, n), bk.view(this.cache[l], order[r] * T * 3 * C, n));
      }
      for (let r = 0; r < this.rows; r++) {
        bk.copy(bk.view(this.cache[l], r * T * 3 * C, n), bk.view(scratch[l], r * n, n));
      }
    }
  }

  free(): void {
    for (const t of this.owned) this.model.backend.free(t);
  }
}

/** Throws a {@linkcode KilnError} naming the first prompt or option that cannot be generated from. */
export function checkInputs(model: GPT, prompts: number[][], o: GenerateOptions): void {
  const { vocab, context } = model.config;
  prompts.forEach((prompt, i) => {
    const which = prompts.length > 1 ? `prompt ${i}` : "the prompt";
    if (prompt.length === 0) throw new KilnError(`generate: ${which} is empty (it needs at least one token)`);
    if (prompt.length >= context) {
      throw new KilnError(
        `generate: ${which} has ${prompt.length} tokens, but the model's context is ${context} ` +
          `(a prompt must leave room for at least one new token)`,
      );
    }
    const bad = prompt.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
    if (bad !== undefined) {
      throw new KilnError(`generate: ${which} has token id ${bad}, outside the vocabulary of ${vocab}`);
    }
  });
  const check = (ok: boolean, what: string) => {
    if (!ok) throw new KilnError(`generate: ${what}`);
  };
  const isCount = (n: number | undefined, min: number) =>
    n === undefined || (Number.isInteger(n) && n >= min);
  check(isCount(o.maxTokens, 0), `maxTokens must be an integer ≥ 0, got ${o.maxTokens}`);
  check(o.temperature === undefined || o.temperature >= 0, `temperature must be ≥ 0, got ${o.temperature}`);
  check(isCount(o.topK, 0), `topK must be an integer ≥ 0, got ${o.topK}`);
  check(o.topP === undefined || (o.topP > 0 && o.topP <= 1), `topP must be in (0, 1], got ${o.topP}`);
  check(isCount(o.beams, 1), `beams must be an integer ≥ 1, got ${o.beams}`);
  check(
    o.lengthPenalty === undefined || Number.isFinite(o.lengthPenalty),
    `lengthPenalty must be a finite number, got ${o.lengthPenalty}`,
  );
  check(
    o.earlyStopping === undefined || typeof o.earlyStopping === "boolean" || o.earlyStopping === "never",
    `earlyStopping must be true, false or "never", got ${JSON.stringify(o.earlyStopping)}`,
  );
  check(isCount(o.chunk, 1), `chunk must be an integer ≥ 1, got ${o.chunk}`);
}

/**
 * Generates a continuation of each prompt (token ids), all rows decoded together; see
 * {@linkcode GenerateOptions}. Row b of the result continues `prompts[b]`.
 */
export async function generateBatch(
  model: GPT,
  prompts: number[][],
  options: GenerateOptions,
): Promise<Generation[]> {
  checkInputs(model, prompts, options);
  if ((options.beams ?? 1) > 1) {
    const out: Generation[] = [];
    for (const prompt of prompts) {
      out.push(await beamSearch(model, prompt, { ...options, beams: options.beams! }));
    }
    return out;
  }
  const bk = model.backend;
  const { vocab: V, context } = model.config;
  const R = prompts.length;
  const limits = prompts.map((p) => Math.min(options.maxTokens, context - p.length));
  const seed = options.seed ?? options.rng?.nextU32() ?? 0;
  const steps = Math.max(0, ...limits);
  if (steps === 0) return prompts.map(() => ({ ids: [], logprobs: [], finish: "length" }));
  const temperature = options.temperature ?? 1;
  const chunk = options.chunk ?? 16;
  const stop = new Set(options.stop ?? []);
  const out: Generation[] = prompts.map(() => ({ ids: [], logprobs: [], finish: "length" }));
  const done = prompts.map(() => false);
  const decoder = new Decoder(model, prompts, steps);
  const history = bk.alloc(Math.min(chunk, steps) * R, "u32");
  const logps = bk.alloc(Math.min(chunk, steps) * R);
  try {
    decoder.prefill();
    for (let start = 0; start < steps && !done.every(Boolean); start += chunk) {
      const n = Math.min(chunk, steps - start);
      for (let i = 0; i < n; i++) {
        const step = start + i;
        if (step > 0) decoder.step(step - 1);
        if (temperature === 0) bk.argmax(decoder.tokens, decoder.logits, { rows: R, V });
        else {
          const { topK, topP } = options;
          bk.sample(decoder.tokens, decoder.logits, { rows: R, V, temperature, topK, topP, seed, step });
        }
        bk.logSoftmaxGather(bk.view(logps, i * R, R), decoder.logits, decoder.tokens, {
          rows: R,
          V,
          temperature: temperature === 0 ? 1 : temperature,
        });
        bk.copy(bk.view(history, i * R, R), decoder.tokens);
      }
      const [ids, lp] = await bk.download(bk.view(history, 0, n * R), bk.view(logps, 0, n * R));
      for (let r = 0; r < R; r++) {
        for (let i = 0; i < n && !done[r]; i++) {
          const row = out[r], token = ids[i * R + r];
          row.ids.push(token);
          row.logprobs.push(lp[i * R + r]);
          if (stop.has(token)) row.finish = "stop";
          done[r] = row.finish === "stop" || row.ids.length === limits[r];
        }
      }
    }
    return out;
  } finally {
    decoder.free();
    bk.free(history);
    bk.free(logps);
  }
}

/**
 * Generates a continuation of `prompt` (token ids); see {@linkcode GenerateOptions}. The same as
 * {@linkcode generateBatch} with one prompt.
 */
export async function generate(model: GPT, prompt: number[], options: GenerateOptions): Promise<Generation> {
  const [row] = await generateBatch(model, [prompt], options);
  return row;
}
