import { strict as assert } from "node:assert";
import { batchPairwiseLoss, logSigmoid, pairwiseLoss } from "../stages/reward_model/loss.ts";

const close = (a: number, b: number, tol = 1e-9) => assert.ok(Math.abs(a - b) < tol, `${a} ≠ ${b}`);

Deno.test("RM loss: a hand-computed K = 3 ranking and its gradient", () => {
  // r = [2, 1, 0], best first: pairs (0,1) d=1, (0,2) d=2, (1,2) d=1.
  // loss = (2·log(1+e⁻¹) + log(1+e⁻²)) / 3; ∂/∂r₀ = −(σ(−1)+σ(−2))/3, ∂/∂r₁ = 0, ∂/∂r₂ = −∂/∂r₀.
  const { loss, grad, accuracy, pairs } = pairwiseLoss([2, 1, 0], [[0, 1], [0, 2], [1, 2]]);
  close(loss, (2 * 0.31326168751822286 + 0.12692801104297263) / 3);
  close(grad[0], -(0.2689414213699951 + 0.11920292202211755) / 3);
  close(grad[1], 0);
  close(grad[2], (0.2689414213699951 + 0.11920292202211755) / 3);
  assert.equal(accuracy, 1);
  assert.equal(pairs, 3);
});

Deno.test("RM loss: the margin shifts the difference; accuracy counts misordered pairs", () => {
  // One pair, r_w = 1, r_l = 0, m = 0.5: loss = log(1 + e^{-0.5}), ∂/∂r_w = −σ(−0.5).
  const r = pairwiseLoss([1, 0], [[0, 1]], 0.5);
  close(r.loss, 0.47407698418010663);
  close(r.grad[0], -0.3775406687981454);
  close(r.grad[1], 0.3775406687981454);
  assert.equal(pairwiseLoss([0, 1], [[0, 1]]).accuracy, 0);
  close(logSigmoid(-800), -800);
  close(logSigmoid(800), 0);
});

Deno.test("RM loss: one prompt's C(K,2) batch element is the average over its pairs", () => {
  const rewards = [0.3, -1.2, 2.5, 0.7];
  const all: [number, number][] = [];
  for (let i = 0; i < 4; i++) for (let j = i + 1; j < 4; j++) all.push([i, j]);
  const group = pairwiseLoss(rewards, all, 0.1);
  const single = all.map((p) => pairwiseLoss(rewards, [p], 0.1));
  close(group.loss, single.reduce((s, r) => s + r.loss, 0) / 6);
  for (let i = 0; i < 4; i++) close(group.grad[i], single.reduce((s, r) => s + r.grad[i], 0) / 6);
  // The gradient matches finite differences of the loss.
  for (let i = 0; i < 4; i++) {
    const h = 1e-6, up = [...rewards], down = [...rewards];
    up[i] += h;
    down[i] -= h;
    close(
      group.grad[i],
      (pairwiseLoss(up, all, 0.1).loss - pairwiseLoss(down, all, 0.1).loss) / (2 * h),
      1e-7,
    );
  }
  // A batch of prompts averages per prompt: a K = 4 prompt weighs the same as a K = 2 one.
  const batch = batchPairwiseLoss([{ rewards, pairs: all }, { rewards: [1, 3], pairs: [[0, 1]] }], 0.1);
  const other = pairwiseLoss([1, 3], [[0, 1]], 0.1);
  close(batch.loss, (group.loss + other.loss) / 2);
  close(batch.grads[0][2], group.grad[2] / 2);
  close(batch.grads[1][1], other.grad[1] / 2);
  assert.equal(batch.pairs, 7);
  assert.equal(batch.correct, 2); // (0,1) and (2,3) are ordered right; the other five are not
});
