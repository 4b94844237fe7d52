/**
 * The networks of a PPO run on a compute backend: the policy (trained), the frozen reference model
 * (the SFT model the KL penalty is measured against), and the scalar-head models (the frozen reward
 * model and the trained value function), with `model/train.ts`'s multi-buffer AdamW.
 *
 * PPO's policy gradient is a per-token number times ∇log π(y_t): with g_t = ∂L/∂log π(y_t) from
 * `clippedPolicyLoss`, ∂L/∂logits_t = g_t·(onehot(y_t) − softmax_t), which is the backend's fused
 * cross-entropy gradient with per-token weight −g_t. So a PPO step is: forward, read back the
 * log-probs of the response tokens, compute g on the host, then the weighted cross-entropy backward
 * over the logits still on the device: one forward per minibatch.
 *
 * `model/train.ts`'s Trainer computes its loss inside the step (the LM loss, optionally masked); the
 * PPO weights depend on the forward's own log-probs, read back mid-step, so this file drives
 * {@linkcode GPT} and the backend's AdamW directly, with the same clipping and decay split.
 *
 * Every network takes a `precision` (`model/gpt.ts`): under `mixed` its matmuls read an f16 copy of
 * the weights, which the optimizer of a trained network refreshes after each step (the frozen ones
 * make it once). Log-probs, softmax, the scalar heads and AdamW stay f32.
 *
 * @module
 */
import type { Backend, Tensor } from "../../kernels/backend.ts";
import type { Batch } from "../../model/data.ts";
import { type Activations, GPT, type Precision } from "../../model/gpt.ts";
import { Optimizer, type OptimizerSettings, type OptimizerState } from "../../model/train.ts";
import type { ParamLayout } from "../../model/params.ts";
import { ScalarHead, type ScalarHeadWeights } from "../../model/scalar_head.ts";
import { gatherResponses, type PackedSequences } from "./rollout.ts";

/** Per-position log π(target) of packed rows, from a forward whose logits stay in `acts`. */
async function forwardLogprobs(
  gpt: GPT,
  acts: Activations,
  out: Tensor,
  packed: PackedSequences,
): Promise<Float32Array> {
  const bk = gpt.backend;
  const rows = acts.B * acts.T;
  gpt.forward(acts, packed.inputs);
  bk.upload(acts.targets, packed.targets);
  bk.logSoftmaxGather(out, acts.logits, acts.targets, { rows, V: gpt.config.vocab });
  const [logprobs] = await bk.download(out);
  return logprobs as Float32Array;
}

/** The frozen reference (SFT) model: log-probs only, no gradients. */
export class ReferenceModel {
  readonly gpt: GPT;
  private readonly acts: Activations;
  private readonly out: Tensor;

  constructor(
    backend: Backend,
    layout: ParamLayout,
    params: Float32Array,
    rows: number,
    T: number,
    precision: Precision = "fp32",
  ) {
    this.gpt = new GPT(backend, layout, params, { precision });
    this.acts = this.gpt.activations(rows, T);
    this.out = backend.alloc(rows * T);
  }

  /** log π_ref(target) at every position of `rows × T` packed sequences. */
  logprobs(packed: PackedSequences): Promise<Float32Array> {
    return forwardLogprobs(this.gpt, this.acts, this.out, packed);
  }

  dispose(): void {
    this.gpt.freeActivations(this.acts);
    this.gpt.backend.free(this.out);
    this.gpt.dispose();
  }
}

/** Options of a {@linkcode Policy}. */
export interface PolicyOptions {
  /** Rows of a PPO minibatch forward (and of the rollout evaluation). */
  rows: number;
  /** Positions per row. */
  T: number;
  /** Shape of a ptx batch, when the ptx term is on. */
  ptx?: { batch: number; T: number };
  optimizer: OptimizerSettings;
  /** Resume: optimizer steps taken and AdamW moments. */
  resume?: { step: number; m: Float32Array; v: Float32Array };
  /** `fp32` (default) or `mixed`. */
  precision?: Precision;
}

/** The trainable policy: rollout log-probs and entropy, PPO and ptx gradients, AdamW. */
export class Policy {
  readonly gpt: GPT;
  private readonly acts: Activations;
  private readonly ptxActs?: Activations;
  private readonly out: Tensor;
  private readonly entropies: Tensor;
  /** Device accumulator of Σ ptx losses since the last {@linkcode readPtxLoss}. */
  private readonly ptxLoss: Tensor;
  private ptxCount = 0;
  private readonly optimizer: Optimizer;

