/**
 * Beam search with Hugging Face `generate()`'s semantics (`num_beams`, `early_stopping`,
 * `length_penalty`, `eos_token_id`), so a kiln model decoded here and the same checkpoint decoded
 * by `transformers` give the same answer.
 *
 * Each step, every beam's next-token log-probabilities are added to its score and the best
 * `max(2, 1 + stops) × beams` (token, beam) pairs over all beams are taken, best first. A pair ending
 * in a stop token becomes a finished hypothesis (scored sum of log-probs / length^lengthPenalty, the
 * length counting the generated tokens, stop token included) — unless it ranks below the top `beams`,
 * then it is skipped; the other pairs become the next beams until there are `beams` of them, so
 * `beams` beams always continue. At most `beams` finished hypotheses are kept (the best). The search
 * is done when `beams` hypotheses finished and, by `earlyStopping`:
 * - `true`: at once;
 * - `false` (HF's default): when no live beam can beat the worst kept hypothesis by HF's heuristic
 *   (the best current score normalised by the current length);
 * - `"never"`: when none can beat it at any length (with `lengthPenalty > 0`, at `maxTokens`).
 *
 * If the search is done, the result is the best finished hypothesis. Only if it ran out of tokens
 * first do the live beams compete with the finished ones, as HF's `finalize` adds them.
 *
 * Where kiln differs on purpose: a finished answer ends with the stop token it actually generated
 * (HF writes `eos_token_id[0]` whatever the stop token was), and exact ties between candidates go to
 * the lower beam·vocab index (torch's `topk` leaves tie order unspecified). Scores are computed in
 * float64 from the model's float32 logits.
 *
 * {@linkcode BeamSearch} is the bookkeeping alone (it never touches a model), {@linkcode beamSearch}
 * drives it with a GPT and its key/value cache (the beams are the decoder's rows; each step the cache
 * rows are reordered to follow their beams).
 *
 * @example
 * ```ts
 * import { createCpuBackend } from "../kernels/cpu.ts";
 * import { gptConfig } from "./config.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * import { GPT } from "./gpt.ts";
 * import { beamSearch } from "./beam.ts";
 * const layout = paramLayout(gptConfig({ layers: 2, dim: 32, heads: 2, context: 64, vocab: 100 }));
 * const model = new GPT(createCpuBackend(), layout, initParams(layout, 1));
 * const best = await beamSearch(model, [1, 2, 3], { maxTokens: 20, beams: 4, stop: [0], earlyStopping: false });
 * console.log(best.ids, best.finish, best.score);
 * ```
 * @module
 */
import { KilnError } from "../pipeline/errors.ts";
import { checkInputs, Decoder, type GenerateOptions, type Generation } from "./generate.ts";
import type { GPT } from "./gpt.ts";

/** When beam search stops, as Hugging Face's `early_stopping`. */
export type EarlyStopping = boolean | "never";

/** The options beam search reads. */
export interface BeamOptions {
  /** Beams (HF `num_beams`), ≥ 1. */
  beams: number;
  /** Tokens to generate at most. */
  maxTokens: number;
  /** A hypothesis finishes with any of these tokens (kept as its last token). */
  stop?: number[];
  /** Hypotheses are ranked by sum of log-probs / generated length^lengthPenalty. Default 1. */
  lengthPenalty?: number;
  /** Default false, as in Hugging Face. */
  earlyStopping?: EarlyStopping;
}

/** A sequence the search keeps: its generated tokens, their log-probabilities and their sum. */
export interface Hypothesis {
  ids: number[];
  logprobs: number[];
  /** Sum of `logprobs` (HF's beam score). */
  sum: number;
}

/** HF starts every beam but the first at −1e9 so the first step does not pick the same token K times. */
const DEAD = -1e9;

/** A scored hypothesis and how it ended. */
export interface Scored extends Hypothesis {
  /** `sum / length^lengthPenalty`. */
  score: number;
  finish: "stop" | "length";
}

/** HF's `BeamHypotheses`: the best `size` hypotheses so far, and the worst score among them. */
class Hypotheses {
  constructor(readonly size: number, readonly items: Scored[] = [], public worst = 1e9) {}

  add(hyp: Scored): void {
    if (this.items.length < this.size || hyp.score > this.worst) {
      this.items.push(hyp);
      if (this.items.length > this.size) {
        const ranked = this.items.map((h, i) => [h.score, i]).sort((a, b) => a[0] - b[0] || a[1] - b[1]);
        this.items.splice(ranked[0][1], 1);
        this.worst = ranked[1][0];
      } else {
        this.worst = Math.min(hyp.score, this.worst);
      }
    }
  }

