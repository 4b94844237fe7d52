/**
 * AdamW over a flat parameter buffer, and the deterministic reductions: sum (or sum of squares) in
 * two fixed-order passes, the clip factor, and column sums. Kernels first, then their launchers
 * ({@linkcode optimizerOps}, {@linkcode reduce}).
 * @module
 */
import { type AdamWOptions, type Backend, checkTensor, type Tensor } from "../backend.ts";
import { type Kernel, mapKernel, memo, type Recorder, REDUCE, runElementwise, runMap, WG } from "./kernel.ts";

const ELEMENT = `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = group_index(wid, nwg) * ${WG}u + lid;
  if (i >= P.n) { return; }`;

/**
 * AdamW, one thread a parameter (four in the vec4 form); bias corrections `c1 = 1 - β1^t`,
 * `c2 = 1 - β2^t` from the host.
 */
export const adamwKernel = memo((vec4: boolean) =>
  mapKernel({
    name: "adamw",
    tensors: ["params", "grads", "m", "v"],
    extra: [["grad_scale", "f32"]],
    extraSizes: (p) => ({ grad_scale: p.has_grad_scale ? 1 : 0 }),
    params: [
      ["lr", "f32"],
      ["beta1", "f32"],
      ["beta2", "f32"],
      ["eps", "f32"],
      ["weight_decay", "f32"],
      ["c1", "f32"],
      ["c2", "f32"],
      ["decay_start", "u32"],
      ["decay_end", "u32"],
      ["has_grad_scale", "u32"],
    ],
    body: ({ T, U, at, index }) => `
  let scale = select(1.0, grad_scale[P.grad_scale], P.has_grad_scale != 0u);
  let g = ${at("grads")} * scale;
  let m1 = P.beta1 * ${at("m")} + (1.0 - P.beta1) * g;
  let v1 = P.beta2 * ${at("v")} + (1.0 - P.beta2) * g * g;
  ${at("m")} = m1;
  ${at("v")} = v1;
  let decayed = (${index} >= ${U}(P.decay_start)) & (${index} < ${U}(P.decay_end));
  let decay = select(${T}(0.0), ${T}(P.weight_decay), decayed);
  let p = ${at("params")};
  ${at("params")} = p - P.lr * (m1 / P.c1 / (sqrt(v1 / P.c2) + P.eps) + decay * p);`,
  }, vec4)
);

/** Workgroups of a reduction's first pass: a fixed function of n, so the sum order is too. */
export function reduceGroups(n: number): number {
  return Math.max(1, Math.min(1024, Math.ceil(n / (WG * 16))));
}

/** Pass 1: each workgroup sums (`squares`: the squares of) a contiguous chunk into `partial`. */
export const reducePartialKernel = memo((): Kernel => ({
  name: "reduce_partial",
  tensors: [["partial", "f32"], ["inp", "f32"]],
  params: [["n", "u32"], ["chunk", "u32"], ["squares", "u32"]],
  sizes: ({ n, chunk }) => ({ partial: Math.ceil(n / chunk), inp: n }),
  code: `${REDUCE}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let begin = wid.x * P.chunk;
  let end = min(P.n, begin + P.chunk);
  var sum = 0.0;
  for (var i = begin + lid; i < end; i += ${WG}u) {
    let x = inp[P.inp + i];
    sum += select(x, x * x, P.squares != 0u);
  }
  sum = reduce_sum(lid, sum);
  if (lid == 0u) { partial[P.partial + wid.x] = sum; }
}`,
}));

/** Pass 2: one workgroup sums the partials; `finish` 0 = sum, 1 = mean (÷ divisor), 2 = √. */
export const reduceFinalKernel = memo((): Kernel => ({
  name: "reduce_final",
  tensors: [["out", "f32"], ["partial", "f32"]],
  params: [["groups", "u32"], ["finish", "u32"], ["divisor", "f32"]],
  sizes: ({ groups }) => ({ out: 1, partial: groups }),
  code: `${REDUCE}
@compute @workgroup_size(${WG})
fn main(@builtin(local_invocation_index) lid: u32) {
  var sum = 0.0;
  for (var i = lid; i < P.groups; i += ${WG}u) { sum += partial[P.partial + i]; }
  sum = reduce_sum(lid, sum);
  if (lid == 0u) {
    var result = sum;
    if (P.finish == 1u) { result = sum / P.divisor; }
    if (P.finish == 2u) { result = sqrt(sum); }
    out[P.out] = result;
  }
}`,
}));

/** `out[0] = min(1, max_norm / (norm[0] + 1e-6))`. */
export const clipScaleKernel = memo((): Kernel => ({
  name: "clip_scale",
  tensors: [["out", "f32"], ["norm", "f32"]],
  params: [["max_norm", "f32"]],
  sizes: () => ({ out: 1, norm: 1 }),
  code: `
@compute @workgroup_size(1)
fn main() { out[P.out] = min(1.0, P.max_norm / (norm[P.norm] + 1e-6)); }`,
}));

