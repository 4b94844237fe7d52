/**
 * The one op interface that both compute backends implement: `webgpu` (WGSL kernels, see
 * `webgpu.ts`) and `cpu` (the plain TypeScript reference, see `cpu.ts`).
 *
 * Conventions, as in llm.c:
 * - Buffers are flat. A {@linkcode Tensor} is a view into one: storage, an element offset and a
 *   length. Any element offset works (kernels take offsets as parameters, the way llm.c passes
 *   pointers), so a flat parameter or gradient buffer is sliced into per-tensor views with
 *   {@linkcode Backend.view} and no alignment rules.
 * - Shapes are passed to each op as plain numbers (`B`, `T`, `C`, `m`, `n`, `k`...). Tensors are
 *   row-major. Linear weights use the Hugging Face GPT-2 layout `[in, out]`; `wte` is `[V, C]`.
 * - Ops are recorded, not run: the WebGPU backend puts every op of a step into one command encoder
 *   and sends it with {@linkcode Backend.submit} (a download submits too). The CPU backend runs each
 *   op at once. Code written against this interface behaves the same on both.
 * - Ops that produce gradients overwrite their outputs unless they say "accumulates" (`+=`), which
 *   is how gradients of shared tensors (residual stream, tied embedding, micro-batches) are summed.
 * - Every op is deterministic: no floating-point atomics, so the same inputs give bit-identical
 *   outputs run after run.
 *
 * @example
 * ```ts
 * import { createBackend } from "./device.ts";
 * const gpu = await createBackend();
 * const a = gpu.alloc(2 * 3), b = gpu.alloc(3 * 2), out = gpu.alloc(2 * 2);
 * gpu.upload(a, new Float32Array([1, 2, 3, 4, 5, 6]));
 * gpu.upload(b, new Float32Array([1, 0, 0, 1, 1, 1]));
 * gpu.matmul(out, a, b, { m: 2, n: 2, k: 3 });
 * const [result] = await gpu.download(out); // Float32Array [4, 5, 10, 11]
 * ```
 * @module
 */

/** Element type of a buffer. `f16` is storage only (math in f32); WebGPU has it with `shader-f16`. */
export type DType = "f32" | "u32" | "f16";

/** A view of `length` elements of a backend buffer, starting at element `offset`. */
export interface Tensor {
  /** The backend's buffer this view reads (opaque to users). */
  readonly storage: object;
  /** First element of the view, in elements of `dtype`. */
  readonly offset: number;
  /** Number of elements. */
  readonly length: number;
  readonly dtype: DType;
}

/** Host data accepted by {@linkcode Backend.upload}. f32 and f16 tensors take floats, u32 integers. */
export type HostArray = Float32Array | Float64Array | Uint32Array | Int32Array | number[];

/** Shapes and options of {@linkcode Backend.matmul}. */
export interface MatmulOptions {
  /** Rows of `out` and of `op(a)`. */
  m: number;
  /** Columns of `out` and of `op(b)`. */
  n: number;
  /** The shared (reduced) dimension. */
  k: number;
  /** `a` is stored `[k, m]` and used transposed (weight gradients: `dW = inpᵀ · dout`). */
  transA?: boolean;
  /** `b` is stored `[n, k]` and used transposed (input gradients: `dinp = dout · Wᵀ`; tied lm head). */
  transB?: boolean;
  /** f32 `[n]`, added to every row of the result. */
  bias?: Tensor;
  /** Add into `out` instead of overwriting it (gradient accumulation). */
  accumulate?: boolean;
  /** Repeat over `count` matrices, each `stride*` elements after the previous one. */
  batch?: { count: number; strideA: number; strideB: number; strideOut: number };
}

/** Options of {@linkcode Backend.attentionForward} and {@linkcode Backend.attentionBackward}. */
export interface AttentionOptions {
  B: number;
  T: number;
  /** Channels; `qkv` rows hold q, k, v one after the other, each `C` wide, heads `C / NH` wide. */
  C: number;
  /** Number of heads. */
  NH: number;
  /**
   * u32 `[B, T]` segment ids for packed sequences: position t attends to s only when s ≤ t and
   * both carry the same id. Without it every position attends to all earlier ones.
   */
  segments?: Tensor;
}

