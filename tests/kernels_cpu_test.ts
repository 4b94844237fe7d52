/**
 * The TypeScript reference backend: every backward against finite differences of its forward
 * (run in float64 so the differences are exact to ~1e-9), segment masking, sampling semantics, the
 * optimizer and the backend choice. The WebGPU kernels are then tested against this reference.
 */
import { deepStrictEqual, equal, match, ok, throws } from "node:assert";
import { createCpuBackend } from "../kernels/cpu.ts";
import { createBackend } from "../kernels/device.ts";
import { tokenBuckets, uniformDraw } from "../kernels/host.ts";
import type { Tensor } from "../kernels/backend.ts";
import { assertClose, finiteDifference, randomFloats, randomInts, rng } from "./kernels_fixtures.ts";

const cpu = createCpuBackend({ precision: "f64" });
const tensor = (data: ArrayLike<number>, dtype: "f32" | "u32" = "f32"): Tensor => {
  const t = cpu.alloc(data.length, dtype);
  cpu.array(t).set(data);
  return t;
};
const zeros = (n: number) => cpu.alloc(n);
/** The live elements (f32 tensors are float64 in this backend). */
const values = (t: Tensor) => cpu.array(t) as Float64Array;
/** Σ w·out: a scalar loss whose gradient with respect to out is w. */
const dot = (w: Tensor, out: Tensor) => values(out).reduce((s, x, i) => s + x * values(w)[i], 0);

/** Checks `analytic[i]` against the finite difference of `loss` in `input[i]`, at `samples` indices. */
function checkGradient(
  what: string,
  loss: () => number,
  input: Tensor,
  analytic: Tensor,
  samples = 8,
  seed = 1,
) {
  const random = rng(seed);
  const x = values(input), g = values(analytic);
  const indices = Array.from({ length: Math.min(samples, x.length) }, () => Math.floor(random() * x.length));
  const numeric = indices.map((i) => finiteDifference(loss, x, i));
  // float64 central differences with h = 1e-6: agreement to ~1e-7 relative is expected.
  assertClose(indices.map((i) => g[i]), numeric, `${what} gradient`, 1e-6, 1e-8);
}

Deno.test("matmul: the transposed forms are the forward's gradients (dinp = dout·Wᵀ, dW = inpᵀ·dout)", () => {
  const r = rng(11), m = 5, n = 7, k = 6;
  const a = tensor(randomFloats(r, m * k)),
    b = tensor(randomFloats(r, k * n)),
    bias = tensor(randomFloats(r, n));
  const w = tensor(randomFloats(r, m * n)), out = zeros(m * n);
  const loss = () => {
    cpu.matmul(out, a, b, { m, n, k, bias });
    return dot(w, out);
  };
  const da = zeros(m * k), db = zeros(k * n), dbias = zeros(n);
  cpu.matmul(da, w, b, { m, n: k, k: n, transB: true });
  cpu.matmul(db, a, w, { m: k, n, k: m, transA: true });
  cpu.sumRows(dbias, w, { rows: m, cols: n });
  checkGradient("matmul a", loss, a, da);
  checkGradient("matmul b", loss, b, db);
  checkGradient("matmul bias", loss, bias, dbias);
});

Deno.test("matmul: batch and accumulate", () => {
  const a = tensor([1, 2, 3, 4, 10, 20, 30, 40]),
    b = tensor([1, 0, 0, 1, 0, 1, 1, 0]),
    out = tensor(new Array(8).fill(1));
  cpu.matmul(out, a, b, {
    m: 2,
    n: 2,
    k: 2,
    accumulate: true,
    batch: { count: 2, strideA: 4, strideB: 4, strideOut: 4 },
  });
  deepStrictEqual([...values(out)], [2, 3, 4, 5, 21, 11, 41, 31]);
});

Deno.test("layernorm backward matches finite differences", () => {
  const r = rng(12), rows = 3, C = 9;
  const inp = tensor(randomFloats(r, rows * C, 2)),
    weight = tensor(randomFloats(r, C)),
    bias = tensor(randomFloats(r, C));
  const w = tensor(randomFloats(r, rows * C)), out = zeros(rows * C), mean = zeros(rows), rstd = zeros(rows);
  const loss = () => {
    cpu.layernormForward(out, mean, rstd, inp, weight, bias, { rows, C });
    return dot(w, out);
  };
  loss();
  const dinp = zeros(rows * C), dweight = zeros(C), dbias = zeros(C);
  cpu.layernormBackward(dinp, dweight, dbias, w, inp, weight, mean, rstd, { rows, C });
  checkGradient("layernorm inp", loss, inp, dinp);
  checkGradient("layernorm weight", loss, weight, dweight);
  checkGradient("layernorm bias", loss, bias, dbias);
});

