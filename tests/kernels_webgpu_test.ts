/**
 * Every WebGPU kernel against the TypeScript reference on seeded random inputs, odd shapes
 * included. Outputs are poisoned with NaN first, so an element a kernel fails to write fails the
 * comparison; each op also runs twice on the GPU and must give bit-identical results.
 *
 * Bounds: f32 relative error 1e-4 (plus a small absolute term for values near zero) for one-pass
 * ops, a little looser where long sums are reordered (matmul, attention, reductions).
 * Skipped, with a message, where there is no WebGPU adapter or `KILN_BACKEND=cpu`.
 */
import { deepStrictEqual, ok, throws } from "node:assert";
import type { Backend, Tensor } from "../kernels/backend.ts";
import { createCpuBackend } from "../kernels/cpu.ts";
import type { WebGpuBackend } from "../kernels/webgpu.ts";
import { assertClose, randomFloats, randomInts, rng, webgpuForTests } from "./kernels_fixtures.ts";

const found = await webgpuForTests();
const gpu = typeof found === "string" ? null : found;
if (typeof found === "string") console.warn(`skipping the WebGPU kernel tests: ${found}`);
const cpu = createCpuBackend();

type Data = Float32Array | Uint32Array;
interface Case {
  /** Inputs (host data; Uint32Array gives a u32 tensor). */
  inputs: Record<string, Data>;
  /**
   * Outputs: a length (f32, poisoned with NaN), `["u32", length]` (poisoned with 0xffffffff), or
   * initial data (accumulating and in-place ops).
   */
  outputs: Record<string, number | ["u32", number] | Data>;
  /** Offset of every tensor inside a larger buffer, to exercise unaligned views. */
  offset?: number;
  op: (b: Backend, t: Record<string, Tensor>) => void;
}

/** Runs a case on a backend; returns the outputs. */
async function runCase(b: Backend, c: Case): Promise<Record<string, Data>> {
  const t: Record<string, Tensor> = {};
  const pad = c.offset ?? 0;
  for (const [name, data] of [...Object.entries(c.inputs), ...Object.entries(c.outputs)]) {
    const u32 = data instanceof Uint32Array || Array.isArray(data);
    const length = typeof data === "number" ? data : Array.isArray(data) ? data[1] : data.length;
    t[name] = b.view(b.alloc(length + 2 * pad, u32 ? "u32" : "f32"), pad, length);
    if (typeof data === "number" || Array.isArray(data)) b.fill(t[name], u32 ? 0xffffffff : NaN);
    else b.upload(t[name], data);
  }
  c.op(b, t);
  const names = Object.keys(c.outputs);
  const results = await b.download(...names.map((n) => t[n]));
  return Object.fromEntries(names.map((n, i) => [n, results[i]]));
}

/** The case on the GPU (twice: bit-identical) and on the CPU; outputs within the bounds. */
async function compare(c: Case, rtol = 1e-4, atol = 1e-5): Promise<void> {
  const expected = await runCase(cpu, c);
  const actual = await runCase(gpu!, c);
  const again = await runCase(gpu!, c);
  for (const name of Object.keys(c.outputs)) {
    assertClose(actual[name], expected[name], name, rtol, atol);
    deepStrictEqual(
      new Uint32Array(again[name].buffer),
      new Uint32Array(actual[name].buffer),
      `${name} deterministic`,
    );
  }
}

const test = (name: string, fn: () => Promise<void>) =>
  Deno.test({
    name: `webgpu: ${name}`,
    ignore: gpu === null,
    sanitizeResources: false,
    sanitizeOps: false,
    fn,
  });

// Each case compiles its own variant (llvmpipe takes seconds a matmul variant when its shader cache
// is cold), so the cases are chosen to cover every load path once: A and B each plain or
// transposed, vec4 or scalar; the three tile shapes; views at odd offsets; batch, bias, accumulate.
const MATMUL_CASES: Array<
  { m: number; n: number; k: number; transA: boolean; transB: boolean; offset: number }
> = [
  { m: 64, n: 68, k: 32, transA: false, transB: false, offset: 0 }, // medium tiles, vec4 A and B
  { m: 64, n: 68, k: 32, transA: true, transB: true, offset: 0 }, // transposed vec4 loads
  { m: 37, n: 45, k: 29, transA: false, transB: true, offset: 3 }, // scalar loads, unaligned views
  { m: 5, n: 130, k: 33, transA: false, transB: false, offset: 0 }, // skinny tiles
  { m: 2051, n: 2047, k: 12, transA: false, transB: false, offset: 0 }, // 128×128 tiles, edges
];

