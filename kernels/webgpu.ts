/**
 * The WebGPU backend: the ops of {@linkcode Backend} as WGSL kernels (in `wgsl/`), recorded into one
 * command encoder and one compute pass until {@linkcode Backend.submit} (or a download) sends them.
 *
 * - Buffers come from a pool keyed by size; `free` and the scratch buffers of a step go back to it.
 * - Pipelines are compiled once per kernel variant and cached; compile time is totalled in `stats`.
 * - Each dispatch's parameters (tensor offsets and sizes) take a 256-byte slot of a uniform ring
 *   that is written with one `writeBuffer` per 64 KiB chunk at submit, so recording a step costs
 *   no queue traffic and never reads anything back.
 * - Grids stay within 65,535 workgroups a dimension (kernels see a two-dimensional grid).
 * - With `profile: true` every dispatch gets its own pass with timestamp queries (slower; for the
 *   benchmarks' split by kernel).
 * @module
 */
import {
  type AdamWOptions,
  type AttentionOptions,
  type Backend,
  checkAttentionDecode,
  checkEntropy,
  checkTensor,
  type CrossEntropyOptions,
  type DType,
  type HostArray,
  type MatmulOptions,
  type SampleOptions,
  type Tensor,
} from "./backend.ts";
import { type TokenBuckets, tokenBuckets } from "./host.ts";
import {
  attentionBackwardKeyKernel,
  attentionBackwardQueryKernel,
  attentionDecodeKernel,
  attentionForwardKernel,
  attentionRowDotKernel,
  ATTN_ROWS,
} from "./wgsl/attention.ts";
import {
  argmaxKernel,
  crossEntropyKernel,
  entropyKernel,
  logSoftmaxGatherKernel,
  sampleKernel,
} from "./wgsl/classifier.ts";
import {
  addKernel,
  copyF32Kernel,
  copyKernel,
  fillF32Kernel,
  fillKernel,
  geluBackwardKernel,
  geluForwardKernel,
  scaleKernel,
} from "./wgsl/elementwise.ts";
import {
  encoderBackwardPositionKernel,
  encoderBackwardTokenKernel,
  encoderForwardKernel,
} from "./wgsl/encoder.ts";
import { type Kernel, kernelSource, paramBytes, WG } from "./wgsl/kernel.ts";
import {
  layernormBackwardKernel,
  layernormBackwardReduceKernel,
  layernormForwardKernel,
  LN_BACKWARD_ROWS,
} from "./wgsl/layernorm.ts";
import { matmulKernel, type MatmulTile, matmulTiles, TILE_CANDIDATES } from "./wgsl/matmul.ts";
import { MatmulTuner, type TuneResult, type TuneShape } from "./autotune.ts";
import {
  adamwKernel,
  clipScaleKernel,
  reduceFinalKernel,
  reduceGroups,
  reducePartialKernel,
  SUM_ROWS_BLOCK,
  sumRowsKernel,
  sumRowsPartialKernel,
} from "./wgsl/optimizer.ts";

/** Options of {@linkcode createWebGpuBackend}. */
export interface WebGpuOptions {
  /** Give each dispatch its own pass with timestamps, for {@linkcode WebGpuBackend.timings}. */
  profile?: boolean;
  /**
   * Matmul autotuning (`autotune.ts`): on by default on hardware adapters, off on software ones
   * (llvmpipe compiles each candidate slowly); `KILN_AUTOTUNE=0` turns it off everywhere. An object
   * turns it on and sets the cache file (`null`: memory only) or the candidates.
   */
  autotune?: boolean | { cacheFile?: string | null; candidates?: MatmulTile[] };
  /** Run every matmul with this tile shape (benchmarks, tests): no heuristic, no tuning. */
  matmulTile?: MatmulTile;
}

/** One dispatch's GPU time, from timestamp queries. */
export interface KernelTiming {
  kernel: string;
  ms: number;
}

/**
 * What reached the device since the backend was created: the overheads a training step should keep
 * few (through Deno each readback waits ~11 ms, each pass costs ~60 µs, each dispatch ~10 µs).
 */
export interface WebGpuCounts {
  /** `dispatchWorkgroups` calls. */
  dispatches: number;
  /** Compute passes begun. */
  passes: number;
  /** `queue.submit` calls. */
  submits: number;
  /** Host-to-device copies of {@linkcode Backend.upload} (each also submits what was recorded before). */
  uploads: number;
  /** Device-to-host readbacks ({@linkcode Backend.download}): each waits for the queue to drain. */
  readbacks: number;
}

