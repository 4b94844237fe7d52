/**
 * The CPU backend's matmul micro-kernel: a WebAssembly SIMD module, assembled here from its opcodes
 * when this module loads (about 500 bytes, no build step, no npm package).
 *
 * Hand-written because no maintained npm BLAS runs in Deno without native code, and V8's wasm SIMD
 * (128-bit f32x4) is the fastest portable arithmetic a Deno process has: 4 multiply-adds an
 * instruction against one for JavaScript's scalar doubles.
 *
 * The kernel computes `C[i, j] = Σ_p A[i, p] · B[p, j]` in blocks of {@linkcode ROWS} rows × 8
 * columns held in 2·ROWS vector registers. Each output is one float32 sum over p = 0..k-1 in order,
 * each step a multiply-add: relaxed SIMD's `f32x4.relaxed_madd` (`fused`), one rounding where the
 * CPU has FMA, ~1.35× faster here than the exact `mul` then `add` (two roundings), which is the
 * fallback where a runtime lacks relaxed SIMD. The result depends only on the operands and the
 * machine, never on the blocking, the thread that ran the block or V8's compiler tier (checked:
 * Liftoff and TurboFan give the same bits), so it is deterministic and matches the float64
 * reference within float32 rounding (relative error ≲ k · 2⁻²⁴). A machine without FMA rounds
 * twice, so its results may differ from an FMA machine's in the last bits.
 *
 * Operand layouts (byte addresses into the shared memory):
 * - A packed in blocks of ROWS rows: block b holds `A[b·ROWS + r, p]` at `pa + ((b·k + p)·ROWS + r)·4`.
 * - B in 8-column panels: panel j's row p (8 floats) at `pb + j·panelStride + p·rowStride`. A
 *   row-major `[k, n]` matrix is such a layout as it stands (panelStride 32, rowStride 4n), so the
 *   common case needs no packing of B; a transposed B is packed to panelStride 32k, rowStride 32.
 * - C row-major with `ldc` floats a row, written (not accumulated) at `pc`.
 * @module
 */

/**
 * Rows of A a micro-kernel block holds (8 columns each: 2·ROWS accumulators of the 15 vector registers
 * V8 gives wasm). 4 measured best; 6 was no faster, 8 spills. (`cpu_matmul.ts` packs with `i >> 2`.)
 */
export const ROWS = 4;

/** Unsigned LEB128, the wasm binary format's integer encoding. */
function uleb(n: number): number[] {
  const out: number[] = [];
  do {
    let byte = n & 0x7f;
    n >>>= 7;
    if (n !== 0) byte |= 0x80;
    out.push(byte);
  } while (n !== 0);
  return out;
}

/** Signed LEB128 (i32.const immediates). */
function sleb(n: number): number[] {
  const out: number[] = [];
  while (true) {
    const byte = n & 0x7f;
    n >>= 7;
    if ((n === 0 && (byte & 0x40) === 0) || (n === -1 && (byte & 0x40) !== 0)) {
      out.push(byte);
      return out;
    }
    out.push(byte | 0x80);
  }
}

const name = (s: string) => [...uleb(s.length), ...new TextEncoder().encode(s)];
const section = (id: number, body: number[]) => [id, ...uleb(body.length), ...body];
const vec = (items: number[][]) => [...uleb(items.length), ...items.flat()];

// The opcodes the kernel uses (WebAssembly core spec 1.0 + fixed-width SIMD).
const I32 = 0x7f, V128 = 0x7b;
const op = {
  block: [0x02, 0x40],
  if: [0x04, 0x40],
  else: [0x05],
  loop: [0x03, 0x40],
  end: [0x0b],
  brIf: (depth: number) => [0x0d, ...uleb(depth)],
  br: (depth: number) => [0x0c, ...uleb(depth)],
  get: (i: number) => [0x20, ...uleb(i)],
  set: (i: number) => [0x21, ...uleb(i)],
  tee: (i: number) => [0x22, ...uleb(i)],
  i32: (n: number) => [0x41, ...sleb(n)],
  add: [0x6a],
  mul: [0x6c],
  ltU: [0x49],
  and: [0x71],
  shrU: [0x76],
  f32Load: (offset: number) => [0x2a, 2, ...uleb(offset)],
  f32Store: (offset: number) => [0x38, 2, ...uleb(offset)],
  // SIMD: 0xfd prefix, LEB opcode, then a memarg (log2 alignment, offset) for memory access.
  load: (offset: number) => [0xfd, ...uleb(0x00), 4, ...uleb(offset)],
  load32Splat: (offset: number) => [0xfd, ...uleb(0x09), 2, ...uleb(offset)],
  store: (offset: number) => [0xfd, ...uleb(0x0b), 4, ...uleb(offset)],
  zero: [0xfd, ...uleb(0x0c), ...new Array(16).fill(0)],
  f32x4Add: [0xfd, ...uleb(0xe4)],
  f32x4Mul: [0xfd, ...uleb(0xe6)],
  /** Relaxed SIMD's `a·b + c`: fused where the CPU has FMA (x86-64 since 2013, every arm64). */
  f32x4RelaxedMadd: [0xfd, ...uleb(0x105)],
};

