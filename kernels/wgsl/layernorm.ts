/**
 * LayerNorm forward (a workgroup a row) and backward (two passes: per block of rows, the input
 * gradient and partial weight/bias gradients; then a per-channel sum of the partials in block order,
 * deterministic where atomics would not be).
 * @module
 */
import { memo, REDUCE, WG } from "./kernel.ts";

/** Rows a workgroup of the backward's first pass handles. */
export const LN_BACKWARD_ROWS = 32;

/** `out = (x - mean)·rstd·weight + bias` per row; saves mean and rstd. */
export const layernormForwardKernel = memo(() => ({
  name: "layernorm_forward",
  tensors: [["out", "f32"], ["mean", "f32"], ["rstd", "f32"], ["inp", "f32"], ["weight", "f32"], [
    "bias",
    "f32",
  ]],
  params: [["rows", "u32"], ["C", "u32"], ["eps", "f32"]],
  code: `${REDUCE}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = group_index(wid, nwg);
  if (row >= P.rows) { return; }
  let x = P.inp + row * P.C;
  var sum = 0.0;
  for (var c = lid; c < P.C; c += ${WG}u) { sum += inp[x + c]; }
  let mu = reduce_sum(lid, sum) / f32(P.C);
  var sq = 0.0;
  for (var c = lid; c < P.C; c += ${WG}u) { let d = inp[x + c] - mu; sq += d * d; }
  let rs = inverseSqrt(reduce_sum(lid, sq) / f32(P.C) + P.eps);
  for (var c = lid; c < P.C; c += ${WG}u) {
    out[P.out + row * P.C + c] = (inp[x + c] - mu) * rs * weight[P.weight + c] + bias[P.bias + c];
  }
  if (lid == 0u) { mean[P.mean + row] = mu; rstd[P.rstd + row] = rs; }
}`,
}));

/** Pass 1: `dinp +=` for a block of rows, and the block's sums of `dout·norm` and `dout` per channel. */
export const layernormBackwardKernel = memo(() => ({
  name: "layernorm_backward",
  tensors: [
    ["dinp", "f32"],
    ["partial", "f32"],
    ["dout", "f32"],
    ["inp", "f32"],
    ["weight", "f32"],
    ["mean", "f32"],
    ["rstd", "f32"],
  ],
  params: [["rows", "u32"], ["C", "u32"]],
  code: `${REDUCE}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let block = group_index(wid, nwg);
  let first = block * ${LN_BACKWARD_ROWS}u;
  if (first >= P.rows) { return; }
  let last = min(P.rows, first + ${LN_BACKWARD_ROWS}u);
  for (var r = first; r < last; r++) {
    let mu = mean[P.mean + r];
    let rs = rstd[P.rstd + r];
    var a = 0.0;
    var b = 0.0;
    for (var c = lid; c < P.C; c += ${WG}u) {
      let norm = (inp[P.inp + r * P.C + c] - mu) * rs;
      let dnorm = weight[P.weight + c] * dout[P.dout + r * P.C + c];
      a += dnorm;
      b += dnorm * norm;
    }
    let dnorm_mean = reduce_sum(lid, a) / f32(P.C);
    let dnorm_norm_mean = reduce_sum(lid, b) / f32(P.C);
    for (var c = lid; c < P.C; c += ${WG}u) {
      let norm = (inp[P.inp + r * P.C + c] - mu) * rs;
      let dnorm = weight[P.weight + c] * dout[P.dout + r * P.C + c];
      dinp[P.dinp + r * P.C + c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rs;
    }
  }
  for (var c = lid; c < P.C; c += ${WG}u) {
    var dw = 0.0;
    var db = 0.0;
    for (var r = first; r < last; r++) {
      let d = dout[P.dout + r * P.C + c];
      dw += (inp[P.inp + r * P.C + c] - mean[P.mean + r]) * rstd[P.rstd + r] * d;
      db += d;
    }
    partial[P.partial + block * 2u * P.C + c] = dw;
    partial[P.partial + block * 2u * P.C + P.C + c] = db;
  }
}`,
}));

/** Pass 2: `dweight[c] += Σ_blocks`, `dbias[c] += Σ_blocks`, blocks in order. */
export const layernormBackwardReduceKernel = memo(() => ({
  name: "layernorm_backward_reduce",
  tensors: [["dweight", "f32"], ["dbias", "f32"], ["partial", "f32"]],
  params: [["blocks", "u32"], ["C", "u32"]],
  code: `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let c = group_index(wid, nwg) * ${WG}u + lid;
  if (c >= P.C) { return; }
  var dw = 0.0;
  var db = 0.0;
  for (var block = 0u; block < P.blocks; block++) {
    dw += partial[P.partial + block * 2u * P.C + c];
    db += partial[P.partial + block * 2u * P.C + P.C + c];
  }
  dweight[P.dweight + c] += dw;
  dbias[P.dbias + c] += db;
}`,
}));