test("matmul: every load path and tile shape, odd shapes, bias and accumulate", async () => {
  const r = rng(1);
  for (const { m, n, k, transA, transB, offset } of MATMUL_CASES) {
    await compare(
      {
        inputs: { a: randomFloats(r, m * k), b: randomFloats(r, k * n), bias: randomFloats(r, n) },
        outputs: { out: randomFloats(r, m * n), fresh: m * n },
        offset,
        op: (be, t) => {
          be.matmul(t.out, t.a, t.b, { m, n, k, transA, transB, bias: t.bias, accumulate: true });
          be.matmul(t.fresh, t.a, t.b, { m, n, k, transA, transB });
        },
      },
      1e-4,
      1e-4,
    );
  }
});

test("matmul: batched (scalar loads of a transposed A and a plain B)", async () => {
  const r = rng(2), [m, n, k, count] = [9, 7, 5, 3];
  await compare(
    {
      inputs: { a: randomFloats(r, count * m * k), b: randomFloats(r, count * k * n) },
      outputs: { out: count * m * n },
      offset: 3,
      op: (be, t) =>
        be.matmul(t.out, t.a, t.b, {
          m,
          n,
          k,
          transA: true,
          batch: { count, strideA: m * k, strideB: k * n, strideOut: m * n },
        }),
    },
    1e-4,
    1e-4,
  );
});

test("matmul with f16 storage (where the device has shader-f16)", async () => {
  if (!gpu!.hasF16) return console.warn("  no shader-f16 on this adapter: f16 matmul not run");
  const r = rng(3), m = 33, n = 20, k = 17;
  const a = randomFloats(r, m * k), b = randomFloats(r, k * n);
  const run = async (be: Backend) => {
    const ta = be.alloc(m * k, "f16"), tb = be.alloc(k * n, "f16"), out = be.alloc(m * n);
    be.upload(ta, a);
    be.upload(tb, b);
    be.matmul(out, ta, tb, { m, n, k });
    return (await be.download(out))[0];
  };
  assertClose(await run(gpu!), await run(cpu), "f16 matmul", 1e-3, 1e-3);
});

// Offsets that are multiples of 4 take the vec4 kernels (n % 4 elements done one by one after the
// last full vec4); any other offset the scalar ones. n = 3 is all tail.
for (const [n, offset] of [[1031, 3], [1031, 4], [3, 0]]) {
  const form = offset % 4 === 0 ? "vec4" : "scalar";
  test(`elementwise: fill, copy, scale, add, GELU forward and backward (${form}, n ${n}, offset ${offset})`, async () => {
    const r = rng(4 + n);
    await compare({
      inputs: { x: randomFloats(r, n, 5), y: randomFloats(r, n), d: randomFloats(r, n) },
      outputs: { copied: n, scaled: n, sum: n, gelu: n, dgelu: n, filled: n },
      offset,
      op: (be, t) => {
        be.copy(t.copied, t.x);
        be.scale(t.scaled, t.x, -0.37);
        be.add(t.sum, t.x, t.y);
        be.geluForward(t.gelu, t.x);
        be.geluBackward(t.dgelu, t.x, t.d);
        be.fill(t.filled, 2.5);
      },
    });
  });
}

test("elementwise vec4 tails write nothing past the view", async () => {
  const be = gpu!, buffer = be.alloc(13);
  be.fill(buffer, 7);
  const view = be.view(buffer, 4, 5); // one vec4 and a tail of 1
  be.add(view, view, view);
  be.scale(be.view(buffer, 0, 3), be.view(buffer, 0, 3), 2); // a tail alone
  const [all] = await be.download(buffer);
  deepStrictEqual([...all], [14, 14, 14, 7, 14, 14, 14, 14, 14, 7, 7, 7, 7]);
});

