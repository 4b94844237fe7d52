/**
 * MinHash signatures on the GPU, through kiln's compute core (`kernels/`): the shingle hashes are
 * computed on the CPU ({@linkcode MinHasher.shingles}), concatenated with offsets, and one WGSL
 * kernel writes every document's `bands × rows` minima, one invocation per (document, hash function).
 *
 * The CPU {@linkcode MinHasher.signatureOf} is the reference, and the kernel reproduces it bit for
 * bit: the permutation is `fmix32(x ⊕ seedᵢ)`, whose multiplications are `Math.imul` on the CPU
 * (the low 32 bits of the product) and wrapping `u32` products in WGSL — the same numbers, with no
 * float or 64-bit arithmetic anywhere.
 *
 * @example
 * ```ts
 * import { MinHasher } from "./minhash.ts";
 * import { GpuMinHasher } from "./minhash_gpu.ts";
 * const hasher = new MinHasher({ shingleWords: 5, bands: 14, rows: 8, seed: 1 });
 * const gpu = await GpuMinHasher.create(hasher);
 * if (typeof gpu !== "string") {
 *   const sigs = await gpu.signatures([hasher.shingles("a b c d e f"), hasher.shingles("")]);
 *   gpu.destroy(); // sigs: 2 × 112 uint32, equal to hasher.signature(…) of each
 * }
 * ```
 * @module
 */
import { createBackend } from "../../kernels/device.ts";
import type { WebGpuBackend } from "../../kernels/webgpu.ts";
import { type Kernel, kernelSource, paramBytes, WG } from "../../kernels/wgsl/kernel.ts";
import type { MinHasher } from "./minhash.ts";

/** The kernel: `out[d·H + i] = min over shingles x of document d of fmix32(x ⊕ seeds[i])`. */
export const minhashKernel: Kernel = {
  name: "minhash_signatures",
  tensors: [["shingles", "u32"], ["offsets", "u32"], ["seeds", "u32"], ["out", "u32"]],
  params: [["docs", "u32"], ["hashes", "u32"]],
  code: `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let g = group_index(wid, nwg) * ${WG}u + lid;
  if (g >= P.docs * P.hashes) { return; }
  let doc = g / P.hashes;
  let i = g - doc * P.hashes;
  let seed = seeds[P.seeds + i];
  let begin = offsets[P.offsets + doc];
  let end = offsets[P.offsets + doc + 1u];
  var m = 0xffffffffu;
  for (var k = begin; k < end; k++) {
    var h = shingles[P.shingles + k] ^ seed;
    h ^= h >> 16u;
    h *= 0x85ebca6bu;
    h ^= h >> 13u;
    h *= 0xc2b2ae35u;
    h ^= h >> 16u;
    m = min(m, h);
  }
  out[P.out + g] = m;
}`,
};

/** Most workgroups in one grid dimension (WebGPU's default limit). */
const MAX_GROUPS = 65535;

/** Why there is no WebGPU device for signatures here, or null when there is one to try. */
export async function webGpuUnavailable(): Promise<string | null> {
  let env: string | undefined;
  try {
    env = Deno.env.get("KILN_BACKEND");
  } catch {
    env = undefined;
  }
  if (env === "cpu") return "KILN_BACKEND=cpu";
  if (typeof navigator === "undefined" || !("gpu" in navigator)) return "this runtime has no WebGPU";
  try {
    const adapter = await navigator.gpu.requestAdapter({ powerPreference: "high-performance" });
    return adapter ? null : "no WebGPU adapter was found";
  } catch (e) {
    return `requesting a WebGPU adapter failed: ${(e as Error).message}`;
  }
}

/** Computes MinHash signatures of many documents per dispatch on a WebGPU device. */
export class GpuMinHasher {
  readonly hashes: number;
  /** The adapter, in words (e.g. "llvmpipe (LLVM 15.0.6, 256 bits)"). */
  readonly description: string;
  readonly #backend: WebGpuBackend;
  readonly #device: GPUDevice;
  readonly #pipeline: GPUComputePipeline;
  readonly #seeds: GPUBuffer;
  readonly #uniform: GPUBuffer;
  #buffers: { shingles?: GPUBuffer; offsets?: GPUBuffer; out?: GPUBuffer; staging?: GPUBuffer } = {};