  clone(): Hypotheses {
    return new Hypotheses(this.size, [...this.items], this.worst);
  }
}

/**
 * The state of one beam search (see the module doc), fed one step of log-probabilities at a time.
 *
 * @example
 * ```ts
 * import { BeamSearch } from "./beam.ts";
 * const search = new BeamSearch({ beams: 2, maxTokens: 3, stop: [0] }, 3);
 * const logprobs = Float64Array.from([-0.5, -1.5, -1.6, -0.5, -1.5, -1.6]); // beams × vocab
 * while (!search.done && search.step < 3) search.advance(logprobs);
 * console.log(search.best());
 * ```
 */
export class BeamSearch {
  /** The live beams, in the order of the rows their next log-probabilities come in. */
  beams: Hypothesis[];
  /** True once no live beam can beat the finished hypotheses (by `earlyStopping`). */
  done = false;
  /** Steps taken (tokens generated so far by every live beam). */
  step = 0;
  private readonly kept: Hypotheses;
  private readonly stop: Set<number>;
  private readonly penalty: number;
  private readonly earlyStopping: EarlyStopping;
  private readonly keep: number;

  constructor(readonly options: BeamOptions, readonly vocab: number) {
    const { beams } = options;
    if (!Number.isInteger(beams) || beams < 1) {
      throw new KilnError(`beam search: beams must be an integer ≥ 1, got ${beams}`);
    }
    this.stop = new Set(options.stop ?? []);
    this.penalty = options.lengthPenalty ?? 1;
    this.earlyStopping = options.earlyStopping ?? false;
    // HF keeps max(2, 1 + stop tokens) × K candidates: however many of them end, K others continue.
    this.keep = Math.max(2, 1 + this.stop.size) * beams;
    if (beams * vocab < this.keep) {
      throw new KilnError(
        `beam search: ${beams} beams need a vocabulary of at least ${
          this.keep / beams
        } tokens, the model has ${vocab}`,
      );
    }
    this.kept = new Hypotheses(beams);
    this.beams = Array.from(
      { length: beams },
      (_, b) => ({ ids: [], logprobs: [], sum: b === 0 ? 0 : DEAD }),
    );
  }

  /** The finished hypotheses kept so far (at most `beams`, the best ones). */
  get finished(): readonly Scored[] {
    return this.kept.items;
  }

  /** The normalised score of a hypothesis of `length` generated tokens. */
  score(sum: number, length: number): number {
    return sum / length ** this.penalty;
  }

  /**
   * Takes one step: `logprobs` holds each live beam's next-token log-probabilities (`beams × vocab`,
   * row b for `beams[b]`). Returns, for each new beam, the index of the old beam it continues (to
   * reorder a key/value cache); the new beams' last tokens are their next inputs.
   */
  advance(logprobs: Float32Array | Float64Array): number[] {
    const K = this.options.beams, V = this.vocab;
    if (this.done) throw new KilnError("beam search: advance() after the search is done");
    const candidates = topCandidates(this.beams.map((h) => h.sum), logprobs, V, this.keep);
    const length = this.step + 1;
    const next: Hypothesis[] = [];
    const order: number[] = [];
    for (let rank = 0; rank < candidates.length && next.length < K; rank++) {
      const { beam, token, sum } = candidates[rank];
      const from = this.beams[beam];
      const hyp = {
        ids: [...from.ids, token],
        logprobs: [...from.logprobs, logprobs[beam * V + token]],
        sum,
      };
      if (this.stop.has(token)) {
        // HF skips a finished candidate ranked below the top K: only the top K may end a beam.
        if (rank < K) this.kept.add({ ...hyp, score: this.score(sum, length), finish: "stop" });
      } else {
        next.push(hyp);
        order.push(beam);
      }
    }
    this.beams = next;
    this.step = length;
    // HF passes the best candidate's sum (finished or not) as the best a live beam can reach.
    this.done = this.isDone(candidates[0].sum, length);
    return order;
  }

  /** HF's `BeamHypotheses.is_done`. */
  private isDone(bestSum: number, length: number): boolean {
    if (this.kept.items.length < this.options.beams) return false;
    if (this.earlyStopping === true) return true;
    // "never" with a positive penalty: the longest possible hypothesis has the mildest normalisation.
    const horizon = this.earlyStopping === "never" && this.penalty > 0 ? this.options.maxTokens : length;
    return this.kept.worst >= bestSum / horizon ** this.penalty;
  }

