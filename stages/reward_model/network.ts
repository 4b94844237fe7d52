/**
 * The reward model on a compute backend: a GPT trunk (initialised from the SFT model) whose
 * unembedding is replaced by a scalar head, `r = ln_f(h_last) · w`, read at the last token of
 * prompt ++ response (the end marker that closes the response).
 *
 * Sequences are packed into context rows with segment ids and positions restarting in each
 * (`chat/packing.ts`), so the K responses of a prompt, and several prompts, share rows without
 * attending to each other, and each is scored as if it were alone (as PPO scores a rollout).
 *
 * The head has no bias: the pairwise loss depends on reward differences only, so a bias would never
 * get a gradient; the stage records the reward mean and standard deviation instead, for PPO to
 * normalise with. Tensor name `score.weight` `[1, C]`, as Hugging Face's `GPT2ForSequenceClassification`.
 *
 * Per training step: forward, one readback of the per-position scores, the pairwise loss and its
 * gradient on the host (`loss.ts`), then the backward from `∂loss/∂r` at the scored positions:
 * `∂loss/∂ln_f = ∂loss/∂r · wᵀ`, `∂loss/∂w = ln_fᵀ · ∂loss/∂r`, and the trunk's backward.
 *
 * Under mixed precision the trunk's matmuls read f16 (`model/gpt.ts`); the head reads the f32 ln_f
 * output and its weight stays f32, and the optimizer refreshes the trunk's f16 copy after each step.
 *
 * @module
 */
import type { Backend, Tensor } from "../../kernels/backend.ts";
import { type Activations, GPT, type Precision } from "../../model/gpt.ts";
import type { ParamLayout } from "../../model/params.ts";
import { ScalarHead } from "../../model/scalar_head.ts";
import { Optimizer, type OptimizerSettings, type OptimizerState } from "../../model/train.ts";
import { batchRows, type Encoded, packRows } from "../../chat/packing.ts";

/** Sequences laid out in rows: the batch inputs and where each sequence's last token is. */
export interface PackedSequences {
  B: number;
  inputs: Int32Array;
  segments: Int32Array;
  /** Position of each token within its sequence. */
  positions: Int32Array;
  /** Flat position (row · T + t) of each sequence's last token. */
  last: number[];
}

/** Packs token sequences into as few rows of T as they need (in order), padded with `pad`. */
export function packSequences(sequences: readonly number[][], T: number, pad: number): PackedSequences {
  const examples: Encoded[] = sequences.map((ids) => ({ ids, weights: ids.map(() => 0) }));
  const rows = packRows(examples, T);
  const { inputs, segments, positions } = batchRows(rows, examples, rows.length, T, pad);
  const last = new Array<number>(sequences.length);
  rows.forEach((row, b) => {
    let t = b * T;
    for (const i of row) {
      t += sequences[i].length;
      last[i] = t - 1;
    }
  });
  return { B: rows.length, inputs, segments, positions, last };
}

/** A GPT trunk with a scalar head; trainable when given optimizer settings. */
export class RewardNetwork {
  readonly gpt: GPT;
  /** The `[C]` weight, no bias. */
  readonly head: ScalarHead;
  private readonly optimizer?: Optimizer;
  private acts?: Activations;
  private scores?: Tensor;
  private dscores?: Tensor;

