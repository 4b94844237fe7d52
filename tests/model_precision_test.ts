import { strict as assert } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { GPT } from "../model/gpt.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Rng } from "../model/rng.ts";
import { learningRate } from "../model/schedule.ts";
import { Trainer } from "../model/train.ts";
import { brownTexts } from "./tokenizer_corpus.ts";

const config = gptConfig({ layers: 2, dim: 32, heads: 2, context: 32, vocab: 256 });
const layout = paramLayout(config);
const B = 8, T = 32, STEPS = 100;

/** English text as byte tokens (vocabulary 256): the first Brown samples, train and held-out parts. */
async function corpus(): Promise<{ train: Uint8Array; val: Uint8Array }> {
  const texts = await brownTexts();
  const bytes = new TextEncoder().encode(texts.slice(0, 6).map((t) => t.text).join("\n\n"));
  const split = bytes.length - 4 * B * (T + 1);
  return { train: bytes.subarray(0, split), val: bytes.subarray(split) };
}

/** B windows of T + 1 bytes at seeded offsets: inputs and next-byte targets. */
function batchAt(bytes: Uint8Array, rng: Rng) {
  const inputs = new Int32Array(B * T), targets = new Int32Array(B * T);
  for (let b = 0; b < B; b++) {
    const start = rng.below(bytes.length - T - 1);
    for (let t = 0; t < T; t++) {
      inputs[b * T + t] = bytes[start + t];
      targets[b * T + t] = bytes[start + t + 1];
    }
  }
  return { inputs, targets };
}

/** The training loss of every step and the final held-out loss, same init and data for both precisions. */
async function train(precision: "fp32" | "mixed", data: { train: Uint8Array; val: Uint8Array }) {
  const trainer = await Trainer.create(createCpuBackend(), layout, {
    params: initParams(layout, 7),
    batch: B,
    seqLen: T,
    precision,
  });
  const rng = new Rng(11);
  const schedule = { maxLr: 3e-3, minLr: 3e-4, warmupSteps: 10, totalSteps: STEPS };
  for (let step = 0; step < STEPS; step++) {
    trainer.microStep(batchAt(data.train, rng));
    trainer.optimizerStep(learningRate(step, schedule));
  }
  const losses = (await trainer.readMetrics()).map((m) => m.loss);
  const valRng = new Rng(3);
  const val = await trainer.evalLoss(Array.from({ length: 4 }, () => batchAt(data.val, valRng)));
  trainer.dispose();
  return { losses, val };
}

Deno.test("precision: mixed needs f16 tensors and says so", () => {
  const noF16 = { ...createCpuBackend(), hasF16: false };
  assert.throws(
    () => new GPT(noF16, layout, initParams(layout, 1), { precision: "mixed" }),
    /precision "mixed" needs f16 tensors, which this cpu backend .* does not have .*use precision "fp32"/,
  );
});

Deno.test("precision: a mixed forward/backward reads f16 copies and stays within f16 rounding of fp32", async () => {
  const backend = createCpuBackend();
  const params = initParams(layout, 5);
  const { inputs, targets } = batchAt(
    Uint8Array.from({ length: 4096 }, (_, i) => (i * 37 + 11) % 251),
    new Rng(1),
  );
  const run = async (precision: "fp32" | "mixed") => {
    const model = new GPT(backend, layout, params, { training: true, precision });
    const acts = model.activations(B, T);
    model.forward(acts, inputs, { targets });
    model.backward(acts);
    const loss = await model.readLoss(acts);
    const [grads] = await backend.download(model.grads!);
    const dtypes = [model.half?.dtype, acts.layers[0].ln1.dtype, acts.layers[0].fchGelu.dtype];
    return { loss, grads, dtypes };
  };
  const fp32 = await run("fp32"), mixed = await run("mixed");
  assert.deepEqual(fp32.dtypes, [undefined, "f32", "f32"]);
  assert.deepEqual(mixed.dtypes, ["f16", "f16", "f16"]);
  // f16 keeps 11 significant bits (relative rounding 2^-11 ≈ 4.9e-4): the loss moves, but only that much.
  assert.notEqual(mixed.loss, fp32.loss);
  assert.ok(Math.abs(mixed.loss - fp32.loss) < 1e-3 * fp32.loss, `loss ${mixed.loss} vs ${fp32.loss}`);
  let diff = 0, norm = 0;
  for (let i = 0; i < fp32.grads.length; i++) {
    diff += (mixed.grads[i] - fp32.grads[i]) ** 2;
    norm += fp32.grads[i] ** 2;
  }
  assert.ok(Math.sqrt(diff / norm) < 1e-2, `gradient relative error ${Math.sqrt(diff / norm)}`);
});

Deno.test("precision: over 100 steps on English text the mixed loss curve matches fp32 within 0.02 nats (10-step means)", async () => {
  const data = await corpus();
  const fp32 = await train("fp32", data), mixed = await train("mixed", data);
  console.log(
    `fp32  losses ${fp32.losses.map((l) => l.toFixed(4)).join(" ")}; held-out ${fp32.val.toFixed(4)}`,
  );
  console.log(
    `mixed losses ${mixed.losses.map((l) => l.toFixed(4)).join(" ")}; held-out ${mixed.val.toFixed(4)}`,
  );
  // The comparison means something only if training moved: from ≈ ln 256 = 5.55 to well below it.
  assert.ok(fp32.losses[0] > 5.3, `first loss ${fp32.losses[0]}`);
  const tail = (l: number[]) => l.slice(-10).reduce((a, b) => a + b, 0) / 10;
  assert.ok(tail(fp32.losses) < fp32.losses[0] - 1.5, `fp32 only reached ${tail(fp32.losses)}`);
  // Different rounding makes the two trajectories drift apart step by step (a 400-step run of a 2×64
  // model saw single steps 0.039 apart, its 50-step means ≤ 0.006), so the curves are compared as
  // 10-step means; single steps get a looser bound.
  const means = (l: number[]) =>
    Array.from({ length: l.length / 10 }, (_, i) => tail(l.slice(0, 10 * i + 10)));
  const meanGaps = means(fp32.losses).map((l, i) => Math.abs(means(mixed.losses)[i] - l));
  const stepGaps = fp32.losses.map((l, i) => Math.abs(mixed.losses[i] - l));
  const worstMean = Math.max(...meanGaps), worstStep = Math.max(...stepGaps);
  console.log(
    `largest gap: 10-step means ${worstMean.toFixed(5)}, single steps ${worstStep.toFixed(5)}; ` +
      `held-out ${Math.abs(mixed.val - fp32.val).toFixed(5)}`,
  );
  assert.ok(worstMean < 0.02, `steps ${10 * meanGaps.indexOf(worstMean) + 1}…: means differ by ${worstMean}`);
  assert.ok(worstStep < 0.05, `step ${stepGaps.indexOf(worstStep) + 1}: losses differ by ${worstStep}`);
  assert.ok(Math.abs(mixed.val - fp32.val) < 0.02, `held-out loss ${mixed.val} vs ${fp32.val}`);
});