  constructor(backend: Backend, layout: ParamLayout, params: Float32Array, options: PolicyOptions) {
    this.gpt = new GPT(backend, layout, params, { training: true, precision: options.precision });
    this.acts = this.gpt.activations(options.rows, options.T, { mask: true });
    if (options.ptx) this.ptxActs = this.gpt.activations(options.ptx.batch, options.ptx.T);
    this.out = backend.alloc(options.rows * options.T);
    this.entropies = backend.alloc(options.rows * options.T);
    this.ptxLoss = backend.alloc(1);
    const r = options.resume;
    this.optimizer = new Optimizer(
      backend,
      [{ params: this.gpt.params, grads: this.gpt.grads!, decayEnd: layout.decayEnd, half: this.gpt.half }],
      options.optimizer,
      r?.step ?? 0,
      r && { m: [r.m], v: [r.v] },
    );
  }

  /** log π(target) at every position of the packed rows (no gradient). */
  logprobs(packed: PackedSequences): Promise<Float32Array> {
    return forwardLogprobs(this.gpt, this.acts, this.out, packed);
  }

  /**
   * Entropy (nats) of the next-token distribution at each response position of the last forward
   * ({@linkcode logprobs}), computed on the device (one float per position comes back).
   */
  async responseEntropy(packed: PackedSequences): Promise<Float64Array[]> {
    const bk = this.gpt.backend;
    const rows = this.acts.B * this.acts.T;
    bk.entropy(this.entropies, this.acts.logits, { rows, V: this.gpt.config.vocab });
    const [entropies] = await bk.download(this.entropies);
    return gatherResponses(entropies, packed);
  }

  /**
   * One PPO gradient: forward over the packed minibatch, read back the log-probs, let `loss` turn
   * them into ∂L/∂log π per position (zero off the response tokens), and backpropagate that.
   * Gradients accumulate until {@linkcode step}. Returns whatever `loss` returns.
   */
  async policyGradient<R>(
    packed: PackedSequences,
    loss: (logprobs: Float32Array) => { grad: Float32Array; result: R },
  ): Promise<R> {
    const { gpt, acts } = this;
    const bk = gpt.backend;
    const rows = acts.B * acts.T;
    const logprobs = await forwardLogprobs(gpt, acts, this.out, packed);
    const { grad, result } = loss(logprobs);
    // ∂L/∂logits = g·(onehot − softmax) = (−g)·(softmax − onehot): cross-entropy with weight −g.
    // "count" normalisation divides by `rows`; gradScale = rows cancels it.
    const weights = new Float32Array(rows);
    for (let i = 0; i < rows; i++) weights[i] = -grad[i];
    bk.upload(acts.mask!, weights);
    bk.crossEntropy(acts.losses, acts.logits, acts.targets, {
      rows,
      V: gpt.config.vocab,
      mask: acts.mask,
      normalize: "count",
      gradScale: rows,
    });
    gpt.backward(acts);
    return result;
  }

  /**
   * The ptx term: adds `coef` × the gradient of pretraining's loss (mean next-token cross-entropy,
   * i.e. −mean log π(x_pretrain)) on `batch`. Its loss is accumulated on the device.
   */
  ptxGradient(batch: Batch, coef: number): void {
    const { gpt } = this;
    const acts = this.ptxActs;
    if (!acts) throw new Error("this policy was created without a ptx batch shape");
    gpt.forward(acts, batch.inputs, { targets: batch.targets, gradScale: coef });
    gpt.backward(acts);
    if (this.ptxCount === 0) gpt.backend.fill(this.ptxLoss, 0);
    gpt.recordLoss(acts, acts.lossSum);
    gpt.backend.add(this.ptxLoss, this.ptxLoss, acts.lossSum);
    this.ptxCount++;
  }

  /** Mean pretraining loss of the ptx batches since the last call (one readback), or undefined. */
  async readPtxLoss(): Promise<number | undefined> {
    if (this.ptxCount === 0) return undefined;
    const [sum] = await this.gpt.backend.download(this.ptxLoss);
    const mean = sum[0] / this.ptxCount;
    this.ptxCount = 0;
    return mean;
  }

  /** The gradient buffer on the host (tests). */
  async readGrads(): Promise<Float32Array> {
    const [g] = await this.gpt.backend.download(this.gpt.grads!);
    return g as Float32Array;
  }

  /** Records AdamW at `lr` over the accumulated gradients, then zeroes them. */
  step(lr: number): void {
    this.optimizer.update(lr);
  }

  /** Weights, moments and step count on the host. */
  async state(): Promise<{ step: number; params: Float32Array; m: Float32Array; v: Float32Array }> {
    const s = await this.optimizer.state();
    return { step: s.step, params: s.params[0], m: s.m[0], v: s.v[0] };
  }