/** Options of {@linkcode Backend.attentionDecode}. */
export interface AttentionDecodeOptions {
  /** Sequences (rows of the cache). Default 1. */
  B?: number;
  /** Channels; cache rows hold q, k, v one after the other, each `C` wide, heads `C / NH` wide. */
  C: number;
  /** Number of heads. */
  NH: number;
  /**
   * Cached length including the new token: the query is position `T - 1`, keys/values `0..T-1`.
   * With `lengths`, the longest of them.
   */
  T: number;
  /** Positions a sequence's cache holds (the stride between sequences). Default `T`. */
  Tmax?: number;
  /**
   * u32 `[B]` cached length of each sequence, each in `1..T` (the GPU clamps to it): sequence b's
   * query is position `lengths[b] - 1` and attends to its positions `0..lengths[b]-1`, so prompts of
   * different lengths decode in one batch. Default: every sequence has length `T`.
   */
  lengths?: Tensor;
  /**
   * f32 `[B, 3C]`: each sequence's new q/k/v row, written into the cache at its query position
   * (`lengths[b] - 1`, or `T - 1`) before attending, so a decode step needs no copy a sequence.
   */
  append?: Tensor;
}

/** Options of {@linkcode Backend.encoderForward}. */
export interface EncoderOptions {
  B: number;
  T: number;
  C: number;
  /**
   * u32 `[B, T]` position of each token (the row of `wpe` it adds), each below the rows of `wpe`.
   * Default `t`. Packed SFT rows restart at 0 for each example; left-padded generation rows start
   * at 0 at their first real token.
   */
  positions?: Tensor;
}

/** Options of {@linkcode Backend.encoderBackward}. */
export interface EncoderBackwardOptions {
  B: number;
  T: number;
  C: number;
  /** The forward's `positions` on the host (`[B, T]`); default `t`. */
  hostPositions?: Uint32Array;
}

/** Options of {@linkcode Backend.crossEntropy}. */
export interface CrossEntropyOptions {
  /** Rows (B·T). */
  rows: number;
  /** Real vocabulary size; columns V..Vp-1 are padding: ignored, their gradient is zero. */
  V: number;
  /** Row stride of `logits` (padded vocabulary); defaults to V. */
  Vp?: number;
  /** f32 `[rows]` per-token weights (1 = counts, 0 = ignored, e.g. SFT prompt tokens). */
  mask?: Tensor;
  /**
   * What the loss is divided by: `"mask"` (default) the sum of the mask (or `rows` without one),
   * `"count"` the number of rows whatever the mask holds.
   */
  normalize?: "mask" | "count";
  /** Extra factor on the gradient, e.g. 1 / micro-batches for gradient accumulation. Default 1. */
  gradScale?: number;
}

/** Options of {@linkcode Backend.adamw}. */
export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** 1-based step number, for the bias corrections `1 - beta^step`. */
  step: number;
  /**
   * Element range `[start, end)` of the parameter buffer that takes weight decay (matmul weights and
   * embeddings); the rest (biases, LayerNorm) is not decayed. Default: all of it.
   */
  decayRange?: [number, number];
  /** f32 `[1]` factor applied to every gradient first, e.g. from {@linkcode Backend.clipScale}. */
  gradScale?: Tensor;
}

/** Options of {@linkcode Backend.sample}. */
export interface SampleOptions {
  rows: number;
  V: number;
  /** Row stride of `logits`; defaults to V. */
  Vp?: number;
  /** Logits are divided by it before the softmax. Must be > 0 (use argmax for greedy). */
  temperature: number;
  /** Keep only the k most likely tokens (ties with the k-th are kept). 0 or absent: all. */
  topK?: number;
  /** Keep the most likely tokens whose probabilities sum to at least p (nucleus). 1 or absent: all. */
  topP?: number;
  /** RNG seed; the draw for a row is a hash of (seed, row, step), so runs are reproducible. */
  seed: number;
  /** Generation step, so each step draws fresh numbers. */
  step: number;
}

/** A compute backend: buffers, a step recorder and the ops. */
export interface Backend {
  readonly name: "webgpu" | "cpu";
  /** The device, in words (adapter name, or "TypeScript reference"). */
  readonly description: string;
  /** Whether `f16` tensors can be allocated. */
  readonly hasF16: boolean;

  // ---- buffers -------------------------------------------------------------------------------

  /** A new buffer of `length` zeros. */
  alloc(length: number, dtype?: DType): Tensor;
  /** A view of `length` elements of `t`, starting `offset` elements into it (any offset). */
  view(t: Tensor, offset: number, length: number): Tensor;
  /** Copies host data into `t` (ordered after every op recorded so far). */
  upload(t: Tensor, data: HostArray): void;
  /**
   * Reads tensors back, all in one readback (f32 and f16 as Float32Array, u32 as Uint32Array).
   * Submits what is recorded. Never call it inside a training step: on a GPU each readback waits
   * for the queue to drain (~11 ms through Deno).
   */
  download(...tensors: Tensor[]): Promise<Array<Float32Array | Uint32Array>>;
  /** Returns `t`'s whole buffer to the pool. Pass the tensor `alloc` returned, not a view. */
  free(t: Tensor): void;
  /** Sends every recorded op to the device (a no-op on the CPU). */
  submit(): void;
  /** Submits and waits until the device has finished all of it. */
  finish(): Promise<void>;
  /** Releases the device. */
  destroy(): void;

