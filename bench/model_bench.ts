/**
 * Training throughput of the GPT: tokens/s of a training step (forward, backward, AdamW) in fp32 and
 * in mixed precision (f16 matmul inputs) on each backend, with the step time split by op.
 *
 *   deno bench -A bench/model_bench.ts            # Deno.bench timings of a tiny-config step
 *   deno run -A bench/model_bench.ts              # tiny config: CPU and WebGPU, fp32 and mixed
 *   deno run -A bench/model_bench.ts --gpt2       # also GPT-2 124M at B8×T1024 (a real GPU)
 *   deno run -A bench/model_bench.ts --gpt2 --batch 4 --seq 512 --steps 10
 *
 * GPT-2 124M runs by default on a hardware WebGPU adapter (not on llvmpipe, where one step takes
 * minutes). The split: per op wall time on the CPU backend (ops run when called); per kernel GPU time
 * from timestamp queries on WebGPU, when the device has them.
 *
 * @module
 */
import { parseArgs } from "node:util";
import type { Backend } from "../kernels/backend.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import { createBackend } from "../kernels/device.ts";
import { createWebGpuBackend, type WebGpuBackend, type WebGpuCounts } from "../kernels/webgpu.ts";
import { type GPTConfig, gptConfig } from "../model/config.ts";
import type { Precision } from "../model/gpt.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Trainer } from "../model/train.ts";
import { Rng } from "../model/rng.ts";

/** A model and batch shape to measure. */
interface Shape {
  name: string;
  config: GPTConfig;
  B: number;
  T: number;
  steps: number;
}

/** The tiny config: 2 layers, 64 wide, context 32, vocabulary 256; batch 4 × 32 tokens. */
const TINY: Shape = {
  name: "tiny 2×64 (B4×T32)",
  config: gptConfig({ layers: 2, dim: 64, heads: 4, context: 32, vocab: 256 }),
  B: 4,
  T: 32,
  steps: 20,
};

function batch(shape: Shape, seed: number) {
  const rng = new Rng(seed);
  const V = shape.config.vocab;
  const inputs = Int32Array.from({ length: shape.B * shape.T }, () => rng.below(V));
  return { inputs, targets: inputs.map((t) => (t * 31 + 7) % V) };
}

function trainer(backend: Backend, shape: Shape, precision: Precision): Promise<Trainer> {
  const layout = paramLayout(shape.config);
  return Trainer.create(backend, layout, {
    params: initParams(layout, 1),
    batch: shape.B,
    seqLen: shape.T,
    precision,
  });
}

/** Records one training step and waits for it. */
async function oneStep(t: Trainer, shape: Shape): Promise<void> {
  t.microStep(batch(shape, 1));
  t.optimizerStep(1e-4);
  await t.readMetrics();
}

/** Mean ms per step over `shape.steps` steps (metrics read once at the end, as training does). */
async function msPerStep(t: Trainer, shape: Shape, afterWarmup?: () => void): Promise<number> {
  // Warm-up: shader compilation on WebGPU, JIT tier-up of the ops on the CPU.
  for (let i = 0; i < 3; i++) await oneStep(t, shape);
  afterWarmup?.();
  const data = batch(shape, 1);
  const start = performance.now();
  for (let i = 0; i < shape.steps; i++) {
    t.microStep(data);
    t.optimizerStep(1e-4);
  }
  await t.readMetrics();
  return (performance.now() - start) / shape.steps;
}

function printSplit(split: Map<string, number>, steps: number) {
  const total = [...split.values()].reduce((a, b) => a + b, 0);
  for (const [name, ms] of [...split.entries()].sort((a, b) => b[1] - a[1])) {
    const share = (100 * ms / total).toFixed(1);
    console.log(`    ${name.padEnd(34)} ${(ms / steps).toFixed(2).padStart(9)} ms/step  ${share}%`);
  }
}

/** fp32 and mixed on the CPU backend, each with its per-op split. */
async function cpuRuns(shape: Shape) {
  // Warm the JIT on both precisions' code first, so neither measurement pays for it (without this the
  // second one ran ~1.3× faster, identical ops like AdamW included).
  for (const precision of ["fp32", "mixed"] as const) {
    const t = await trainer(createCpuBackend(), shape, precision);
    await msPerStep(t, shape);
    t.dispose();
  }
  for (const precision of ["fp32", "mixed"] as const) {
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
    const t = await trainer(cpu, shape, precision);
    const ms = await msPerStep(t, shape, () => time.clear()); // the split excludes the warm-up steps
    t.dispose();
    report("cpu", shape, precision, ms);
    printSplit(time, shape.steps);
  }
}

function report(backend: string, shape: Shape, precision: Precision, ms: number) {
  const tokens = Math.round(shape.B * shape.T * 1000 / ms);
  console.log(`${backend} ${shape.name} ${precision}: ${ms.toFixed(1)} ms/step, ${tokens} tokens/s`);
}

/** Per-operation overheads through Deno on an H100 (DESIGN.md, measured): readback, pass, dispatch. */
const H100_OVERHEAD_MS = { readback: 11, pass: 0.06, dispatch: 0.01 };

/** The difference of two counter snapshots. */
function since(before: WebGpuCounts, after: WebGpuCounts): WebGpuCounts {
  const d = { ...after };
  for (const key of Object.keys(d) as (keyof WebGpuCounts)[]) d[key] -= before[key];
  return d;
}

