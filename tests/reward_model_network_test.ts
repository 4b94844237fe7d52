import { strict as assert } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { relativeError } from "./kernels_fixtures.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Rng } from "../model/rng.ts";
import { packSequences, RewardNetwork } from "../stages/reward_model/network.ts";

const layout = paramLayout(gptConfig({ layers: 1, dim: 16, heads: 2, context: 16, vocab: 20 }));
const params = initParams(layout, 7);
const rng = new Rng(11);
const head = Float32Array.from({ length: 16 }, () => rng.normal());
const sequences = [[1, 2, 3, 4, 5], [6, 7, 8, 9, 10, 11], [12, 13, 3, 1]];
const settings = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0, clip: 0 };

Deno.test("reward network: packed sequences score and train as each sequence alone at position 0", async () => {
  const packed = packSequences(sequences, 16, 0);
  assert.equal(packed.B, 1);
  assert.deepEqual(packed.last, [4, 10, 14]);
  assert.deepEqual(Array.from(packed.positions.subarray(0, 15)), [
    0,
    1,
    2,
    3,
    4,
    0,
    1,
    2,
    3,
    4,
    5,
    0,
    1,
    2,
    3,
  ]);

  const scorer = new RewardNetwork(createCpuBackend(), layout, params, head, 16);
  const together = await scorer.rewards(packed);
  const alone = new Float32Array(sequences.length);
  for (const [i, s] of sequences.entries()) alone[i] = (await scorer.rewards(packSequences([s], 16, 0)))[0];
  assert.ok(relativeError(together, alone) < 1e-5, `packed ${together} vs alone ${alone}`);
  // Scored at their row positions instead, the later sequences get other rewards (the check can fail).
  const shifted = await scorer.rewards({ ...packed, positions: packed.positions.map((_, t) => t) });
  assert.equal(shifted[0], together[0]);
  assert.ok(Math.abs(shifted[1] - alone[1]) > 1e-3 && Math.abs(shifted[2] - alone[2]) > 1e-3);
  scorer.dispose();

  // The trunk's gradient from ∂loss/∂r on the packed row is the sum of each sequence's alone.
  const dr = [1, -0.5, 2];
  const trunkGrad = async (batches: number[][][], grads: number[][]) => {
    const bk = createCpuBackend();
    const net = new RewardNetwork(bk, layout, params, head, 16, { optimizer: settings });
    for (const [i, b] of batches.entries()) await net.gradient(packSequences(b, 16, 0), () => grads[i]);
    const [g] = await bk.download(net.gpt.grads!);
    net.dispose();
    return Float32Array.from(g);
  };
  const packedGrad = await trunkGrad([sequences], [dr]);
  const aloneGrad = await trunkGrad(sequences.map((s) => [s]), dr.map((d) => [d]));
  const diff = relativeError(packedGrad, aloneGrad);
  assert.ok(diff < 1e-5, `gradients differ by ${diff} of the largest`);
});
