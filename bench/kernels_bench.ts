/**
 * Kernel benchmarks: `deno task bench:gpu` (`deno run -A bench/kernels_bench.ts`).
 *
 * Per kernel: warm-up runs, then the median of many, timed by timestamp queries where the device has
 * them (GPU time of the dispatches alone), else by wall clock around submit + wait. Prints achieved
 * TFLOP/s (matmul, attention) or GB/s (memory-bound kernels) beside the H100 roofline measured through
 * Deno's WebGPU. Real shapes (4096³, GPT-2 small at B8×T1024) on a GPU; small shapes on a software
 * adapter (llvmpipe) or the CPU backend (`KILN_BACKEND=cpu`), so those runs take seconds.
 * Then one GPT-2 block forward + backward recorded in one encoder: total and split by kernel.
 */
import type { Backend, Tensor } from "../kernels/backend.ts";
import { createBackend } from "../kernels/device.ts";
import { createWebGpuBackend, type WebGpuBackend } from "../kernels/webgpu.ts";

/** Measured on an H100 through Deno 2.9.6's WebGPU (FMA-only kernel; vec4 copy ≈ half of 3.0 TB/s). */
const ROOF = { f32: 45.8e12, f16: 57.4e12, bytes: 3.0e12 };

const backend = await createBackend();
const gpu = backend.name === "webgpu" ? backend as WebGpuBackend : null;
const software = gpu === null || /llvmpipe|lavapipe|swiftshader|software/i.test(gpu.description);
// Timestamps time each dispatch in its own pass; the plain backend records everything in one pass.
const timed: Backend = gpu?.hasTimestamps
  ? createWebGpuBackend(gpu.device, gpu.description, { profile: true })
  : backend;
const real = !software;
const RUNS = real ? 30 : 5;
console.log(
  `# kiln kernels on ${backend.description} (${real ? "real" : "small"} shapes, median of ${RUNS})`,
);

/** Median milliseconds of `record` (one op or a sequence) on `on`, by timestamps when present. */
async function measure(record: () => void, runs = RUNS, on: Backend = timed): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < runs + 2; i++) { // two warm-up runs (pipelines compile on the first)
    const t0 = performance.now();
    record();
    await on.finish();
    const ms = on === timed && timed !== backend
      ? (await (timed as WebGpuBackend).timings()).reduce((s, t) => s + t.ms, 0)
      : performance.now() - t0;
    if (i >= 2) times.push(ms);
  }
  return times.sort((a, b) => a - b)[times.length >> 1];
}

const rows: string[][] = [["kernel", "shape", "median ms", "achieved", "H100 roofline"]];
function report(
  kernel: string,
  shape: string,
  ms: number,
  work: { flops?: number; bytes?: number; f16?: boolean },
) {
  const s = ms / 1e3;
  const rate = work.flops ? work.flops / s : 0;
  const achieved = work.flops
    ? (rate >= 1e11 ? `${(rate / 1e12).toFixed(2)} TFLOP/s` : `${(rate / 1e9).toFixed(2)} GFLOP/s`)
    : `${(work.bytes! / s / 1e9).toFixed(2)} GB/s`;
  const roof = work.flops
    ? `${((work.f16 ? ROOF.f16 : ROOF.f32) / 1e12).toFixed(1)} TFLOP/s`
    : `${ROOF.bytes / 1e9} GB/s`;
  rows.push([kernel, shape, ms.toFixed(3), achieved, roof]);
  console.log(rows.at(-1)!.join("  |  "));
}

const random = (b: Backend, n: number, scale = 1): Tensor => {
  const t = b.alloc(n);
  const data = new Float32Array(n);
  let x = 12345;
  for (let i = 0; i < n; i++) data[i] = ((x = (x * 1103515245 + 12345) >>> 0) / 2 ** 32 - 0.5) * scale;
  b.upload(t, data);
  return t;
};

const be = timed;
// ---- matmul --------------------------------------------------------------------------------
const cube = real ? 4096 : 128;
{
  const a = random(be, cube * cube), b = random(be, cube * cube), out = be.alloc(cube * cube);
  const ms = await measure(() => be.matmul(out, a, b, { m: cube, n: cube, k: cube }));
  report("matmul f32", `${cube}³`, ms, { flops: 2 * cube ** 3 });
  if (be.hasF16 && be.name === "webgpu") {
    const ah = be.alloc(cube * cube, "f16"), bh = be.alloc(cube * cube, "f16");
    be.copy(ah, a);
    be.copy(bh, b);
    const msh = await measure(() => be.matmul(out, ah, bh, { m: cube, n: cube, k: cube }));
    report("matmul f16 storage", `${cube}³`, msh, { flops: 2 * cube ** 3, f16: true });
  }
}

