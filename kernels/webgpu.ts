/**
 * The WebGPU backend's device runtime: the ops of {@linkcode Backend} are WGSL kernels with their
 * launchers, a file a family in `wgsl/` (elementwise, layernorm, attention, matmul, optimizer,
 * logits, encoder); this file records their dispatches into one command encoder and one compute
 * pass until {@linkcode Backend.submit} (or a download) sends them.
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
import type { Backend, DType, HostArray, MatmulOptions, Tensor } from "./backend.ts";
import { MatmulTuner, type TuneResult, type TuneShape } from "./autotune.ts";
import { attentionOps } from "./wgsl/attention.ts";
import { copyKernel, elementwiseOps, fillKernel } from "./wgsl/elementwise.ts";
import { encoderOps } from "./wgsl/encoder.ts";
import {
  type Bindings,
  checkDispatch,
  type Kernel,
  kernelSource,
  paramBytes,
  type Params,
  type Recorder,
  runElementwise,
} from "./wgsl/kernel.ts";
import { layernormOps } from "./wgsl/layernorm.ts";
import { logitsOps } from "./wgsl/logits.ts";
import { type MatmulTile, matmulTiles, recordMatmul } from "./wgsl/matmul.ts";
import { optimizerOps } from "./wgsl/optimizer.ts";

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

/**
 * Storage buffers for reuse, by size: sizes are rounded up (powers of two below 1 MiB, MiB
 * multiples above) so a freed buffer fits the next request of about its size.
 */
class BufferPool {
  readonly usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST;
  #free = new Map<number, GPUBuffer[]>();
  constructor(readonly device: GPUDevice) {}

  /** A storage buffer of at least `bytes`, and whether it is fresh (zeroed) or reused. */
  take(bytes: number): [GpuStorage, boolean] {
    const size = bytes <= 1 << 20
      ? Math.max(256, 2 ** Math.ceil(Math.log2(bytes)))
      : Math.ceil(bytes / (1 << 20)) * (1 << 20);
    const maxBinding = this.device.limits.maxStorageBufferBindingSize;
    if (size > maxBinding) {
      throw new Error(
        `kiln: a ${bytes}-byte buffer exceeds this device's storage binding limit (${maxBinding})`,
      );
    }
    const reused = this.#free.get(size)?.pop();
    if (reused) return [new GpuStorage(reused, size), false];
    return [new GpuStorage(this.device.createBuffer({ size, usage: this.usage }), size), true];
  }

  release(s: GpuStorage): void {
    const list = this.#free.get(s.bytes) ?? [];
    list.push(s.buffer);
    this.#free.set(s.bytes, list);
  }

  destroy(): void {
    for (const list of this.#free.values()) for (const b of list) b.destroy();
    this.#free.clear();
  }
}

interface UniformChunk {
  buffer: GPUBuffer;
  staging: ArrayBuffer;
  used: number;
}

/**
 * The dispatches' uniform structs: each takes a `slot`-aligned range of a 64 KiB chunk's host
 * staging, and {@linkcode UniformRing.flush} writes the used chunks with one `writeBuffer` each at
 * submit, then starts again from the first chunk.
 */
class UniformRing {
  #chunks: UniformChunk[] = [];
  #index = 0;
  constructor(readonly device: GPUDevice, readonly alignment: number) {}

  /** A range of `bytes` for one dispatch: its chunk and offset. */
  slot(bytes: number): [UniformChunk, number] {
    let chunk = this.#chunks[this.#index];
    if (chunk && chunk.used + bytes > UNIFORM_CHUNK) chunk = this.#chunks[++this.#index];
    if (!chunk) {
      chunk = {
        buffer: this.device.createBuffer({
          size: UNIFORM_CHUNK,
          usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
        }),
        staging: new ArrayBuffer(UNIFORM_CHUNK),
        used: 0,
      };
      this.#chunks.push(chunk);
    }
    const offset = chunk.used;
    chunk.used += Math.ceil(bytes / this.alignment) * this.alignment;
    return [chunk, offset];
  }