Deno.test("gelu backward matches finite differences", () => {
  const r = rng(13), n = 40;
  const inp = tensor(randomFloats(r, n, 4)), w = tensor(randomFloats(r, n)), out = zeros(n), dinp = zeros(n);
  cpu.geluBackward(dinp, inp, w);
  checkGradient("gelu", () => (cpu.geluForward(out, inp), dot(w, out)), inp, dinp, 20);
});

for (const segmented of [false, true]) {
  Deno.test(`attention backward matches finite differences${segmented ? " (with segments)" : ""}`, () => {
    const r = rng(14), B = 2, T = 6, C = 8, NH = 2;
    const qkv = tensor(randomFloats(r, B * T * 3 * C)), w = tensor(randomFloats(r, B * T * C));
    const segments = segmented ? tensor([0, 0, 1, 1, 1, 2, 5, 5, 5, 5, 6, 6], "u32") : undefined;
    const opts = { B, T, C, NH, segments };
    const out = zeros(B * T * C), lse = zeros(B * NH * T), dqkv = zeros(B * T * 3 * C);
    const loss = () => (cpu.attentionForward(out, lse, qkv, opts), dot(w, out));
    loss();
    cpu.attentionBackward(dqkv, w, qkv, out, lse, opts);
    checkGradient("attention qkv", loss, qkv, dqkv, 40);
  });
}

Deno.test("attention with segments equals attending within each segment separately", () => {
  const r = rng(15), C = 8, NH = 2, lengths = [3, 4, 2], T = 9;
  const qkv = randomFloats(r, T * 3 * C), dout = randomFloats(r, T * C);
  const segments = tensor(lengths.flatMap((n, s) => new Array(n).fill(s)), "u32");
  const packed = { out: zeros(T * C), lse: zeros(NH * T), dqkv: zeros(T * 3 * C) };
  cpu.attentionForward(packed.out, packed.lse, tensor(qkv), { B: 1, T, C, NH, segments });
  cpu.attentionBackward(packed.dqkv, tensor(dout), tensor(qkv), packed.out, packed.lse, {
    B: 1,
    T,
    C,
    NH,
    segments,
  });
  let start = 0;
  for (const n of lengths) {
    const q = tensor(qkv.subarray(start * 3 * C, (start + n) * 3 * C)),
      d = tensor(dout.subarray(start * C, (start + n) * C));
    const out = zeros(n * C), lse = zeros(NH * n), dqkv = zeros(n * 3 * C);
    cpu.attentionForward(out, lse, q, { B: 1, T: n, C, NH });
    cpu.attentionBackward(dqkv, d, q, out, lse, { B: 1, T: n, C, NH });
    assertClose(
      values(packed.out).subarray(start * C, (start + n) * C),
      values(out),
      "segment out",
      1e-12,
      1e-14,
    );
    assertClose(
      values(packed.dqkv).subarray(start * 3 * C, (start + n) * 3 * C),
      values(dqkv),
      "segment dqkv",
      1e-12,
      1e-14,
    );
    start += n;
  }
});

Deno.test("cross-entropy: dlogits is the gradient of the mask-normalised mean loss; padding gets zero", () => {
  const r = rng(16), rows = 4, V = 7, Vp = 9;
  const logits0 = randomFloats(r, rows * Vp, 3), targets = tensor([1, 6, 0, 3], "u32");
  const mask = tensor([1, 0, 0.5, 1]);
  const logits = tensor(logits0), losses = zeros(rows);
  const meanLoss = () => {
    const scratch = tensor(values(logits));
    cpu.crossEntropy(losses, scratch, targets, { rows, V, Vp, mask });
    return values(losses).reduce((s, x) => s + x, 0) / 2.5;
  };
  const dlogits = tensor(logits0);
  cpu.crossEntropy(losses, dlogits, targets, { rows, V, Vp, mask });
  checkGradient("cross-entropy", meanLoss, logits, dlogits, 30);
  equal(values(losses)[1], 0, "a masked token has zero loss");
  for (let row = 0; row < rows; row++) {
    deepStrictEqual([...values(dlogits).subarray(row * Vp + V, row * Vp + Vp)], [0, 0]);
  }
  // normalize "count": divided by rows whatever the mask holds
  const byCount = tensor(logits0);
  cpu.crossEntropy(losses, byCount, targets, { rows, V, Vp, mask, normalize: "count" });
  assertClose(values(byCount), values(dlogits).map((g) => g * 2.5 / rows), "count-normalised", 1e-12, 1e-15);
});

