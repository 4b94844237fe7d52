/**
 * The GPT-2 model: forward and backward written out layer by layer, as in llm.c, over one flat
 * parameter buffer, one flat gradient buffer and per-layer activation buffers, through the ops of
 * a compute {@linkcode Backend} (WebGPU or the CPU reference; the code is the same for both).
 *
 * forward:  encoder → L × [ln_1, c_attn, attention, c_proj (+residual), ln_2, c_fc, GELU,
 *           mlp.c_proj (+residual)] → ln_f → logits = ln_f · wteᵀ (tied) → softmax cross-entropy
 * backward: the same in reverse, accumulating into the gradient buffer (so micro-batches add up).
 *
 * The ops are recorded, not run: on WebGPU a whole step goes to the device as one command buffer,
 * and nothing is read back until someone downloads a tensor.
 *
 * Other stages reuse the pieces: SFT passes a loss mask, segment ids and position ids (packed
 * conversations, each starting at position 0); a reward model or PPO value head runs the forward
 * with `logits: false`, applies its own projection to {@linkcode Activations.lnf} (the final
 * LayerNorm output) and hands its gradient to {@linkcode GPT.backwardTrunk}.
 *
 * Mixed precision (`precision: "mixed"`, backends with f16 tensors): every matmul reads f16 inputs
 * (an f16 copy of the weights, {@linkcode GPT.refreshHalf}ed after each optimizer step, and f16
 * copies of the activations that feed matmuls) and accumulates in f32; the master weights,
 * gradients, LayerNorm, attention, softmax and the optimizer stay f32.
 *
 * @example One training step on the CPU
 * ```ts
 * import { createCpuBackend } from "../kernels/cpu.ts";
 * import { gptConfig } from "./config.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * import { GPT } from "./gpt.ts";
 * const layout = paramLayout(gptConfig({ layers: 2, dim: 32, heads: 2, context: 16, vocab: 64 }));
 * const model = new GPT(createCpuBackend(), layout, initParams(layout, 1), { training: true });
 * const acts = model.activations(2, 16);
 * const inputs = new Int32Array(32).map((_, i) => i % 64), targets = inputs.map((t) => (t + 1) % 64);
 * model.forward(acts, inputs, { targets });
 * model.backward(acts);
 * console.log(await model.readLoss(acts));
 * ```
 * @module
 */
import type { Backend, Tensor } from "../kernels/backend.ts";
import type { GPTConfig } from "./config.ts";
import type { ParamEntry, ParamLayout } from "./params.ts";

/**
 * Numeric precision of a model's matmuls: `fp32` everywhere, or `mixed`: f16 storage of the matmul
 * inputs (weights and activations), f32 accumulation, f32 master weights, gradients and optimizer.
 */
export type Precision = "fp32" | "mixed";

/** One block's activations, kept from the forward for the backward. Matmul inputs are f16 under mixed precision. */
interface LayerActs {
  /** ln_1 output: f16 under mixed precision (only matmuls read it). */
  ln1: Tensor;
  ln1Mean: Tensor;
  ln1Rstd: Tensor;
  qkv: Tensor;
  /** Attention output, f32 (the attention backward reads it). */
  atty: Tensor;
  /** Its f16 copy for the projection matmuls (mixed precision only). */
  attyHalf?: Tensor;
  lse: Tensor;
  /** Residual stream after attention. */
  res2: Tensor;
  /** ln_2 output: f16 under mixed precision. */
  ln2: Tensor;
  ln2Mean: Tensor;
  ln2Rstd: Tensor;
  fch: Tensor;
  /** GELU output: f16 under mixed precision. */
  fchGelu: Tensor;
  /** Residual stream after the MLP: the block's output. */
  res3: Tensor;
}