/** Rows a thread of {@linkcode sumRowsPartialKernel} sums: the first pass's block of rows. */
export const SUM_ROWS_BLOCK = 64;

/**
 * Pass 1 of column sums over many rows: `partial[block, c] = Σ_{r in block} inp[r, c]`, a thread a
 * (block, column), so a tall matrix (B·T rows of bias gradients) keeps the whole GPU busy; pass 2
 * is {@linkcode sumRowsKernel} over the blocks in order. n = blocks·cols.
 */
export const sumRowsPartialKernel = memo((): Kernel => ({
  name: "sum_rows_partial",
  tensors: [["partial", "f32"], ["inp", "f32"]],
  params: [["n", "u32"], ["rows", "u32"], ["cols", "u32"]],
  sizes: ({ n, rows, cols }) => ({ partial: n, inp: rows * cols }),
  code: `${ELEMENT}
  let block = i / P.cols;
  let c = i % P.cols;
  let end = min(P.rows, (block + 1u) * ${SUM_ROWS_BLOCK}u);
  var sum = 0.0;
  for (var r = block * ${SUM_ROWS_BLOCK}u; r < end; r++) { sum += inp[P.inp + r * P.cols + c]; }
  partial[P.partial + i] = sum;
}`,
}));

/** `out[c] (+)= Σ_r inp[r, c]`, a thread a column, rows in order. */
export const sumRowsKernel = memo((): Kernel => ({
  name: "sum_rows",
  tensors: [["out", "f32"], ["inp", "f32"]],
  params: [["n", "u32"], ["rows", "u32"], ["accumulate", "u32"]],
  sizes: ({ n, rows }) => ({ out: n, inp: rows * n }),
  code: `${ELEMENT}
  var sum = 0.0;
  for (var r = 0u; r < P.rows; r++) { sum += inp[P.inp + r * P.n + i]; }
  out[P.out + i] = select(sum, out[P.out + i] + sum, P.accumulate != 0u);
}`,
}));

/** Records `out[0] = reduce(inp)`: partial sums per workgroup, then one workgroup over those. */
export function reduce(gpu: Recorder, out: Tensor, inp: Tensor, squares: boolean, finish: 0 | 1 | 2): void {
  const n = inp.length, groups = reduceGroups(n), chunk = Math.ceil(n / groups);
  const partial = gpu.scratch(groups);
  gpu.run(reducePartialKernel(), { partial, inp }, { n, chunk, squares: squares ? 1 : 0 }, [groups, 1, 1]);
  gpu.run(reduceFinalKernel(), { out, partial }, { groups, finish, divisor: n }, [1, 1, 1]);
}

/** The optimizer and reduction ops of {@linkcode Backend}, recorded through `gpu`. */
export function optimizerOps(
  gpu: Recorder,
): Pick<Backend, "adamw" | "globalNorm" | "clipScale" | "sum" | "sumRows"> {
  return {
    adamw(params, grads, m, v, o: AdamWOptions) {
      const n = params.length;
      const [decayStart, decayEnd] = o.decayRange ?? [0, n];
      runMap(gpu, adamwKernel, { params, grads, m, v }, { grad_scale: o.gradScale ?? gpu.none("f32") }, {
        n,
        lr: o.lr,
        beta1: o.beta1,
        beta2: o.beta2,
        eps: o.eps,
        weight_decay: o.weightDecay,
        c1: 1 - o.beta1 ** o.step,
        c2: 1 - o.beta2 ** o.step,
        decay_start: decayStart,
        decay_end: decayEnd,
        has_grad_scale: o.gradScale ? 1 : 0,
      });
    },
    globalNorm(out, inp) {
      reduce(gpu, out, inp, true, 2);
    },
    clipScale(out, norm, maxNorm) {
      gpu.run(clipScaleKernel(), { out, norm }, { max_norm: maxNorm }, [1, 1, 1]);
    },
    sum(out, inp, opts = {}) {
      reduce(gpu, out, inp, false, opts.mean ? 1 : 0);
    },
    sumRows(out, inp, { rows, cols, accumulate }) {
      checkTensor("sumRows", "inp", inp, rows * cols);
      checkTensor("sumRows", "out", out, cols);
      const acc = accumulate ? 1 : 0;
      if (rows <= SUM_ROWS_BLOCK) {
        return runElementwise(gpu, sumRowsKernel(), { out, inp }, { n: cols, rows, accumulate: acc });
      }
      // Two passes (blocks of rows, then the blocks in order): a fixed order, so still deterministic.
      const blocks = Math.ceil(rows / SUM_ROWS_BLOCK), partial = gpu.scratch(blocks * cols);
      runElementwise(gpu, sumRowsPartialKernel(), { partial, inp }, { n: blocks * cols, rows, cols });
      runElementwise(gpu, sumRowsKernel(), { out, inp: partial }, { n: cols, rows: blocks, accumulate: acc });
    },
  };
}