  /**
   * The answer: the best finished hypothesis, or, when the search ran out of tokens before it was
   * done, the best of the finished and the live beams (HF's `finalize`).
   */
  best(): Scored {
    if (this.step === 0) return { ids: [], logprobs: [], sum: 0, score: 0, finish: "length" };
    const pool = this.kept.clone();
    if (!this.done) {
      for (const h of this.beams) {
        pool.add({ ...h, score: this.score(h.sum, h.ids.length), finish: "length" });
      }
    }
    if (pool.items.length === 0) return { ids: [], logprobs: [], sum: 0, score: 0, finish: "length" };
    // Python's stable sort then pop(): the last of the best-scoring ones wins a tie.
    return pool.items.reduce((a, b) => (b.score >= a.score ? b : a));
  }
}

/**
 * The best `keep` (beam, token) pairs by `sums[beam] + logprobs[beam, token]`, best first (ties:
 * lower beam·V + token first). The global best `keep` lie among each beam's own best `keep`, so
 * each row is scanned once into a small sorted list instead of sorting beams × vocab scores.
 */
function topCandidates(
  sums: number[],
  logprobs: Float32Array | Float64Array,
  V: number,
  keep: number,
): { beam: number; token: number; sum: number }[] {
  const pool: { beam: number; token: number; sum: number }[] = [];
  for (let b = 0; b < sums.length; b++) {
    const best: { beam: number; token: number; sum: number }[] = [];
    for (let v = 0; v < V; v++) {
      const sum = sums[b] + logprobs[b * V + v];
      if (best.length === keep && sum <= best[keep - 1].sum) continue;
      let at = best.length;
      while (at > 0 && best[at - 1].sum < sum) at--;
      best.splice(at, 0, { beam: b, token: v, sum });
      if (best.length > keep) best.pop();
    }
    pool.push(...best);
  }
  pool.sort((a, c) => c.sum - a.sum || a.beam * V + a.token - (c.beam * V + c.token));
  return pool.slice(0, keep);
}

/** Row-wise log-softmax of `rows × V` logits, in float64. */
function logSoftmax(logits: Float32Array, rows: number, V: number): Float64Array {
  const out = new Float64Array(rows * V);
  for (let r = 0; r < rows; r++) {
    let max = -Infinity;
    for (let v = 0; v < V; v++) max = Math.max(max, logits[r * V + v]);
    let z = 0;
    for (let v = 0; v < V; v++) z += Math.exp(logits[r * V + v] - max);
    const logZ = max + Math.log(z);
    for (let v = 0; v < V; v++) out[r * V + v] = logits[r * V + v] - logZ;
  }
  return out;
}

/**
 * Beam search from `prompt` with `model` (see the module doc). `options.beams` beams; the result's
 * `score` is the hypothesis's normalised score (HF's `sequences_scores`).
 */
export async function beamSearch(
  model: GPT,
  prompt: number[],
  options: GenerateOptions & { beams: number },
): Promise<Generation> {
  checkInputs(model, [prompt], options);
  const bk = model.backend;
  const { vocab: V, context, dim: C, layers: L } = model.config;
  const K = options.beams;
  const maxTokens = Math.min(options.maxTokens, context - prompt.length);
  if (maxTokens === 0) return { ids: [], logprobs: [], finish: "length" };
  const search = new BeamSearch({ ...options, maxTokens }, V);
  const decoder = new Decoder(model, [prompt], maxTokens, K);
  const scratch = Array.from({ length: L }, () => bk.alloc(K * decoder.span * 3 * C));
  try {
    decoder.prefill();
    for (let step = 0; step < maxTokens; step++) {
      if (step > 0) decoder.step(step - 1);
      const logits = (await bk.download(decoder.logits))[0] as Float32Array;
      // The prefill wrote only row 0; every beam starts as the prompt, so all rows are row 0's.
      if (step === 0) { for (let b = 1; b < K; b++) logits.copyWithin(b * V, 0, V); }
      const order = search.advance(logSoftmax(logits, K, V));
      if (search.done || step === maxTokens - 1) break;
      decoder.copyRows(step === 0 ? order.map(() => 0) : order, prompt.length + step - 1, scratch);
      bk.upload(decoder.tokens, search.beams.map((h) => h.ids.at(-1)!));
    }
    const { ids, logprobs, score, finish } = search.best();
    return { ids, logprobs, finish, score };
  } finally {
    decoder.free();
    for (const t of scratch) bk.free(t);
  }
}