test("layernorm forward and backward (accumulating): scalar and vec4 rows, C above the workgroup size", async () => {
  const r = rng(5);
  // [rows, C, offset]: C % 4 == 0 at an aligned offset reads rows as vec4 (1028: 257 vec4s a row).
  for (const [rows, C, offset] of [[7, 67, 0], [9, 300, 2], [40, 300, 0], [5, 1028, 4]]) {
    await compare({
      offset,
      inputs: { inp: randomFloats(r, rows * C, 3), weight: randomFloats(r, C), bias: randomFloats(r, C) },
      outputs: { out: rows * C, mean: rows, rstd: rows },
      op: (be, t) => be.layernormForward(t.out, t.mean, t.rstd, t.inp, t.weight, t.bias, { rows, C }),
    });
    const x = randomFloats(r, rows * C, 3), w = randomFloats(r, C), b = randomFloats(r, C);
    await compare(
      {
        inputs: { inp: x, weight: w, bias: b, dout: randomFloats(r, rows * C) },
        outputs: { dinp: randomFloats(r, rows * C), dweight: randomFloats(r, C), dbias: randomFloats(r, C) },
        offset,
        op: (be, t) => {
          const out = be.alloc(rows * C), mean = be.alloc(rows), rstd = be.alloc(rows);
          be.layernormForward(out, mean, rstd, t.inp, t.weight, t.bias, { rows, C });
          be.layernormBackward(t.dinp, t.dweight, t.dbias, t.dout, t.inp, t.weight, mean, rstd, { rows, C });
        },
      },
      1e-4,
      1e-4,
    );
  }
});

test("attention forward and backward: T not a multiple of the tiles, with and without segments", async () => {
  const r = rng(6);
  // One head size (8) throughout: each head size is its own shader (slow to compile on llvmpipe).
  for (
    const [B, T, C, NH, segmented] of [[2, 37, 16, 2, false], [1, 70, 24, 3, true], [
      2,
      19,
      8,
      1,
      true,
    ]] as const
  ) {
    const segments = segmented
      ? Uint32Array.from({ length: B * T }, (_, i) => Math.floor((i % T) / 9))
      : undefined;
    const inputs: Record<string, Data> = {
      qkv: randomFloats(r, B * T * 3 * C),
      dout: randomFloats(r, B * T * C),
    };
    if (segments) inputs.segments = segments;
    await compare(
      {
        inputs,
        outputs: { out: B * T * C, lse: B * NH * T, dqkv: B * T * 3 * C },
        op: (be, t) => {
          const opts = { B, T, C, NH, segments: t.segments };
          be.attentionForward(t.out, t.lse, t.qkv, opts);
          be.attentionBackward(t.dqkv, t.dout, t.qkv, t.out, t.lse, opts);
        },
      },
      1e-4,
      1e-5,
    );
  }
});

test("attention with segments equals attending within each segment separately", async () => {
  const r = rng(7), C = 16, NH = 2, lengths = [30, 45, 3], T = 78;
  const qkv = randomFloats(r, T * 3 * C);
  const segments = Uint32Array.from(lengths.flatMap((n, s) => new Array(n).fill(s)));
  const packed = await runCase(gpu!, {
    inputs: { qkv, segments },
    outputs: { out: T * C, lse: NH * T },
    op: (be, t) => be.attentionForward(t.out, t.lse, t.qkv, { B: 1, T, C, NH, segments: t.segments }),
  });
  let start = 0;
  for (const n of lengths) {
    const alone = await runCase(gpu!, {
      inputs: { qkv: qkv.subarray(start * 3 * C, (start + n) * 3 * C) },
      outputs: { out: n * C, lse: NH * n },
      op: (be, t) => be.attentionForward(t.out, t.lse, t.qkv, { B: 1, T: n, C, NH }),
    });
    assertClose(packed.out.subarray(start * C, (start + n) * C), alone.out, "segment out", 1e-5, 1e-6);
    start += n;
  }
});

test("cross-entropy with padding, a weighted mask, and count normalisation", async () => {
  const r = rng(8), rows = 6, V = 37, Vp = 40;
  for (const normalize of ["mask", "count"] as const) {
    await compare({
      inputs: { targets: randomInts(r, rows, V), mask: Float32Array.from([1, 0, 1, 0.5, 1, 1]) },
      outputs: { losses: rows, logits: randomFloats(r, rows * Vp, 4) },
      op: (be, t) =>
        be.crossEntropy(t.losses, t.logits, t.targets, {
          rows,
          V,
          Vp,
          mask: t.mask,
          normalize,
          gradScale: 0.5,
        }),
    });
  }
  await compare({
    inputs: { targets: randomInts(r, rows, V) },
    outputs: { losses: rows, logits: randomFloats(r, rows * V, 4) },
    op: (be, t) => be.crossEntropy(t.losses, t.logits, t.targets, { rows, V }),
  });
});

