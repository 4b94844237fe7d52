/**
 * Text generation from a {@linkcode GPT}: greedy, temperature, top-k and top-p sampling, and beam
 * search, with a key/value cache, on either backend.
 *
 * Sampling stays on the device: each step's token is drawn by the backend's sampling op and fed
 * straight into the next step's embedding, and the tokens (with their log-probabilities, which PPO
 * needs) are read back in chunks of `chunk` steps, so a GPU is not stalled once per token. Beam
 * search reads the log-probabilities back every step (it must rank every beam's continuations).
 *
 * The cache keeps every position's q/k/v projections per layer, so a new token costs one row of
 * each matmul, and attention is the backend's single-query `attentionDecode` over the cache (one
 * dispatch a layer for all rows, O(prefix·C) per token).
 *
 * @example
 * ```ts
 * import { createCpuBackend } from "../kernels/cpu.ts";
 * import { gptConfig } from "./config.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * import { GPT } from "./gpt.ts";
 * import { generate } from "./generate.ts";
 * const layout = paramLayout(gptConfig({ layers: 2, dim: 32, heads: 2, context: 64, vocab: 100 }));
 * const model = new GPT(createCpuBackend(), layout, initParams(layout, 1));
 * const { ids, logprobs } = await generate(model, [1, 2, 3], { maxTokens: 10, temperature: 0.8, topK: 20, seed: 7 });
 * const greedy = await generate(model, [1, 2, 3], { maxTokens: 10, temperature: 0 });
 * const beam = await generate(model, [1, 2, 3], { maxTokens: 10, beams: 4 });
 * ```
 * @module
 */
import type { Backend, Tensor } from "../kernels/backend.ts";
import type { GPT } from "./gpt.ts";
import type { Rng } from "./rng.ts";

/** Options of {@linkcode generate}. */
export interface GenerateOptions {
  /** Tokens to generate at most (fewer when a stop token comes, or the context is full). */
  maxTokens: number;
  /** 0 means greedy (argmax). Default 1. */
  temperature?: number;
  /** Sample among the k most likely tokens only (0: all). */
  topK?: number;
  /** Sample among the most likely tokens covering probability p (1: all). */
  topP?: number;
  /** Beam search with this many beams (deterministic; temperature/topK/topP are ignored). */
  beams?: number;
  /** Beam search ranks finished hypotheses by log-probability / length^lengthPenalty. Default 1. */
  lengthPenalty?: number;
  /** Generation ends after any of these tokens (it is included in the output). */
  stop?: number[];
  /** Sampling seed. */
  seed?: number;
  /** Or draw the seed from this generator (advancing it), e.g. a training run's saved RNG. */
  rng?: Rng;
  /** Tokens generated between readbacks. Default 16. */
  chunk?: number;
}

/** The generated continuation (prompt excluded). */
export interface Generation {
  ids: number[];
  /** log π(token) of each generated token under the sampling distribution (temperature applied). */
  logprobs: number[];
}

/** A key/value cache and one-position activation buffers for `rows` sequences decoded together. */
class Decoder {
  private readonly owned: Tensor[] = [];
  /** Per layer `[rows, context, 3C]`: q/k/v of every position so far. */
  readonly cache: Tensor[];
  readonly tokens: Tensor;
  readonly logits: Tensor;
  private readonly x: Tensor;
  private readonly ln: Tensor;
  private readonly mean: Tensor;
  private readonly rstd: Tensor;
  private readonly qkv: Tensor;
  private readonly atty: Tensor;
  private readonly fch: Tensor;

  constructor(readonly model: GPT, readonly rows: number) {
    const { layers: L, dim: C, context: T, vocab: V } = model.config;
    const alloc = (n: number, dtype: "f32" | "u32" = "f32") => {
      const t = model.backend.alloc(n, dtype);
      this.owned.push(t);
      return t;
    };
    this.cache = Array.from({ length: L }, () => alloc(rows * T * 3 * C));
    this.tokens = alloc(rows, "u32");
    this.logits = alloc(rows * V);
    this.x = alloc(rows * C);
    this.ln = alloc(rows * C);
    this.mean = alloc(rows);
    this.rstd = alloc(rows);
    this.qkv = alloc(rows * 3 * C);
    this.atty = alloc(rows * C);
    this.fch = alloc(rows * 4 * C);
  }

