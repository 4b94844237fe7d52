import { strict as assert } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Trainer } from "../model/train.ts";
import { Rng } from "../model/rng.ts";
import { clippedPolicyLoss, clippedValueLoss, entropyOfLogits } from "../stages/ppo/math.ts";
import { GPT } from "../model/gpt.ts";
import { Policy, ReferenceModel, ScalarModel } from "../stages/ppo/networks.ts";
import { gatherResponses, packSequences, scatterResponses } from "../stages/ppo/rollout.ts";

const layout = paramLayout(gptConfig({ layers: 1, dim: 16, heads: 2, context: 8, vocab: 11 }));
const optimizer = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, clip: 0 };
const sequences = [
  { prompt: Int32Array.of(1, 2, 3), response: Int32Array.of(4, 5, 6) },
  { prompt: Int32Array.of(7), response: Int32Array.of(8, 9) },
];
const packed = packSequences(sequences, 2, 8);
const oldLogprobs = [Float64Array.of(-2.3, -2.5, -2.2), Float64Array.of(-2.4, -2.4)];
const advantages = [Float64Array.of(1, -0.5, 2), Float64Array.of(-1.5, 0.7)];

/** The clipped policy loss of `params` on the packed batch, evaluated by a plain forward. */
async function lossAt(params: Float32Array): Promise<number> {
  const ref = new ReferenceModel(createCpuBackend(), layout, params, 2, 8);
  const lp = gatherResponses(await ref.logprobs(packed), packed);
  ref.dispose();
  return clippedPolicyLoss(concat(lp), concat(oldLogprobs), concat(advantages), 0.2).loss;
}
const concat = (v: Float64Array[]) => Float64Array.from(v.flatMap((x) => Array.from(x)));

Deno.test("policy gradient through the GPT equals finite differences of the clipped PPO loss", async () => {
  const params = initParams(layout, 3);
  // Larger weights than the init so log-probs move away from uniform and some ratios clip.
  for (let i = 0; i < params.length; i++) params[i] *= 8;
  const policy = new Policy(createCpuBackend(), layout, params, { rows: 2, T: 8, optimizer });
  let clipFraction = 0;
  await policy.policyGradient(packed, (logprobs) => {
    const lp = gatherResponses(logprobs, packed);
    const r = clippedPolicyLoss(concat(lp), concat(oldLogprobs), concat(advantages), 0.2);
    clipFraction = r.clipFraction;
    let at = 0;
    const perResponse = lp.map((v) => r.grad.subarray(at, at += v.length));
    return { grad: scatterResponses(perResponse, packed, 16), result: r };
  });
  const grads = await policy.readGrads();
  policy.dispose();
  assert.ok(clipFraction > 0 && clipFraction < 1, `clip fraction ${clipFraction}: both branches tested`);

  // Central differences (float64 loss of a float32 model) at the parameters with the largest gradients.
  const order = Array.from(grads.keys()).sort((a, b) => Math.abs(grads[b]) - Math.abs(grads[a])).slice(0, 6);
  for (const i of order) {
    const h = 1e-2;
    const plus = params.slice(), minus = params.slice();
    plus[i] += h;
    minus[i] -= h;
    const numeric = (await lossAt(plus) - await lossAt(minus)) / (2 * h);
    assert.ok(
      Math.abs(numeric - grads[i]) <= 0.05 * Math.abs(grads[i]) + 1e-4,
      `parameter ${i}: backward ${grads[i]}, finite differences ${numeric}`,
    );
  }
});

Deno.test("ptx term: its gradient is pretraining's loss gradient scaled by γ, added to the PPO gradient", async () => {
  const params = initParams(layout, 5);
  const rng = new Rng(1);
  const inputs = Int32Array.from({ length: 3 * 6 }, () => rng.below(11));
  const targets = Int32Array.from({ length: 3 * 6 }, () => rng.below(11));
  const gamma = 27.8;

  // Pretraining's gradient, from the pretrain Trainer.
  const trainer = await Trainer.create(createCpuBackend(), layout, { params, batch: 3, seqLen: 6 });
  trainer.microStep({ inputs, targets });
  const [pretrainGrads] = await trainer.model.backend.download(trainer.model.grads!);
  trainer.dispose();

  // A PPO minibatch whose advantages are all zero contributes no gradient; the ptx term adds γ·∇L_pretrain.
  const policy = new Policy(createCpuBackend(), layout, params, {
    rows: 2,
    T: 8,
    ptx: { batch: 3, T: 6 },
    optimizer,
  });
  await policy.policyGradient(packed, () => ({ grad: new Float32Array(16), result: null }));
  policy.ptxGradient({ inputs, targets }, gamma);
  const grads = await policy.readGrads();
  const ptxLoss = await policy.readPtxLoss();
  policy.dispose();
  let maxErr = 0, maxAbs = 0;
  for (let i = 0; i < grads.length; i++) {
    maxErr = Math.max(maxErr, Math.abs(grads[i] - gamma * pretrainGrads[i]));
    maxAbs = Math.max(maxAbs, Math.abs(gamma * pretrainGrads[i]));
  }
  assert.ok(maxAbs > 0.01, "the ptx gradient is not trivially zero");
  assert.ok(maxErr <= 1e-5 * maxAbs, `max |ptx grad − γ·pretrain grad| = ${maxErr} (scale ${maxAbs})`);
  // The logged ptx loss is the pretraining loss itself (≈ ln 11 at initialisation).
  assert.ok(Math.abs(ptxLoss! - Math.log(11)) < 0.1, `ptx loss ${ptxLoss}`);
});

