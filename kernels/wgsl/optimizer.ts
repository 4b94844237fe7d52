/**
 * AdamW over a flat parameter buffer, and the deterministic reductions: sum (or sum of squares) in
 * two fixed-order passes, the clip factor, and column sums.
 * @module
 */
import { memo, REDUCE, WG } from "./kernel.ts";

const ELEMENT = `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = group_index(wid, nwg) * ${WG}u + lid;
  if (i >= P.n) { return; }`;

/** AdamW, one thread a parameter; bias corrections `c1 = 1 - β1^t`, `c2 = 1 - β2^t` from the host. */
export const adamwKernel = memo(() => ({
  name: "adamw",
  tensors: [["params", "f32"], ["grads", "f32"], ["m", "f32"], ["v", "f32"], ["grad_scale", "f32"]],
  params: [
    ["n", "u32"],
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
  code: `${ELEMENT}
  let scale = select(1.0, grad_scale[P.grad_scale], P.has_grad_scale != 0u);
  let g = grads[P.grads + i] * scale;
  let m1 = P.beta1 * m[P.m + i] + (1.0 - P.beta1) * g;
  let v1 = P.beta2 * v[P.v + i] + (1.0 - P.beta2) * g * g;
  m[P.m + i] = m1;
  v[P.v + i] = v1;
  let decay = select(0.0, P.weight_decay, i >= P.decay_start && i < P.decay_end);
  let p = params[P.params + i];
  params[P.params + i] = p - P.lr * (m1 / P.c1 / (sqrt(v1 / P.c2) + P.eps) + decay * p);
}`,
}));

/** Workgroups of a reduction's first pass: a fixed function of n, so the sum order is too. */
export function reduceGroups(n: number): number {
  return Math.max(1, Math.min(1024, Math.ceil(n / (WG * 16))));
}

/** Pass 1: each workgroup sums (`squares`: the squares of) a contiguous chunk into `partial`. */
export const reducePartialKernel = memo(() => ({
  name: "reduce_partial",
  tensors: [["partial", "f32"], ["inp", "f32"]],
  params: [["n", "u32"], ["chunk", "u32"], ["squares", "u32"]],
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
export const reduceFinalKernel = memo(() => ({
  name: "reduce_final",
  tensors: [["out", "f32"], ["partial", "f32"]],
  params: [["groups", "u32"], ["finish", "u32"], ["divisor", "f32"]],
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
export const clipScaleKernel = memo(() => ({
  name: "clip_scale",
  tensors: [["out", "f32"], ["norm", "f32"]],
  params: [["max_norm", "f32"]],
  code: `
@compute @workgroup_size(1)
fn main() { out[P.out] = min(1.0, P.max_norm / (norm[P.norm] + 1e-6)); }`,
}));

/** `out[c] (+)= Σ_r inp[r, c]`, a thread a column, rows in order. */
export const sumRowsKernel = memo(() => ({
  name: "sum_rows",
  tensors: [["out", "f32"], ["inp", "f32"]],
  params: [["n", "u32"], ["rows", "u32"], ["accumulate", "u32"]],
  code: `${ELEMENT}
  var sum = 0.0;
  for (var r = 0u; r < P.rows; r++) { sum += inp[P.inp + r * P.n + i]; }
  out[P.out + i] = select(sum, out[P.out + i] + sum, P.accumulate != 0u);
}`,
}));
