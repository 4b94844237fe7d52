import { strict as assert } from "node:assert";
import {
  clippedPolicyLoss,
  clippedValueLoss,
  entropyOfLogits,
  gae,
  klPenalisedRewards,
  meanVar,
  whiten,
} from "../stages/ppo/math.ts";
import { klController } from "../stages/ppo/kl_controller.ts";
import {
  gatherResponses,
  minibatches,
  packSequences,
  processRollouts,
  scatterResponses,
} from "../stages/ppo/rollout.ts";
import { Rng } from "../model/rng.ts";

const close = (actual: ArrayLike<number>, expected: number[], tol = 1e-12) => {
  assert.equal(actual.length, expected.length);
  for (let i = 0; i < expected.length; i++) {
    assert.ok(Math.abs(actual[i] - expected[i]) <= tol, `[${i}]: ${actual[i]} vs ${expected[i]}`);
  }
};

Deno.test("KL-penalised rewards: −β·(log π − log π_ref) per token, RM score added at the last token", () => {
  const r = klPenalisedRewards([-1, -2, -0.5], [-1.2, -1.9, -0.7], 2, 0.1);
  close(r.kl, [0.2, -0.1, 0.2]);
  close(r.rewards, [-0.02, 0.01, 1.98]);
  close([r.klSum, r.nonScoreReward], [0.3, -0.03]);
  // The summed reward is RM(x, y) − β·log(π(y|x)/π_ref(y|x)).
  close([r.rewards.reduce((a, b) => a + b, 0)], [2 - 0.1 * 0.3]);
  assert.throws(() => klPenalisedRewards([], [], 1, 0.1), /empty response/);
  assert.throws(() => klPenalisedRewards([0, 0], [0], 1, 0.1), /2 log-probs but 1/);
});

Deno.test("GAE: hand-computed advantages and returns for λ = 1, 0.5 and 0", () => {
  const rewards = [0, 0, 1], values = [0.5, 0.6, 0.7];
  // γ = λ = 1: advantages are Monte-Carlo returns (all 1) minus the value.
  const mc = gae(rewards, values, 1, 1);
  close(mc.advantages, [0.5, 0.4, 0.3]);
  close(mc.returns, [1, 1, 1]);
  // γ = 0.9, λ = 0.5: δ = [0.04, 0.03, 0.3]; A2 = 0.3, A1 = 0.03 + 0.45·0.3, A0 = 0.04 + 0.45·A1.
  const mixed = gae(rewards, values, 0.9, 0.5);
  close(mixed.advantages, [0.11425, 0.165, 0.3]);
  close(mixed.returns, [0.61425, 0.765, 1.0]);
  // λ = 0: the one-step TD error.
  close(gae(rewards, values, 0.9, 0).advantages, [0.04, 0.03, 0.3]);
});

Deno.test("whitening: mean 0 and unit (unbiased) variance over every token of the batch", () => {
  const [a, b] = whiten([[1, 2, 3], [4]]);
  const std = Math.sqrt(5 / 3);
  close(a, [-1.5 / std, -0.5 / std, 0.5 / std], 1e-8);
  close(b, [1.5 / std], 1e-8);
  const stats = meanVar([a, b]);
  close([stats.mean, stats.variance], [0, 1], 1e-8);
  // Without shifting the mean only the scale changes.
  const [c] = whiten([[1, 2, 3, 4]], false);
  close([meanVar([c]).mean], [2.5], 1e-12);
});

Deno.test("clipped policy loss: hand-computed loss, gradient, clip fraction and approx KL", () => {
  const ratios = [1.5, 0.5, 1.1, 0.7];
  const logprobs = ratios.map(Math.log);
  const old = [0, 0, 0, 0];
  const advantages = [1, 1, -2, -1];
  const r = clippedPolicyLoss(logprobs, old, advantages, 0.2);
  // t0: max(−1.5, −1.2) clipped; t1: max(−0.5, −0.8) unclipped; t2: equal (inside the range);
  // t3: max(0.7, 0.8) clipped.
  close([r.loss], [(-1.2 - 0.5 + 2.2 + 0.8) / 4]);
  close(r.grad, [0, -0.5 / 4, 2 * 1.1 / 4, 0]);
  assert.equal(r.clipFraction, 0.5);
  close([r.approxKl], [0.5 * logprobs.reduce((s, x) => s + x * x, 0) / 4]);
  close([r.ratioMean], [(1.5 + 0.5 + 1.1 + 0.7) / 4]);

  // The gradient matches finite differences of the loss wherever the loss is smooth.
  const h = 1e-6;
  for (let t = 0; t < 4; t++) {
    const plus = logprobs.slice(), minus = logprobs.slice();
    plus[t] += h;
    minus[t] -= h;
    const numeric = (clippedPolicyLoss(plus, old, advantages, 0.2).loss -
      clippedPolicyLoss(minus, old, advantages, 0.2).loss) / (2 * h);
    assert.ok(Math.abs(numeric - r.grad[t]) < 1e-8, `token ${t}: ${numeric} vs ${r.grad[t]}`);
  }
  // On-policy (the first minibatch of an iteration) the gradient is −A/n: plain policy gradient.
  close(clippedPolicyLoss([-1, -2], [-1, -2], [0.5, -1], 0.2).grad, [-0.25, 0.5]);
});