  // ---- elementwise ---------------------------------------------------------------------------

  /** `t[i] = value` for every element. */
  fill(t: Tensor, value: number): void;
  /** `dst[i] = src[i]`. */
  copy(dst: Tensor, src: Tensor): void;
  /** `out[i] = alpha · inp[i]` (in place when out is inp). */
  scale(out: Tensor, inp: Tensor, alpha: number): void;
  /** `out[i] = a[i] + b[i]`: the residual connection (out may be a or b). */
  add(out: Tensor, a: Tensor, b: Tensor): void;
  /** GELU, tanh approximation: `out = 0.5·x·(1 + tanh(√(2/π)(x + 0.044715x³)))`. */
  geluForward(out: Tensor, inp: Tensor): void;
  /** `dinp = gelu'(inp) · dout` (dinp may be dout). */
  geluBackward(dinp: Tensor, inp: Tensor, dout: Tensor): void;

  // ---- matmul --------------------------------------------------------------------------------

  /** `out[m, n] (+)= op(a) · op(b) (+ bias)`. a and b may be f16 where {@linkcode hasF16}. */
  matmul(out: Tensor, a: Tensor, b: Tensor, opts: MatmulOptions): void;

  // ---- layernorm -----------------------------------------------------------------------------

  /**
   * LayerNorm over the last dimension of `inp [rows, C]`: `out = (x - mean)·rstd·weight + bias`,
   * saving `mean [rows]` and `rstd [rows]` for the backward.
   */
  layernormForward(
    out: Tensor,
    mean: Tensor,
    rstd: Tensor,
    inp: Tensor,
    weight: Tensor,
    bias: Tensor,
    opts: { rows: number; C: number; eps?: number },
  ): void;
  /** LayerNorm backward; accumulates into `dinp`, `dweight` and `dbias` (llm.c). */
  layernormBackward(
    dinp: Tensor,
    dweight: Tensor,
    dbias: Tensor,
    dout: Tensor,
    inp: Tensor,
    weight: Tensor,
    mean: Tensor,
    rstd: Tensor,
    opts: { rows: number; C: number },
  ): void;

  // ---- attention -----------------------------------------------------------------------------

  /**
   * Causal multi-head self-attention over `qkv [B, T, 3C]` into `out [B, T, C]`, flash style: an
   * online softmax, no T×T matrix. Saves the per-row logsumexp `lse [B, NH, T]` for the backward.
   */
  attentionForward(out: Tensor, lse: Tensor, qkv: Tensor, opts: AttentionOptions): void;
  /**
   * Single-query causal attention against a key/value cache (generation's decode step): for each
   * sequence b of `qkv [B, Tmax, 3C]` the query at position `T - 1` (or `lengths[b] - 1`) attends to
   * positions `0..T-1` (`0..lengths[b]-1`), into `out [B, C]`. Equals the last row of
   * {@linkcode Backend.attentionForward} over the prefix at O(T·C) instead of O(T²·C). No segments,
   * no saved logsumexp (inference only).
   */
  attentionDecode(out: Tensor, qkv: Tensor, opts: AttentionDecodeOptions): void;
  /** Attention backward into `dqkv [B, T, 3C]` (overwritten), recomputing the scores tile by tile. */
  attentionBackward(
    dqkv: Tensor,
    dout: Tensor,
    qkv: Tensor,
    out: Tensor,
    lse: Tensor,
    opts: AttentionOptions,
  ): void;

  // ---- logits rows (wgsl/logits.ts) ----------------------------------------------------------

  /**
   * Softmax fused with cross-entropy (llm.c's fused classifier): writes per-token losses
   * `losses[r] = mask[r] · -log softmax(logits[r])[targets[r]]` (not normalised) and overwrites
   * `logits [rows, Vp]` with `dlogits = (softmax - onehot) · mask[r] · gradScale / norm`, where norm
   * is the mask's sum (or row count). Targets are u32 `[rows]`.
   */
  crossEntropy(losses: Tensor, logits: Tensor, targets: Tensor, opts: CrossEntropyOptions): void;

  // ---- embeddings ----------------------------------------------------------------------------

  /**
   * `out[b, t, :] = wte[tokens[b, t], :] + wpe[positions[b, t], :]`; tokens u32 `[B, T]`. Positions
   * default to `t` (see {@linkcode EncoderOptions.positions} for packed or batched rows).
   */
  encoderForward(out: Tensor, tokens: Tensor, wte: Tensor, wpe: Tensor, opts: EncoderOptions): void;
  /**
   * Embedding backward; accumulates into `dwte [V, C]` and `dwpe [rows of wpe, C]`. Takes the tokens
   * (and positions, when the forward had them) on the host: rows are bucketed by token there, and by
   * position, so each `dwte` and `dwpe` row is one thread's ordered sum (deterministic, no atomics),
   * as llm.c does.
   */
  encoderBackward(
    dwte: Tensor,
    dwpe: Tensor,
    dout: Tensor,
    tokens: Uint32Array,
    opts: EncoderBackwardOptions,
  ): void;

