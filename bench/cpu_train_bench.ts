/**
 * CPU training throughput on the three configs of the compute issue (the ones the PyTorch peer,
 * `bench/torch_cpu_peer.py`, runs too): tokens/s of a full step (forward, backward, clip, AdamW).
 *
 *   deno run -A bench/cpu_train_bench.ts                       # all three, SIMD matmul, default threads
 *   deno run -A bench/cpu_train_bench.ts --config 6x384 --matmul reference --threads 1
 *   deno run -A bench/cpu_train_bench.ts --config tiny --split  # plus the step time by op
 *
 * Configs: `tiny` 2 layers × 64 (vocab 256, B4×T32), `6x384` (vocab 8192, B4×T256), `gpt2` GPT-2
 * 124M (B1×T256). One warm-up step, then the mean of `--steps` steps (default 10, 3 for 6x384, 2 for gpt2).
 * @module
 */
import { parseArgs } from "node:util";
import { createCpuBackend } from "../kernels/cpu.ts";
import { type GPTConfig, gptConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { Rng } from "../model/rng.ts";
import { Trainer } from "../model/train.ts";

/** A model and batch shape. */
export interface TrainShape {
  config: GPTConfig;
  B: number;
  T: number;
  steps: number;
}

/** The three configs. */
export const CPU_CONFIGS: Record<string, TrainShape> = {
  tiny: {
    config: gptConfig({ layers: 2, dim: 64, heads: 4, context: 32, vocab: 256 }),
    B: 4,
    T: 32,
    steps: 10,
  },
  "6x384": {
    config: gptConfig({ layers: 6, dim: 384, heads: 6, context: 256, vocab: 8192 }),
    B: 4,
    T: 256,
    steps: 3,
  },
  gpt2: {
    config: gptConfig({ layers: 12, dim: 768, heads: 12, context: 1024, vocab: 50257 }),
    B: 1,
    T: 256,
    steps: 2,
  },
};

/** Mean ms of a training step of `shape` on a CPU backend, and the time by op when `split`. */
export async function cpuStepMs(
  shape: TrainShape,
  backendOptions: Parameters<typeof createCpuBackend>[0],
  split = false,
): Promise<{ ms: number; byOp: Map<string, number> }> {
  const cpu = createCpuBackend(backendOptions);
  const byOp = new Map<string, number>();
  let timing = false;
  if (split) {
    for (const [name, fn] of Object.entries(cpu)) {
      if (typeof fn !== "function" || ["alloc", "view", "array", "download", "free"].includes(name)) continue;
      (cpu as unknown as Record<string, unknown>)[name] = (...args: unknown[]) => {
        const start = performance.now();
        const result = (fn as (...a: unknown[]) => unknown).apply(cpu, args);
        if (timing) byOp.set(name, (byOp.get(name) ?? 0) + performance.now() - start);
        return result;
      };
    }
  }
  const layout = paramLayout(shape.config);
  const trainer = await Trainer.create(cpu, layout, {
    params: initParams(layout, 1),
    batch: shape.B,
    seqLen: shape.T,
  });
  const rng = new Rng(1), V = shape.config.vocab;
  const inputs = Int32Array.from({ length: shape.B * shape.T }, () => rng.below(V));
  const data = { inputs, targets: inputs.map((t) => (t * 31 + 7) % V) };
  const step = () => (trainer.microStep(data), trainer.optimizerStep(1e-4));
  step(); // warm-up: JIT tier-up, wasm compile, worker start
  await trainer.readMetrics();
  await new Promise((resolve) => setTimeout(resolve, 50));
  timing = true;
  const start = performance.now();
  for (let i = 0; i < shape.steps; i++) step();
  await trainer.readMetrics();
  const ms = (performance.now() - start) / shape.steps;
  trainer.dispose();
  for (const [k, v] of byOp) byOp.set(k, v / shape.steps);
  return { ms, byOp };
}

if (import.meta.main) {
  const args = parseArgs({
    args: Deno.args,
    options: {
      config: { type: "string", multiple: true },
      matmul: { type: "string", default: "simd" },
      threads: { type: "string" },
      steps: { type: "string" },
      split: { type: "boolean", default: false },
    },
  }).values;
  const names = args.config ?? Object.keys(CPU_CONFIGS);
  for (const name of names) {
    const shape = CPU_CONFIGS[name];
    if (!shape) {
      throw new Error(`--config must be one of ${Object.keys(CPU_CONFIGS).join(", ")}, got ${name}`);
    }
    if (args.steps) shape.steps = Number(args.steps);
    const options = {
      matmul: args.matmul as "simd" | "reference",
      threads: args.threads ? Number(args.threads) : undefined,
    };
    const { ms, byOp } = await cpuStepMs(shape, options, args.split);
    const tokens = shape.B * shape.T * 1000 / ms;
    console.log(
      `kiln cpu ${name} (B${shape.B}×T${shape.T}) matmul=${options.matmul} threads=${
        options.threads ?? "default"
      }: ` +
        `${ms.toFixed(1)} ms/step, ${tokens.toFixed(1)} tokens/s`,
    );
    const total = [...byOp.values()].reduce((a, b) => a + b, 0);
    for (const [op, t] of [...byOp.entries()].sort((a, b) => b[1] - a[1]).slice(0, 10)) {
      console.log(`    ${op.padEnd(22)} ${t.toFixed(1).padStart(9)} ms  ${(100 * t / total).toFixed(1)}%`);
    }
  }
}
