/**
 * The training step around a {@linkcode GPT}: micro-batch forward/backward with gradient
 * accumulation, global-norm clipping and AdamW over the flat parameter buffer, all recorded on the
 * device; the loss and gradient norm of every step land in a small device buffer that
 * {@linkcode Trainer.readMetrics} reads back every N steps (one sync instead of one per step).
 *
 * {@linkcode Optimizer} is the AdamW part on its own, over one or more flat buffers with one global
 * clip: the reward model and PPO's value function train a trunk and a scalar head with it.
 *
 * @example
 * ```ts
 * import { createCpuBackend } from "../kernels/cpu.ts";
 * import { gptConfig } from "./config.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * import { Trainer } from "./train.ts";
 * const layout = paramLayout(gptConfig({ layers: 1, dim: 32, heads: 2, context: 8, vocab: 16 }));
 * const trainer = await Trainer.create(createCpuBackend(), layout, { params: initParams(layout, 1), batch: 2, seqLen: 8 });
 * const inputs = new Int32Array(16).map((_, i) => i % 16), targets = inputs.map((t) => (t + 1) % 16);
 * trainer.microStep({ inputs, targets });
 * trainer.optimizerStep(1e-3);
 * console.log(await trainer.readMetrics()); // [{ step: 1, loss: 2.77…, gradNorm: … }]
 * ```
 * @module
 */
import type { Backend, Tensor } from "../kernels/backend.ts";
import type { Batch } from "./data.ts";
import { type Activations, GPT, type Precision } from "./gpt.ts";
import type { ParamLayout } from "./params.ts";

/** AdamW hyperparameters (the learning rate comes per step). */
export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
}

/** AdamW settings of one network, with its gradient clip. */
export interface OptimizerSettings extends AdamWConfig {
  /** Clip the global gradient norm to this (0: off). */
  clip: number;
}

/** The host copy of a network's trainable state, for checkpoints (one entry per {@linkcode ParamGroup}). */
export interface OptimizerState {
  /** Optimizer steps taken (AdamW's bias correction). */
  step: number;
  params: Float32Array[];
  m: Float32Array[];
  v: Float32Array[];
}

/** One trainable flat buffer: its parameters, gradients and the range that takes weight decay. */
export interface ParamGroup {
  params: Tensor;
  grads: Tensor;
  /** `[0, decayEnd)` takes weight decay, the rest does not. */
  decayEnd: number;
  /** An f16 copy of `params` to refresh after each update (a mixed-precision {@linkcode GPT.half}). */
  half?: Tensor;
}

/**
 * AdamW over one or more flat buffers with one global gradient-norm clip across all of them (a
 * value model's trunk and head are two buffers). Everything is recorded on the device.
 *
 * @example A GPT trunk and a scalar head trained together
 * ```ts
 * import { createCpuBackend } from "../kernels/cpu.ts";
 * import { gptConfig } from "./config.ts";
 * import { GPT } from "./gpt.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * import { Optimizer } from "./train.ts";
 * const bk = createCpuBackend();
 * const layout = paramLayout(gptConfig({ layers: 1, dim: 32, heads: 2, context: 8, vocab: 16 }));
 * const gpt = new GPT(bk, layout, initParams(layout, 1), { training: true });
 * const head = bk.alloc(32), headGrads = bk.alloc(32);
 * const opt = new Optimizer(bk, [
 *   { params: gpt.params, grads: gpt.grads!, decayEnd: layout.decayEnd },
 *   { params: head, grads: headGrads, decayEnd: 32 },
 * ], { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 1 });
 * // … forward/backward into gpt.grads and headGrads, then:
 * opt.update(1e-4);
 * ```
 */
export class Optimizer {
  private readonly m: Tensor[];
  private readonly v: Tensor[];
  private readonly norms: Tensor;
  private readonly norm: Tensor;
  private readonly factor: Tensor;

  constructor(
    private readonly backend: Backend,
    private readonly groups: ParamGroup[],
    private readonly settings: OptimizerSettings,
    private step = 0,
    moments?: { m: Float32Array[]; v: Float32Array[] },
  ) {
    const moment = (g: ParamGroup, init?: Float32Array) => {
      const t = backend.alloc(g.params.length);
      if (init) backend.upload(t, init);
      return t;
    };
    this.m = groups.map((g, i) => moment(g, moments?.m[i]));
    this.v = groups.map((g, i) => moment(g, moments?.v[i]));
    this.norms = backend.alloc(groups.length);
    this.norm = backend.alloc(1);
    this.factor = backend.alloc(1);
  }