/**
 * `gemm(pa, pb, pc, k, ldc, panelStride, rowStride, aStride, aStep, load, i0, i1, j0, j1)`: the
 * blocks of rows `[i0·ROWS, i1·ROWS)` × the panels `[j0, j1)` of `C = A·B` over k terms; A's block b
 * holds its ROWS values of term p at `pa + b·aStride + p·aStep` (packed: aStride 16k, aStep 16; a
 * transposed A as it stands, `[k, m]` row-major: aStride 16, aStep 4m). With `load` 1 the sums
 * continue from the values in C (the next k-block of a product whose earlier terms C holds: float32
 * partial sums stored and reloaded exactly, so blocking over k leaves every result bit-identical);
 * with 0 they start from zero. Needs k ≥ 1, i0 < i1, j0 < j1.
 */
function gemmBody(fused: boolean): number[] {
  // Parameters 0..13, then locals.
  const params = ["pa", "pb", "pc", "k", "ldc", "panelStride", "rowStride", "aStride", "aStep", "load"];
  const [pa, pb, pc, k, ldc, panelStride, rowStride, aStride, aStep, load] = params.map((_, i) => i);
  const [i0, i1, j0, j1] = [10, 11, 12, 13];
  const [j, i, ap, bp, aEnd, cp, rowBytes, q] = [14, 15, 16, 17, 18, 19, 20, 21];
  const b0 = 22, b1 = 23, splat = 24, acc = (r: number, half: number) => 25 + 2 * r + half;
  const code: number[] = [];
  const emit = (...parts: number[][]) => parts.forEach((p) => code.push(...p));

  emit(op.get(ldc), op.i32(4), op.mul, op.set(rowBytes));
  emit(op.get(j0), op.set(j));
  emit(op.loop); // over panels j
  {
    emit(op.get(i0), op.set(i));
    emit(op.loop); // over row blocks i
    {
      // ap = pa + i·aStride, aEnd = ap + k·aStep, bp = pb + j·panelStride
      emit(op.get(pa), op.get(i), op.get(aStride), op.mul, op.add, op.tee(ap));
      emit(op.get(k), op.get(aStep), op.mul, op.add, op.set(aEnd));
      emit(op.get(pb), op.get(j), op.get(panelStride), op.mul, op.add, op.set(bp));
      // cp = pc + (i·ROWS·ldc + j·8)·4: the block's first row of 8 outputs.
      emit(op.get(pc), op.get(i), op.i32(ROWS), op.mul, op.get(rowBytes), op.mul, op.add);
      emit(op.get(j), op.i32(32), op.mul, op.add, op.set(cp));
      emit(op.get(load), op.if);
      emit(op.get(cp), op.set(q));
      for (let r = 0; r < ROWS; r++) {
        emit(op.get(q), op.load(0), op.set(acc(r, 0)), op.get(q), op.load(16), op.set(acc(r, 1)));
        emit(op.get(q), op.get(rowBytes), op.add, op.set(q));
      }
      emit(op.else);
      for (let r = 0; r < ROWS; r++) emit(op.zero, op.set(acc(r, 0)), op.zero, op.set(acc(r, 1)));
      emit(op.end);
      emit(op.loop); // over p
      {
        emit(op.get(bp), op.load(0), op.set(b0), op.get(bp), op.load(16), op.set(b1));
        for (let r = 0; r < ROWS; r++) {
          emit(op.get(ap), op.load32Splat(4 * r), op.set(splat));
          for (const [half, b] of [[0, b0], [1, b1]]) {
            if (fused) emit(op.get(splat), op.get(b), op.get(acc(r, half)), op.f32x4RelaxedMadd);
            else emit(op.get(acc(r, half)), op.get(splat), op.get(b), op.f32x4Mul, op.f32x4Add);
            emit(op.set(acc(r, half)));
          }
        }
        emit(op.get(bp), op.get(rowStride), op.add, op.set(bp));
        emit(op.get(ap), op.get(aStep), op.add, op.tee(ap), op.get(aEnd), op.ltU, op.brIf(0));
      }
      emit(op.end);
      for (let r = 0; r < ROWS; r++) {
        emit(op.get(cp), op.get(acc(r, 0)), op.store(0), op.get(cp), op.get(acc(r, 1)), op.store(16));
        emit(op.get(cp), op.get(rowBytes), op.add, op.set(cp));
      }
      emit(op.get(i), op.i32(1), op.add, op.tee(i), op.get(i1), op.ltU, op.brIf(0));
    }
    emit(op.end);
    emit(op.get(j), op.i32(1), op.add, op.tee(j), op.get(j1), op.ltU, op.brIf(0));
  }
  emit(op.end, op.end);
  const locals = vec([[...uleb(8), I32], [...uleb(3 + 2 * ROWS), V128]]);
  const body = [...locals, ...code];
  return [...uleb(body.length), ...body];
}