  /** Records one position `pos` for every row: embeds `this.tokens`, extends the cache, writes logits. */
  step(pos: number): void {
    const { backend: bk, p } = this.model;
    const { dim: C, heads: NH, context: T, vocab: V } = this.model.config;
    const R = this.rows;
    const rowC = { rows: R, C };
    // The embedding op adds wpe[t] for t < T: a view starting at row `pos` gives wpe[pos].
    bk.encoderForward(this.x, this.tokens, p.wte, bk.view(p.wpe, pos * C, C), { B: R, T: 1, C });
    for (let l = 0; l < this.model.config.layers; l++) {
      const w = p.layers[l];
      bk.layernormForward(this.ln, this.mean, this.rstd, this.x, w.ln1w, w.ln1b, rowC);
      bk.matmul(this.qkv, this.ln, w.qkvw, { m: R, n: 3 * C, k: C, bias: w.qkvb });
      for (let r = 0; r < R; r++) {
        bk.copy(bk.view(this.cache[l], (r * T + pos) * 3 * C, 3 * C), bk.view(this.qkv, r * 3 * C, 3 * C));
      }
      bk.attentionDecode(this.atty, this.cache[l], { B: R, C, NH, T: pos + 1, Tmax: T });
      bk.matmul(this.x, this.atty, w.attprojw, { m: R, n: C, k: C, bias: w.attprojb, accumulate: true });
      bk.layernormForward(this.ln, this.mean, this.rstd, this.x, w.ln2w, w.ln2b, rowC);
      bk.matmul(this.fch, this.ln, w.fcw, { m: R, n: 4 * C, k: C, bias: w.fcb });
      bk.geluForward(this.fch, this.fch);
      bk.matmul(this.x, this.fch, w.fcprojw, { m: R, n: C, k: 4 * C, bias: w.fcprojb, accumulate: true });
    }
    bk.layernormForward(this.ln, this.mean, this.rstd, this.x, p.lnfw, p.lnfb, rowC);
    bk.matmul(this.logits, this.ln, p.wte, { m: R, n: V, k: C, transB: true });
  }