  dispose(): void {
    const bk = this.gpt.backend;
    this.gpt.freeActivations(this.acts);
    if (this.ptxActs) this.gpt.freeActivations(this.ptxActs);
    bk.free(this.out);
    bk.free(this.entropies);
    bk.free(this.ptxLoss);
    this.optimizer.dispose();
    this.gpt.dispose();
  }
}

/** Options of a {@linkcode ScalarModel}. */
export interface ScalarModelOptions {
  rows: number;
  T: number;
  /** Train it (the value function) with these AdamW settings; absent: frozen (the reward model). */
  optimizer?: OptimizerSettings;
  resume?: { step: number; m: Float32Array[]; v: Float32Array[] };
  /** `fp32` (default) or `mixed`. */
  precision?: Precision;
}

/**
 * A GPT trunk with a scalar head: the reward model (frozen; its score is the head at the last token)
 * and the value function (trained; V(s_t) is the head at the position that predicts token t).
 * The head always has a bias (0 when `head` has none), so its buffer is `[C + 1]`: the head's weight,
 * then its bias, a second AdamW group beside the trunk's.
 */
export class ScalarModel {
  readonly gpt: GPT;
  /** With a bias: `head.params` is `[C + 1]`, the checkpoint's `head` tensor. */
  readonly head: ScalarHead;
  private readonly acts: Activations;
  private readonly values: Tensor;
  private readonly dvalues: Tensor;
  private readonly optimizer?: Optimizer;

  constructor(
    backend: Backend,
    layout: ParamLayout,
    params: Float32Array,
    head: ScalarHeadWeights,
    options: ScalarModelOptions,
  ) {
    const training = options.optimizer !== undefined;
    this.gpt = new GPT(backend, layout, params, { training, precision: options.precision });
    this.head = new ScalarHead(this.gpt, { weight: head.weight, bias: head.bias ?? 0 }, { training });
    this.acts = this.gpt.activations(options.rows, options.T);
    this.values = backend.alloc(options.rows * options.T);
    this.dvalues = backend.alloc(options.rows * options.T);
    if (options.optimizer) {
      const r = options.resume;
      this.optimizer = new Optimizer(
        backend,
        [
          { params: this.gpt.params, grads: this.gpt.grads!, decayEnd: layout.decayEnd, half: this.gpt.half },
          this.head.paramGroup(),
        ],
        options.optimizer,
        r?.step ?? 0,
        r,
      );
    }
  }

  private recordForward(packed: PackedSequences): void {
    // The LM head's [rows, V] logits are not needed: the scalar head reads the final LayerNorm.
    this.gpt.forward(this.acts, packed.inputs, { logits: false });
    this.head.forward(this.acts, this.values);
  }

  /** The head's output at every position of the packed rows. */
  async forward(packed: PackedSequences): Promise<Float32Array> {
    this.recordForward(packed);
    const [values] = await this.gpt.backend.download(this.values);
    return values as Float32Array;
  }

  /**
   * One value-function gradient: forward, read back the values, let `loss` turn them into
   * ∂L/∂value per position, and backpropagate through the head and the trunk (accumulating).
   */
  async valueGradient<R>(
    packed: PackedSequences,
    loss: (values: Float32Array) => { grad: Float32Array; result: R },
  ): Promise<R> {
    if (!this.optimizer) throw new Error("this scalar model is frozen");
    const values = await this.forward(packed);
    const { grad, result } = loss(values);
    this.gpt.backend.upload(this.dvalues, grad);
    this.head.backward(this.acts, this.dvalues);
    return result;
  }

  /** The accumulated trunk and head gradients on the host (tests). */
  async readGrads(): Promise<{ trunk: Float32Array; head: Float32Array }> {
    if (!this.optimizer) throw new Error("this scalar model is frozen");
    const [trunk, head] = await this.gpt.backend.download(this.gpt.grads!, this.head.grads!);
    return { trunk: trunk as Float32Array, head: head as Float32Array };
  }

  /** Records AdamW at `lr` over the accumulated gradients, then zeroes them. */
  step(lr: number): void {
    if (!this.optimizer) throw new Error("this scalar model is frozen");
    this.optimizer.update(lr);
  }

  /** Trunk and head weights, moments and step count on the host (trainable models only). */
  async state(): Promise<OptimizerState> {
    if (!this.optimizer) throw new Error("this scalar model is frozen");
    return await this.optimizer.state();
  }

  dispose(): void {
    const bk = this.gpt.backend;
    this.gpt.freeActivations(this.acts);
    for (const t of [this.values, this.dvalues]) bk.free(t);
    this.head.dispose();
    this.optimizer?.dispose();
    this.gpt.dispose();
  }
}