Deno.test("embedding backward matches finite differences and sums repeated tokens", () => {
  const r = rng(17), B = 2, T = 4, C = 3, V = 5;
  const tokens = new Uint32Array([1, 3, 1, 0, 3, 3, 4, 1]);
  const wte = tensor(randomFloats(r, V * C)),
    wpe = tensor(randomFloats(r, T * C)),
    w = tensor(randomFloats(r, B * T * C));
  const out = zeros(B * T * C), tk = tensor(tokens, "u32");
  const loss = () => (cpu.encoderForward(out, tk, wte, wpe, { B, T, C }), dot(w, out));
  const dwte = zeros(V * C), dwpe = zeros(T * C);
  cpu.encoderBackward(dwte, dwpe, w, tokens, { B, T, C });
  checkGradient("wte", loss, wte, dwte, 15);
  checkGradient("wpe", loss, wpe, dwpe, 12);
  deepStrictEqual([...values(dwte).subarray(2 * C, 3 * C)], [0, 0, 0], "token 2 does not occur");
});

Deno.test("embedding with explicit positions: backward matches finite differences; 0..T-1 is the default", () => {
  const r = rng(20), B = 2, T = 5, C = 3, V = 4, P = 6;
  // Two packed examples in row 0 (positions restart), a left-offset row 1; position 2 repeats.
  const tokens = new Uint32Array([1, 3, 1, 0, 2, 3, 3, 0, 1, 2]);
  const positions = new Uint32Array([0, 1, 2, 0, 1, 2, 3, 4, 5, 2]);
  const wte = tensor(randomFloats(r, V * C)),
    wpe = tensor(randomFloats(r, P * C)),
    w = tensor(randomFloats(r, B * T * C));
  const out = zeros(B * T * C), tk = tensor(tokens, "u32"), pos = tensor(positions, "u32");
  const loss = () => (cpu.encoderForward(out, tk, wte, wpe, { B, T, C, positions: pos }), dot(w, out));
  loss();
  for (const [i, p] of [[3, 0], [7, 4], [9, 2]]) {
    assertClose(
      values(out).subarray(i * C, i * C + C),
      [0, 1, 2].map((c) => values(wte)[tokens[i] * C + c] + values(wpe)[p * C + c]),
      `out row ${i}`,
      1e-15,
      0,
    );
  }
  const dwte = zeros(V * C), dwpe = zeros(P * C);
  cpu.encoderBackward(dwte, dwpe, w, tokens, { B, T, C, hostPositions: positions });
  checkGradient("wte", loss, wte, dwte, 12);
  checkGradient("wpe", loss, wpe, dwpe, 18);

  const plain = { out: zeros(B * T * C), dwte: zeros(V * C), dwpe: zeros(P * C) };
  const explicit = { out: zeros(B * T * C), dwte: zeros(V * C), dwpe: zeros(P * C) };
  const counting = new Uint32Array(B * T).map((_, i) => i % T);
  cpu.encoderForward(plain.out, tk, wte, wpe, { B, T, C });
  cpu.encoderBackward(plain.dwte, plain.dwpe, w, tokens, { B, T, C });
  cpu.encoderForward(explicit.out, tk, wte, wpe, { B, T, C, positions: tensor(counting, "u32") });
  cpu.encoderBackward(explicit.dwte, explicit.dwpe, w, tokens, { B, T, C, hostPositions: counting });
  for (const k of ["out", "dwte", "dwpe"] as const) {
    deepStrictEqual([...values(explicit[k])], [...values(plain[k])], `${k}: default == explicit 0..T-1`);
  }
  throws(
    () => cpu.encoderBackward(dwte, zeros(5 * C), w, tokens, { B, T, C, hostPositions: positions }),
    /encoderBackward: position 5 at \[8\] is outside wpe \(5 rows\)/,
  );
  throws(
    () => cpu.encoderForward(out, tk, wte, wpe, { B, T, C, positions: tensor([0, 1], "u32") }),
    /needs 10/,
  );
});