  private constructor(backend: WebGpuBackend, seeds: Uint32Array) {
    this.#backend = backend;
    this.description = backend.description;
    const device = this.#device = backend.device;
    this.hashes = seeds.length;
    const module = device.createShaderModule({
      code: kernelSource(minhashKernel),
      label: minhashKernel.name,
    });
    this.#pipeline = device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
    });
    this.#seeds = device.createBuffer({
      size: Math.max(16, seeds.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(this.#seeds, 0, seeds as Uint32Array<ArrayBuffer>);
    this.#uniform = device.createBuffer({
      size: paramBytes(minhashKernel),
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
  }

  /**
   * A GPU hasher applying `hasher`'s hash functions, or why there is none (no adapter,
   * `KILN_BACKEND=cpu`, no WebGPU in this runtime, or the device failed to start).
   */
  static async create(hasher: MinHasher): Promise<GpuMinHasher | string> {
    const why = await webGpuUnavailable();
    if (why) return why;
    try {
      const backend = await createBackend({ backend: "webgpu", log: () => {} }) as WebGpuBackend;
      return new GpuMinHasher(backend, hasher.seeds);
    } catch (e) {
      return `the WebGPU device failed to start: ${(e as Error).message}`;
    }
  }

  /**
   * The signatures of documents given by their shingle hashes: `hashes` uint32 per document,
   * document after document. One upload, one dispatch (or a few, past 65,535 workgroups) and
   * one readback for the whole batch.
   */
  async signatures(shingleSets: Uint32Array[]): Promise<Uint32Array> {
    const docs = shingleSets.length;
    const H = this.hashes;
    if (docs === 0) return new Uint32Array(0);
    const offsets = new Uint32Array(docs + 1);
    let total = 0;
    for (let d = 0; d < docs; d++) {
      offsets[d] = total;
      total += shingleSets[d].length;
    }
    offsets[docs] = total;
    if (total >= 2 ** 32) throw new Error("minhash_gpu: more than 2³² shingles in one batch");
    const shingles = new Uint32Array(Math.max(1, total));
    for (let d = 0; d < docs; d++) shingles.set(shingleSets[d], offsets[d]);

    const device = this.#device;
    const STORAGE = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
    const shingleBuf = this.#buffer("shingles", shingles.byteLength, STORAGE);
    const offsetBuf = this.#buffer("offsets", offsets.byteLength, STORAGE);
    const outBytes = docs * H * 4;
    const outBuf = this.#buffer("out", outBytes, STORAGE);
    const staging = this.#buffer("staging", outBytes, GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST);
    device.queue.writeBuffer(shingleBuf, 0, shingles);
    device.queue.writeBuffer(offsetBuf, 0, offsets);

    const threads = docs * H;
    const groups = Math.ceil(threads / WG);
    const y = Math.ceil(groups / MAX_GROUPS);
    const x = Math.ceil(groups / y);
    if (y > MAX_GROUPS) throw new Error(`minhash_gpu: ${docs} documents are too many for one batch`);
    // Uniform: tensor offsets (all 0: whole buffers are bound), then docs and hashes.
    const params = new Uint32Array(paramBytes(minhashKernel) / 4);
    params.set([0, 0, 0, 0, docs, H]);
    device.queue.writeBuffer(this.#uniform, 0, params);
    const bindGroup = device.createBindGroup({
      layout: this.#pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: this.#uniform } },
        { binding: 1, resource: { buffer: shingleBuf } },
        { binding: 2, resource: { buffer: offsetBuf } },
        { binding: 3, resource: { buffer: this.#seeds } },
        { binding: 4, resource: { buffer: outBuf } },
      ],
    });
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    pass.setPipeline(this.#pipeline);
    pass.setBindGroup(0, bindGroup);
    pass.dispatchWorkgroups(x, y);
    pass.end();
    encoder.copyBufferToBuffer(outBuf, 0, staging, 0, outBytes);
    device.queue.submit([encoder.finish()]);
    await Promise.race([
      staging.mapAsync(GPUMapMode.READ, 0, outBytes),
      device.lost.then((info) => {
        throw new Error(`kiln: the WebGPU device was lost (${info.reason}): ${info.message}`);
      }),
    ]);
    const result = new Uint32Array(staging.getMappedRange(0, outBytes).slice(0));
    staging.unmap();
    return result;
  }

  /** Releases the device and its buffers. */
  destroy(): void {
    for (const b of Object.values(this.#buffers)) b?.destroy();
    this.#buffers = {};
    this.#seeds.destroy();
    this.#uniform.destroy();
    this.#backend.destroy();
  }

  /** A buffer of at least `bytes`, reused across batches and grown (doubling) when too small. */
  #buffer(name: "shingles" | "offsets" | "out" | "staging", bytes: number, usage: number): GPUBuffer {
    const have = this.#buffers[name];
    if (have && have.size >= bytes) return have;
    have?.destroy();
    const size = Math.max(256, 2 ** Math.ceil(Math.log2(bytes)));
    return this.#buffers[name] = this.#device.createBuffer({ size, usage });
  }
}

/** Documents per GPU batch, at most; a batch also ends past {@linkcode BATCH_SHINGLES} shingles. */
export const BATCH_DOCS = 8192;
/** Shingle hashes per GPU batch, at most (32 MiB of uint32). */
export const BATCH_SHINGLES = 8 * 2 ** 20;