// ---- GPT-2 small layer shapes ---------------------------------------------------------------
const [B, T, C, NH, V] = real ? [8, 1024, 768, 12, 50304] : [1, 64, 64, 4, 512];
const BT = B * T;
for (
  const [name, m, k, n] of [["qkv", BT, C, 3 * C], ["fc", BT, C, 4 * C], ["fcproj", BT, 4 * C, C]] as const
) {
  const a = random(be, m * k), w = random(be, k * n), out = be.alloc(m * n), dout = random(be, m * n);
  const da = be.alloc(m * k), dw = be.alloc(k * n);
  report(`matmul ${name}`, `${m}×${k}·${k}×${n}`, await measure(() => be.matmul(out, a, w, { m, n, k })), {
    flops: 2 * m * n * k,
  });
  report(
    `matmul ${name} dinp (·Wᵀ)`,
    `${m}×${n}·(${k}×${n})ᵀ`,
    await measure(() => be.matmul(da, dout, w, { m, n: k, k: n, transB: true })),
    { flops: 2 * m * n * k },
  );
  report(
    `matmul ${name} dW (inpᵀ·)`,
    `(${m}×${k})ᵀ·${m}×${n}`,
    await measure(() => be.matmul(dw, a, dout, { m: k, n, k: m, transA: true, accumulate: true })),
    { flops: 2 * m * n * k },
  );
}
{
  const inp = random(be, BT * C), out = be.alloc(BT * C), mean = be.alloc(BT), rstd = be.alloc(BT);
  const w = random(be, C), bias = random(be, C);
  const ms = await measure(() => be.layernormForward(out, mean, rstd, inp, w, bias, { rows: BT, C }));
  report("layernorm forward", `${BT}×${C}`, ms, { bytes: 2 * BT * C * 4 });
  const dinp = be.alloc(BT * C), dw = be.alloc(C), db = be.alloc(C);
  const msb = await measure(() =>
    be.layernormBackward(dinp, dw, db, out, inp, w, mean, rstd, { rows: BT, C })
  );
  report("layernorm backward", `${BT}×${C}`, msb, { bytes: 4 * BT * C * 4 });
}
{
  const n = BT * 4 * C, x = random(be, n), y = be.alloc(n), d = random(be, n);
  report("gelu forward", `${n}`, await measure(() => be.geluForward(y, x)), { bytes: 2 * n * 4 });
  report("gelu backward", `${n}`, await measure(() => be.geluBackward(y, x, d)), { bytes: 3 * n * 4 });
  report("residual add", `${n}`, await measure(() => be.add(y, x, d)), { bytes: 3 * n * 4 });
  report("copy", `${n}`, await measure(() => be.copy(y, x)), { bytes: 2 * n * 4 });
  report("scale", `${n}`, await measure(() => be.scale(y, x, 0.5)), { bytes: 2 * n * 4 });
  const bias = be.alloc(4 * C);
  report(
    "column sums (bias grad)",
    `${BT}×${4 * C}`,
    await measure(() => be.sumRows(bias, d, { rows: BT, cols: 4 * C })),
    {
      bytes: n * 4,
    },
  );
  // Views at odd offsets take the one-element-a-thread kernels instead of the vec4 ones.
  const [xs, ds, ys] = [x, d, y].map((t) => be.view(t, 1, n - 1));
  report("residual add (offset 1: scalar)", `${n - 1}`, await measure(() => be.add(ys, xs, ds)), {
    bytes: 3 * (n - 1) * 4,
  });
}
{
  const qkv = random(be, BT * 3 * C),
    out = be.alloc(BT * C),
    lse = be.alloc(B * NH * T),
    dqkv = be.alloc(BT * 3 * C);
  const opts = { B, T, C, NH };
  const flops = 2 * B * NH * T * T * (C / NH); // QKᵀ and PV, causal half of each
  report(
    "attention forward",
    `B${B} T${T} C${C} NH${NH}`,
    await measure(() => be.attentionForward(out, lse, qkv, opts)),
    { flops },
  );
  const msb = await measure(() => be.attentionBackward(dqkv, out, qkv, out, lse, opts));
  report("attention backward", `B${B} T${T} C${C} NH${NH}`, msb, { flops: 2.5 * flops });
}
{
  // Generation's decode step: B sequences, one new token each, over a T-long cache.
  const cache = random(be, B * T * 3 * C), out = be.alloc(B * C), fresh = random(be, B * 3 * C);
  const opts = { B, T, C, NH, append: fresh };
  report(
    "attention decode (+ append)",
    `B${B} cache T${T} C${C}`,
    await measure(() => be.attentionDecode(out, cache, opts)),
    { bytes: B * T * 2 * C * 4 }, // the keys and values read
  );
}
{
  const rowsCE = real ? BT / 2 : BT, logits = random(be, rowsCE * V, 4), losses = be.alloc(rowsCE);
  const targets = be.alloc(rowsCE, "u32"), picked = be.alloc(rowsCE);
  const opts = { rows: rowsCE, V };
  report(
    "log π gather",
    `${rowsCE}×${V}`,
    await measure(() => be.logSoftmaxGather(picked, logits, targets, opts)),
    {
      bytes: rowsCE * V * 4,
    },
  );
  report("entropy", `${rowsCE}×${V}`, await measure(() => be.entropy(picked, logits, opts)), {
    bytes: rowsCE * V * 4,
  });
  // In place: the first run turns logits into gradients; later runs still read and write as much.
  const ms = await measure(() => be.crossEntropy(losses, logits, targets, opts));
  report("softmax + cross-entropy", `${rowsCE}×${V}`, ms, { bytes: 2 * rowsCE * V * 4 });
}
{
  const n = real ? 124_475_904 : 1 << 18;
  const p = random(be, n),
    g = random(be, n),
    m = be.alloc(n),
    v = be.alloc(n),
    norm = be.alloc(1),
    clip = be.alloc(1);
  report("global norm", `${n}`, await measure(() => be.globalNorm(norm, g)), { bytes: n * 4 });
  const o = { lr: 1e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, step: 1 };
  report(
    "adamw",
    `${n}`,
    await measure(() => (be.clipScale(clip, norm, 1), be.adamw(p, g, m, v, { ...o, gradScale: clip }))),
    {
      bytes: 7 * n * 4,
    },
  );
}