/** Activation buffers for a batch shape B × T (allocate once, reuse every step). */
export interface Activations {
  B: number;
  T: number;
  tokens: Tensor;
  /** The tokens of the current forward, on the host (the embedding backward buckets them there). */
  hostTokens: Uint32Array;
  targets: Tensor;
  mask?: Tensor;
  segments?: Tensor;
  /** Whether the last forward used segment ids (its backward repeats the same attention). */
  segmented: boolean;
  /** u32 position ids `[B·T]`, allocated by the first forward that passes them. */
  positions?: Tensor;
  /** The last forward's position ids on the host (the embedding backward takes them there); absent: 0..T−1. */
  hostPositions?: Uint32Array;
  /** What the loss is divided by: the mask's sum, or B·T. */
  lossNorm: number;
  encoded: Tensor;
  layers: LayerActs[];
  /** Final LayerNorm output `[B·T, C]`, f32: what a scalar head reads. */
  lnf: Tensor;
  /** Its f16 copy for the language-model head (mixed precision only). */
  lnfHalf?: Tensor;
  lnfMean: Tensor;
  lnfRstd: Tensor;
  /** `[B·T, V]` logits; after a forward with targets, the gradient of the loss with respect to them. */
  logits: Tensor;
  /** Per-token losses `[B·T]` (masked, not normalised). */
  losses: Tensor;
  /** Scratch for the backward. */
  dresidual: Tensor;
  dC: Tensor;
  dC2: Tensor;
  dqkv: Tensor;
  /** `[B·T, 4C]` backward scratch; under mixed precision the forward stages f32 op outputs in it. */
  dfch: Tensor;
  /** Scalar scratch: the summed loss. */
  lossSum: Tensor;
  /** Every buffer allocated, to free them. */
  owned: Tensor[];
}

/** Options of {@linkcode GPT.forward}. */
export interface ForwardOptions {
  /** Next-token targets `[B·T]`: compute the loss and, in place of the logits, their gradient. */
  targets?: Int32Array;
  /** Per-token loss weights `[B·T]` (SFT: 0 on prompt tokens). Needs `mask: true` activations. */
  lossMask?: Float32Array;
  /** Segment ids `[B·T]` for packed sequences (attention stays inside a segment). */
  segments?: Int32Array;
  /**
   * Position ids `[B·T]`, each below the context (packed sequences: each segment restarts at 0).
   * Default: 0..T−1 in every row.
   */
  positions?: Int32Array | Uint32Array;
  /**
   * Compute the `[B·T, V]` logits (default true). Scalar-head models (reward model, value function)
   * pass false: the forward stops at {@linkcode Activations.lnf} and `acts.logits` is not written.
   */
  logits?: boolean;
  /** Factor on the gradient (1 / micro-batches under gradient accumulation). Default 1. */
  gradScale?: number;
}

/** Per-layer views of a flat buffer laid out by {@linkcode ParamLayout}. */
interface LayerViews {
  ln1w: Tensor;
  ln1b: Tensor;
  qkvw: Tensor;
  qkvb: Tensor;
  attprojw: Tensor;
  attprojb: Tensor;
  ln2w: Tensor;
  ln2b: Tensor;
  fcw: Tensor;
  fcb: Tensor;
  fcprojw: Tensor;
  fcprojb: Tensor;
}

/** Views of every tensor of a flat buffer (parameters or gradients). */
export interface ParamViews {
  wte: Tensor;
  wpe: Tensor;
  layers: LayerViews[];
  lnfw: Tensor;
  lnfb: Tensor;
}

function views(backend: Backend, flat: Tensor, layout: ParamLayout): ParamViews {
  const v = (e: ParamEntry) => backend.view(flat, e.offset, e.size);
  return {
    wte: v(layout.wte),
    wpe: v(layout.wpe),
    layers: layout.layers.map((l) => ({
      ln1w: v(l.ln1w),
      ln1b: v(l.ln1b),
      qkvw: v(l.qkvw),
      qkvb: v(l.qkvb),
      attprojw: v(l.attprojw),
      attprojb: v(l.attprojb),
      ln2w: v(l.ln2w),
      ln2b: v(l.ln2b),
      fcw: v(l.fcw),
      fcb: v(l.fcb),
      fcprojw: v(l.fcprojw),
      fcprojb: v(l.fcprojb),
    })),
    lnfw: v(layout.lnfw),
    lnfb: v(layout.lnfb),
  };
}

/** Options of the {@linkcode GPT} constructor. */
export interface GPTOptions {
  /** Allocate a gradient buffer. */
  training?: boolean;
  /** `fp32` (default) or `mixed`: f16 matmul inputs, f32 accumulation (needs `backend.hasF16`). */
  precision?: Precision;
}

