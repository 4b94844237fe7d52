/**
 * The CPU backend's fast matmul: the WebAssembly SIMD kernel of `cpu_simd.ts`, run on this thread
 * and on worker threads that share its memory, each taking chunks of 8-column panels in turn.
 *
 * Every output is the same float32 sum in the same order whichever thread computes it and however
 * many threads there are, so results are bit-identical run to run and across thread counts.
 *
 * Operands live in the backend's typed arrays, so each call copies A (packed in blocks of 4 rows, or
 * as it stands when it is a transposed A of few rows) and B (as it stands, or packed into panels when
 * transposed) into the shared wasm memory and copies C back, adding the bias and accumulating there:
 * O(mk + kn + mn) copies against O(mnk) work. The product runs in blocks of KC terms × MC row blocks
 * so the operands a pass reads stay in cache.
 *
 * Threads: `KILN_CPU_THREADS` (when env access is granted), else the `threads` option of
 * {@linkcode createCpuBackend}, else `navigator.hardwareConcurrency` capped at 4. Workers start on the
 * first product big enough to share (≥ {@linkcode SHARE_FLOPS}), serve only once they report ready
 * (the calling thread never waits for a worker to start), and end after {@linkcode IDLE_MS} without
 * work, so a finished program exits on time.
 * @module
 */
import type { MatmulOptions } from "./backend.ts";
import { kernelModule, ROWS } from "./cpu_simd.ts";

type Store = Float32Array | Float64Array | Uint32Array | Float16Array;

/** Products below this many rows, or flops, run on the calling thread alone (a wake-up costs ~50 µs). */
const SHARE_ROWS = 32;
const SHARE_FLOPS = 2_000_000;
/**
 * A transposed A up to this many rows is read where it lies: its row stride (4m bytes) then stays
 * short enough for the caches; wider ones (the tied embedding's gradient, m = V) are packed.
 */
const IN_PLACE_ROWS = 1024;
/** Terms of k a pass over C takes (B's panel rows then fit in L1: 256 · 32 bytes). */
const KC = 256;
/** Row blocks a pass over B takes (256 rows · KC terms of A: 256 KiB, within L2). */
const MC = 64;
/** Workers end after this long without work. */
const IDLE_MS = 1000;
/** 64 KiB pages the shared memory may grow to (4 GiB, wasm32's limit; reserved, not committed). */
const MAX_PAGES = 65536;
/** Bytes of control words at the start of memory: one 64-byte line per worker, 15 of them. */
const CONTROL_BYTES = 64 * 16;
/**
 * The job line (bytes 0..63): gemm's 10 operand arguments, then the range of row blocks, the panels, the
 * panels a chunk, and the next chunk to take (an atomic counter every thread draws from).
 */
const I0 = 10, I1 = 11, PANELS = 12, CHUNK = 13, NEXT = 14;
/** A worker's line: generation posted, generation done, ready flag. */
const GO = 0, DONE = 1, READY = 2;
/**
 * The READY word's value that tells a worker to close itself (terminate() does not end a thread
 * blocked in Atomics.wait: the process would never exit).
 */
const QUIT = 2;

type Gemm = (...args: number[]) => void;

/**
 * Every thread's loop: take the next chunk of panels until none is left. Which thread computes a
 * panel changes from run to run, its numbers never do; a thread the OS has descheduled delays the
 * product by one chunk at most.
 */
const TAKE_CHUNKS = `{
  const args = Array.from(job.subarray(0, 10)), i0 = job[${I0}], i1 = job[${I1}], panels = job[${PANELS}];
  const chunk = job[${CHUNK}];
  for (let c; (c = Atomics.add(job, ${NEXT}, 1) * chunk) < panels;) {
    gemm(...args, i0, i1, c, Math.min(c + chunk, panels));
  }
}`;

