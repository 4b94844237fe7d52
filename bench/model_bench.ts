/**
 * Training throughput of the GPT: tokens/s of one optimizer step of a tiny config on each backend,
 * and (CPU backend, where ops run synchronously) the step time split by op.
 *
 *   deno bench -A bench/model_bench.ts          # Deno.bench timings of a step
 *   deno run -A bench/model_bench.ts            # tokens/s per backend + per-op split (CPU)
 *
 * @module
 */
import type { Backend } from "../kernels/backend.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import { createBackend } from "../kernels/device.ts";
import { gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Trainer } from "../model/train.ts";
import { Rng } from "../model/rng.ts";

/** The tiny config: 2 layers, 64 wide, context 32, vocabulary 256; batch 4 × 32 tokens. */
const TINY = gptConfig({ layers: 2, dim: 64, heads: 4, context: 32, vocab: 256 });
const B = 4, T = 32;

function batch(seed: number) {
  const rng = new Rng(seed);
  const inputs = Int32Array.from({ length: B * T }, () => rng.below(TINY.vocab));
  return { inputs, targets: inputs.map((t) => (t * 31 + 7) % TINY.vocab) };
}

async function trainer(backend: Backend): Promise<Trainer> {
  const layout = paramLayout(TINY);
  return await Trainer.create(backend, layout, { params: initParams(layout, 1), batch: B, seqLen: T });
}

/** Mean ms per step over `steps` steps (metrics read once at the end, as training does). */
async function msPerStep(t: Trainer, steps: number, afterWarmup?: () => void): Promise<number> {
  const data = batch(1);
  t.microStep(data);
  t.optimizerStep(1e-3);
  await t.readMetrics(); // warm-up (shader compilation on WebGPU)
  afterWarmup?.();
  const start = performance.now();
  for (let i = 0; i < steps; i++) {
    t.microStep(data);
    t.optimizerStep(1e-3);
  }
  await t.readMetrics();
  return (performance.now() - start) / steps;
}

Deno.bench("gpt tiny (2×64, B4×T32): one training step, cpu", { n: 5, warmup: 1 }, async (b) => {
  const t = await trainer(createCpuBackend());
  const data = batch(1);
  b.start();
  t.microStep(data);
  t.optimizerStep(1e-3);
  await t.readMetrics();
  b.end();
  t.dispose();
});

if (import.meta.main) {
  const cpu = createCpuBackend();
  // Per-op split: wrap every op of the CPU backend with a timer (CPU ops run when called).
  const time = new Map<string, number>();
  for (const [name, fn] of Object.entries(cpu)) {
    if (typeof fn !== "function" || ["alloc", "view", "array", "download", "free"].includes(name)) continue;
    (cpu as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
      const start = performance.now();
      const result = (fn as (...a: unknown[]) => unknown).apply(cpu, args);
      time.set(name, (time.get(name) ?? 0) + performance.now() - start);
      return result;
    };
  }
  const steps = 5;
  const cpuTrainer = await trainer(cpu);
  const cpuMs = await msPerStep(cpuTrainer, steps, () => time.clear()); // the split excludes the warm-up step
  cpuTrainer.dispose();
  console.log(`cpu: ${cpuMs.toFixed(1)} ms/step, ${Math.round(B * T * 1000 / cpuMs)} tokens/s`);
  const total = [...time.values()].reduce((a, b) => a + b, 0);
  for (const [name, ms] of [...time.entries()].sort((a, b) => b[1] - a[1])) {
    console.log(
      `  ${name.padEnd(20)} ${(ms / steps).toFixed(2).padStart(8)} ms/step  ${
        (100 * ms / total).toFixed(1)
      }%`,
    );
  }
  try {
    const gpu = await createBackend({ backend: "webgpu", log: (line) => console.log(line) });
    const gpuTrainer = await trainer(gpu);
    const gpuMs = await msPerStep(gpuTrainer, steps);
    console.log(`webgpu: ${gpuMs.toFixed(1)} ms/step, ${Math.round(B * T * 1000 / gpuMs)} tokens/s`);
    gpuTrainer.dispose();
  } catch (e) {
    console.log(`webgpu: not measured (${(e as Error).message.split("\n").slice(0, 2).join(" ")})`);
  }
}