/** A GPT on a backend: its parameters (and, for training, gradients) live on the device. */
export class GPT {
  readonly config: GPTConfig;
  readonly precision: Precision;
  /** The flat parameter buffer (f32 master weights). */
  readonly params: Tensor;
  readonly p: ParamViews;
  /** The flat gradient buffer (training only). */
  readonly grads?: Tensor;
  readonly g?: ParamViews;
  /** f16 copy of {@linkcode params} that the matmuls read (mixed precision only). */
  readonly half?: Tensor;
  /**
   * The weights matmuls read: views of {@linkcode half} under mixed precision, else {@linkcode p}
   * (biases and LayerNorm parameters always come from `p`: f32). A decoder uses these too.
   */
  readonly matmulWeights: ParamViews;

  constructor(
    readonly backend: Backend,
    readonly layout: ParamLayout,
    params: Float32Array,
    options: GPTOptions = {},
  ) {
    if (params.length !== layout.total) {
      throw new Error(`parameter buffer has ${params.length} elements, the layout needs ${layout.total}`);
    }
    this.config = layout.config;
    this.precision = options.precision ?? "fp32";
    if (this.precision === "mixed" && !backend.hasF16) {
      throw new Error(
        `precision "mixed" needs f16 tensors, which this ${backend.name} backend (${backend.description}) ` +
          `does not have (WebGPU: no "shader-f16" feature); use precision "fp32"`,
      );
    }
    this.params = backend.alloc(layout.total);
    backend.upload(this.params, params);
    this.p = views(backend, this.params, layout);
    this.matmulWeights = this.p;
    if (this.precision === "mixed") {
      this.half = backend.alloc(layout.total, "f16");
      this.matmulWeights = views(backend, this.half, layout);
      this.refreshHalf();
    }
    if (options.training) {
      this.grads = backend.alloc(layout.total);
      this.g = views(backend, this.grads, layout);
    }
  }

  /**
   * Records the f16 copy of the weights from the f32 master weights (mixed precision; a no-op
   * otherwise). The optimizer calls it after each update; call it after writing {@linkcode params}.
   */
  refreshHalf(): void {
    if (this.half) this.backend.copy(this.half, this.params);
  }

  /** Allocates activation buffers for B sequences of T tokens (`mask`/`segments`: SFT inputs). */
  activations(B: number, T: number, options: { mask?: boolean; segments?: boolean } = {}): Activations {
    const { layers: L, dim: C, heads: NH, vocab: V, context } = this.config;
    if (T > context) throw new Error(`sequence length ${T} exceeds the model's context ${context}`);
    const owned: Tensor[] = [];
    const alloc = (n: number, dtype: "f32" | "u32" | "f16" = "f32") => {
      const t = this.backend.alloc(n, dtype);
      owned.push(t);
      return t;
    };
    const mixed = this.half !== undefined;
    // Under mixed precision the tensors only matmuls read are stored f16; atty and lnf have other readers.
    const matmulInput = (n: number) => alloc(n, mixed ? "f16" : "f32");
    const halfCopy = (n: number) => mixed ? alloc(n, "f16") : undefined;
    const BT = B * T;
    return {
      B,
      T,
      tokens: alloc(BT, "u32"),
      hostTokens: new Uint32Array(BT),
      targets: alloc(BT, "u32"),
      mask: options.mask ? alloc(BT) : undefined,
      segments: options.segments ? alloc(BT, "u32") : undefined,
      segmented: false,
      lossNorm: BT,
      encoded: alloc(BT * C),
      layers: Array.from({ length: L }, () => ({
        ln1: matmulInput(BT * C),
        ln1Mean: alloc(BT),
        ln1Rstd: alloc(BT),
        qkv: alloc(BT * 3 * C),
        atty: alloc(BT * C),
        attyHalf: halfCopy(BT * C),
        lse: alloc(B * NH * T),
        res2: alloc(BT * C),
        ln2: matmulInput(BT * C),
        ln2Mean: alloc(BT),
        ln2Rstd: alloc(BT),
        fch: alloc(BT * 4 * C),
        fchGelu: matmulInput(BT * 4 * C),
        res3: alloc(BT * C),
      })),
      lnf: alloc(BT * C),
      lnfHalf: halfCopy(BT * C),
      lnfMean: alloc(BT),
      lnfRstd: alloc(BT),
      logits: alloc(BT * V),
      losses: alloc(BT),
      dresidual: alloc(BT * C),
      dC: alloc(BT * C),
      dC2: alloc(BT * C),
      dqkv: alloc(BT * 3 * C),
      dfch: alloc(BT * 4 * C),
      lossSum: alloc(1),
      owned,
    };
  }