/** The worker's code, as a string: started from a blob URL, so it needs no file read permission. */
const WORKER_SOURCE = `
self.onmessage = async ({ data: { module, memory, line } }) => {
  const { exports } = await WebAssembly.instantiate(module, { env: { memory } });
  const ctl = new Int32Array(memory.buffer, line, 16), job = new Int32Array(memory.buffer, 0, 16);
  if (Atomics.compareExchange(ctl, ${READY}, 0, 1) !== 0) return self.close(); // told to quit meanwhile
  let seen = 0;
  for (;;) {
    Atomics.wait(ctl, ${GO}, seen);
    seen = Atomics.load(ctl, ${GO});
    if (Atomics.load(ctl, ${READY}) === ${QUIT}) return self.close();
    ${TAKE_CHUNKS.replaceAll("gemm", "exports.gemm")}
    Atomics.store(ctl, ${DONE}, seen);
    Atomics.notify(ctl, ${DONE});
  }
};`;

/** The shared memory, its module, this thread's instance, and the worker pool. */
class SimdRuntime {
  readonly memory = new WebAssembly.Memory({ initial: 1, maximum: MAX_PAGES, shared: true });
  readonly module = compileKernels();
  readonly gemm: Gemm;
  readonly packPanels: Gemm;
  private f32 = new Float32Array(this.memory.buffer);
  private readonly job = new Int32Array(this.memory.buffer, 0, 16);
  private workers: { worker: Worker; ctl: Int32Array; generation: number }[] = [];
  private started = 0;
  private lastUse = 0;
  private idleTimer: ReturnType<typeof setTimeout> | undefined;

  constructor() {
    const instance = new WebAssembly.Instance(this.module, { env: { memory: this.memory } });
    this.gemm = instance.exports.gemm as Gemm;
    this.packPanels = instance.exports.packPanels as Gemm;
  }

  /** A float32 view of the memory, grown to at least `bytes`. */
  floats(bytes: number): Float32Array {
    const have = this.memory.buffer.byteLength;
    if (bytes > have) this.memory.grow(Math.ceil((bytes - have) / 65536));
    if (this.f32.byteLength !== this.memory.buffer.byteLength) {
      this.f32 = new Float32Array(this.memory.buffer);
    }
    return this.f32;
  }

  /**
   * Runs gemm over row blocks `[i0, i1)` × panels `[0, panels)`, the panels split across this
   * thread and the ready workers (`threads` in all, starting workers up to that count when the
   * work is worth sharing).
   */
  run(args: number[], i0: number, i1: number, panels: number, flops: number, threads: number): void {
    const helpers = flops >= SHARE_FLOPS ? this.helpers(threads - 1) : [];
    if (helpers.length === 0) return this.gemm(...args, i0, i1, 0, panels);
    sharedProducts++;
    // ~4 chunks a thread: small enough to even out, big enough to keep a panel's B in cache.
    const chunk = Math.max(1, Math.floor(panels / (4 * (helpers.length + 1))));
    this.job.set([...args, i0, i1, panels, chunk, 0]);
    for (const w of helpers) {
      Atomics.store(w.ctl, GO, ++w.generation);
      Atomics.notify(w.ctl, GO);
    }
    const job = this.job, gemm = this.gemm;
    for (let c; (c = Atomics.add(job, NEXT, 1) * chunk) < panels;) {
      gemm(...args, i0, i1, c, Math.min(c + chunk, panels));
    }
    for (const w of helpers) {
      for (let done; (done = Atomics.load(w.ctl, DONE)) !== w.generation;) Atomics.wait(w.ctl, DONE, done);
    }
  }