test("embedding forward and backward (repeated tokens, accumulating; explicit positions)", async () => {
  const r = rng(9), B = 3, T = 11, C = 13, V = 7;
  const tokens = randomInts(r, B * T, V);
  await compare({
    inputs: {
      tokens,
      wte: randomFloats(r, V * C),
      wpe: randomFloats(r, T * C),
      dout: randomFloats(r, B * T * C),
    },
    outputs: { out: B * T * C, dwte: randomFloats(r, V * C), dwpe: randomFloats(r, T * C) },
    offset: 1,
    op: (be, t) => {
      be.encoderForward(t.out, t.tokens, t.wte, t.wpe, { B, T, C });
      be.encoderBackward(t.dwte, t.dwpe, t.dout, tokens, { B, T, C });
    },
  });
  // Explicit positions (packed rows restarting at 0, a row starting late, repeats), views at offset 3.
  const P = T + 4, positions = Uint32Array.from({ length: B * T }, (_, i) => (i % 4) + 2 * Math.floor(i / T));
  await compare({
    inputs: {
      tokens,
      positions,
      wte: randomFloats(r, V * C),
      wpe: randomFloats(r, P * C),
      dout: randomFloats(r, B * T * C),
    },
    outputs: { out: B * T * C, dwte: randomFloats(r, V * C), dwpe: randomFloats(r, P * C) },
    offset: 3,
    op: (be, t) => {
      be.encoderForward(t.out, t.tokens, t.wte, t.wpe, { B, T, C, positions: t.positions });
      be.encoderBackward(t.dwte, t.dwpe, t.dout, tokens, { B, T, C, hostPositions: positions });
    },
  });
});

test("adamw (vec4 and scalar) with a decay range and an on-device clip factor; norm, sum, mean, column sums", async () => {
  const r = rng(10), n = 5003;
  // Offset 0: the vec4 form with a tail of 3 and decay bounds inside a vec4; offset 1: scalar.
  for (const offset of [0, 1]) {
    await compare(
      {
        inputs: { grads: randomFloats(r, n) },
        outputs: {
          params: randomFloats(r, n),
          m: randomFloats(r, n, 0.1),
          v: Float32Array.from(randomFloats(r, n), Math.abs),
          norm: 1,
          clip: 1,
        },
        op: (be, t) => {
          be.globalNorm(t.norm, t.grads);
          be.clipScale(t.clip, t.norm, 1);
          const o = {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.95,
            eps: 1e-8,
            weightDecay: 0.1,
            step: 3,
            decayRange: [101, 4002] as [number, number],
          };
          be.adamw(t.params, t.grads, t.m, t.v, { ...o, gradScale: t.clip });
        },
        offset,
      },
      1e-4,
      1e-6,
    );
  }
  await compare(
    {
      inputs: { x: randomFloats(r, 70001) },
      outputs: { sum: 1, mean: 1, columns: randomFloats(r, 37), tall: 130 },
      op: (be, t) => {
        be.sum(t.sum, t.x);
        be.sum(t.mean, t.x, { mean: true });
        be.sumRows(t.columns, be.view(t.x, 0, 29 * 37), { rows: 29, cols: 37, accumulate: true });
        // Over 64 rows: blocks of rows, then the blocks (a partial last block).
        be.sumRows(t.tall, be.view(t.x, 5, 301 * 130), { rows: 301, cols: 130 });
      },
    },
    1e-3,
    1e-4,
  );
});