/** The host overhead `c` implies on an H100 through Deno, in ms. */
export function impliedOverheadMs(c: WebGpuCounts): number {
  const o = H100_OVERHEAD_MS;
  return c.readbacks * o.readback + c.passes * o.pass + c.dispatches * o.dispatch;
}

/**
 * What one training step (micro-step + optimizer step) sends to the device, counted by the backend,
 * and what reading its metrics adds; printed with the overhead those counts imply on an H100.
 */
export async function stepCounts(
  gpu: WebGpuBackend,
  shape: Shape,
  precision: Precision,
): Promise<{ step: WebGpuCounts; readMetrics: WebGpuCounts }> {
  const t = await trainer(gpu, shape, precision);
  await oneStep(t, shape); // warm-up: uploads of the initial weights are not a step's
  const data = batch(shape, 1), steps = 4;
  // Steady state: a step's last ops ride with the next step's submit, so count several and divide.
  t.microStep(data);
  t.optimizerStep(1e-4);
  const start = gpu.counts();
  for (let i = 0; i < steps; i++) {
    t.microStep(data);
    t.optimizerStep(1e-4);
  }
  const afterSteps = gpu.counts();
  await t.readMetrics();
  const readMetrics = since(afterSteps, gpu.counts());
  t.dispose();
  const step = since(start, afterSteps);
  for (const key of Object.keys(step) as (keyof WebGpuCounts)[]) step[key] /= steps;
  const line = (c: WebGpuCounts) =>
    `${c.dispatches} dispatches, ${c.passes} passes, ${c.submits} submits, ${c.uploads} uploads, ` +
    `${c.readbacks} readbacks → ~${impliedOverheadMs(c).toFixed(2)} ms on an H100`;
  console.log(`  ${precision} counts per step: ${line(step)}`);
  console.log(`  ${precision} counts per readMetrics (every N steps): ${line(readMetrics)}`);
  return { step, readMetrics };
}

/** fp32 and (with shader-f16) mixed on WebGPU; then one profiled step per precision, split by kernel. */
async function gpuRuns(gpu: WebGpuBackend, shape: Shape) {
  const precisions: Precision[] = gpu.hasF16 ? ["fp32", "mixed"] : ["fp32"];
  if (!gpu.hasF16) {
    console.log(`webgpu ${shape.name} mixed: not available (${gpu.description}: no shader-f16)`);
  }
  for (const precision of precisions) {
    const t = await trainer(gpu, shape, precision);
    report("webgpu", shape, precision, await msPerStep(t, shape));
    t.dispose();
    await stepCounts(gpu, shape, precision);
    if (!gpu.hasTimestamps) continue;
    // Each dispatch in its own timed pass: slower overall, but the split is GPU time per kernel.
    const profiled = createWebGpuBackend(gpu.device, gpu.description, { profile: true });
    const p = await trainer(profiled, shape, precision);
    await oneStep(p, shape);
    await profiled.timings(); // the warm-up step's, dropped
    await oneStep(p, shape);
    const split = new Map<string, number>();
    for (const { kernel, ms } of await profiled.timings()) split.set(kernel, (split.get(kernel) ?? 0) + ms);
    p.dispose();
    console.log(`  ${precision}: GPU time by kernel (one step, timestamp queries)`);
    printSplit(split, 1);
  }
}

for (const precision of ["fp32", "mixed"] as const) {
  Deno.bench(
    `gpt tiny (2×64, B4×T32): one training step, cpu ${precision}`,
    { n: 5, warmup: 1 },
    async (b) => {
      const t = await trainer(createCpuBackend(), TINY, precision);
      const data = batch(TINY, 1);
      b.start();
      t.microStep(data);
      t.optimizerStep(1e-3);
      await t.readMetrics();
      b.end();
      t.dispose();
    },
  );
}

if (import.meta.main) {
  const args = parseArgs({
    args: Deno.args,
    options: {
      gpt2: { type: "boolean", default: false },
      batch: { type: "string", default: "8" },
      seq: { type: "string", default: "1024" },
      steps: { type: "string", default: "10" },
    },
  }).values;
  await cpuRuns(TINY);
  let gpu: WebGpuBackend | undefined;
  try {
    gpu = await createBackend({ backend: "webgpu", log: (line) => console.log(line) }) as WebGpuBackend;
  } catch (e) {
    console.log(`webgpu: not measured (${(e as Error).message.split("\n").slice(0, 2).join(" ")})`);
  }
  if (gpu) {
    await gpuRuns(gpu, TINY);
    const software = /llvmpipe|lavapipe|swiftshader|software/i.test(gpu.description);
    if (software) {
      // GPT-2's 12 layers at a width llvmpipe can hold: the same ops a step, so the same counts.
      console.log(
        "webgpu counts of GPT-2's depth (12 layers × 64 wide, B2×T64; GPT-2 124M records the same ops):",
      );
      await stepCounts(gpu, {
        name: "12 layers",
        config: gptConfig({ layers: 12, dim: 64, heads: 4, context: 64, vocab: 256 }),
        B: 2,
        T: 64,
        steps: 1,
      }, "fp32");
    }
    if (args.gpt2 || !software) {
      const B = Number(args.batch), T = Number(args.seq);
      await gpuRuns(gpu, {
        name: `GPT-2 124M (B${B}×T${T})`,
        config: gptConfig({ layers: 12, dim: 768, heads: 12, context: 1024, vocab: 50257 }),
        B,
        T,
        steps: Number(args.steps),
      });
    }
    gpu.destroy();
  }
}