Deno.test("token buckets list each token's positions in order", () => {
  const { count, data } = tokenBuckets(new Uint32Array([7, 3, 7, 7, 0]));
  equal(count, 3);
  deepStrictEqual([...data], [0, 3, 7, /* starts */ 0, 1, 2, 5, /* positions */ 4, 1, 0, 2, 3]);
});

Deno.test("adamw: one step by hand, decay only inside the range, clip factor applied", () => {
  const params = tensor([1, 1]),
    grads = tensor([0.5, 0.5]),
    m = zeros(2),
    v = zeros(2),
    scale = tensor([0.5]);
  const o = {
    lr: 0.1,
    beta1: 0.9,
    beta2: 0.99,
    eps: 1e-8,
    weightDecay: 0.1,
    step: 1,
    decayRange: [0, 1] as [number, number],
  };
  cpu.adamw(params, grads, m, v, { ...o, gradScale: scale });
  // step 1: m̂ = g, v̂ = g², so the update is lr·(sign(g) + wd·p) on the decayed element, lr·sign(g) else.
  assertClose(values(params), [1 - 0.1 * (1 + 0.1), 1 - 0.1], "params", 1e-7);
  assertClose(values(m), [0.025, 0.025], "m", 1e-12);
  const norm = zeros(1), clip = zeros(1);
  cpu.globalNorm(norm, tensor([3, 4]));
  cpu.clipScale(clip, norm, 1);
  assertClose([values(norm)[0], values(clip)[0]], [5, 1 / (5 + 1e-6)], "norm and clip", 1e-12);
});

Deno.test("sampling: top-k 1 and a tiny top-p are greedy; draws stay inside top-k; frequencies follow the softmax", () => {
  const r = rng(18), rows = 64, V = 10;
  const logits = tensor(randomFloats(r, rows * V, 2)),
    tokens = cpu.alloc(rows, "u32"),
    greedy = cpu.alloc(rows, "u32");
  cpu.argmax(greedy, logits, { rows, V });
  cpu.sample(tokens, logits, { rows, V, temperature: 1, topK: 1, seed: 1, step: 0 });
  deepStrictEqual([...values(tokens)], [...values(greedy)]);
  cpu.sample(tokens, logits, { rows, V, temperature: 1, topP: 1e-6, seed: 1, step: 0 });
  deepStrictEqual([...values(tokens)], [...values(greedy)]);
  cpu.sample(tokens, logits, { rows, V, temperature: 0.7, topK: 3, seed: 2, step: 5 });
  for (let row = 0; row < rows; row++) {
    const x = [...values(logits).subarray(row * V, row * V + V)];
    const third = [...x].sort((a, b) => b - a)[2];
    ok(x[values(tokens)[row]] >= third, `row ${row} drew a token outside the top 3`);
  }
  // One row drawn 4000 times (steps): frequencies within 0.03 of the probabilities.
  const row = tensor([0, 1, 2, 0.5]), draw = cpu.alloc(1, "u32"), counts = [0, 0, 0, 0];
  for (let step = 0; step < 4000; step++) {
    cpu.sample(draw, row, { rows: 1, V: 4, temperature: 1, seed: 9, step });
    counts[values(draw)[0]]++;
  }
  const z = [0, 1, 2, 0.5].reduce((s, x) => s + Math.exp(x), 0);
  assertClose(
    counts.map((c) => c / 4000),
    [0, 1, 2, 0.5].map((x) => Math.exp(x) / z),
    "frequencies",
    0,
    0.03,
  );
  ok(uniformDraw(1, 2, 3) !== uniformDraw(1, 2, 4), "each step draws afresh");
});

Deno.test("logSoftmaxGather is log π of the chosen token", () => {
  const logits = tensor([1, 2, 3, 0, 0, 0]), tokens = tensor([2, 1], "u32"), out = zeros(2);
  cpu.logSoftmaxGather(out, logits, tokens, { rows: 2, V: 3, temperature: 2 });
  const z = Math.exp(0.5) + Math.exp(1) + Math.exp(1.5);
  assertClose(values(out), [1.5 - Math.log(z), -Math.log(3)], "log π", 1e-12);
});