test("sampling: argmax, log π and entropy; draws agree with the reference and respect top-k/top-p", async () => {
  const r = rng(11), rows = 48, V = 300, Vp = 301;
  const logits = randomFloats(r, rows * Vp, 3);
  await compare({
    inputs: { logits, chosen: randomInts(r, rows, V) },
    outputs: { greedy: ["u32", rows], logp: rows, entropy: rows },
    offset: 1,
    op: (be, t) => {
      be.argmax(t.greedy, t.logits, { rows, V, Vp });
      be.logSoftmaxGather(t.logp, t.logits, t.chosen, { rows, V, Vp, temperature: 0.8 });
      be.entropy(t.entropy, t.logits, { rows, V, Vp, temperature: 0.8 });
    },
  });
  // Long rows (16 logits a thread), half of them rising: the one-read online max rescales often.
  const long = randomFloats(r, 3 * 4004, 6);
  long.subarray(0, 4004).sort();
  await compare({
    inputs: { logits: long, chosen: randomInts(r, 3, 4001) },
    outputs: { logp: 3, entropy: 3 },
    op: (be, t) => {
      be.logSoftmaxGather(t.logp, t.logits, t.chosen, { rows: 3, V: 4001, Vp: 4004, temperature: 1.3 });
      be.entropy(t.entropy, t.logits, { rows: 3, V: 4001, Vp: 4004, temperature: 1.3 });
    },
  });
  for (
    const opts of [{ temperature: 1 }, { temperature: 0.7, topK: 20 }, { temperature: 1.3, topP: 0.9 }, {
      temperature: 1,
      topK: 50,
      topP: 0.5,
    }]
  ) {
    const c: Case = {
      inputs: { logits },
      outputs: { tokens: ["u32", rows] },
      op: (be, t) => be.sample(t.tokens, t.logits, { rows, V, Vp, seed: 42, step: 7, ...opts }),
    };
    const expected = (await runCase(cpu, c)).tokens, actual = (await runCase(gpu!, c)).tokens;
    deepStrictEqual((await runCase(gpu!, c)).tokens, actual, "sampling is deterministic");
    // Summation order differs, so a draw landing within rounding of a boundary may pick a neighbour.
    const agree = actual.filter((tok, i) => tok === expected[i]).length;
    ok(agree >= rows - 2, `${JSON.stringify(opts)}: ${agree}/${rows} draws agree with the reference`);
    for (let row = 0; row < rows; row++) {
      ok(actual[row] < V, "a real token");
      if (opts.topK) {
        const x = logits.subarray(row * Vp, row * Vp + V);
        const kth = [...x].sort((a, b) => b - a)[opts.topK - 1];
        ok(x[actual[row]] >= kth, `row ${row}: outside the top ${opts.topK}`);
      }
    }
  }
});

test("one step recorded in one encoder: ops see each other's results without a readback", async () => {
  const be = gpu!, x = be.alloc(8), y = be.alloc(8);
  be.upload(x, [1, 2, 3, 4, 5, 6, 7, 8]);
  for (let i = 0; i < 50; i++) be.add(y, y, x); // 50 dependent dispatches in one pass
  be.scale(y, y, 0.5);
  const [result] = await be.download(y);
  deepStrictEqual([...result], [25, 50, 75, 100, 125, 150, 175, 200]);
  be.free(x);
  const reused = be.alloc(8); // from the pool: zeroed again
  deepStrictEqual([...(await be.download(reused))[0]], new Array(8).fill(0));
});

test("a step recorded again (cached bind groups) reads the new data, also in reused pool buffers", async () => {
  const be = gpu!;
  const step = async (a: Tensor, b: Tensor, out: Tensor, data: number[]) => {
    be.upload(a, data);
    be.add(out, a, b);
    be.scale(out, out, 2);
    return [...(await be.download(out))[0]];
  };
  const a = be.alloc(4), b = be.alloc(4), out = be.alloc(4);
  be.upload(b, [10, 20, 30, 40]);
  deepStrictEqual(await step(a, b, out, [1, 2, 3, 4]), [22, 44, 66, 88]);
  deepStrictEqual(await step(a, b, out, [5, 6, 7, 8]), [30, 52, 74, 96]); // same slots, same buffers
  be.free(a);
  const c = be.alloc(4), out2 = be.alloc(4); // c: a's buffer again, bound where b was
  be.upload(c, [1, 1, 1, 1]);
  deepStrictEqual(await step(b, c, out2, [0, 1, 2, 3]), [2, 4, 6, 8]);
});

test("a short binding is an error naming kernel and binding, and records nothing", async () => {
  const be = gpu as WebGpuBackend;
  const logits = be.alloc(4 * 8), tokens = be.alloc(2, "u32");
  const before = be.counts().dispatches;
  throws(
    () => be.argmax(tokens, logits, { rows: 4, V: 8 }),
    { message: 'kiln: kernel "argmax": binding "tokens" has 2 elements, the dispatch needs 4' },
  );
  deepStrictEqual(be.counts().dispatches, before);
  be.argmax(tokens, logits, { rows: 2, V: 8 }); // the backend is still usable
  deepStrictEqual([...(await be.download(tokens))[0]], [0, 0]);
});
