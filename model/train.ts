/**
 * The training step around a {@linkcode GPT}: micro-batch forward/backward with gradient
 * accumulation, global-norm clipping and AdamW over the flat parameter buffer, all recorded on the
 * device; the loss and gradient norm of every step land in a small device buffer that
 * {@linkcode Trainer.readMetrics} reads back every N steps (one sync instead of one per step).
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
import { type Activations, GPT } from "./gpt.ts";
import type { ParamLayout } from "./params.ts";

/** AdamW hyperparameters (the learning rate comes per step). */
export interface AdamWConfig {
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
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
  private readonly m: Tensor;
  private readonly v: Tensor;
  private readonly norm: Tensor;
  private readonly clipFactor: Tensor;
  /** `[capacity, 2]`: loss and gradient norm per pending step. */
  private readonly metrics: Tensor;
  private readonly capacity: number;
  private pending = 0;
  private microSteps = 0;
  private step: number;

  private constructor(readonly model: GPT, private readonly options: TrainerOptions) {
    const bk = model.backend;
    const total = model.layout.total;
    this.acts = model.activations(options.batch, options.seqLen, {
      mask: options.masked,
      segments: options.masked,
    });
    this.m = bk.alloc(total);
    this.v = bk.alloc(total);
    if (options.m) bk.upload(this.m, options.m);
    if (options.v) bk.upload(this.v, options.v);
    this.norm = bk.alloc(1);
    this.clipFactor = bk.alloc(1);
    this.capacity = options.metricsCapacity ?? 1024;
    this.metrics = bk.alloc(2 * this.capacity);
    this.step = options.step ?? 0;
  }

  /** A trainer for the model `layout` with the given weights, on `backend`. */
  static create(backend: Backend, layout: ParamLayout, options: TrainerOptions): Promise<Trainer> {
    const model = new GPT(backend, layout, options.params, { training: true });
    return Promise.resolve(new Trainer(model, options));
  }

  /** Optimizer steps taken. */
  get steps(): number {
    return this.step;
  }

  /**
   * Records forward and backward of one micro-batch; gradients accumulate. `gradScale` is
   * 1 / micro-batches per step, so the accumulated gradient is that of the mean loss.
   */
  microStep(batch: Batch & { lossMask?: Float32Array; segments?: Int32Array }, gradScale = 1): void {
    if (this.pending >= this.capacity) {
      throw new Error(`${this.pending} steps of metrics are waiting: call readMetrics() first`);
    }
    const { model, acts } = this;
    model.forward(acts, batch.inputs, {
      targets: batch.targets,
      lossMask: batch.lossMask,
      segments: batch.segments,
      gradScale,
    });
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
    const { model } = this;
    const bk = model.backend;
    const clip = this.options.clip ?? 1;
    bk.globalNorm(this.norm, model.grads!);
    bk.copy(bk.view(this.metrics, 2 * this.pending + 1, 1), this.norm);
    if (clip > 0) bk.clipScale(this.clipFactor, this.norm, clip);
    this.step++;
    bk.adamw(model.params, model.grads!, this.m, this.v, {
      lr,
      ...(this.options.adamw ?? DEFAULT_ADAMW),
      step: this.step,
      decayRange: [0, model.layout.decayEnd],
      gradScale: clip > 0 ? this.clipFactor : undefined,
    });
    model.zeroGrads();
    bk.submit();
    this.pending++;
    this.microSteps = 0;
  }

  /** Reads back the metrics of the steps since the last call (one device sync). */
  async readMetrics(): Promise<StepMetrics[]> {
    if (this.pending === 0) return [];
    const bk = this.model.backend;
    const [values] = await bk.download(bk.view(this.metrics, 0, 2 * this.pending));
    const first = this.step - this.pending + 1;
    const out = Array.from({ length: this.pending }, (_, i) => ({
      step: first + i,
      loss: values[2 * i],
      gradNorm: values[2 * i + 1],
    }));
    this.pending = 0;
    return out;
  }

  /** Mean loss over `batches` (no gradients are touched); reads back once at the end. */
  async evalLoss(batches: Batch[]): Promise<number> {
    const { model, acts } = this;
    const bk = model.backend;
    const total = bk.alloc(1);
    try {
      for (const batch of batches) {
        model.forward(acts, batch.inputs, { targets: batch.targets });
        model.recordLoss(acts, acts.lossSum, 1 / batches.length);
        bk.add(total, total, acts.lossSum);
      }
      const [value] = await bk.download(total);
      return value[0];
    } finally {
      bk.free(total);
    }
  }

  /** The weights and AdamW moments, on the host (for checkpoints). */
  async state(): Promise<{ params: Float32Array; m: Float32Array; v: Float32Array }> {
    const [params, m, v] = await this.model.backend.download(this.model.params, this.m, this.v);
    return { params: params as Float32Array, m: m as Float32Array, v: v as Float32Array };
  }

  /** Frees every device buffer. */
  dispose(): void {
    const bk = this.model.backend;
    this.model.freeActivations(this.acts);
    for (const t of [this.m, this.v, this.norm, this.clipFactor, this.metrics]) bk.free(t);
    this.model.dispose();
  }
}
