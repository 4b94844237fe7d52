import { strict as assert } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { relativeError } from "./kernels_fixtures.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { GPT } from "../model/gpt.ts";
import { batchRows, type Encoded, packRows } from "../chat/packing.ts";

const layout = paramLayout(gptConfig({ layers: 1, dim: 16, heads: 2, context: 16, vocab: 20 }));
const params = initParams(layout, 5);

/** Forward + backward of one batch; returns the loss, per-token losses, dlogits and the gradients. */
async function step(
  batch: {
    inputs: Int32Array;
    targets: Int32Array;
    lossMask: Float32Array;
    segments: Int32Array;
    positions?: Int32Array;
  },
  B: number,
) {
  const bk = createCpuBackend();
  const model = new GPT(bk, layout, params, { training: true });
  const acts = model.activations(B, 16, { mask: true, segments: true });
  model.forward(acts, batch.inputs, {
    targets: batch.targets,
    lossMask: batch.lossMask,
    segments: batch.segments,
    positions: batch.positions,
  });
  const [losses, dlogits] = await bk.download(acts.losses, acts.logits);
  const loss = await model.readLoss(acts);
  model.backward(acts);
  const [grads] = await bk.download(model.grads!);
  return {
    loss,
    losses: Float32Array.from(losses),
    dlogits: Float32Array.from(dlogits),
    grads: Float32Array.from(grads),
  };
}

const A: Encoded = { ids: [1, 2, 3, 4, 5], weights: [0, 0, 1, 1, 1] };
const B: Encoded = { ids: [6, 7, 8, 9, 10, 11], weights: [0, 0, 0, 0, 1, 1] };

Deno.test("masking: the loss is the mean over response tokens only; prompt positions pass no gradient", async () => {
  const batch = batchRows([[0]], [A], 1, 16, 0);
  const masked = await step(batch, 1);
  const all = await step({ ...batch, lossMask: new Float32Array(16).fill(1) }, 1);
  // Targets 3, 4, 5 (positions 1..3) are the response: loss = mean of those three per-token losses.
  close((all.losses[1] + all.losses[2] + all.losses[3]) / 3, masked.loss, 1e-6);
  for (let t = 0; t < 16; t++) {
    const row = masked.dlogits.subarray(t * 20, (t + 1) * 20);
    if (batch.lossMask[t] === 0) assert.ok(row.every((x) => x === 0), `position ${t} has a gradient`);
    else assert.ok(row.some((x) => x !== 0));
  }
  // Whatever the prompt positions' targets are, the gradients are identical.
  const other = Int32Array.from(batch.targets, (x, t) => (batch.lossMask[t] === 0 ? (x + 7) % 20 : x));
  const changed = await step({ ...batch, targets: other }, 1);
  assert.deepEqual(changed.grads, masked.grads);
  assert.equal(changed.loss, masked.loss);
});

Deno.test("packing: no example attends to another; a packed row trains as its examples alone at position 0", async () => {
  const examples = [A, B];
  const rows = packRows(examples, 16);
  assert.deepEqual(rows, [[0, 1]]);
  const packed = batchRows(rows, examples, 1, 16, 0);
  assert.deepEqual(Array.from(packed.positions.subarray(0, 12)), [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 5, 0]);

  // B's logits and losses do not change when A's tokens do.
  const other = batchRows(rows, [{ ids: [12, 13, 14, 15, 16], weights: A.weights }, B], 1, 16, 0);
  const p = await step(packed, 1), o = await step(other, 1);
  assert.deepEqual(o.losses.subarray(5, 11), p.losses.subarray(5, 11));

  // Unpacked: A alone in row 0, B alone in row 1, both from position 0 (as in generation). Same
  // per-token losses, and the same gradient up to float summation order.
  const unpacked = batchRows([[0], [1]], examples, 2, 16, 0);
  const u = await step(unpacked, 2);
  const bAlone = u.losses.subarray(16, 22), bPacked = p.losses.subarray(5, 11);
  assert.ok(relativeError(u.losses.subarray(0, 5), p.losses.subarray(0, 5)) < 1e-5);
  assert.ok(relativeError(bAlone, bPacked) < 1e-5, `B's losses differ: ${bAlone} vs ${bPacked}`);
  close(u.loss, p.loss, 1e-5);
  const gradDiff = relativeError(u.grads, p.grads);
  assert.ok(gradDiff < 1e-5, `gradients differ by ${gradDiff} of the largest`);

  // Without position ids B is trained at positions 5…10: its losses and the gradients differ (so the
  // comparison above can fail).
  const shifted = await step({ ...packed, positions: undefined }, 1);
  assert.ok(relativeError(bAlone, shifted.losses.subarray(5, 11)) > 1e-3);
  assert.ok(relativeError(u.grads, shifted.grads) > 1e-3);
  // Without segment ids B would see A: its losses differ too.
  const leaky = await step({ ...packed, segments: new Int32Array(16) }, 1);
  assert.ok(relativeError(bAlone, leaky.losses.subarray(5, 11)) > 1e-3);
});

function close(a: number, b: number, tol: number) {
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} ≠ ${b}`);
}