/** The WebGPU backend, with its device and counters. */
export interface WebGpuBackend extends Backend {
  readonly device: GPUDevice;
  /** Whether the device has timestamp queries. */
  readonly hasTimestamps: boolean;
  /** Pipelines compiled so far and the milliseconds spent compiling them. */
  stats(): { pipelines: number; compileMs: number; dispatches: number };
  /**
   * Times the candidate tiles of the matmul shape classes used since the last tuning, keeps the
   * fastest (cached per adapter). Runs by itself at the next download; call it to tune now.
   */
  tuneMatmuls(): Promise<TuneResult[]>;
  /** Cumulative counts of dispatches, passes, submits, uploads and readbacks ({@linkcode WebGpuCounts}). */
  counts(): WebGpuCounts;
  /** With `profile`: GPU times of the dispatches submitted since the last call, in order. */
  timings(): Promise<KernelTiming[]>;
}

class GpuStorage {
  constructor(readonly buffer: GPUBuffer, readonly bytes: number) {}
}

const BYTES: Record<DType, number> = { f32: 4, u32: 4, f16: 2 };
const MAX_GROUPS = 65535;
const UNIFORM_CHUNK = 65536;
const PROFILE_CAPACITY = 2048; // dispatches timed a submit (a query set holds at most 4096 queries)
const BIND_GROUP_CACHE = 8192; // bind groups kept (a GPT-2 step binds a few hundred distinct ones)

interface UniformChunk {
  buffer: GPUBuffer;
  staging: ArrayBuffer;
  used: number;
}