Deno.test("clipped value loss: hand-computed loss, gradient and clip fraction", () => {
  const r = clippedValueLoss([1.0, 0.0, 0.5], [0.5, 0.5, 0.5], [2.0, 0.4, 0.0], 0.2);
  // t0: clipped V = 0.7, (0.7 − 2)² = 1.69 > (1 − 2)² = 1 → clipped, no gradient.
  // t1: clipped V = 0.3, (0 − 0.4)² = 0.16 > 0.01 → unclipped. t2: V = V_old, both 0.25.
  close([r.loss], [0.5 * (1.69 + 0.16 + 0.25) / 3]);
  close(r.grad, [0, -0.4 / 3, 0.5 / 3]);
  close([r.clipFraction], [1 / 3]);
});

Deno.test("entropy of logits: uniform is log V; a two-way split matches −Σ p log p", () => {
  close([entropyOfLogits([3, 3, 3, 3])], [Math.log(4)]);
  close([entropyOfLogits([0, Math.log(3)])], [-(0.25 * Math.log(0.25) + 0.75 * Math.log(0.75))], 1e-12);
  // A row inside a larger buffer, with huge logits (no overflow).
  close([entropyOfLogits([9, 1000, 1000, 9], 1, 2)], [Math.log(2)]);
});

Deno.test("KL controller: fixed β ignores the KL; adaptive β follows Ziegler et al. and resumes", () => {
  const fixed = klController({ beta: 0.02 });
  fixed.update(100, 64);
  assert.equal(fixed.beta, 0.02);
  assert.equal(fixed.adaptive, false);

  const adaptive = klController({ beta: 0.1, target: 6, horizon: 100 });
  adaptive.update(9, 10); // error clipped to +0.2: β·(1 + 0.2·10/100)
  close([adaptive.beta], [0.102]);
  adaptive.update(5.4, 10); // error −0.1: β·(1 − 0.01)
  close([adaptive.beta], [0.102 * 0.99]);
  const resumed = klController({ beta: 0.1, target: 6, horizon: 100 }, adaptive.state());
  assert.equal(resumed.beta, adaptive.beta);
  assert.throws(() => klController({ beta: 0.1, target: 0 }), /target must be > 0/);
});

Deno.test("rollout batch: rewards → GAE → whitened advantages; batch stats; packing and minibatches", () => {
  const rollouts = [
    {
      prompt: Int32Array.of(1, 2),
      response: Int32Array.of(3, 4, 0),
      logprobs: Float64Array.of(-1, -2, -0.5),
      refLogprobs: Float64Array.of(-1.2, -1.9, -0.7),
      values: Float64Array.of(0.5, 0.6, 0.7),
      score: 2,
    },
    {
      prompt: Int32Array.of(5),
      response: Int32Array.of(6),
      logprobs: Float64Array.of(-0.3),
      refLogprobs: Float64Array.of(-0.3),
      values: Float64Array.of(0.1),
      score: -1,
    },
  ];
  const { episodes, stats } = processRollouts(rollouts, {
    beta: 0.1,
    gamma: 1,
    lambda: 1,
    whitenAdvantages: false,
  });
  close(episodes[0].rewards, [-0.02, 0.01, 1.98]);
  // γ = λ = 1: A_t = (sum of rewards from t) − V_t.
  close(episodes[0].advantages, [1.97 - 0.5, 1.99 - 0.6, 1.98 - 0.7]);
  close(episodes[1].returns, [-1]);
  close([stats.scoreMean, stats.klMean, stats.nonScoreReward], [0.5, 0.15, -0.015]);
  close([stats.returnMean, stats.responseLength], [(1.97 - 1) / 2, 2]);
  const whitened = processRollouts(rollouts, { beta: 0.1, gamma: 1, lambda: 1, whitenAdvantages: true });
  const w = meanVar(whitened.episodes.map((e) => e.advantages));
  close([w.mean, w.variance], [0, 1], 1e-7);
  close(whitened.episodes[0].returns, Array.from(episodes[0].returns)); // returns are never whitened

  // Packing: rows start at position 0; response token t is predicted at P − 1 + t.
  const packed = packSequences(rollouts, 3, 5, 9);
  assert.deepEqual(Array.from(packed.inputs), [1, 2, 3, 4, 0, 5, 6, 9, 9, 9, 9, 9, 9, 9, 9]);
  assert.deepEqual(Array.from(packed.targets), [2, 3, 4, 0, 9, 6, 9, 9, 9, 9, 9, 9, 9, 9, 9]);
  assert.deepEqual(packed.responseStart, [1, 5]);
  const perPosition = Float32Array.from({ length: 15 }, (_, i) => i);
  assert.deepEqual(gatherResponses(perPosition, packed).map((v) => Array.from(v)), [[1, 2, 3], [5]]);
  assert.deepEqual(Array.from(scatterResponses([[7, 8, 9], [4]], packed, 15)), [
    0,
    7,
    8,
    9,
    0,
    4,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
    0,
  ]);
  assert.throws(() => packSequences(rollouts, 2, 4), /do not fit a context of 4/);

  // Minibatches: a seeded permutation, every index exactly once per epoch.
  const batches = minibatches(10, 4, new Rng(7));
  assert.deepEqual(batches.map((b) => b.length), [4, 4, 2]);
  assert.deepEqual(batches.flat().sort((a, b) => a - b), [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.deepEqual(minibatches(10, 4, new Rng(7)), batches);
});