  /** Up to `count` ready workers, starting missing ones (they serve from a later call on). */
  private helpers(count: number): SimdRuntime["workers"] {
    if (count <= 0) return [];
    this.lastUse = performance.now();
    this.armIdleTimer();
    while (this.workers.length < count) {
      // A fresh line each start (cycling through 15): a quitting worker may still read its old one.
      const line = 64 * (1 + this.started++ % 15);
      let worker: Worker;
      try {
        const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "application/javascript" }));
        worker = new Worker(url, { type: "module" });
        URL.revokeObjectURL(url);
      } catch {
        break; // no workers in this runtime: this thread does all the work
      }
      const ctl = new Int32Array(this.memory.buffer, line, 16);
      ctl.fill(0);
      worker.postMessage({ module: this.module, memory: this.memory, line });
      this.workers.push({ worker, ctl, generation: 0 });
    }
    return this.workers.slice(0, count).filter((w) => Atomics.load(w.ctl, READY) === 1);
  }

  private armIdleTimer() {
    if (this.idleTimer !== undefined) return;
    const timer = setTimeout(() => {
      this.idleTimer = undefined;
      if (performance.now() - this.lastUse < IDLE_MS) return this.armIdleTimer();
      for (const { ctl } of this.workers) {
        Atomics.store(ctl, READY, QUIT);
        Atomics.add(ctl, GO, 1);
        Atomics.notify(ctl, GO);
      }
      this.workers = [];
    }, IDLE_MS);
    // The timer alone must not keep a finished program alive (the workers do until it fires).
    Deno.unrefTimer(timer);
    this.idleTimer = timer;
  }
}

/** The kernels with fused multiply-adds, or with exact mul + add where relaxed SIMD is missing. */
function compileKernels(): WebAssembly.Module {
  try {
    return new WebAssembly.Module(kernelModule(MAX_PAGES, true));
  } catch {
    return new WebAssembly.Module(kernelModule(MAX_PAGES, false));
  }
}

let runtime: SimdRuntime | undefined;
let sharedProducts = 0;

/** How many products this process has shared with worker threads so far (tests, benchmarks). */
export function simdSharedProducts(): number {
  return sharedProducts;
}

/** The thread count from `KILN_CPU_THREADS` (when readable), else `fallback`, else the cores (≤ 4). */
export function cpuThreads(fallback?: number): number {
  let fromEnv: string | undefined;
  try {
    if (Deno.permissions.querySync({ name: "env", variable: "KILN_CPU_THREADS" }).state === "granted") {
      fromEnv = Deno.env.get("KILN_CPU_THREADS");
    }
  } catch {
    fromEnv = undefined;
  }
  if (fromEnv !== undefined && fromEnv !== "") {
    const n = Number(fromEnv);
    if (!Number.isInteger(n) || n < 1) {
      throw new Error(`KILN_CPU_THREADS must be an integer ≥ 1, got "${fromEnv}"`);
    }
    return n;
  }
  return fallback ?? Math.min(navigator.hardwareConcurrency || 1, 4);
}

/**
 * `O[oo..] (+)= op(A)·op(B) (+ bias)` for one matrix of a (possibly batched) matmul, with float32
 * products and sums (see the module doc). `threads` is the most threads to use. Returns false, having
 * done nothing, when the operands do not fit in wasm32's 4 GiB (the caller then runs the reference).
 */
