/**
 * Picks the compute backend: a WebGPU device when there is a hardware adapter, else the TypeScript
 * reference, saying why in one line.
 *
 * @example
 * ```ts
 * import { createBackend } from "./device.ts";
 * const backend = await createBackend(); // logs e.g. "kiln: webgpu on nvidia H100 (shader-f16)"
 * console.log(backend.name);
 * ```
 * @module
 */
import type { Backend } from "./backend.ts";
import { createCpuBackend } from "./cpu.ts";
import { createWebGpuBackend } from "./webgpu.ts";

/** Options of {@linkcode createBackend}. */
export interface CreateBackendOptions {
  /**
   * "auto" (default): WebGPU when a hardware adapter exists, else the CPU. A software fallback
   * adapter (Mesa's llvmpipe, SwiftShader) is passed over: the TypeScript reference trains kiln's
   * small models several times faster than it (BENCHMARKS.md, "Model"). "webgpu" takes any adapter,
   * software included, and fails without one. The environment variable `KILN_BACKEND`
   * (auto|webgpu|cpu) overrides an "auto" choice.
   */
  backend?: "auto" | "webgpu" | "cpu";
  /** Where the one-line device report goes; default `console.error`. */
  log?: (line: string) => void;
}

/** Creates a backend (see {@linkcode CreateBackendOptions}) and logs which one, and why. */
export async function createBackend(options: CreateBackendOptions = {}): Promise<Backend> {
  const log = options.log ?? ((line: string) => console.error(line));
  let choice = options.backend ?? "auto";
  const fromEnv = choice === "auto" ? readEnv("KILN_BACKEND") : undefined;
  if (fromEnv !== undefined) {
    if (fromEnv !== "auto" && fromEnv !== "webgpu" && fromEnv !== "cpu") {
      throw new Error(`KILN_BACKEND must be auto, webgpu or cpu, got "${fromEnv}"`);
    }
    choice = fromEnv;
  }
  if (choice === "cpu") {
    log(`kiln: cpu backend (TypeScript reference)${fromEnv === "cpu" ? ", because KILN_BACKEND=cpu" : ""}`);
    return createCpuBackend();
  }
  const adapter = await requestAdapter();
  if (typeof adapter === "string") {
    if (choice === "webgpu") throw new Error(`kiln: webgpu backend requested, but ${adapter}`);
    log(`kiln: cpu backend (TypeScript reference), because ${adapter}`);
    return createCpuBackend();
  }
  if (choice === "auto" && adapter.info.isFallbackAdapter) {
    log(
      `kiln: cpu backend (TypeScript reference), because the WebGPU adapter found, ${
        adapterName(adapter)
      }, ` +
        `is a software fallback (KILN_BACKEND=webgpu uses it anyway)`,
    );
    return createCpuBackend();
  }
  const device = await requestDevice(adapter);
  const backend = createWebGpuBackend(device, adapterName(adapter));
  log(`kiln: webgpu on ${backend.description}${backend.hasF16 ? " (shader-f16)" : ""}`);
  return backend;
}

/** The high-performance adapter, or why there is none. */
async function requestAdapter(): Promise<GPUAdapter | string> {
  if (typeof navigator === "undefined" || !("gpu" in navigator)) return "this runtime has no WebGPU";
  try {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    return adapter ?? "no WebGPU adapter was found (no GPU driver, and no software fallback like Mesa)";
  } catch (e) {
    return `requesting a WebGPU adapter failed: ${(e as Error).message}`;
  }
}

/** A device with the adapter's real limits (the defaults cap storage bindings at 128 MiB). */
function requestDevice(adapter: GPUAdapter): Promise<GPUDevice> {
  const wanted: GPUFeatureName[] = ["shader-f16", "timestamp-query"];
  const requiredFeatures = wanted.filter((f) => adapter.features.has(f));
  const requiredLimits: Record<string, number> = {};
  // GPUSupportedLimits exposes its limits as prototype getters, not own properties.
  for (const key in adapter.limits) {
    const value = (adapter.limits as unknown as Record<string, unknown>)[key];
    if (typeof value === "number") requiredLimits[key] = value;
  }
  return adapter.requestDevice({ requiredFeatures, requiredLimits });
}

function adapterName(adapter: GPUAdapter): string {
  const { vendor, architecture, device, description } = adapter.info;
  // Drop numeric vendor ids (llvmpipe reports "65541") and repeated words.
  const parts = [vendor, architecture, device, description].filter((s) => s && !/^\d+$/.test(s));
  const name = [...new Set(parts)].join(" ");
  return name || "an unnamed adapter";
}

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: the option alone decides
  }
}