  /** Row r's cache (positions 0..pos) becomes old row `order[r]`'s, in every layer (beam reordering). */
  copyRows(order: number[], pos: number, scratch: Tensor[]): void {
    const bk = this.model.backend;
    const { dim: C, context: T } = this.model.config;
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

function checkPrompt(model: GPT, prompt: number[]): void {
  if (prompt.length === 0) throw new Error("generate: the prompt must hold at least one token");
  const { vocab, context } = model.config;
  if (prompt.length >= context) {
    throw new Error(`generate: the prompt fills the whole context (${context} tokens)`);
  }
  const bad = prompt.find((t) => !Number.isInteger(t) || t < 0 || t >= vocab);
  if (bad !== undefined) throw new Error(`generate: token id ${bad} is outside the vocabulary of ${vocab}`);
}

/** Feeds the prompt through the cache, leaving the logits of its last position. */
function prefill(bk: Backend, decoder: Decoder, prompt: number[]): void {
  for (let pos = 0; pos < prompt.length; pos++) {
    bk.upload(decoder.tokens, new Array(decoder.rows).fill(prompt[pos]));
    decoder.step(pos);
  }
}

/** Generates a continuation of `prompt` (token ids); see {@linkcode GenerateOptions}. */
export async function generate(model: GPT, prompt: number[], options: GenerateOptions): Promise<Generation> {
  checkPrompt(model, prompt);
  if ((options.beams ?? 1) > 1) return await beamSearch(model, prompt, options);
  const bk = model.backend;
  const { vocab: V, context } = model.config;
  const maxTokens = Math.min(options.maxTokens, context - prompt.length);
  const temperature = options.temperature ?? 1;
  const seed = options.seed ?? options.rng?.nextU32() ?? 0;
  const chunk = Math.max(1, options.chunk ?? 16);
  const stop = new Set(options.stop ?? []);
  const decoder = new Decoder(model, 1);
  const history = bk.alloc(chunk, "u32");
  const logps = bk.alloc(chunk);
  const out: Generation = { ids: [], logprobs: [] };
  try {
    prefill(bk, decoder, prompt);
    let done = false;
    for (let start = 0; start < maxTokens && !done; start += chunk) {
      const n = Math.min(chunk, maxTokens - start);
      for (let i = 0; i < n; i++) {
        const step = start + i;
        if (i > 0 || start > 0) decoder.step(prompt.length + step - 1);
        if (temperature === 0) bk.argmax(decoder.tokens, decoder.logits, { rows: 1, V });
        else {
          bk.sample(decoder.tokens, decoder.logits, {
            rows: 1,
            V,
            temperature,
            topK: options.topK,
            topP: options.topP,
            seed,
            step,
          });
        }
        bk.logSoftmaxGather(bk.view(logps, i, 1), decoder.logits, decoder.tokens, {
          rows: 1,
          V,
          temperature: temperature === 0 ? 1 : temperature,
        });
        bk.copy(bk.view(history, i, 1), decoder.tokens);
      }
      const [ids, lp] = await bk.download(bk.view(history, 0, n), bk.view(logps, 0, n));
      for (let i = 0; i < n && !done; i++) {
        out.ids.push(ids[i]);
        out.logprobs.push(lp[i]);
        done = stop.has(ids[i]);
      }
    }
    return out;
  } finally {
    decoder.free();
    bk.free(history);
    bk.free(logps);
  }
}

interface Hypothesis {
  ids: number[];
  logprobs: number[];
  score: number;
}

async function beamSearch(model: GPT, prompt: number[], options: GenerateOptions): Promise<Generation> {
  const bk = model.backend;
  const { vocab: V, context, dim: C, layers: L } = model.config;
  const beams = options.beams!;
  const maxTokens = Math.min(options.maxTokens, context - prompt.length);
  const stop = new Set(options.stop ?? []);
  const penalty = options.lengthPenalty ?? 1;
  const rank = (h: Hypothesis) => h.score / Math.max(1, h.ids.length) ** penalty;
  const decoder = new Decoder(model, beams);
  const scratch = Array.from({ length: L }, () => bk.alloc(beams * context * 3 * C));
  const finished: Hypothesis[] = [];
  // All beams start as the prompt; only the first is live, so the first step does not pick duplicates.
  let live: Hypothesis[] = Array.from({ length: beams }, (_, b) => ({
    ids: [],
    logprobs: [],
    score: b === 0 ? 0 : -Infinity,
  }));
  try {
    prefill(bk, decoder, prompt);
    for (let step = 0; step < maxTokens; step++) {
      if (step > 0) decoder.step(prompt.length + step - 1);
      const [logits] = await bk.download(decoder.logits);
      const candidates: { beam: number; token: number; logp: number; score: number }[] = [];
      for (let b = 0; b < beams; b++) {
        if (live[b].score === -Infinity) continue;
        const row = logits.subarray(b * V, (b + 1) * V);
        let max = -Infinity;
        for (let v = 0; v < V; v++) max = Math.max(max, row[v]);
        let z = 0;
        for (let v = 0; v < V; v++) z += Math.exp(row[v] - max);
        const logZ = max + Math.log(z);
        // Each beam contributes its own best `beams` continuations (enough to fill every slot).
        const best = Array.from(row.keys()).sort((a, c) => row[c] - row[a] || a - c).slice(0, beams);
        for (const token of best) {
          const logp = row[token] - logZ;
          candidates.push({ beam: b, token, logp, score: live[b].score + logp });
        }
      }
      candidates.sort((a, c) => c.score - a.score || a.beam - c.beam || a.token - c.token);
      const next: Hypothesis[] = [];
      const order: number[] = [];
      for (const cand of candidates) {
        const h = live[cand.beam];
        const hyp = { ids: [...h.ids, cand.token], logprobs: [...h.logprobs, cand.logp], score: cand.score };
        if (stop.has(cand.token)) finished.push(hyp);
        else if (next.length < beams) {
          next.push(hyp);
          order.push(cand.beam);
        }
        if (next.length === beams) break;
      }
      // Stop once `beams` hypotheses have finished (Hugging Face's early_stopping=True).
      if (next.length === 0 || finished.length >= beams) {
        live = next;
        break;
      }
      while (next.length < beams) {
        next.push({ ids: [], logprobs: [], score: -Infinity });
        order.push(order[0] ?? 0);
      }
      decoder.copyRows(order, prompt.length + step - 1, scratch);
      bk.upload(decoder.tokens, next.map((h) => h.ids.at(-1) ?? 0));
      live = next;
    }
    const all = [...finished, ...live.filter((h) => h.score > -Infinity)];
    const best = all.reduce((a, b) => (rank(b) > rank(a) ? b : a));
    return { ids: best.ids, logprobs: best.logprobs };
  } finally {
    decoder.free();
    for (const t of scratch) bk.free(t);
  }
}