  /** Frees activation buffers. */
  freeActivations(acts: Activations): void {
    for (const t of acts.owned) this.backend.free(t);
  }

  /**
   * Records the forward pass over `inputs [B·T]`. With `targets`, also the fused softmax
   * cross-entropy: per-token losses in `acts.losses` and the logits' gradient in `acts.logits`.
   */
  forward(acts: Activations, inputs: Int32Array | Uint32Array, options: ForwardOptions = {}): void {
    const bk = this.backend;
    const { B, T } = acts;
    const { dim: C, vocab: V } = this.config;
    const BT = B * T;
    if (inputs.length !== BT) throw new Error(`expected ${BT} input tokens, got ${inputs.length}`);
    const withLogits = options.logits ?? true;
    if (options.targets && !withLogits) throw new Error("forward: targets need the logits (logits: false)");
    if (options.positions) this.checkPositions(acts, options.positions);
    if (options.targets && options.targets.length !== BT) {
      throw new Error(`expected ${BT} targets, got ${options.targets.length}`);
    }
    if (options.targets && options.lossMask && !acts.mask) {
      throw new Error("these activations were allocated without a loss mask");
    }
    // Every upload comes before the first recorded op: on WebGPU an upload after recorded work
    // submits that work first, which would split the step into several submits and passes.
    acts.hostTokens.set(inputs);
    bk.upload(acts.tokens, acts.hostTokens);
    if (options.targets) bk.upload(acts.targets, options.targets);
    if (options.targets && options.lossMask) bk.upload(acts.mask!, options.lossMask);
    acts.segmented = options.segments !== undefined;
    if (options.segments) {
      if (!acts.segments) throw new Error("these activations were allocated without segments");
      bk.upload(acts.segments, options.segments);
    }
    acts.hostPositions = options.positions && Uint32Array.from(options.positions);
    if (acts.hostPositions) {
      if (!acts.positions) {
        acts.positions = bk.alloc(BT, "u32");
        acts.owned.push(acts.positions);
      }
      bk.upload(acts.positions, acts.hostPositions);
    }
    const attention = this.attentionOptions(acts);
    const w = this.matmulWeights;
    // Under mixed precision an op whose output feeds a matmul writes f32 into scratch (dfch is free
    // until the backward), which is then cast into the f16 activation.
    const intoMatmulInput = (dst: Tensor, op: (out: Tensor) => void) => {
      if (dst.dtype === "f32") return op(dst);
      const staged = bk.view(acts.dfch, 0, dst.length);
      op(staged);
      bk.copy(dst, staged);
    };
    const half = (t: Tensor, copy: Tensor | undefined) => {
      if (copy) bk.copy(copy, t);
      return copy ?? t;
    };

    const positions = acts.hostPositions && acts.positions;
    bk.encoderForward(acts.encoded, acts.tokens, this.p.wte, this.p.wpe, { B, T, C, positions });
    let residual = acts.encoded;
    for (let l = 0; l < this.config.layers; l++) {
      const p = this.p.layers[l], lw = w.layers[l], a = acts.layers[l];
      intoMatmulInput(a.ln1, (out) => {
        bk.layernormForward(out, a.ln1Mean, a.ln1Rstd, residual, p.ln1w, p.ln1b, { rows: BT, C });
      });
      bk.matmul(a.qkv, a.ln1, lw.qkvw, { m: BT, n: 3 * C, k: C, bias: p.qkvb });
      bk.attentionForward(a.atty, a.lse, a.qkv, attention);
      // res2 = residual + atty · W + b: the projection accumulates onto a copy of the stream.
      bk.copy(a.res2, residual);
      const atty = half(a.atty, a.attyHalf);
      bk.matmul(a.res2, atty, lw.attprojw, { m: BT, n: C, k: C, bias: p.attprojb, accumulate: true });
      intoMatmulInput(a.ln2, (out) => {
        bk.layernormForward(out, a.ln2Mean, a.ln2Rstd, a.res2, p.ln2w, p.ln2b, { rows: BT, C });
      });
      bk.matmul(a.fch, a.ln2, lw.fcw, { m: BT, n: 4 * C, k: C, bias: p.fcb });
      intoMatmulInput(a.fchGelu, (out) => bk.geluForward(out, a.fch));
      bk.copy(a.res3, a.res2);
      bk.matmul(a.res3, a.fchGelu, lw.fcprojw, { m: BT, n: C, k: 4 * C, bias: p.fcprojb, accumulate: true });
      residual = a.res3;
    }
    bk.layernormForward(acts.lnf, acts.lnfMean, acts.lnfRstd, residual, this.p.lnfw, this.p.lnfb, {
      rows: BT,
      C,
    });
    if (!withLogits) return;
    bk.matmul(acts.logits, half(acts.lnf, acts.lnfHalf), w.wte, { m: BT, n: V, k: C, transB: true });

    if (options.targets) {
      acts.lossNorm = BT;
      if (options.lossMask) {
        // The backend normalises by the mask's sum; the host knows it, so the loss can use it too.
        acts.lossNorm = options.lossMask.reduce((s, x) => s + x, 0);
      }
      bk.crossEntropy(acts.losses, acts.logits, acts.targets, {
        rows: BT,
        V,
        mask: options.lossMask ? acts.mask : undefined,
        gradScale: options.gradScale ?? 1,
      });
    }
  }