  constructor(
    readonly backend: Backend,
    readonly layout: ParamLayout,
    params: Float32Array,
    head: Float32Array,
    readonly T: number,
    options: { optimizer?: OptimizerSettings; resume?: OptimizerState; precision?: Precision } = {},
  ) {
    if (T > layout.config.context) {
      throw new Error(`row length ${T} exceeds the model's context ${layout.config.context}`);
    }
    // The f16 copy (mixed precision) is made from these weights, the checkpoint's when resuming.
    this.gpt = new GPT(backend, layout, options.resume?.params[0] ?? params, {
      training: !!options.optimizer,
      precision: options.precision,
    });
    this.head = new ScalarHead(this.gpt, { weight: options.resume?.params[1] ?? head }, {
      training: !!options.optimizer,
    });
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
        r && { m: r.m, v: r.v },
      );
    }
  }

  /** Activations for B rows, reallocated only when a batch needs more rows than before. */
  private ensureRows(B: number): Activations {
    if (this.acts && this.acts.B >= B) return this.acts;
    const bk = this.backend;
    if (this.acts) {
      this.gpt.freeActivations(this.acts);
      for (const t of [this.scores!, this.dscores!]) bk.free(t);
    }
    const rows = B * this.T;
    this.acts = this.gpt.activations(B, this.T, { segments: true });
    this.scores = bk.alloc(rows);
    this.dscores = bk.alloc(rows);
    return this.acts;
  }

  /** Records the forward of `packed` (its rows padded up to the allocated batch) and the head's scores. */
  private record(packed: PackedSequences): Activations {
    const acts = this.ensureRows(packed.B);
    const n = acts.B * this.T;
    const inputs = new Int32Array(n), segments = new Int32Array(n), positions = new Int32Array(n);
    inputs.set(packed.inputs);
    segments.set(packed.segments);
    positions.set(packed.positions);
    // Rows past the packed ones repeat the pad token in one segment of their own; nothing reads them.
    inputs.fill(packed.inputs[packed.inputs.length - 1] ?? 0, packed.inputs.length);
    for (let i = packed.inputs.length; i < n; i++) positions[i] = i % this.T;
    // No language-model head: the scalar head reads the final LayerNorm's output.
    this.gpt.forward(acts, inputs, { segments, positions, logits: false });
    this.head.forward(acts, this.scores!);
    return acts;
  }

  /** The reward of each packed sequence (one readback). */
  async rewards(packed: PackedSequences): Promise<Float32Array> {
    this.record(packed);
    const [scores] = await this.backend.download(this.scores!);
    return Float32Array.from(packed.last, (p) => scores[p]);
  }

  /**
   * Forward, then `lossGrad(rewards)` on the host gives ∂loss/∂r per sequence, which is
   * backpropagated (gradients accumulate until {@linkcode step}). Returns the rewards.
   */
  async gradient(
    packed: PackedSequences,
    lossGrad: (rewards: Float32Array) => ArrayLike<number>,
  ): Promise<Float32Array> {
    if (!this.optimizer) throw new Error("this reward network was created without an optimizer");
    const acts = this.record(packed);
    const bk = this.backend;
    const n = acts.B * this.T;
    const [scores] = await bk.download(this.scores!);
    const rewards = Float32Array.from(packed.last, (p) => scores[p]);
    const dr = lossGrad(rewards);
    const dscores = new Float32Array(n);
    packed.last.forEach((p, i) => (dscores[p] = dr[i]));
    bk.upload(this.dscores!, dscores);
    this.head.backward(acts, this.dscores!);
    return rewards;
  }

  /** AdamW at `lr` over trunk and head (one global-norm clip), then zeroes the gradients. */
  step(lr: number): void {
    this.optimizer!.update(lr);
  }

  /** The global gradient norm of the last step (one readback). */
  async gradNorm(): Promise<number> {
    const [n] = await this.backend.download(this.optimizer!.gradNorm);
    return n[0];
  }

  /** Trunk and head weights with their AdamW moments, on the host (`params[0]` trunk, `params[1]` head). */
  state(): Promise<OptimizerState> {
    return this.optimizer!.state();
  }

  /** Trunk and head weights on the host. */
  async weights(): Promise<{ params: Float32Array; head: Float32Array }> {
    const [params] = await this.backend.download(this.gpt.params);
    return { params: params as Float32Array, head: (await this.head.read()).weight };
  }

  dispose(): void {
    const bk = this.backend;
    if (this.acts) {
      this.gpt.freeActivations(this.acts);
      for (const t of [this.scores!, this.dscores!]) bk.free(t);
    }
    this.head.dispose();
    this.optimizer?.dispose();
    this.gpt.dispose();
  }
}