  /** The device scalar holding the last step's global gradient norm (before clipping). */
  get gradNorm(): Tensor {
    return this.norm;
  }

  /** Optimizer steps taken. */
  get steps(): number {
    return this.step;
  }

  /**
   * Records the clip factor and the AdamW update at `lr`, then zeroes the gradients; `recordAfter`
   * (e.g. copying the norm into a metrics buffer) goes into the same submit.
   */
  update(lr: number, recordAfter?: () => void): void {
    const bk = this.backend;
    const { clip, ...adamw } = this.settings;
    if (this.groups.length === 1) bk.globalNorm(this.norm, this.groups[0].grads);
    else {
      // ‖(g₁, g₂, …)‖ = ‖(‖g₁‖, ‖g₂‖, …)‖: per-buffer norms, then the norm of those.
      this.groups.forEach((g, i) => bk.globalNorm(bk.view(this.norms, i, 1), g.grads));
      bk.globalNorm(this.norm, this.norms);
    }
    if (clip > 0) bk.clipScale(this.factor, this.norm, clip);
    this.step++;
    this.groups.forEach((g, i) => {
      bk.adamw(g.params, g.grads, this.m[i], this.v[i], {
        lr,
        beta1: adamw.beta1,
        beta2: adamw.beta2,
        eps: adamw.eps,
        weightDecay: adamw.weightDecay,
        step: this.step,
        decayRange: [0, g.decayEnd],
        gradScale: clip > 0 ? this.factor : undefined,
      });
      if (g.half) bk.copy(g.half, g.params);
      bk.fill(g.grads, 0);
    });
    recordAfter?.();
    bk.submit();
  }

  /** Parameters and moments on the host. */
  async state(): Promise<OptimizerState> {
    const n = this.groups.length;
    const all = await this.backend.download(...this.groups.map((g) => g.params), ...this.m, ...this.v);
    const f = all as Float32Array[];
    return { step: this.step, params: f.slice(0, n), m: f.slice(n, 2 * n), v: f.slice(2 * n) };
  }

  /** Frees the moments and scratch (not the groups' buffers). */
  dispose(): void {
    for (const t of [...this.m, ...this.v, this.norms, this.norm, this.factor]) this.backend.free(t);
  }
}

/** Options of {@linkcode Trainer.create}. */
export interface TrainerOptions {
  params: Float32Array;
  /** AdamW moments to resume from (zeros when absent). */
  m?: Float32Array;
  v?: Float32Array;
  /** Optimizer steps already taken (for AdamW's bias correction on resume). */
  step?: number;
  batch: number;
  seqLen: number;
  adamw?: AdamWConfig;
  /** Clip the global gradient norm to this; 0 turns clipping off. Default 1. */
  clip?: number;
  /** Steps whose metrics can wait on the device before {@linkcode Trainer.readMetrics} (default 1024). */
  metricsCapacity?: number;
  /** Allocate a loss mask and segment ids (SFT). */
  masked?: boolean;
  /** `fp32` (default) or `mixed` (f16 matmul inputs; needs a backend with f16, see {@linkcode GPT}). */
  precision?: Precision;
}

/**
 * A batch for {@linkcode Trainer.microStep} and {@linkcode Trainer.evalLoss}: tokens and targets,
 * plus, for packed fine-tuning data, a loss mask, segment ids and position ids (see
 * {@linkcode GPT.forward}; mask and segments need a `masked` trainer).
 */
export interface TrainBatch extends Batch {
  lossMask?: Float32Array;
  segments?: Int32Array;
  positions?: Int32Array | Uint32Array;
}

/** The loss and gradient norm of one optimizer step. */
export interface StepMetrics {
  /** 1-based step number. */
  step: number;
  loss: number;
  /** Global gradient norm before clipping. */
  gradNorm: number;
}

const DEFAULT_ADAMW: AdamWConfig = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };

/** Training state on the device: model, gradients, AdamW moments, metrics ring. */
export class Trainer {
  private readonly acts: Activations;
  private readonly optimizer: Optimizer;
  /** `[capacity, 2]`: loss and gradient norm per pending step. */
  private readonly metrics: Tensor;
  private readonly capacity: number;
  private pending = 0;
  private microSteps = 0;