/** Creates the backend on a device (see `device.ts` for finding one). */
export function createWebGpuBackend(
  device: GPUDevice,
  adapterName: string,
  options: WebGpuOptions = {},
): WebGpuBackend {
  const hasF16 = device.features.has("shader-f16");
  const hasTimestamps = device.features.has("timestamp-query");
  const profile = options.profile === true && hasTimestamps;
  const forcedTile = options.matmulTile;
  const software = /llvmpipe|lavapipe|swiftshader|software/i.test(adapterName);
  const limits = device.limits;
  const tuner = new MatmulTuner(
    `${adapterName} | wg ${limits.maxComputeInvocationsPerWorkgroup} | ` +
      `shm ${limits.maxComputeWorkgroupStorageSize}`,
    {
      enabled: forcedTile === undefined && !profile && (options.autotune ?? !software) !== false,
      ...(typeof options.autotune === "object" ? options.autotune : {}),
    },
  );
  let tuning: Promise<TuneResult[]> | null = null;
  /** Set while the tuner records a timed pass. */
  let timestampWrites: GPUComputePassTimestampWrites | null = null;
  const slot = Math.max(256, device.limits.minUniformBufferOffsetAlignment);
  const maxBinding = device.limits.maxStorageBufferBindingSize;

  let lost: string | null = null;
  let firstError: string | null = null;
  device.lost.then((info) => {
    lost = `the WebGPU device was lost (${info.reason}): ${info.message}`;
  });
  device.addEventListener("uncapturederror", (e) => {
    firstError ??= (e as GPUUncapturedErrorEvent).error.message;
  });
  const alive = () => {
    if (lost) throw new Error(`kiln: ${lost}`);
    if (firstError) {
      const message = firstError;
      firstError = null; // reported once; the device itself is still usable
      throw new Error(`kiln: WebGPU error: ${message}`);
    }
  };

  // ---- buffers -------------------------------------------------------------------------------

  const pool = new Map<number, GPUBuffer[]>();
  const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  // Sizes are rounded up (powers of two below 1 MiB, MiB multiples above) so buffers are reused.
  const roundSize = (bytes: number) =>
    bytes <= 1 << 20
      ? Math.max(256, 2 ** Math.ceil(Math.log2(bytes)))
      : Math.ceil(bytes / (1 << 20)) * (1 << 20);
  /** A storage buffer of at least `bytes`, and whether it is fresh (zeroed) or reused. */
  const take = (bytes: number): [GpuStorage, boolean] => {
    const size = roundSize(bytes);
    if (size > maxBinding) {
      throw new Error(
        `kiln: a ${bytes}-byte buffer exceeds this device's storage binding limit (${maxBinding})`,
      );
    }
    const reused = pool.get(size)?.pop();
    if (reused) return [new GpuStorage(reused, size), false];
    return [new GpuStorage(device.createBuffer({ size, usage }), size), true];
  };
  const release = (s: GpuStorage) => {
    const list = pool.get(s.bytes) ?? [];
    list.push(s.buffer);
    pool.set(s.bytes, list);
  };
  const storage = (t: Tensor) => t.storage as GpuStorage;
  const dummy = device.createBuffer({ size: 256, usage });
  const none = (dtype: DType): Tensor => ({
    storage: new GpuStorage(dummy, 256),
    offset: 0,
    length: 1,
    dtype,
  });

  // ---- the step recorder ---------------------------------------------------------------------

  let encoder: GPUCommandEncoder | null = null;
  let pass: GPUComputePassEncoder | null = null;
  let scratch: GpuStorage[] = []; // released to the pool after the submit
  let oneShot: GPUBuffer[] = []; // destroyed after the submit
  const chunks: UniformChunk[] = [];
  let chunkIndex = 0;
  let querySet: GPUQuerySet | null = null;
  let profiled: string[] = [];
  const pendingTimings: Array<Promise<KernelTiming[]>> = [];
  let dispatches = 0;
  const counts: WebGpuCounts = { dispatches: 0, passes: 0, submits: 0, uploads: 0, readbacks: 0 };

  const pipelines = new Map<string, GPUComputePipeline>();
  let compileMs = 0;
  const pipeline = (k: Kernel) => {
    let p = pipelines.get(k.name);
    if (!p) {
      const t0 = performance.now();
      const module = device.createShaderModule({ code: kernelSource(k), label: k.name });
      p = device.createComputePipeline({
        layout: "auto",
        compute: { module, entryPoint: "main" },
        label: k.name,
      });
      compileMs += performance.now() - t0;
      pipelines.set(k.name, p);
    }
    return p;
  };

  /** A scratch tensor for the current step (contents undefined until written). */
  const scratchTensor = (length: number, dtype: DType = "f32"): Tensor => {
    const [s] = take(Math.max(4, length * BYTES[dtype]));
    scratch.push(s);
    return { storage: s, offset: 0, length, dtype };
  };

  /**
   * A tensor holding host data for the current step, without a submit: a fresh buffer filled while
   * mapped at creation (a queue write would run before the ops recorded ahead of it).
   */
  const hostTensor = (data: Uint32Array): Tensor => {
    const buffer = device.createBuffer({
      size: Math.max(16, data.byteLength),
      usage,
      mappedAtCreation: true,
    });
    new Uint32Array(buffer.getMappedRange()).set(data);
    buffer.unmap();
    oneShot.push(buffer);
    oneShotBuffers.add(buffer);
    return { storage: new GpuStorage(buffer, buffer.size), offset: 0, length: data.length, dtype: "u32" };
  };

  // Bind groups, cached: creating one is most of a dispatch's host cost (~10-25 µs through Deno),
  // and a training or decode step binds the same buffers at the same uniform slots every time (the
  // ring restarts at each submit). Keyed by kernel, slot and buffer identities; a bind group holding
  // a one-shot buffer (destroyed after its submit) is never cached.
  const bindGroups = new Map<string, GPUBindGroup>();
  const bufferIds = new WeakMap<GPUBuffer, number>();
  let nextBufferId = 0;
  const oneShotBuffers = new WeakSet<GPUBuffer>();
  const bufferId = (b: GPUBuffer) => {
    let id = bufferIds.get(b);
    if (id === undefined) bufferIds.set(b, id = nextBufferId++);
    return id;
  };
  const bindGroupFor = (
    name: string,
    p: GPUComputePipeline,
    uniform: GPUBuffer,
    offset: number,
    bytes: number,
    tensors: Tensor[],
  ): GPUBindGroup => {
    const buffers = tensors.map((t) => storage(t).buffer);
    const cacheable = !buffers.some((b) => oneShotBuffers.has(b));
    const key = cacheable ? `${name}|${bufferId(uniform)}:${offset}|${buffers.map(bufferId).join(",")}` : "";
    let group = cacheable ? bindGroups.get(key) : undefined;
    if (!group) {
      group = device.createBindGroup({
        layout: p.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: uniform, offset, size: bytes } },
          ...buffers.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
        ],
      });
      if (cacheable) {
        if (bindGroups.size >= BIND_GROUP_CACHE) bindGroups.clear(); // bounded; steady loops refill it
        bindGroups.set(key, group);
      }
    }
    return group;
  };

  const uniformSlot = (bytes: number): [UniformChunk, number] => {
    let chunk = chunks[chunkIndex];
    if (chunk && chunk.used + bytes > UNIFORM_CHUNK) chunk = chunks[++chunkIndex];
    if (!chunk) {
      chunk = {
        buffer: device.createBuffer({
          size: UNIFORM_CHUNK,
          usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        }),
        staging: new ArrayBuffer(UNIFORM_CHUNK),
        used: 0,
      };
      chunks.push(chunk);
    }
    const offset = chunk.used;
    chunk.used += Math.ceil(bytes / slot) * slot;
    return [chunk, offset];
  };

  /**
   * Records one dispatch of `kernel` over `tensors` (bound whole; their offsets go in the uniform)
   * with `params` in the kernel's order, on `groups` workgroups (a count, or an explicit x, y, z).
   */
  const run = (
    kernel: Kernel,
    tensors: Tensor[],
    params: number[],
    groups: number | [number, number, number],
  ) => {
    alive();
    const bytes = paramBytes(kernel);
    const [chunk, offset] = uniformSlot(bytes);
    const view = new DataView(chunk.staging, offset, bytes);
    tensors.forEach((t, i) => view.setUint32(4 * i, vecOffset(kernel.tensors[i][1], t), true));
    kernel.params.forEach(([, type], i) => {
      const at = 4 * (tensors.length + i);
      if (type === "u32") view.setUint32(at, params[i] >>> 0, true);
      else view.setFloat32(at, params[i], true);
    });
    const p = pipeline(kernel);
    const bindGroup = bindGroupFor(kernel.name, p, chunk.buffer, offset, bytes, tensors);
    encoder ??= device.createCommandEncoder();
    if (profile) {
      querySet ??= device.createQuerySet({ type: "timestamp", count: 2 * PROFILE_CAPACITY });
      pass?.end();
      pass = profiled.length < PROFILE_CAPACITY
        ? encoder.beginComputePass({
          timestampWrites: {
            querySet,
            beginningOfPassWriteIndex: 2 * profiled.length,
            endOfPassWriteIndex: 2 * profiled.length + 1,
          },
        })
        : encoder.beginComputePass();
      profiled.push(kernel.name);
      counts.passes++;
    }
    if (!pass) {
      pass = encoder.beginComputePass(timestampWrites ? { timestampWrites } : undefined);
      counts.passes++;
    }
    pass.setPipeline(p);
    pass.setBindGroup(0, bindGroup);
    const [x, y, z] = typeof groups === "number" ? grid(groups) : groups;
    if (x > MAX_GROUPS || y > MAX_GROUPS || z > MAX_GROUPS) {
      throw new Error(`${kernel.name}: grid ${x}×${y}×${z} exceeds ${MAX_GROUPS} workgroups a dimension`);
    }
    pass.dispatchWorkgroups(x, y, z);
    dispatches++;
    counts.dispatches++;
  };

  const submit = () => {
    if (!encoder) return;
    pass?.end();
    pass = null;
    for (let i = 0; i <= chunkIndex && i < chunks.length; i++) {
      const c = chunks[i];
      if (c.used > 0) device.queue.writeBuffer(c.buffer, 0, c.staging, 0, c.used);
      c.used = 0;
    }
    chunkIndex = 0;
    let readTimings: (() => Promise<KernelTiming[]>) | null = null;
    if (profile && querySet && profiled.length > 0) {
      const count = 2 * Math.min(profiled.length, PROFILE_CAPACITY);
      const resolved = device.createBuffer({
        size: 8 * count,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const readable = device.createBuffer({
        size: 8 * count,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      encoder.resolveQuerySet(querySet, 0, count, resolved, 0);
      encoder.copyBufferToBuffer(resolved, 0, readable, 0, 8 * count);
      const names = profiled;
      readTimings = async () => {
        await readable.mapAsync(GPUMapMode.READ);
        const ticks = new BigUint64Array(readable.getMappedRange().slice(0));
        readable.destroy();
        resolved.destroy();
        return names.slice(0, count / 2).map((kernel, i) => ({
          kernel,
          ms: Number(ticks[2 * i + 1] - ticks[2 * i]) / 1e6,
        }));
      };
    }
    profiled = [];
    device.queue.submit([encoder.finish()]);
    counts.submits++;
    encoder = null;
    if (readTimings) pendingTimings.push(readTimings());
    for (const s of scratch) release(s);
    scratch = [];
    for (const b of oneShot) b.destroy();
    oneShot = [];
  };

  /** Waits for a mapping, or fails clearly if the device is lost meanwhile (never hangs). */
  const mapped = (buffer: GPUBuffer) =>
    Promise.race([
      buffer.mapAsync(GPUMapMode.READ),
      device.lost.then((info) => {
        throw new Error(`kiln: the WebGPU device was lost (${info.reason}): ${info.message}`);
      }),
    ]);

  // ---- ops -----------------------------------------------------------------------------------

  const elementwise = (kernel: Kernel, tensors: Tensor[], n: number, ...params: number[]) => {
    if (n > 0) run(kernel, tensors, [n, ...params], Math.ceil(n / WG));
  };
  /**
   * Records an elementwise kernel over `n` elements: its vec4 form (four a thread) when every
   * elementwise tensor's offset is a multiple of 4, else one element a thread. `extra` tensors
   * (bound after them) are read as they are.
   */
  const elementwiseWide = (
    kernel: (vec4: boolean) => Kernel,
    tensors: Tensor[],
    extra: Tensor[],
    n: number,
    ...params: number[]
  ) => {
    if (n === 0) return;
    const vec4 = tensors.every((t) => t.offset % 4 === 0);
    const threads = vec4 ? Math.floor(n / 4) + 1 : n;
    run(kernel(vec4), [...tensors, ...extra], [n, ...params], Math.ceil(threads / WG));
  };
  const zero = (s: GpuStorage) =>
    run(
      fillKernel("u32"),
      [{ storage: s, offset: 0, length: s.bytes / 4, dtype: "u32" }],
      [s.bytes / 4, 0],
      Math.ceil(s.bytes / 4 / WG),
    );

  /** Records `out[0] = reduce(inp)`: partial sums per workgroup, then one workgroup over those. */
  const reduce = (out: Tensor, inp: Tensor, squares: boolean, finish: 0 | 1 | 2) => {
    const n = inp.length, groups = reduceGroups(n), chunk = Math.ceil(n / groups);
    const partial = scratchTensor(groups);
    run(reducePartialKernel(), [partial, inp], [n, chunk, squares ? 1 : 0], [groups, 1, 1]);
    run(reduceFinalKernel(), [out, partial], [groups, finish, n], [1, 1, 1]);
  };

  /** Records one matmul, with `tile` or else the tuned (or heuristic) tile of its shape class. */
  const recordMatmul = (out: Tensor, a: Tensor, b: Tensor, o: MatmulOptions, tile?: MatmulTile) => {
    const { m, n, k } = o;
    const batch = o.batch ?? { count: 1, strideA: 0, strideB: 0, strideOut: 0 };
    checkTensor("matmul", "out", out, (batch.count - 1) * batch.strideOut + m * n);
    checkTensor("matmul", "a", a, (batch.count - 1) * batch.strideA + m * k, a.dtype);
    checkTensor("matmul", "b", b, (batch.count - 1) * batch.strideB + k * n, b.dtype);
    if (a.dtype === "u32" || b.dtype === "u32") throw new Error("matmul: operands must be f32 or f16");
    // vec4 loads need the operand's contiguous dimension, offset and batch stride in multiples of 4.
    const vecA = a.offset % 4 === 0 && (o.transA ? m : k) % 4 === 0 && batch.strideA % 4 === 0;
    const vecB = b.offset % 4 === 0 && (o.transB ? k : n) % 4 === 0 && batch.strideB % 4 === 0;
    const shape: TuneShape = {
      m,
      n,
      k,
      batch: batch.count,
      transA: o.transA === true,
      transB: o.transB === true,
      typeA: a.dtype as "f32" | "f16",
      typeB: b.dtype as "f32" | "f16",
    };
    const tiles = TILE_CANDIDATES[tile ?? forcedTile ?? tuner.pick(shape) ?? matmulTiles(m, n, batch.count)];
    const kernel = matmulKernel({
      ...tiles,
      transA: o.transA === true,
      transB: o.transB === true,
      vecA,
      vecB,
      typeA: a.dtype as "f32" | "f16",
      typeB: b.dtype as "f32" | "f16",
    });
    run(
      kernel,
      [out, a, b, o.bias ?? none("f32")],
      [
        m,
        n,
        k,
        vecA ? batch.strideA / 4 : batch.strideA,
        vecB ? batch.strideB / 4 : batch.strideB,
        batch.strideOut,
        o.bias ? 1 : 0,
        o.accumulate ? 1 : 0,
      ],
      [Math.ceil(n / tiles.BN), Math.ceil(m / tiles.BM), batch.count],
    );
  };

  /** Time of `tile` on `shape` in ms: GPU time by timestamps where the device has them, else wall time. */
  const timeTile = async (shape: TuneShape, tile: MatmulTile): Promise<number> => {
    const { m, n, k, batch } = shape;
    const a = backend.alloc(batch * m * k, shape.typeA), b = backend.alloc(batch * k * n, shape.typeB);
    const out = backend.alloc(batch * m * n);
    backend.fill(a, 0.5);
    backend.fill(b, 0.25);
    const opts: MatmulOptions = {
      m,
      n,
      k,
      transA: shape.transA,
      transB: shape.transB,
      batch: batch > 1 ? { count: batch, strideA: m * k, strideB: k * n, strideOut: m * n } : undefined,
    };
    recordMatmul(out, a, b, opts, tile); // warm-up: compiles the pipeline
    await backend.finish();
    // Enough repeats for ~1 ms even on a big GPU (wall time also pays one queue round trip).
    const reps = Math.max(1, Math.min(20, Math.ceil(4e10 / (2 * batch * m * n * k))));
    let ms: number;
    if (hasTimestamps) {
      const querySet = device.createQuerySet({ type: "timestamp", count: 2 });
      const resolved = device.createBuffer({
        size: 16,
        usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
      });
      const readable = device.createBuffer({
        size: 16,
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      timestampWrites = { querySet, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 };
      for (let i = 0; i < reps; i++) recordMatmul(out, a, b, opts, tile);
      timestampWrites = null;
      pass?.end();
      pass = null;
      encoder!.resolveQuerySet(querySet, 0, 2, resolved, 0);
      encoder!.copyBufferToBuffer(resolved, 0, readable, 0, 16);
      submit();
      await mapped(readable);
      const [begin, end] = new BigUint64Array(readable.getMappedRange().slice(0));
      ms = Number(end - begin) / 1e6 / reps;
      for (const x of [readable, resolved]) x.destroy();
      querySet.destroy();
    } else {
      const start = performance.now();
      for (let i = 0; i < reps; i++) recordMatmul(out, a, b, opts, tile);
      await backend.finish();
      ms = (performance.now() - start) / reps;
    }
    // Destroyed, not pooled: a big class's operands (GPT-2's head gradient: 1.6 GB) must not stay.
    for (const t of [a, b, out]) storage(t).buffer.destroy();
    return ms;
  };
  const tuneMatmuls = (): Promise<TuneResult[]> => {
    submit(); // the caller's recorded work goes first, in its own submit
    tuning ??= tuner.tune(timeTile).finally(() => (tuning = null));
    return tuning;
  };

  const backend: WebGpuBackend = {
    name: "webgpu",
    description: adapterName,
    hasF16,
    device,
    hasTimestamps,

    alloc(length, dtype = "f32") {
      if (dtype === "f16" && !hasF16) {
        throw new Error("kiln: this WebGPU device has no shader-f16 (f16 tensors)");
      }
      const [s, fresh] = take(Math.max(4, length * BYTES[dtype]));
      if (!fresh) zero(s);
      return { storage: s, offset: 0, length, dtype };
    },
    view(t, offset, length) {
      if (offset < 0 || offset + length > t.length) {
        throw new Error(`view: [${offset}, ${offset + length}) is outside a tensor of ${t.length} elements`);
      }
      return { storage: t.storage, offset: t.offset + offset, length, dtype: t.dtype };
    },
    upload(t, host: HostArray) {
      alive();
      if (host.length > t.length) throw new Error(`upload: ${host.length} values into ${t.length} elements`);
      if (t.dtype === "f16") {
        // writeBuffer needs 4-byte alignment, which f16 views need not have: convert on the device.
        const staged = scratchTensor(host.length);
        backend.upload(staged, host);
        elementwise(copyKernel("f16", "f32"), [t, staged], host.length);
        return;
      }
      submit(); // writeBuffer runs at queue time: first send what was recorded before this upload
      const data = t.dtype === "u32"
        ? (host instanceof Uint32Array ? host : Uint32Array.from(host as ArrayLike<number>))
        : (host instanceof Float32Array ? host : Float32Array.from(host as ArrayLike<number>));
      device.queue.writeBuffer(storage(t).buffer, t.offset * 4, data as Uint32Array<ArrayBuffer>);
      counts.uploads++;
    },
    async download(...tensors) {
      alive();
      // A readback waits for the device anyway: the moment to tune the matmul classes seen so far.
      if (tuner.hasPending) await tuneMatmuls();
      // One staging buffer for all of them; copies need 4-byte alignment, so f16 ranges are widened.
      const ranges = tensors.map((t) => {
        const bytes = BYTES[t.dtype], begin = t.offset * bytes, end = (t.offset + t.length) * bytes;
        return { begin: begin & ~3, end: (end + 3) & ~3, skip: begin & 3 };
      });
      let total = 0;
      const at = ranges.map((r) => (total += r.end - r.begin) - (r.end - r.begin));
      const staging = device.createBuffer({
        size: Math.max(4, total),
        usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
      });
      encoder ??= device.createCommandEncoder();
      pass?.end();
      pass = null;
      tensors.forEach((t, i) => {
        const r = ranges[i];
        if (r.end > r.begin) {
          encoder!.copyBufferToBuffer(storage(t).buffer, r.begin, staging, at[i], r.end - r.begin);
        }
      });
      submit();
      counts.readbacks++;
      await mapped(staging);
      alive();
      const bytes = staging.getMappedRange();
      const result = tensors.map((t, i) => {
        const start = at[i] + ranges[i].skip;
        if (t.dtype === "u32") return new Uint32Array(bytes.slice(start, start + 4 * t.length));
        if (t.dtype === "f32") return new Float32Array(bytes.slice(start, start + 4 * t.length));
        return Float32Array.from(new Float16Array(bytes.slice(start, start + 2 * t.length)));
      });
      staging.unmap();
      staging.destroy();
      return result;
    },
    free(t) {
      if (t.offset !== 0) throw new Error("free: pass the tensor alloc returned, not a view");
      release(storage(t));
    },
    submit,
    async finish() {
      submit();
      await Promise.race([device.queue.onSubmittedWorkDone(), device.lost]);
      alive();
    },
    destroy() {
      for (const list of pool.values()) for (const b of list) b.destroy();
      pool.clear();
      device.destroy();
    },
    stats: () => ({ pipelines: pipelines.size, compileMs, dispatches }),
    counts: () => ({ ...counts }),
    tuneMatmuls,
    async timings() {
      const all = await Promise.all(pendingTimings.splice(0));
      return all.flat();
    },

    fill(t, value) {
      if (t.dtype === "f32") elementwiseWide(fillF32Kernel, [t], [], t.length, value);
      else elementwise(fillKernel(t.dtype), [t], t.length, value);
    },
    copy(dst, src) {
      checkTensor("copy", "src", src, dst.length, src.dtype);
      if (dst.dtype === "f32" && src.dtype === "f32") {
        elementwiseWide(copyF32Kernel, [dst, src], [], dst.length);
      } else elementwise(copyKernel(dst.dtype, src.dtype), [dst, src], dst.length);
    },
    scale(out, inp, alpha) {
      elementwiseWide(scaleKernel, [out, inp], [], out.length, alpha);
    },
    add(out, a, b) {
      elementwiseWide(addKernel, [out, a, b], [], out.length);
    },
    geluForward(out, inp) {
      elementwiseWide(geluForwardKernel, [out, inp], [], out.length);
    },
    geluBackward(dinp, inp, dout) {
      elementwiseWide(geluBackwardKernel, [dinp, inp, dout], [], dinp.length);
    },

    matmul(out, a, b, o: MatmulOptions) {
      recordMatmul(out, a, b, o);
    },

    layernormForward(out, mean, rstd, inp, weight, bias, { rows, C, eps = 1e-5 }) {
      const vec4 = C % 4 === 0 && [out, inp, weight, bias].every((t) => t.offset % 4 === 0);
      run(layernormForwardKernel(vec4), [out, mean, rstd, inp, weight, bias], [rows, C, eps], rows);
    },
    layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, { rows, C }) {
      const blocks = Math.ceil(rows / LN_BACKWARD_ROWS);
      const partial = scratchTensor(blocks * 2 * C);
      const vec4 = C % 4 === 0 && [dinp, dout, inp, weight].every((t) => t.offset % 4 === 0);
      run(layernormBackwardKernel(vec4), [dinp, partial, dout, inp, weight, mean, rstd], [rows, C], blocks);
      run(layernormBackwardReduceKernel(), [dweight, dbias, partial], [blocks, C], Math.ceil(C / WG));
    },

    attentionForward(out, lse, qkv, opts) {
      const { B, T, C, NH } = opts, hs = checkAttention(opts);
      run(
        attentionForwardKernel(hs),
        [out, lse, qkv, opts.segments ?? none("u32")],
        [T, C, NH, 1 / Math.sqrt(hs), opts.segments ? 1 : 0],
        [Math.ceil(T / ATTN_ROWS), B * NH, 1],
      );
    },
    attentionDecode(out, qkv, opts) {
      const hs = checkAttentionDecode(out, qkv, opts);
      const { C, NH, T } = opts, B = opts.B ?? 1;
      if (NH > MAX_GROUPS || B > MAX_GROUPS) {
        throw new Error(`attentionDecode: B (${B}) and NH (${NH}) must be at most ${MAX_GROUPS}`);
      }
      const { lengths, append } = opts;
      run(
        attentionDecodeKernel(hs),
        [out, qkv, lengths ?? none("u32"), append ?? none("f32")],
        [T, opts.Tmax ?? T, C, 1 / Math.sqrt(hs), lengths ? 1 : 0, append ? 1 : 0],
        [NH, B, 1],
      );
    },
    attentionBackward(dqkv, dout, qkv, out, lse, opts) {
      const { B, T, C, NH } = opts, hs = checkAttention(opts);
      const D = scratchTensor(B * NH * T);
      run(
        attentionRowDotKernel(hs),
        [D, dout, out],
        [B * NH * T, T, C, NH],
        Math.ceil(B * NH * T / ATTN_ROWS),
      );
      const tensors = [dqkv, dout, qkv, lse, D, opts.segments ?? none("u32")];
      const params = [T, C, NH, 1 / Math.sqrt(hs), opts.segments ? 1 : 0];
      const groups: [number, number, number] = [Math.ceil(T / ATTN_ROWS), B * NH, 1];
      run(attentionBackwardQueryKernel(hs), tensors, params, groups);
      run(attentionBackwardKeyKernel(hs), tensors, params, groups);
    },

    crossEntropy(losses, logits, targets, o: CrossEntropyOptions) {
      const { rows, V } = o, Vp = o.Vp ?? V;
      checkTensor("crossEntropy", "logits", logits, rows * Vp);
      checkTensor("crossEntropy", "targets", targets, rows, "u32");
      let norm = none("f32");
      const fromMask = o.mask !== undefined && o.normalize !== "count";
      if (fromMask) {
        norm = scratchTensor(1);
        reduce(norm, backend.view(o.mask!, 0, rows), false, 0);
      }
      run(
        crossEntropyKernel(),
        [losses, logits, targets, o.mask ?? none("f32"), norm],
        [rows, V, Vp, o.mask ? 1 : 0, fromMask ? 1 : 0, rows, o.gradScale ?? 1],
        rows,
      );
    },

    encoderForward(out, tokens, wte, wpe, { B, T, C, positions }) {
      if (positions) checkTensor("encoderForward", "positions", positions, B * T, "u32");
      elementwise(
        encoderForwardKernel(),
        [out, tokens, wte, wpe, positions ?? none("u32")],
        B * T * C,
        T,
        C,
        positions ? 1 : 0,
      );
    },
    encoderBackward(dwte, dwpe, dout, tokens, { B, T, C, hostPositions }) {
      // Rows bucketed by position, like dwte's by token (checked before anything is recorded).
      let byPosition: TokenBuckets | null = null;
      if (hostPositions) {
        if (hostPositions.length < B * T) {
          throw new Error(
            `encoderBackward: hostPositions has ${hostPositions.length} entries, needs ${B * T}`,
          );
        }
        byPosition = tokenBuckets(hostPositions.subarray(0, B * T));
        const last = byPosition.data[byPosition.count - 1]; // buckets are sorted: the largest position
        if ((last + 1) * C > dwpe.length) {
          throw new Error(`encoderBackward: position ${last} is outside wpe (${dwpe.length / C} rows)`);
        }
      }
      const bucketed = (grad: Tensor, { count, data }: TokenBuckets) =>
        elementwise(encoderBackwardTokenKernel(), [grad, dout, hostTensor(data)], count * C, count, C);
      bucketed(dwte, tokenBuckets(tokens.subarray(0, B * T)));
      if (byPosition) bucketed(dwpe, byPosition);
      else elementwise(encoderBackwardPositionKernel(), [dwpe, dout], T * C, B);
    },

    adamw(params, grads, m, v, o: AdamWOptions) {
      const n = params.length;
      const [decayStart, decayEnd] = o.decayRange ?? [0, n];
      elementwiseWide(
        adamwKernel,
        [params, grads, m, v],
        [o.gradScale ?? none("f32")],
        n,
        o.lr,
        o.beta1,
        o.beta2,
        o.eps,
        o.weightDecay,
        1 - o.beta1 ** o.step,
        1 - o.beta2 ** o.step,
        decayStart,
        decayEnd,
        o.gradScale ? 1 : 0,
      );
    },
    globalNorm(out, inp) {
      reduce(out, inp, true, 2);
    },
    clipScale(out, norm, maxNorm) {
      run(clipScaleKernel(), [out, norm], [maxNorm], [1, 1, 1]);
    },
    sum(out, inp, opts = {}) {
      reduce(out, inp, false, opts.mean ? 1 : 0);
    },
    sumRows(out, inp, { rows, cols, accumulate }) {
      checkTensor("sumRows", "inp", inp, rows * cols);
      checkTensor("sumRows", "out", out, cols);
      if (rows <= SUM_ROWS_BLOCK) {
        return elementwise(sumRowsKernel(), [out, inp], cols, rows, accumulate ? 1 : 0);
      }
      // Two passes (blocks of rows, then the blocks in order): a fixed order, so still deterministic.
      const blocks = Math.ceil(rows / SUM_ROWS_BLOCK), partial = scratchTensor(blocks * cols);
      elementwise(sumRowsPartialKernel(), [partial, inp], blocks * cols, rows, cols);
      elementwise(sumRowsKernel(), [out, partial], cols, blocks, accumulate ? 1 : 0);
    },

    sample(tokens, logits, o: SampleOptions) {
      const Vp = o.Vp ?? o.V;
      if (!(o.temperature > 0)) throw new Error("sample: temperature must be > 0 (use argmax for greedy)");
      run(
        sampleKernel(),
        [tokens, logits],
        [o.rows, o.V, Vp, o.temperature, o.topK ?? 0, o.topP ?? 1, o.seed, o.step],
        o.rows,
      );
    },
    argmax(tokens, logits, { rows, V, Vp = V }) {
      run(argmaxKernel(), [tokens, logits], [rows, V, Vp], rows);
    },
    logSoftmaxGather(out, logits, tokens, { rows, V, Vp = V, temperature = 1 }) {
      run(logSoftmaxGatherKernel(), [out, logits, tokens], [rows, V, Vp, temperature], rows);
    },
    entropy(out, logits, { rows, V, Vp = V, temperature = 1 }) {
      checkEntropy(out, logits, rows, V, Vp, temperature);
      run(entropyKernel(), [out, logits], [rows, V, Vp, temperature], rows);
    },
  };
  return backend;
}

/** A two-dimensional grid of `groups` workgroups within the per-dimension limit. */
function grid(groups: number): [number, number, number] {
  const x = Math.min(groups, MAX_GROUPS);
  return [x, Math.ceil(groups / x), 1];
}

/** A tensor's offset in units of its binding's element (vec4 bindings count vec4s). */
function vecOffset(type: string, t: Tensor): number {
  if (!type.startsWith("vec4")) return t.offset;
  if (t.offset % 4 !== 0) throw new Error(`internal: vec4 binding of an offset not a multiple of 4`);
  return t.offset / 4;
}

function checkAttention({ C, NH }: AttentionOptions): number {
  const hs = C / NH;
  if (!Number.isInteger(hs)) throw new Error(`attention: C (${C}) must be a multiple of NH (${NH})`);
  return hs;
}