  // ---- optimizer and reductions --------------------------------------------------------------

  /** AdamW over a whole flat parameter buffer in one dispatch; updates params, m and v in place. */
  adamw(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, opts: AdamWOptions): void;
  /** `out[0] = √(Σ inp²)`, a fixed-order two-pass reduction. */
  globalNorm(out: Tensor, inp: Tensor): void;
  /** `out[0] = min(1, maxNorm / (norm[0] + 1e-6))`: the clip factor, computed on the device. */
  clipScale(out: Tensor, norm: Tensor, maxNorm: number): void;
  /** `out[0] = Σ inp`, or the mean with `mean: true`. */
  sum(out: Tensor, inp: Tensor, opts?: { mean?: boolean }): void;
  /** `out[c] (+)= Σ_r inp[r, c]`: column sums, e.g. bias gradients. */
  sumRows(out: Tensor, inp: Tensor, opts: { rows: number; cols: number; accumulate?: boolean }): void;

  // ---- sampling ------------------------------------------------------------------------------

  /** Draws one token per logits row (temperature, top-k, top-p) into u32 `tokens [rows]`. */
  sample(tokens: Tensor, logits: Tensor, opts: SampleOptions): void;
  /** `tokens[r] = argmax logits[r, :V]` (the first on ties): greedy decoding. */
  argmax(tokens: Tensor, logits: Tensor, opts: { rows: number; V: number; Vp?: number }): void;
  /** `out[r] = log softmax(logits[r] / temperature)[tokens[r]]`: log π of chosen tokens (PPO). */
  logSoftmaxGather(
    out: Tensor,
    logits: Tensor,
    tokens: Tensor,
    opts: { rows: number; V: number; Vp?: number; temperature?: number },
  ): void;
  /**
   * `out[r] = -Σ_i p_i log p_i` with `p = softmax(logits[r, :V] / temperature)`: the policy's
   * entropy per row (nats), computed where the logits are, so PPO logs it without downloading them.
   * `Vp` is the row stride (default V); `temperature` defaults to 1 and must be > 0.
   */
  entropy(
    out: Tensor,
    logits: Tensor,
    opts: { rows: number; V: number; Vp?: number; temperature?: number },
  ): void;
}

/** Throws unless `t` holds at least `need` elements of `dtype`: catches shape mistakes early. */
export function checkTensor(op: string, what: string, t: Tensor, need: number, dtype: DType = "f32"): void {
  if (t.dtype !== dtype) throw new Error(`${op}: ${what} must be ${dtype}, got ${t.dtype}`);
  if (t.length < need) throw new Error(`${op}: ${what} has ${t.length} elements, needs ${need}`);
}

/** Validates {@linkcode Backend.attentionDecode}'s arguments; returns the head size. */
export function checkAttentionDecode(out: Tensor, qkv: Tensor, opts: AttentionDecodeOptions): number {
  const { C, NH, T } = opts, B = opts.B ?? 1, Tmax = opts.Tmax ?? T;
  const hs = C / NH;
  if (!Number.isInteger(hs) || hs < 1) {
    throw new Error(`attentionDecode: C (${C}) must be a multiple of NH (${NH})`);
  }
  if (!Number.isInteger(T) || T < 1 || T > Tmax) {
    throw new Error(`attentionDecode: T (${T}) must be an integer in 1..Tmax (${Tmax})`);
  }
  checkTensor("attentionDecode", "out", out, B * C);
  if (opts.lengths) checkTensor("attentionDecode", "lengths", opts.lengths, B, "u32");
  if (opts.append) checkTensor("attentionDecode", "append", opts.append, B * 3 * C);
  checkTensor("attentionDecode", "qkv", qkv, ((B - 1) * Tmax + T) * 3 * C);
  return hs;
}

/** Validates {@linkcode Backend.entropy}'s arguments. */
export function checkEntropy(
  out: Tensor,
  logits: Tensor,
  rows: number,
  V: number,
  Vp: number,
  temperature: number,
): void {
  if (!(temperature > 0)) throw new Error(`entropy: temperature must be > 0, got ${temperature}`);
  if (V < 1 || V > Vp) throw new Error(`entropy: V (${V}) must be in 1..Vp (${Vp})`);
  checkTensor("entropy", "out", out, rows);
  checkTensor("entropy", "logits", logits, (rows - 1) * Vp + V);
}