  private constructor(readonly model: GPT, options: TrainerOptions) {
    const bk = model.backend;
    this.acts = model.activations(options.batch, options.seqLen, {
      mask: options.masked,
      segments: options.masked,
    });
    this.optimizer = new Optimizer(
      bk,
      [{ params: model.params, grads: model.grads!, decayEnd: model.layout.decayEnd, half: model.half }],
      { ...(options.adamw ?? DEFAULT_ADAMW), clip: options.clip ?? 1 },
      options.step ?? 0,
      options.m && options.v && { m: [options.m], v: [options.v] },
    );
    this.capacity = options.metricsCapacity ?? 1024;
    this.metrics = bk.alloc(2 * this.capacity);
  }

  /** A trainer for the model `layout` with the given weights, on `backend`. */
  static create(backend: Backend, layout: ParamLayout, options: TrainerOptions): Promise<Trainer> {
    const model = new GPT(backend, layout, options.params, { training: true, precision: options.precision });
    return Promise.resolve(new Trainer(model, options));
  }

  /** Optimizer steps taken. */
  get steps(): number {
    return this.optimizer.steps;
  }

  /**
   * Records forward and backward of one micro-batch; gradients accumulate. `gradScale` is
   * 1 / micro-batches per step, so the accumulated gradient is that of the mean loss.
   */
  microStep(batch: TrainBatch, gradScale = 1): void {
    if (this.pending >= this.capacity) {
      throw new Error(`${this.pending} steps of metrics are waiting: call readMetrics() first`);
    }
    const { model, acts } = this;
    model.forward(acts, batch.inputs, { ...forwardInputs(batch), gradScale });
    model.backward(acts);
    // The step's loss is the mean of its micro-batches' losses: accumulate loss · gradScale.
    const slot = model.backend.view(this.metrics, 2 * this.pending, 1);
    if (this.microSteps === 0) model.backend.fill(slot, 0);
    model.recordLoss(acts, acts.lossSum, gradScale);
    model.backend.add(slot, slot, acts.lossSum);
    this.microSteps++;
  }

  /** Records clipping and the AdamW update at learning rate `lr`, then zeroes the gradients. */
  optimizerStep(lr: number): void {
    if (this.microSteps === 0) throw new Error("optimizerStep() without a microStep() before it");
    const bk = this.model.backend;
    // The norm's copy rides in the optimizer's submit: one submit a step, none left for the next.
    this.optimizer.update(
      lr,
      () => bk.copy(bk.view(this.metrics, 2 * this.pending + 1, 1), this.optimizer.gradNorm),
    );
    this.pending++;
    this.microSteps = 0;
  }

  /** Reads back the metrics of the steps since the last call (one device sync). */
  async readMetrics(): Promise<StepMetrics[]> {
    if (this.pending === 0) return [];
    const bk = this.model.backend;
    const [values] = await bk.download(bk.view(this.metrics, 0, 2 * this.pending));
    const first = this.steps - this.pending + 1;
    const out = Array.from({ length: this.pending }, (_, i) => ({
      step: first + i,
      loss: values[2 * i],
      gradNorm: values[2 * i + 1],
    }));
    this.pending = 0;
    return out;
  }

  /**
   * The loss over `batches`, token-weighted: Σ per-token losses / Σ loss-mask weights (without
   * masks, the mean over every token). With loss masks it is SFT's response-only loss. No gradients
   * are touched; reads back once at the end.
   */
  async evalLoss(batches: TrainBatch[]): Promise<number> {
    const { model, acts } = this;
    const bk = model.backend;
    const total = bk.alloc(1);
    try {
      let weight = 0;
      for (const batch of batches) {
        model.forward(acts, batch.inputs, forwardInputs(batch));
        weight += acts.lossNorm;
        bk.sum(acts.lossSum, acts.losses);
        bk.add(total, total, acts.lossSum);
      }
      if (weight === 0) throw new Error("evalLoss: the loss masks select no tokens");
      const [sum] = await bk.download(total);
      return sum[0] / weight;
    } finally {
      bk.free(total);
    }
  }

  /** The weights and AdamW moments, on the host (for checkpoints). */
  async state(): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array }> {
    const { params, m, v } = await this.optimizer.state();
    return { params: params[0], m: m[0], v: v[0] };
  }

  /** Frees every device buffer. */
  dispose(): void {
    this.model.freeActivations(this.acts);
    this.optimizer.dispose();
    this.model.backend.free(this.metrics);
    this.model.dispose();
  }
}

/** The forward options a batch carries (its targets and packing inputs). */
function forwardInputs(batch: TrainBatch) {
  const { targets, lossMask, segments, positions } = batch;
  return { targets, lossMask, segments, positions };
}
