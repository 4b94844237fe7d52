/**
 * LayerNorm forward (a workgroup a row) and backward (two passes: per block of rows, the input
 * gradient and partial weight/bias gradients; then a per-channel sum of the partials in block order,
 * deterministic where atomics would not be). Rows are read as vec4 where C and the offsets allow.
 * Kernels first, then their launchers ({@linkcode layernormOps}).
 * @module
 */
import type { Backend } from "../backend.ts";
import { type Kernel, memo, type Recorder, REDUCE, WG } from "./kernel.ts";

/** Rows a workgroup of the backward's first pass handles. */
export const LN_BACKWARD_ROWS = 32;

/**
 * Element type, columns a row in that type, and the sum of one value's lanes: rows are read as
 * vec4<f32> when C is a multiple of 4 and the row tensors' offsets are too (`vec4`), as f32 otherwise.
 */
function lanes(vec4: boolean): { T: "f32" | "vec4<f32>"; CW: string; total: (v: string) => string } {
  return vec4
    ? { T: "vec4<f32>", CW: "(P.C / 4u)", total: (v) => `dot(${v}, vec4<f32>(1.0))` }
    : { T: "f32", CW: "P.C", total: (v) => v };
}

/** `out = (x - mean)·rstd·weight + bias` per row; saves mean and rstd. */
export const layernormForwardKernel = memo((vec4: boolean): Kernel => {
  const { T, CW, total } = lanes(vec4);
  return {
    name: vec4 ? "layernorm_forward_vec4" : "layernorm_forward",
    tensors: [["out", T], ["mean", "f32"], ["rstd", "f32"], ["inp", T], ["weight", T], ["bias", T]],
    params: [["rows", "u32"], ["C", "u32"], ["eps", "f32"]],
    sizes: ({ rows, C }) => ({ out: rows * C, mean: rows, rstd: rows, inp: rows * C, weight: C, bias: C }),
    code: `${REDUCE}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = group_index(wid, nwg);
  if (row >= P.rows) { return; }
  let CW = ${CW};
  let x = P.inp + row * CW;
  var sum = ${T}(0.0);
  for (var c = lid; c < CW; c += ${WG}u) { sum += inp[x + c]; }
  let mu = reduce_sum(lid, ${total("sum")}) / f32(P.C);
  var sq = ${T}(0.0);
  for (var c = lid; c < CW; c += ${WG}u) { let d = inp[x + c] - mu; sq += d * d; }
  let rs = inverseSqrt(reduce_sum(lid, ${total("sq")}) / f32(P.C) + P.eps);
  for (var c = lid; c < CW; c += ${WG}u) {
    out[P.out + row * CW + c] = (inp[x + c] - mu) * rs * weight[P.weight + c] + bias[P.bias + c];
  }
  if (lid == 0u) { mean[P.mean + row] = mu; rstd[P.rstd + row] = rs; }
}`,
  };
});

/** Pass 1: `dinp +=` for a block of rows, and the block's sums of `dout·norm` and `dout` per channel. */
export const layernormBackwardKernel = memo((vec4: boolean): Kernel => {
  const { T, CW, total } = lanes(vec4);
  return {
    name: vec4 ? "layernorm_backward_vec4" : "layernorm_backward",
    tensors: [
      ["dinp", T],
      ["partial", T],
      ["dout", T],
      ["inp", T],
      ["weight", T],
      ["mean", "f32"],
      ["rstd", "f32"],
    ],
    params: [["rows", "u32"], ["C", "u32"]],
    sizes: ({ rows, C }) => ({
      dinp: rows * C,
      partial: Math.ceil(rows / LN_BACKWARD_ROWS) * 2 * C,
      dout: rows * C,
      inp: rows * C,
      weight: C,
      mean: rows,
      rstd: rows,
    }),
    code: `${REDUCE}
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let block = group_index(wid, nwg);
  let first = block * ${LN_BACKWARD_ROWS}u;
  if (first >= P.rows) { return; }
  let last = min(P.rows, first + ${LN_BACKWARD_ROWS}u);
  let CW = ${CW};
  for (var r = first; r < last; r++) {
    let mu = mean[P.mean + r];
    let rs = rstd[P.rstd + r];
    var a = ${T}(0.0);
    var b = ${T}(0.0);
    for (var c = lid; c < CW; c += ${WG}u) {
      let norm = (inp[P.inp + r * CW + c] - mu) * rs;
      let dnorm = weight[P.weight + c] * dout[P.dout + r * CW + c];
      a += dnorm;
      b += dnorm * norm;
    }
    let dnorm_mean = reduce_sum(lid, ${total("a")}) / f32(P.C);
    let dnorm_norm_mean = reduce_sum(lid, ${total("b")}) / f32(P.C);
    for (var c = lid; c < CW; c += ${WG}u) {
      let norm = (inp[P.inp + r * CW + c] - mu) * rs;
      let dnorm = weight[P.weight + c] * dout[P.dout + r * CW + c];
      dinp[P.dinp + r * CW + c] += (dnorm - dnorm_mean - norm * dnorm_norm_mean) * rs;
    }
  }
  for (var c = lid; c < CW; c += ${WG}u) {
    var dw = ${T}(0.0);
    var db = ${T}(0.0);
    for (var r = first; r < last; r++) {
      let d = dout[P.dout + r * CW + c];
      dw += (inp[P.inp + r * CW + c] - mean[P.mean + r]) * rstd[P.rstd + r] * d;
      db += d;
    }
    partial[P.partial + block * 2u * CW + c] = dw;
    partial[P.partial + block * 2u * CW + CW + c] = db;
  }
}`,
  };
});

/** Pass 2: `dweight[c] += Σ_blocks`, `dbias[c] += Σ_blocks`, blocks in order. */
export const layernormBackwardReduceKernel = memo((): Kernel => ({
  name: "layernorm_backward_reduce",
  tensors: [["dweight", "f32"], ["dbias", "f32"], ["partial", "f32"]],
  params: [["blocks", "u32"], ["C", "u32"]],
  sizes: ({ blocks, C }) => ({ dweight: C, dbias: C, partial: blocks * 2 * C }),
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

/** LayerNorm's ops of {@linkcode Backend}, recorded through `gpu`. */
export function layernormOps(gpu: Recorder): Pick<Backend, "layernormForward" | "layernormBackward"> {
  return {
    layernormForward(out, mean, rstd, inp, weight, bias, { rows, C, eps = 1e-5 }) {
      const vec4 = C % 4 === 0 && [out, inp, weight, bias].every((t) => t.offset % 4 === 0);
      gpu.run(
        layernormForwardKernel(vec4),
        { out, mean, rstd, inp, weight, bias },
        { rows, C, eps },
        rows,
      );
    },
    layernormBackward(dinp, dweight, dbias, dout, inp, weight, mean, rstd, { rows, C }) {
      const blocks = Math.ceil(rows / LN_BACKWARD_ROWS);
      const partial = gpu.scratch(blocks * 2 * C);
      const vec4 = C % 4 === 0 && [dinp, dout, inp, weight].every((t) => t.offset % 4 === 0);
      gpu.run(
        layernormBackwardKernel(vec4),
        { dinp, partial, dout, inp, weight, mean, rstd },
        { rows, C },
        blocks,
      );
      gpu.run(layernormBackwardReduceKernel(), { dweight, dbias, partial }, { blocks, C }, Math.ceil(C / WG));
    },
  };
}