// ---- one GPT-2 block forward + backward in one encoder ----------------------------------------
{
  // Recorded on the plain backend (one encoder, one pass) for the total, and on the timestamped one
  // (a pass a dispatch) for the split; both share the device, so the tensors serve both.
  let on: Backend = timed;
  const t = (n: number) => random(be, n, 0.1);
  const x = t(BT * C),
    ln1 = on.alloc(BT * C),
    ln2 = on.alloc(BT * C),
    mean1 = on.alloc(BT),
    rstd1 = on.alloc(BT);
  const mean2 = on.alloc(BT),
    rstd2 = on.alloc(BT),
    qkv = on.alloc(BT * 3 * C),
    att = on.alloc(BT * C),
    lse = on.alloc(B * NH * T);
  const proj = on.alloc(BT * C),
    res = on.alloc(BT * C),
    fc = on.alloc(BT * 4 * C),
    gelu = on.alloc(BT * 4 * C);
  const fcproj = on.alloc(BT * C), out = on.alloc(BT * C);
  const w = { ln1w: t(C), ln1b: t(C), qkvw: t(C * 3 * C), qkvb: t(3 * C), projw: t(C * C), projb: t(C) };
  const w2 = {
    ln2w: t(C),
    ln2b: t(C),
    fcw: t(C * 4 * C),
    fcb: t(4 * C),
    fcprojw: t(4 * C * C),
    fcprojb: t(C),
  };
  const g = (n: number) => on.alloc(n);
  const d = {
    ln1w: g(C),
    ln1b: g(C),
    qkvw: g(C * 3 * C),
    qkvb: g(3 * C),
    projw: g(C * C),
    projb: g(C),
    ln2w: g(C),
    ln2b: g(C),
    fcw: g(C * 4 * C),
    fcb: g(4 * C),
    fcprojw: g(4 * C * C),
    fcprojb: g(C),
  };
  const dout = t(BT * C), dres = g(BT * C), dfc = g(BT * 4 * C), dgelu = g(BT * 4 * C), dln2 = g(BT * C);
  const datt = g(BT * C), dqkv = g(BT * 3 * C), dln1 = g(BT * C), dx = g(BT * C);
  const lin = (o: Tensor, a: Tensor, wt: Tensor, bias: Tensor, k: number, n: number) =>
    on.matmul(o, a, wt, { m: BT, n, k, bias });
  const linBack = (
    dinp: Tensor,
    dw: Tensor,
    db: Tensor,
    dO: Tensor,
    inp: Tensor,
    wt: Tensor,
    k: number,
    n: number,
  ) => {
    on.matmul(dinp, dO, wt, { m: BT, n: k, k: n, transB: true });
    on.matmul(dw, inp, dO, { m: k, n, k: BT, transA: true, accumulate: true });
    on.sumRows(db, dO, { rows: BT, cols: n, accumulate: true });
  };
  const block = () => {
    on.layernormForward(ln1, mean1, rstd1, x, w.ln1w, w.ln1b, { rows: BT, C });
    lin(qkv, ln1, w.qkvw, w.qkvb, C, 3 * C);
    on.attentionForward(att, lse, qkv, { B, T, C, NH });
    lin(proj, att, w.projw, w.projb, C, C);
    on.add(res, x, proj);
    on.layernormForward(ln2, mean2, rstd2, res, w2.ln2w, w2.ln2b, { rows: BT, C });
    lin(fc, ln2, w2.fcw, w2.fcb, C, 4 * C);
    on.geluForward(gelu, fc);
    lin(fcproj, gelu, w2.fcprojw, w2.fcprojb, 4 * C, C);
    on.add(out, res, fcproj);
    // backward: the residual stream gradient flows to res and x unchanged
    on.copy(dres, dout);
    linBack(dgelu, d.fcprojw, d.fcprojb, dout, gelu, w2.fcprojw, 4 * C, C);
    on.geluBackward(dfc, fc, dgelu);
    linBack(dln2, d.fcw, d.fcb, dfc, ln2, w2.fcw, C, 4 * C);
    on.layernormBackward(dres, d.ln2w, d.ln2b, dln2, res, w2.ln2w, mean2, rstd2, { rows: BT, C });
    linBack(datt, d.projw, d.projb, dres, att, w.projw, C, C);
    on.attentionBackward(dqkv, datt, qkv, att, lse, { B, T, C, NH });
    linBack(dln1, d.qkvw, d.qkvb, dqkv, ln1, w.qkvw, C, 3 * C);
    on.copy(dx, dres);
    on.layernormBackward(dx, d.ln1w, d.ln1b, dln1, x, w.ln1w, mean1, rstd1, { rows: BT, C });
  };
  on = backend;
  const ms = await measure(block, Math.min(RUNS, 10), backend);
  on = timed;
  console.log(
    `\none GPT-2 block forward + backward (B${B} T${T} C${C} NH${NH}), one encoder: ${ms.toFixed(2)} ms`,
  );
  if (timed !== backend) {
    block();
    timed.submit();
    const split = new Map<string, number>();
    for (const { kernel, ms } of await (timed as WebGpuBackend).timings()) {
      split.set(kernel, (split.get(kernel) ?? 0) + ms);
    }
    for (const [kernel, ms] of [...split].sort((a, b) => b[1] - a[1])) {
      console.log(`  ${kernel}: ${ms.toFixed(3)} ms`);
    }
  }
}
if (gpu) {
  const { pipelines, compileMs } = gpu.stats();
  const profiled = (timed as WebGpuBackend).stats?.();
  console.log(
    `\nshader compile: ${pipelines + (profiled && timed !== backend ? profiled.pipelines : 0)} pipelines, ${
      (compileMs + (profiled && timed !== backend ? profiled.compileMs : 0)).toFixed(0)
    } ms (pipeline creation)`,
  );
}
if (gpu) {
  // Host cost of recording a dispatch (uniform slot, bind group, pass calls), warm: what a step of
  // hundreds of small dispatches (generation's decode) pays on the CPU before the GPU sees any of it.
  const x = gpu.alloc(1024), y = gpu.alloc(1024);
  const perDispatch: number[] = [];
  for (let round = 0; round < 5; round++) {
    const t0 = performance.now();
    for (let i = 0; i < 1000; i++) gpu.add(y, x, y);
    perDispatch.push((performance.now() - t0) / 1000 * 1000);
    await gpu.finish();
  }
  console.log(
    `recording: ${
      perDispatch.sort((a, b) => a - b)[2].toFixed(1)
    } µs a dispatch on the host (median of 5 × 1000)`,
  );
}