  /** Records the backward of the language-model loss; gradients accumulate into {@linkcode grads}. */
  backward(acts: Activations): void {
    const bk = this.backend;
    const g = this.needGrads();
    const BT = acts.B * acts.T;
    const { dim: C, vocab: V } = this.config;
    // acts.logits holds dloss/dlogits (crossEntropy overwrote it).
    bk.matmul(acts.dC, acts.logits, this.matmulWeights.wte, { m: BT, n: C, k: V });
    const lnf = acts.lnfHalf ?? acts.lnf;
    bk.matmul(g.wte, acts.logits, lnf, { m: V, n: C, k: BT, transA: true, accumulate: true });
    this.backwardTrunk(acts, acts.dC);
  }

  /**
   * Records the backward from `dlnf [B·T, C]`, the gradient with respect to the final LayerNorm's
   * output, down to the embeddings. A scalar head (reward model, value head) calls this with its
   * own gradient; {@linkcode backward} calls it after the tied language-model head.
   */
  backwardTrunk(acts: Activations, dlnf: Tensor): void {
    const bk = this.backend;
    const g = this.needGrads();
    const { B, T } = acts;
    const BT = B * T;
    const { dim: C, layers: L } = this.config;
    const attention = this.attentionOptions(acts);
    const dres = acts.dresidual;

    bk.fill(dres, 0);
    const lastResidual = L > 0 ? acts.layers[L - 1].res3 : acts.encoded;
    bk.layernormBackward(dres, g.lnfw, g.lnfb, dlnf, lastResidual, this.p.lnfw, acts.lnfMean, acts.lnfRstd, {
      rows: BT,
      C,
    });
    for (let l = L - 1; l >= 0; l--) {
      // Matmuls read `w` (f16 under mixed precision); LayerNorm reads the f32 gains in `p`.
      const p = this.p.layers[l], w = this.matmulWeights.layers[l], dw = g.layers[l], a = acts.layers[l];
      const input = l > 0 ? acts.layers[l - 1].res3 : acts.encoded;
      // MLP: res3 = res2 + gelu(ln2 · fcw + fcb) · fcprojw + fcprojb
      bk.matmul(acts.dfch, dres, w.fcprojw, { m: BT, n: 4 * C, k: C, transB: true });
      bk.matmul(dw.fcprojw, a.fchGelu, dres, { m: 4 * C, n: C, k: BT, transA: true, accumulate: true });
      bk.sumRows(dw.fcprojb, dres, { rows: BT, cols: C, accumulate: true });
      bk.geluBackward(acts.dfch, a.fch, acts.dfch);
      bk.matmul(acts.dC, acts.dfch, w.fcw, { m: BT, n: C, k: 4 * C, transB: true });
      bk.matmul(dw.fcw, a.ln2, acts.dfch, { m: C, n: 4 * C, k: BT, transA: true, accumulate: true });
      bk.sumRows(dw.fcb, acts.dfch, { rows: BT, cols: 4 * C, accumulate: true });
      bk.layernormBackward(dres, dw.ln2w, dw.ln2b, acts.dC, a.res2, p.ln2w, a.ln2Mean, a.ln2Rstd, {
        rows: BT,
        C,
      });
      // Attention: res2 = input + attention(ln1 · qkvw + qkvb) · attprojw + attprojb
      bk.matmul(acts.dC2, dres, w.attprojw, { m: BT, n: C, k: C, transB: true });
      const atty = a.attyHalf ?? a.atty;
      bk.matmul(dw.attprojw, atty, dres, { m: C, n: C, k: BT, transA: true, accumulate: true });
      bk.sumRows(dw.attprojb, dres, { rows: BT, cols: C, accumulate: true });
      bk.attentionBackward(acts.dqkv, acts.dC2, a.qkv, a.atty, a.lse, attention);
      bk.matmul(acts.dC, acts.dqkv, w.qkvw, { m: BT, n: C, k: 3 * C, transB: true });
      bk.matmul(dw.qkvw, a.ln1, acts.dqkv, { m: C, n: 3 * C, k: BT, transA: true, accumulate: true });
      bk.sumRows(dw.qkvb, acts.dqkv, { rows: BT, cols: 3 * C, accumulate: true });
      bk.layernormBackward(dres, dw.ln1w, dw.ln1b, acts.dC, input, p.ln1w, a.ln1Mean, a.ln1Rstd, {
        rows: BT,
        C,
      });
    }
    bk.encoderBackward(g.wte, g.wpe, dres, acts.hostTokens, { B, T, C, hostPositions: acts.hostPositions });
  }