  /** Queues the writes of the used chunks (before the submit that reads them) and rewinds. */
  flush(): void {
    for (let i = 0; i <= this.#index && i < this.#chunks.length; i++) {
      const c = this.#chunks[i];
      if (c.used > 0) this.device.queue.writeBuffer(c.buffer, 0, c.staging, 0, c.used);
      c.used = 0;
    }
    this.#index = 0;
  }
}

/**
 * Bind groups, cached: creating one is most of a dispatch's host cost (~10-25 µs through Deno),
 * and a training or decode step binds the same buffers at the same uniform slots every time (the
 * ring restarts at each submit). Keyed by kernel, slot and buffer identities; a bind group holding
 * a one-shot buffer (destroyed after its submit) is never cached.
 */
class BindGroupCache {
  #groups = new Map<string, GPUBindGroup>();
  #ids = new WeakMap<GPUBuffer, number>();
  #nextId = 0;
  #oneShot = new WeakSet<GPUBuffer>();
  constructor(readonly device: GPUDevice) {}

  /** Marks a buffer destroyed after this submit: bind groups holding it are not kept. */
  markOneShot(buffer: GPUBuffer): void {
    this.#oneShot.add(buffer);
  }

  /** The bind group of kernel `name`: the uniform range at binding 0, then `buffers` whole. */
  get(
    name: string,
    p: GPUComputePipeline,
    uniform: GPUBuffer,
    offset: number,
    bytes: number,
    buffers: GPUBuffer[],
  ): GPUBindGroup {
    const cacheable = !buffers.some((b) => this.#oneShot.has(b));
    const id = (b: GPUBuffer) => {
      let i = this.#ids.get(b);
      if (i === undefined) this.#ids.set(b, i = this.#nextId++);
      return i;
    };
    const key = cacheable ? `${name}|${id(uniform)}:${offset}|${buffers.map(id).join(",")}` : "";
    let group = cacheable ? this.#groups.get(key) : undefined;
    if (!group) {
      group = this.device.createBindGroup({
        layout: p.getBindGroupLayout(0),
        entries: [
          { binding: 0, resource: { buffer: uniform, offset, size: bytes } },
          ...buffers.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
        ],
      });
      if (cacheable) {
        if (this.#groups.size >= BIND_GROUP_CACHE) this.#groups.clear(); // bounded; steady loops refill it
        this.#groups.set(key, group);
      }
    }
    return group;
  }
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

  const pool = new BufferPool(device);

  const storage = (t: Tensor) => t.storage as GpuStorage;
  const dummy = device.createBuffer({ size: 256, usage: pool.usage });
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
  const uniforms = new UniformRing(device, Math.max(256, device.limits.minUniformBufferOffsetAlignment));
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
    const [s] = pool.take(Math.max(4, length * BYTES[dtype]));
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
      usage: pool.usage,
      mappedAtCreation: true,
    });
    new Uint32Array(buffer.getMappedRange()).set(data);
    buffer.unmap();
    oneShot.push(buffer);
    bindGroups.markOneShot(buffer);
    return { storage: new GpuStorage(buffer, buffer.size), offset: 0, length: data.length, dtype: "u32" };
  };

  const bindGroups = new BindGroupCache(device);