/**
 * `packPanels(src, dst, n, k)`: a row-major `[n, k]` matrix at `src` (a transposed B) into 8-column
 * panels at `dst`: `dst + (j>>3)·32k + p·32 + (j&7)·4` ← `src + (j·k + p)·4`; needs n, k ≥ 1.
 */
function packPanelsBody(): number[] {
  const [src, dst, n, k] = [0, 1, 2, 3];
  const [j, from, to, end] = [4, 5, 6, 7];
  const code: number[] = [];
  const emit = (...parts: number[][]) => parts.forEach((p) => code.push(...p));
  emit(op.get(src), op.set(from), op.i32(0), op.set(j));
  emit(op.loop); // over rows j of src
  {
    // to = dst + (j >> 3)·32k + (j & 7)·4; end = from + 4k
    emit(op.get(dst), op.get(j), op.i32(3), op.shrU, op.get(k), op.mul, op.i32(32), op.mul, op.add);
    emit(op.get(j), op.i32(7), op.and, op.i32(4), op.mul, op.add, op.set(to));
    emit(op.get(from), op.get(k), op.i32(4), op.mul, op.add, op.set(end));
    emit(op.loop); // over p
    {
      emit(op.get(to), op.get(from), op.f32Load(0), op.f32Store(0));
      emit(op.get(to), op.i32(32), op.add, op.set(to));
      emit(op.get(from), op.i32(4), op.add, op.tee(from), op.get(end), op.ltU, op.brIf(0));
    }
    emit(op.end);
    emit(op.get(j), op.i32(1), op.add, op.tee(j), op.get(n), op.ltU, op.brIf(0));
  }
  emit(op.end, op.end);
  const body = [...vec([[...uleb(4), I32]]), ...code];
  return [...uleb(body.length), ...body];
}

/**
 * The module's bytes: imports `env.memory` (shared, up to `maxPages` 64 KiB pages), exports `gemm`
 * and `packPanels`.
 */
export function kernelModule(maxPages: number, fused: boolean): Uint8Array<ArrayBuffer> {
  const gemmType = [0x60, ...vec(new Array(14).fill([I32])), 0];
  const packType = [0x60, ...vec(new Array(4).fill([I32])), 0];
  const memoryImport = [...name("env"), ...name("memory"), 0x02, 0x03, ...uleb(1), ...uleb(maxPages)];
  return new Uint8Array([
    ...[0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00],
    ...section(1, vec([gemmType, packType])),
    ...section(2, vec([memoryImport])),
    ...section(3, vec([uleb(0), uleb(1)])),
    ...section(7, vec([[...name("gemm"), 0x00, 0], [...name("packPanels"), 0x00, 1]])),
    ...section(10, vec([gemmBody(fused), packPanelsBody()])),
  ]);
}