  /** Records `lossOut[0] = Σ losses / norm · factor` on the device (no readback). */
  recordLoss(acts: Activations, lossOut: Tensor, factor = 1): void {
    this.backend.sum(lossOut, acts.losses);
    this.backend.scale(lossOut, lossOut, factor / Math.max(acts.lossNorm, 1e-12));
  }

  /** The mean loss of the last forward with targets (reads back: not inside a training loop). */
  async readLoss(acts: Activations): Promise<number> {
    this.recordLoss(acts, acts.lossSum);
    const [loss] = await this.backend.download(acts.lossSum);
    return loss[0];
  }

  /** Copies the parameters back to the host. */
  async readParams(): Promise<Float32Array> {
    const [params] = await this.backend.download(this.params);
    return params as Float32Array;
  }

  /** Zeroes the gradient buffer. */
  zeroGrads(): void {
    this.needGrads();
    this.backend.fill(this.grads!, 0);
  }

  /** Frees the parameter, f16 copy and gradient buffers. */
  dispose(): void {
    this.backend.free(this.params);
    if (this.half) this.backend.free(this.half);
    if (this.grads) this.backend.free(this.grads);
  }

  /** Throws unless `positions` has B·T entries, each below the context (wpe's rows). */
  private checkPositions(acts: Activations, positions: Int32Array | Uint32Array): void {
    const BT = acts.B * acts.T, { context } = this.config;
    if (positions.length !== BT) throw new Error(`expected ${BT} positions, got ${positions.length}`);
    for (let i = 0; i < BT; i++) {
      if (positions[i] < 0 || positions[i] >= context) {
        throw new RangeError(
          `forward: positions[${i}] (row ${Math.floor(i / acts.T)}, column ${i % acts.T}) is ` +
            `${positions[i]}, outside the model's context 0..${context - 1}`,
        );
      }
    }
  }

  /** The attention options of the last forward on `acts` (its segment ids, if it had them). */
  private attentionOptions(acts: Activations) {
    const { dim: C, heads: NH } = this.config;
    return { B: acts.B, T: acts.T, C, NH, segments: acts.segmented ? acts.segments : undefined };
  }

  private needGrads(): ParamViews {
    if (!this.g) throw new Error("this GPT was created without gradients (pass { training: true })");
    return this.g;
  }
}