export function simdMatmul(
  O: Store,
  A: Store,
  B: Store,
  bias: Store | null,
  { m, n, k, transA, transB, accumulate }: MatmulOptions,
  oo: number,
  ao: number,
  bo: number,
  threads: number,
): boolean {
  if (k === 0 || m === 0 || n === 0) {
    for (let i = 0; i < m; i++) {
      for (let j = 0; j < n; j++) {
        const v = bias ? bias[j] : 0;
        O[oo + i * n + j] = accumulate ? O[oo + i * n + j] + v : v;
      }
    }
    return true;
  }
  runtime ??= new SimdRuntime();
  // Few rows (generation's decode steps) stay on this thread: waking a worker each product costs
  // more than it saves there, and far more on a busy machine, where the worker waits to be scheduled.
  if (m < SHARE_ROWS) threads = 1;
  const blocks = Math.ceil(m / ROWS), panels = Math.ceil(n / 8), ldc = panels * 8;
  // Float offsets into memory: A, then B, then C. A transposed A (`[k, m]`) and a B as it stands
  // (`[k, n]`) are read in place, and their last block or panel reads past a row: 8 floats of slack.
  const inPlaceA = transA && m <= IN_PLACE_ROWS;
  const pa = CONTROL_BYTES / 4, pb = pa + (inPlaceA ? m * k + 8 : blocks * ROWS * k);
  // A transposed B is copied as it stands after the panels, then packed into them.
  const pc = pb + (transB ? ldc * k + n * k : n * k + 8);
  const bytes = (pc + blocks * ROWS * ldc) * 4;
  if (bytes > MAX_PAGES * 65536) return false;
  const f = runtime.floats(bytes);

  let aStride: number, aStep: number;
  if (inPlaceA) {
    // A is [k, m]: its rows hold every block's ROWS values of a term side by side, as gemm reads them.
    f.set(A.subarray(ao, ao + k * m), pa);
    aStride = 4 * ROWS, aStep = 4 * m;
  } else if (transA) {
    // Packed block by block (sequential writes; each block's reads revisit the lines of the last).
    f.fill(0, pa + Math.floor(m / ROWS) * k * ROWS, pb);
    aStride = 4 * ROWS * k, aStep = 4 * ROWS;
    for (let i0 = 0; i0 < m; i0 += ROWS) {
      const rows = Math.min(ROWS, m - i0), dst = pa + i0 * k;
      for (let p = 0; p < k; p++) {
        for (let r = 0, src = ao + p * m + i0; r < rows; r++) f[dst + p * ROWS + r] = A[src + r];
      }
    }
  } else {
    // Packed in blocks of ROWS rows: f[pa + (b·k + p)·ROWS + r] = A[b·ROWS + r, p]; padding rows zero.
    f.fill(0, pa + Math.floor(m / ROWS) * k * ROWS, pb);
    aStride = 4 * ROWS * k, aStep = 4 * ROWS;
    for (let i = 0; i < m; i++) {
      const dst = pa + (i >> 2) * k * ROWS + (i & 3), src = ao + i * k;
      for (let p = 0; p < k; p++) f[dst + p * ROWS] = A[src + p];
    }
  }
  let panelStride: number, rowStride: number;
  if (transB) {
    // B is [n, k]: copied (a memcpy for f32 storage), then packed into 8-column panels in wasm.
    const raw = pb + ldc * k;
    f.set(B.subarray(bo, bo + n * k), raw);
    runtime.packPanels(raw * 4, pb * 4, n, k);
    panelStride = 32 * k, rowStride = 32;
  } else {
    f.set(B.subarray(bo, bo + k * n), pb); // row-major [k, n] is already panels of stride 32 bytes
    panelStride = 32, rowStride = 4 * n;
  }
  // Blocks of KC terms: a panel's KC rows of B stay in L1 while every row block of A streams past.
  for (let k0 = 0; k0 < k; k0 += KC) {
    const kc = Math.min(KC, k - k0);
    const args = [4 * pa + k0 * aStep, 4 * pb + k0 * rowStride, 4 * pc, kc, ldc, panelStride, rowStride];
    // ...and groups of MC row blocks: A's part a pass reads (MC·ROWS rows × KC terms) stays in L2.
    for (let b0 = 0; b0 < blocks; b0 += MC) {
      const b1 = Math.min(b0 + MC, blocks), flops = 2 * (b1 - b0) * ROWS * n * kc;
      runtime.run([...args, aStride, aStep, k0 > 0 ? 1 : 0], b0, b1, panels, flops, threads);
    }
  }
  for (let i = 0; i < m; i++) {
    const src = pc + i * ldc, dst = oo + i * n;
    if (bias) {
      if (accumulate) { for (let j = 0; j < n; j++) O[dst + j] += f[src + j] + bias[j]; }
      else for (let j = 0; j < n; j++) O[dst + j] = f[src + j] + bias[j];
    } else if (accumulate) {
      for (let j = 0; j < n; j++) O[dst + j] += f[src + j];
    } else {
      O.set(f.subarray(src, src + n), dst);
    }
  }
  return true;
}
