import { strict as assert } from "node:assert";
import type { Backend } from "../kernels/backend.ts";
import { createBackend } from "../kernels/device.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { type TrainBatch, Trainer } from "../model/train.ts";
import type { Precision } from "../model/gpt.ts";
import { Rng } from "../model/rng.ts";

async function webgpu(): Promise<Backend | undefined> {
  try {
    return await createBackend({ backend: "webgpu", log: () => {} });
  } catch (e) {
    console.log(`skipped: no WebGPU adapter (${(e as Error).message})`);
    return undefined;
  }
}

const layout = paramLayout(gptConfig({ layers: 2, dim: 32, heads: 4, context: 16, vocab: 50 }));

/** Three batches of 4 rows × 16; the last packs two sequences per row (segment ids, restarting positions). */
function batches(): TrainBatch[] {
  const rng = new Rng(2);
  return Array.from({ length: 3 }, (_, i) => {
    const inputs = Int32Array.from({ length: 4 * 16 }, () => rng.below(50));
    const batch: TrainBatch = { inputs, targets: inputs.map((t) => (t * 7 + 3) % 50) };
    if (i < 2) return batch;
    const cut = (row: number) => 5 + 3 * row; // the second sequence of a row starts here
    batch.segments = Int32Array.from(inputs, (_, j) => j % 16 < cut(Math.floor(j / 16)) ? 0 : 1);
    batch.positions = Uint32Array.from(inputs, (_, j) => {
      const t = j % 16, c = cut(Math.floor(j / 16));
      return t < c ? t : t - c;
    });
    return batch;
  });
}

/** Losses, gradient norms and final weights of 3 training steps. */
async function train(backend: Backend, precision: Precision) {
  const trainer = await Trainer.create(backend, layout, {
    params: initParams(layout, 5),
    batch: 4,
    seqLen: 16,
    masked: true,
    precision,
  });
  for (const batch of batches()) {
    trainer.microStep(batch);
    trainer.optimizerStep(1e-3);
  }
  const metrics = await trainer.readMetrics();
  const { params } = await trainer.state();
  trainer.dispose();
  return { metrics, params };
}

/** Runs both backends and compares: losses within `lossTol`, weights within `weightTol`. */
async function compare(gpu: Backend, precision: Precision, lossTol: number, weightTol: number) {
  const cpu = await train(createCpuBackend(), precision);
  const dev = await train(gpu, precision);
  for (let i = 0; i < 3; i++) {
    const { loss, gradNorm } = cpu.metrics[i];
    assert.ok(
      Math.abs(loss - dev.metrics[i].loss) < lossTol,
      `step ${i + 1} loss ${dev.metrics[i].loss} vs ${loss}`,
    );
    assert.ok(Math.abs(gradNorm - dev.metrics[i].gradNorm) < 1e-3 * gradNorm, `step ${i + 1} gradient norm`);
  }
  let maxDiff = 0;
  for (let i = 0; i < cpu.params.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(cpu.params[i] - dev.params[i]));
  }
  assert.ok(maxDiff < weightTol, `largest weight difference ${maxDiff}`);
}

Deno.test("gpt: WebGPU and CPU give the same losses, gradient norms and weights over 3 steps (packed rows in the last)", async () => {
  const gpu = await webgpu();
  if (!gpu) return;
  try {
    await compare(gpu, "fp32", 1e-4, 1e-4);
  } finally {
    gpu.destroy();
  }
});

Deno.test("gpt: mixed precision on WebGPU (shader-f16) matches the CPU's mixed precision", async () => {
  const gpu = await webgpu();
  if (!gpu) return;
  try {
    if (!gpu.hasF16) {
      console.log(`skipped: ${gpu.description} has no shader-f16`);
      return;
    }
    // Both round the same f32 values to f16; only the f32 accumulation order differs.
    await compare(gpu, "mixed", 1e-3, 1e-3);
  } finally {
    gpu.destroy();
  }
});