  /**
   * Records one dispatch of `kernel` over `tensors` (by binding name, bound whole in the kernel's
   * order; their offsets go in the uniform) with `params` by name, on `groups` workgroups (a count,
   * or an explicit x, y, z). Both are checked against the kernel's declaration first.
   */
  const run = (
    kernel: Kernel,
    named: Bindings,
    params: Params,
    groups: number | [number, number, number],
  ) => {
    alive();
    checkDispatch(kernel, named, params);
    const tensors = kernel.tensors.map(([name]) => named[name]);
    const bytes = paramBytes(kernel);
    const [chunk, offset] = uniforms.slot(bytes);
    const view = new DataView(chunk.staging, offset, bytes);
    kernel.tensors.forEach(([name, type], i) =>
      view.setUint32(4 * i, vecOffset(kernel, name, type, tensors[i]), true)
    );
    kernel.params.forEach(([name, type], i) => {
      const at = 4 * (tensors.length + i);
      if (type === "u32") view.setUint32(at, params[name] >>> 0, true);
      else view.setFloat32(at, params[name], true);
    });
    const p = pipeline(kernel);
    const bindGroup = bindGroups.get(
      kernel.name,
      p,
      chunk.buffer,
      offset,
      bytes,
      tensors.map((t) => storage(t).buffer),
    );
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
    uniforms.flush();
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
    for (const s of scratch) pool.release(s);
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

  /** What the op launchers (`wgsl/*.ts`) record through. */
  const recorder: Recorder = {
    run,
    scratch: scratchTensor,
    host: hostTensor,
    none,
    view: (t, offset, length) => backend.view(t, offset, length),
  };

  /** Zeroes a fresh-from-the-pool buffer, whole, as u32 words. */
  const zero = (s: GpuStorage) =>
    runElementwise(
      recorder,
      fillKernel("u32"),
      { t: { storage: s, offset: 0, length: s.bytes / 4, dtype: "u32" } },
      { n: s.bytes / 4, value: 0 },
    );

  // ---- matmul tiles: forced, autotuned, or the heuristic ----------------------------------------

  /** Records one matmul, with `tile` or else the tuned (or heuristic) tile of its shape class. */
  const matmulWith = (out: Tensor, a: Tensor, b: Tensor, o: MatmulOptions, tile?: MatmulTile) =>
    recordMatmul(
      recorder,
      out,
      a,
      b,
      o,
      (shape) => tile ?? forcedTile ?? tuner.pick(shape) ?? matmulTiles(shape.m, shape.n, shape.batch),
    );

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
    matmulWith(out, a, b, opts, tile); // warm-up: compiles the pipeline
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
      for (let i = 0; i < reps; i++) matmulWith(out, a, b, opts, tile);
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
      for (let i = 0; i < reps; i++) matmulWith(out, a, b, opts, tile);
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
      const [s, fresh] = pool.take(Math.max(4, length * BYTES[dtype]));
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
        runElementwise(recorder, copyKernel("f16", "f32"), { dst: t, src: staged }, { n: host.length });
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
      pool.release(storage(t));
    },
    submit,
    async finish() {
      submit();
      await Promise.race([device.queue.onSubmittedWorkDone(), device.lost]);
      alive();
    },
    destroy() {
      pool.destroy();
      device.destroy();
    },
    stats: () => ({ pipelines: pipelines.size, compileMs, dispatches }),
    counts: () => ({ ...counts }),
    tuneMatmuls,
    async timings() {
      const all = await Promise.all(pendingTimings.splice(0));
      return all.flat();
    },

    matmul(out, a, b, o) {
      matmulWith(out, a, b, o);
    },
    ...elementwiseOps(recorder),
    ...layernormOps(recorder),
    ...attentionOps(recorder),
    ...logitsOps(recorder),
    ...encoderOps(recorder),
    ...optimizerOps(recorder),
  };
  return backend;
}

/** A two-dimensional grid of `groups` workgroups within the per-dimension limit. */
function grid(groups: number): [number, number, number] {
  const x = Math.min(groups, MAX_GROUPS);
  return [x, Math.ceil(groups / x), 1];
}

/** A tensor's offset in units of its binding's element (vec4 bindings count vec4s). */
function vecOffset(kernel: Kernel, name: string, type: string, t: Tensor): number {
  if (!type.startsWith("vec4")) return t.offset;
  if (t.offset % 4 !== 0) {
    throw new Error(
      `kiln: kernel "${kernel.name}": binding "${name}" is ${type}, its offset ${t.offset} is not a multiple of 4`,
    );
  }
  return t.offset / 4;
}
