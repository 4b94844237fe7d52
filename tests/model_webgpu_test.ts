import { strict as assert } from "node:assert";
import type { Backend } from "../kernels/backend.ts";
import { createBackend } from "../kernels/device.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Trainer } from "../model/train.ts";
import { Rng } from "../model/rng.ts";

async function webgpu(): Promise<Backend | undefined> {
  try {
    return await createBackend({ backend: "webgpu", log: () => {} });
  } catch (e) {
    console.log(`skipped: no WebGPU adapter (${(e as Error).message})`);
    return undefined;
  }
}

Deno.test("gpt: WebGPU and CPU give the same losses, gradient norms and weights over 3 steps", async () => {
  const gpu = await webgpu();
  if (!gpu) return;
  const layout = paramLayout(gptConfig({ layers: 2, dim: 32, heads: 4, context: 16, vocab: 50 }));
  const rng = new Rng(2);
  const batches = Array.from({ length: 3 }, () => {
    const inputs = Int32Array.from({ length: 4 * 16 }, () => rng.below(50));
    return { inputs, targets: inputs.map((t) => (t * 7 + 3) % 50) };
  });
  const run = async (backend: Backend) => {
    const trainer = await Trainer.create(backend, layout, {
      params: initParams(layout, 5),
      batch: 4,
      seqLen: 16,
    });
    for (const batch of batches) {
      trainer.microStep(batch);
      trainer.optimizerStep(1e-3);
    }
    const metrics = await trainer.readMetrics();
    const { params } = await trainer.state();
    trainer.dispose();
    return { metrics, params };
  };
  const cpu = await run(createCpuBackend());
  const dev = await run(gpu);
  gpu.destroy();
  for (let i = 0; i < 3; i++) {
    assert.ok(Math.abs(cpu.metrics[i].loss - dev.metrics[i].loss) < 1e-4, `step ${i + 1} loss`);
    assert.ok(Math.abs(cpu.metrics[i].gradNorm - dev.metrics[i].gradNorm) < 1e-3 * cpu.metrics[i].gradNorm);
  }
  let maxDiff = 0;
  for (let i = 0; i < cpu.params.length; i++) {
    maxDiff = Math.max(maxDiff, Math.abs(cpu.params[i] - dev.params[i]));
  }
  assert.ok(maxDiff < 1e-4, `largest weight difference ${maxDiff}`);
});