Deno.test("value model: the backward through head and trunk equals finite differences of the clipped value loss", async () => {
  const params = initParams(layout, 9);
  for (let i = 0; i < params.length; i++) params[i] *= 4;
  const head = { weight: Float32Array.from({ length: 16 }, (_, i) => Math.sin(i)), bias: 0.3 };
  const oldValues = [Float64Array.of(0.1, -0.2, 0.4), Float64Array.of(0.5, 0)];
  const returns = [Float64Array.of(1, -1, 0.2), Float64Array.of(0.6, 2)];
  const lossOf = (values: Float32Array) => {
    const v = gatherResponses(values, packed);
    return clippedValueLoss(concat(v), concat(oldValues), concat(returns), 0.2);
  };
  const model = new ScalarModel(createCpuBackend(), layout, params, head, { rows: 2, T: 8, optimizer });
  await model.valueGradient(packed, (values) => {
    const r = lossOf(values);
    let at = 0;
    const perResponse = oldValues.map((v) => r.grad.subarray(at, at += v.length));
    return { grad: scatterResponses(perResponse, packed, 16), result: r };
  });
  const { trunk: trunkGrads, head: headGrads } = await model.readGrads();
  model.dispose();

  const lossAtValue = async (p: Float32Array, w: Float32Array, b: number) => {
    const frozen = new ScalarModel(createCpuBackend(), layout, p, { weight: w, bias: b }, { rows: 2, T: 8 });
    const loss = lossOf(await frozen.forward(packed)).loss;
    frozen.dispose();
    return loss;
  };
  const h = 1e-2;
  // Head: the bias and the largest weight gradient.
  const wi =
    Array.from(headGrads.keys()).slice(0, 16).sort((a, b) =>
      Math.abs(headGrads[b]) - Math.abs(headGrads[a])
    )[0];
  const wPlus = head.weight.slice(), wMinus = head.weight.slice();
  wPlus[wi] += h;
  wMinus[wi] -= h;
  const checks: [number, number][] = [
    [
      headGrads[16],
      (await lossAtValue(params, head.weight, 0.3 + h) - await lossAtValue(params, head.weight, 0.3 - h)) /
      (2 * h),
    ],
    [
      headGrads[wi],
      (await lossAtValue(params, wPlus, 0.3) - await lossAtValue(params, wMinus, 0.3)) / (2 * h),
    ],
  ];
  for (
    const i of Array.from(trunkGrads.keys()).sort((a, b) => Math.abs(trunkGrads[b]) - Math.abs(trunkGrads[a]))
      .slice(0, 4)
  ) {
    const plus = params.slice(), minus = params.slice();
    plus[i] += h;
    minus[i] -= h;
    checks.push([
      trunkGrads[i],
      (await lossAtValue(plus, head.weight, 0.3) - await lossAtValue(minus, head.weight, 0.3)) / (2 * h),
    ]);
  }
  for (const [analytic, numeric] of checks) {
    assert.ok(Math.abs(analytic) > 1e-3, "a gradient worth checking");
    assert.ok(
      Math.abs(numeric - analytic) <= 0.05 * Math.abs(analytic) + 1e-4,
      `backward ${analytic}, finite differences ${numeric}`,
    );
  }
});

Deno.test("response entropy: the device's per-position entropy at the response positions, in nats", async () => {
  const params = initParams(layout, 4);
  for (let i = 0; i < params.length; i++) params[i] *= 8; // away from uniform
  const backend = createCpuBackend();
  const policy = new Policy(backend, layout, params, { rows: 2, T: 8, optimizer });
  try {
    await policy.logprobs(packed);
    const entropies = await policy.responseEntropy(packed);
    // The reference: the host's entropy of the same logits, downloaded.
    const gpt = new GPT(backend, layout, params);
    const acts = gpt.activations(2, 8);
    gpt.forward(acts, packed.inputs);
    const [logits] = await backend.download(acts.logits);
    assert.deepEqual(entropies.map((h) => h.length), [3, 2]);
    entropies.forEach((h, i) => {
      h.forEach((value, t) => {
        const expected = entropyOfLogits(logits, (packed.responseStart[i] + t) * 11, 11);
        assert.ok(Math.abs(value - expected) < 1e-4, `response ${i} token ${t}: ${value} vs ${expected}`);
        assert.ok(value > 0 && value < Math.log(11));
      });
    });
    gpt.freeActivations(acts);
    gpt.dispose();
  } finally {
    policy.dispose();
  }
});
