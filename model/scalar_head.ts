/**
 * A scalar head on a GPT trunk: `value[r] = lnf[r] · weight (+ bias)` at every position, read from
 * {@linkcode Activations.lnf} after a forward with `logits: false`. It is the reward model's score
 * (Hugging Face `GPT2ForSequenceClassification`'s `score`, no bias) and PPO's value function (with a
 * bias). Weight and bias share one flat buffer, so the head is one {@linkcode ParamGroup} beside the
 * trunk's in an {@linkcode Optimizer} (one global gradient clip over both).
 *
 * @example A value-function step
 * ```ts
 * import { createCpuBackend } from "../kernels/cpu.ts";
 * import { gptConfig } from "./config.ts";
 * import { GPT } from "./gpt.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * import { ScalarHead } from "./scalar_head.ts";
 * import { Optimizer } from "./train.ts";
 * const bk = createCpuBackend();
 * const layout = paramLayout(gptConfig({ layers: 1, dim: 32, heads: 2, context: 8, vocab: 16 }));
 * const gpt = new GPT(bk, layout, initParams(layout, 1), { training: true });
 * const head = new ScalarHead(gpt, { weight: new Float32Array(32), bias: 0 }, { training: true });
 * const acts = gpt.activations(1, 8);
 * const values = bk.alloc(8), dvalues = bk.alloc(8);
 * const opt = new Optimizer(bk, [
 *   { params: gpt.params, grads: gpt.grads!, decayEnd: layout.decayEnd },
 *   head.paramGroup(),
 * ], { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, clip: 1 });
 * gpt.forward(acts, new Int32Array(8), { logits: false });
 * head.forward(acts, values);
 * bk.upload(dvalues, new Float32Array(8).fill(0.1)); // ∂L/∂value, e.g. from a value loss on the host
 * head.backward(acts, dvalues);
 * opt.update(1e-4);
 * ```
 * @module
 */
import type { Tensor } from "../kernels/backend.ts";
import type { Activations, GPT } from "./gpt.ts";
import type { ParamGroup } from "./train.ts";

/** A head's weights on the host: `weight [C]`, and `bias` when the head has one. */
export interface ScalarHeadWeights {
  weight: Float32Array;
  bias?: number;
}

/** A `[C] → 1` projection of a GPT's final LayerNorm output; see the module doc. */
export class ScalarHead {
  /** `[C]` weight, then the bias when the head has one. */
  readonly params: Tensor;
  /** Same layout as {@linkcode params} (training only). */
  readonly grads?: Tensor;
  readonly hasBias: boolean;
  private readonly C: number;

  constructor(readonly gpt: GPT, init: ScalarHeadWeights, options: { training?: boolean } = {}) {
    this.C = gpt.config.dim;
    if (init.weight.length !== this.C) {
      throw new Error(`scalar head has ${init.weight.length} weights, the model width is ${this.C}`);
    }
    this.hasBias = init.bias !== undefined;
    const n = this.C + (this.hasBias ? 1 : 0);
    const host = new Float32Array(n);
    host.set(init.weight);
    if (this.hasBias) host[this.C] = init.bias!;
    const bk = gpt.backend;
    this.params = bk.alloc(n);
    bk.upload(this.params, host);
    if (options.training) this.grads = bk.alloc(n);
  }

  /** Records `values [B·T] = acts.lnf · weight (+ bias)` (after the trunk's forward on `acts`). */
  forward(acts: Activations, values: Tensor): void {
    const bk = this.gpt.backend, C = this.C;
    bk.matmul(values, acts.lnf, bk.view(this.params, 0, C), {
      m: acts.B * acts.T,
      n: 1,
      k: C,
      bias: this.hasBias ? bk.view(this.params, C, 1) : undefined,
    });
  }

  /**
   * Records the backward of `dvalues [B·T]` (∂L/∂value): accumulates the head's gradients, then
   * backpropagates `dlnf = dvalues · weightᵀ` through the trunk ({@linkcode GPT.backwardTrunk}).
   */
  backward(acts: Activations, dvalues: Tensor): void {
    if (!this.grads) {
      throw new Error("this scalar head was created without gradients (pass { training: true })");
    }
    const bk = this.gpt.backend, C = this.C, rows = acts.B * acts.T;
    // value = lnf · w + b:  dlnf = dvalue · wᵀ,  dw += lnfᵀ · dvalue,  db += Σ dvalue.
    bk.matmul(acts.dC, dvalues, bk.view(this.params, 0, C), { m: rows, n: C, k: 1, transB: true });
    bk.matmul(bk.view(this.grads, 0, C), acts.lnf, dvalues, {
      m: C,
      n: 1,
      k: rows,
      transA: true,
      accumulate: true,
    });
    if (this.hasBias) bk.sumRows(bk.view(this.grads, C, 1), dvalues, { rows, cols: 1, accumulate: true });
    this.gpt.backwardTrunk(acts, acts.dC);
  }

  /** The head as an optimizer group: the weight takes weight decay, the bias does not. */
  paramGroup(): ParamGroup {
    if (!this.grads) {
      throw new Error("this scalar head was created without gradients (pass { training: true })");
    }
    return { params: this.params, grads: this.grads, decayEnd: this.C };
  }

  /** The weights on the host (for checkpoints and artifacts). */
  async read(): Promise<ScalarHeadWeights> {
    const [flat] = await this.gpt.backend.download(this.params);
    const weight = (flat as Float32Array).slice(0, this.C);
    return this.hasBias ? { weight, bias: flat[this.C] } : { weight };
  }

  /** Frees the head's buffers (not the trunk's). */
  dispose(): void {
    this.gpt.backend.free(this.params);
    if (this.grads) this.gpt.backend.free(this.grads);
  }
}
