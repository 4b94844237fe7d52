/**
 * kiln's compute core: one op interface ({@linkcode Backend}), a WebGPU backend of WGSL kernels and
 * the TypeScript reference backend they are tested against.
 *
 * @example
 * ```ts
 * import { createBackend } from "./mod.ts";
 * const backend = await createBackend(); // WebGPU where there is an adapter, else the CPU
 * const x = backend.alloc(4);
 * backend.upload(x, [1, 2, 3, 4]);
 * backend.scale(x, x, 2);
 * const [doubled] = await backend.download(x);
 * ```
 * @module
 */
export type {
  AdamWOptions,
  AttentionDecodeOptions,
  AttentionOptions,
  Backend,
  CrossEntropyOptions,
  DType,
  EncoderBackwardOptions,
  EncoderOptions,
  HostArray,
  MatmulOptions,
  SampleOptions,
  Tensor,
} from "./backend.ts";
export { type CpuBackend, type CpuBackendOptions, createCpuBackend } from "./cpu.ts";
export { createBackend, type CreateBackendOptions } from "./device.ts";
export {
  createWebGpuBackend,
  type KernelTiming,
  type WebGpuBackend,
  type WebGpuCounts,
  type WebGpuOptions,
} from "./webgpu.ts";
export { type TokenBuckets, tokenBuckets } from "./host.ts";
export { type TuneResult, type TuneShape } from "./autotune.ts";
