/**
 * The update phase of a PPO iteration: `ppoEpochs` passes over the scored batch in shuffled
 * minibatches, each one optimizer step of the policy (PPO's clipped objective, plus with ptx
 * `coef` × the gradient of the pretraining loss on a batch of token shards) and one of the value
 * function (the clipped value loss). Returns the means of the losses and clip fractions.
 * @module
 */
import type { TokenLoader } from "../../model/data.ts";
import type { Rng } from "../../model/rng.ts";
import { clippedPolicyLoss, clippedValueLoss } from "./math.ts";
import type { Policy, ScalarModel } from "./networks.ts";
import { type Episode, gatherResponses, minibatches, packSequences, scatterResponses } from "./rollout.ts";

/** How the networks are updated. */
export interface UpdateOptions {
  /** Passes over the batch. */
  ppoEpochs: number;
  /** Episodes per minibatch; rows and T of the packed minibatch. */
  minibatch: number;
  rows: number;
  T: number;
  /** PPO's ratio clip ε and the value clip. */
  clip: number;
  valueClip: number;
  /** The policy's and the value function's learning rates. */
  lr: number;
  valueLr: number;
  /** PPO-ptx: pretraining batches and their coefficient (no loader: off). */
  ptx?: { loader: TokenLoader; coef: number };
  /** Orders the minibatches. */
  rng: Rng;
}

/** Mean figures of an update. */
export interface UpdateStats {
  policyLoss: number;
  valueLoss: number;
  clipFraction: number;
  valueClipFraction: number;
  approxKl: number;
  /** Mean pretraining loss of the ptx batches (undefined without ptx). */
  ptxLoss?: number;
}

const concat = (vectors: ArrayLike<number>[]) => {
  const out = new Float64Array(vectors.reduce((n, v) => n + v.length, 0));
  let at = 0;
  for (const v of vectors) for (let i = 0; i < v.length; i++) out[at++] = v[i];
  return out;
};
const split = (flat: Float64Array, like: ArrayLike<number>[]) => {
  let at = 0;
  return like.map((v) => flat.subarray(at, at += v.length));
};

/** The mean of `xs` (0 when empty). */
export const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);

/** Runs the PPO epochs over `episodes`; see the module doc. */
export async function ppoUpdate(
  policy: Policy,
  value: ScalarModel,
  episodes: Episode[],
  opts: UpdateOptions,
): Promise<UpdateStats> {
  const { rows, T } = opts;
  const size = rows * T;
  const policyLosses: number[] = [], valueLosses: number[] = [], clipFractions: number[] = [];
  const valueClipFractions: number[] = [], approxKls: number[] = [];
  for (let epoch = 0; epoch < opts.ppoEpochs; epoch++) {
    for (const indices of minibatches(episodes.length, opts.minibatch, opts.rng)) {
      const mb: Episode[] = indices.map((i) => episodes[i]);
      const packed = packSequences(mb, rows, T);
      const pl = await policy.policyGradient(packed, (logprobs) => {
        const r = clippedPolicyLoss(
          concat(gatherResponses(logprobs, packed)),
          concat(mb.map((e) => e.logprobs)),
          concat(mb.map((e) => e.advantages)),
          opts.clip,
        );
        const perResponse = split(r.grad, packed.responseStart.map((_, j) => mb[j].response));
        return { grad: scatterResponses(perResponse, packed, size), result: r };
      });
      if (opts.ptx) policy.ptxGradient(opts.ptx.loader.next(), opts.ptx.coef);
      policy.step(opts.lr);
      const vl = await value.valueGradient(packed, (values) => {
        const r = clippedValueLoss(
          concat(gatherResponses(values, packed)),
          concat(mb.map((e) => e.values)),
          concat(mb.map((e) => e.returns)),
          opts.valueClip,
        );
        return { grad: scatterResponses(split(r.grad, mb.map((e) => e.response)), packed, size), result: r };
      });
      value.step(opts.valueLr);
      policyLosses.push(pl.loss);
      clipFractions.push(pl.clipFraction);
      approxKls.push(pl.approxKl);
      valueLosses.push(vl.loss);
      valueClipFractions.push(vl.clipFraction);
    }
  }
  const ptxLoss = await policy.readPtxLoss();
  return {
    policyLoss: mean(policyLosses),
    valueLoss: mean(valueLosses),
    ...(ptxLoss === undefined ? {} : { ptxLoss }),
    clipFraction: mean(clipFractions),
    valueClipFraction: mean(valueClipFractions),
    approxKl: mean(approxKls),
  };
}