Deno.test("entropy is -Σ p log p of the tempered softmax; padding ignored; no overflow", () => {
  const r = rng(21), rows = 3, V = 7, Vp = 9;
  const x = randomFloats(r, rows * Vp, 3);
  x.fill(NaN, V, Vp); // padding of row 0 must not be read
  x.fill(0, Vp, Vp + V); // row 1 uniform: log V
  x.set([3e4, 0, 0, 0, 0, 0, 0], 2 * Vp); // row 2 one-hot: 0, without overflow
  const out = zeros(rows);
  cpu.entropy(out, tensor(x), { rows, V, Vp, temperature: 0.7 });
  const z = [...x.subarray(0, V)].map((v) => Math.exp(v / 0.7));
  const p = z.map((v) => v / z.reduce((a, b) => a + b));
  const expected = -p.reduce((s, q) => s + q * Math.log(q), 0);
  assertClose(values(out), [expected, Math.log(V), 0], "entropy", 1e-12, 1e-12);
  throws(() => cpu.entropy(out, tensor(x), { rows, V, temperature: 0 }), /temperature must be > 0/);
  throws(() => cpu.entropy(zeros(4), tensor(x), { rows: 4, V, Vp }), /logits has 27 elements, needs 34/);
});

Deno.test("createBackend: cpu on request, and KILN_BACKEND=cpu overrides auto, each with one line", async () => {
  const lines: string[] = [];
  equal((await createBackend({ backend: "cpu", log: (l) => lines.push(l) })).name, "cpu");
  const saved = Deno.env.get("KILN_BACKEND");
  Deno.env.set("KILN_BACKEND", "cpu");
  try {
    equal((await createBackend({ log: (l) => lines.push(l) })).name, "cpu");
  } finally {
    if (saved === undefined) Deno.env.delete("KILN_BACKEND");
    else Deno.env.set("KILN_BACKEND", saved);
  }
  equal(lines.length, 2);
  match(lines[1], /cpu backend.*KILN_BACKEND=cpu/);
});

Deno.test("createBackend: auto passes over a software fallback adapter, webgpu takes it", async () => {
  const adapter = await navigator.gpu?.requestAdapter({ powerPreference: "high-performance" });
  if (!adapter?.info.isFallbackAdapter || Deno.env.get("KILN_BACKEND")) {
    console.log(`skipped: the adapter here is ${adapter ? "hardware" : "absent"} or KILN_BACKEND is set`);
    return;
  }
  const lines: string[] = [];
  const auto = await createBackend({ log: (l) => lines.push(l) });
  equal(auto.name, "cpu");
  match(lines[0], /cpu backend .*because the WebGPU adapter found, .+, is a software fallback/);
  const forced = await createBackend({ backend: "webgpu", log: (l) => lines.push(l) });
  equal(forced.name, "webgpu");
  forced.destroy();
});

Deno.test("views at any offset read and write the right elements", async () => {
  const flat = createCpuBackend();
  const buffer = flat.alloc(10);
  flat.upload(flat.view(buffer, 3, 4), [1, 2, 3, 4]);
  flat.scale(flat.view(buffer, 5, 2), flat.view(buffer, 3, 2), 10);
  const [all] = await flat.download(buffer);
  deepStrictEqual([...all], [0, 0, 0, 1, 2, 10, 20, 0, 0, 0]);
});

// randomInts is used by the WebGPU tests too; here it checks the bucket sums on many tokens.
Deno.test("embedding backward: buckets and a plain scatter agree on random tokens", () => {
  const r = rng(19), B = 3, T = 17, C = 2, V = 6, tokens = randomInts(r, B * T, V);
  const dout = tensor(randomFloats(r, B * T * C)), dwte = zeros(V * C), dwpe = zeros(T * C);
  cpu.encoderBackward(dwte, dwpe, dout, tokens, { B, T, C });
  const expected = new Float64Array(V * C);
  tokens.forEach((tok, p) => {
    for (let c = 0; c < C; c++) expected[tok * C + c] += values(dout)[p * C + c];
  });
  assertClose(values(dwte), expected, "dwte", 1e-12, 1e-14);
});
