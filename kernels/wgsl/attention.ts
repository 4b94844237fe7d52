/**
 * Causal multi-head self-attention over a fused `qkv [B, T, 3C]` buffer, flash style: no T×T
 * matrix. A thread owns one query row (forward, dQ) or one key row (dK, dV) and keeps its head
 * vectors in registers; the workgroup stages tiles of the other side in workgroup memory.
 *
 * Forward: online softmax over key tiles (the running max and sum are rescaled once a tile), saving
 * the row's logsumexp. Backward: D = rowsum(dout·out), then one kernel for dQ (loop over keys) and
 * one for dK and dV (loop over queries), each a plain ordered sum: deterministic, no atomics.
 *
 * Segment ids (optional, u32 `[B, T]`) restrict attention to positions of the same segment, so
 * packed examples do not see each other.
 *
 * Generation: single-query decode against a key/value cache, optionally appending each sequence's
 * new q/k/v row to its cache first.
 *
 * Kernels first, then their launchers and shape checks ({@linkcode attentionOps}).
 * @module
 */
import {
  type AttentionOptions,
  type Backend,
  checkAttentionDecode,
  checkTensor,
  type Tensor,
} from "../backend.ts";
import { memo, type Recorder } from "./kernel.ts";

/** Query (or key) rows a workgroup owns: one a thread. */
export const ATTN_ROWS = 64;

/** Rows of the other side staged a tile: two tiles of `tile·HS` floats stay within 16 KiB. */
function tileRows(hs: number): number {
  return Math.max(1, Math.min(32, Math.floor(2048 / hs)));
}

const NEG = "-3.0e38"; // below every real score: the "no key yet" running max

const PARAMS: Array<[string, "u32" | "f32"]> = [
  ["T", "u32"],
  ["C", "u32"],
  ["NH", "u32"],
  ["scale", "f32"],
  ["has_segments", "u32"],
];

const HEADER = (hs: number) => `
const HS = ${hs}u;
const ROWS = ${ATTN_ROWS}u;
const TILE = ${tileRows(hs)}u;
fn segment(b: u32, t: u32) -> u32 {
  if (P.has_segments == 0u) { return 0u; }
  return segments[P.segments + b * P.T + t];
}
// Element offset of row t of sequence b in qkv, plus which (0 q, 1 k, 2 v) and head h.
fn qkv_at(b: u32, t: u32, which: u32, h: u32) -> u32 {
  return (b * P.T + t) * 3u * P.C + which * P.C + h * HS;
}`;

/** Forward: `out [B, T, C]` and `lse [B, NH, T]`. */
export const attentionForwardKernel = memo((hs: number) => ({
  name: `attention_forward_${hs}`,
  tensors: [["out", "f32"], ["lse", "f32"], ["qkv", "f32"], ["segments", "u32"]],
  params: PARAMS,
  code: `${HEADER(hs)}
var<workgroup> Ks: array<f32, ${tileRows(hs) * hs}>;
var<workgroup> Vs: array<f32, ${tileRows(hs) * hs}>;
var<workgroup> Ss: array<u32, ${tileRows(hs)}>;

@compute @workgroup_size(${ATTN_ROWS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / P.NH;
  let h = wid.y % P.NH;
  let t = wid.x * ROWS + lid;
  let valid = t < P.T;
  var q: array<f32, HS>;
  var o: array<f32, HS>;
  var seg = 0u;
  if (valid) {
    for (var i = 0u; i < HS; i++) { q[i] = qkv[P.qkv + qkv_at(b, t, 0u, h) + i] * P.scale; }
    seg = segment(b, t);
  }
  var m = ${NEG};
  var l = 0.0;
  let keys_end = min(P.T, wid.x * ROWS + ROWS); // causal: no key after the tile's last query
  for (var s0 = 0u; s0 < keys_end; s0 += TILE) {
    for (var idx = lid; idx < TILE * HS; idx += ROWS) {
      let s = s0 + idx / HS;
      var k = 0.0;
      var v = 0.0;
      if (s < P.T) {
        k = qkv[P.qkv + qkv_at(b, s, 1u, h) + idx % HS];
        v = qkv[P.qkv + qkv_at(b, s, 2u, h) + idx % HS];
      }
      Ks[idx] = k;
      Vs[idx] = v;
    }
    for (var j = lid; j < TILE; j += ROWS) { Ss[j] = select(0u, segment(b, s0 + j), s0 + j < P.T); }
    workgroupBarrier();
    if (valid) {
      var scores: array<f32, TILE>;
      var tile_max = ${NEG};
      for (var j = 0u; j < TILE; j++) {
        scores[j] = ${NEG};
        let s = s0 + j;
        if (s <= t && Ss[j] == seg) {
          var dot = 0.0;
          for (var i = 0u; i < HS; i++) { dot += q[i] * Ks[j * HS + i]; }
          scores[j] = dot;
          tile_max = max(tile_max, dot);
        }
      }
      if (tile_max > ${NEG}) {
        let m_new = max(m, tile_max);
        let correction = exp(m - m_new);
        l *= correction;
        for (var i = 0u; i < HS; i++) { o[i] *= correction; }
        for (var j = 0u; j < TILE; j++) {
          if (scores[j] > ${NEG}) {
            let p = exp(scores[j] - m_new);
            l += p;
            for (var i = 0u; i < HS; i++) { o[i] += p * Vs[j * HS + i]; }
          }
        }
        m = m_new;
      }
    }
    workgroupBarrier();
  }
  if (valid) {
    for (var i = 0u; i < HS; i++) { out[P.out + (b * P.T + t) * P.C + h * HS + i] = o[i] / l; }
    lse[P.lse + wid.y * P.T + t] = m + log(l);
  }
}`,
}));

/** Backward, first: `D[b, h, t] = Σ_i dout·out`, the softmax backward's per-row term. */
export const attentionRowDotKernel = memo((hs: number) => ({
  name: `attention_row_dot_${hs}`,
  tensors: [["D", "f32"], ["dout", "f32"], ["out", "f32"]],
  params: [["rows", "u32"], ["T", "u32"], ["C", "u32"], ["NH", "u32"]],
  code: `
@compute @workgroup_size(${ATTN_ROWS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let row = group_index(wid, nwg) * ${ATTN_ROWS}u + lid; // (b·NH + h)·T + t
  if (row >= P.rows) { return; }
  let t = row % P.T;
  let bh = row / P.T;
  let at = ((bh / P.NH) * P.T + t) * P.C + (bh % P.NH) * ${hs}u;
  var sum = 0.0;
  for (var i = 0u; i < ${hs}u; i++) { sum += dout[P.dout + at + i] * out[P.out + at + i]; }
  D[P.D + row] = sum;
}`,
}));

const BACKWARD_TENSORS: Array<[string, "f32" | "u32"]> = [
  ["dqkv", "f32"],
  ["dout", "f32"],
  ["qkv", "f32"],
  ["lse", "f32"],
  ["D", "f32"],
  ["segments", "u32"],
];

/** Backward, dQ: a thread a query row, looping over key tiles. */
export const attentionBackwardQueryKernel = memo((hs: number) => ({
  name: `attention_backward_query_${hs}`,
  tensors: BACKWARD_TENSORS,
  params: PARAMS,
  code: `${HEADER(hs)}
var<workgroup> Ks: array<f32, ${tileRows(hs) * hs}>;
var<workgroup> Vs: array<f32, ${tileRows(hs) * hs}>;
var<workgroup> Ss: array<u32, ${tileRows(hs)}>;

@compute @workgroup_size(${ATTN_ROWS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / P.NH;
  let h = wid.y % P.NH;
  let t = wid.x * ROWS + lid;
  let valid = t < P.T;
  var q: array<f32, HS>;
  var d: array<f32, HS>;
  var dq: array<f32, HS>;
  var seg = 0u;
  var lse_t = 0.0;
  var D_t = 0.0;
  if (valid) {
    for (var i = 0u; i < HS; i++) {
      q[i] = qkv[P.qkv + qkv_at(b, t, 0u, h) + i] * P.scale;
      d[i] = dout[P.dout + (b * P.T + t) * P.C + h * HS + i];
    }
    seg = segment(b, t);
    lse_t = lse[P.lse + wid.y * P.T + t];
    D_t = D[P.D + wid.y * P.T + t];
  }
  let keys_end = min(P.T, wid.x * ROWS + ROWS);
  for (var s0 = 0u; s0 < keys_end; s0 += TILE) {
    for (var idx = lid; idx < TILE * HS; idx += ROWS) {
      let s = s0 + idx / HS;
      var k = 0.0;
      var v = 0.0;
      if (s < P.T) {
        k = qkv[P.qkv + qkv_at(b, s, 1u, h) + idx % HS];
        v = qkv[P.qkv + qkv_at(b, s, 2u, h) + idx % HS];
      }
      Ks[idx] = k;
      Vs[idx] = v;
    }
    for (var j = lid; j < TILE; j += ROWS) { Ss[j] = select(0u, segment(b, s0 + j), s0 + j < P.T); }
    workgroupBarrier();
    if (valid) {
      for (var j = 0u; j < TILE; j++) {
        if (s0 + j <= t && Ss[j] == seg) {
          var score = 0.0;
          var dp = 0.0;
          for (var i = 0u; i < HS; i++) {
            score += q[i] * Ks[j * HS + i];
            dp += d[i] * Vs[j * HS + i];
          }
          let ds = exp(score - lse_t) * (dp - D_t);
          for (var i = 0u; i < HS; i++) { dq[i] += ds * Ks[j * HS + i]; }
        }
      }
    }
    workgroupBarrier();
  }
  if (valid) {
    for (var i = 0u; i < HS; i++) { dqkv[P.dqkv + qkv_at(b, t, 0u, h) + i] = dq[i] * P.scale; }
  }
}`,
}));

/** Backward, dK and dV: a thread a key row, looping over the tiles of queries at or after it. */
export const attentionBackwardKeyKernel = memo((hs: number) => ({
  name: `attention_backward_key_${hs}`,
  tensors: BACKWARD_TENSORS,
  params: PARAMS,
  code: `${HEADER(hs)}
var<workgroup> Qs: array<f32, ${tileRows(hs) * hs}>;
var<workgroup> Ds: array<f32, ${tileRows(hs) * hs}>;
var<workgroup> Ss: array<u32, ${tileRows(hs)}>;
var<workgroup> Ls: array<f32, ${tileRows(hs)}>;
var<workgroup> Rs: array<f32, ${tileRows(hs)}>;

@compute @workgroup_size(${ATTN_ROWS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let b = wid.y / P.NH;
  let h = wid.y % P.NH;
  let s = wid.x * ROWS + lid;
  let valid = s < P.T;
  var k: array<f32, HS>;
  var v: array<f32, HS>;
  var dk: array<f32, HS>;
  var dv: array<f32, HS>;
  var seg = 0u;
  if (valid) {
    for (var i = 0u; i < HS; i++) {
      k[i] = qkv[P.qkv + qkv_at(b, s, 1u, h) + i];
      v[i] = qkv[P.qkv + qkv_at(b, s, 2u, h) + i];
    }
    seg = segment(b, s);
  }
  for (var t0 = wid.x * ROWS; t0 < P.T; t0 += TILE) { // causal: no query before the tile's first key
    for (var idx = lid; idx < TILE * HS; idx += ROWS) {
      let t = t0 + idx / HS;
      var q = 0.0;
      var d = 0.0;
      if (t < P.T) {
        q = qkv[P.qkv + qkv_at(b, t, 0u, h) + idx % HS] * P.scale;
        d = dout[P.dout + (b * P.T + t) * P.C + h * HS + idx % HS];
      }
      Qs[idx] = q;
      Ds[idx] = d;
    }
    for (var j = lid; j < TILE; j += ROWS) {
      let t = t0 + j;
      let inside = t < P.T;
      Ss[j] = select(0u, segment(b, t), inside);
      Ls[j] = select(0.0, lse[P.lse + wid.y * P.T + t], inside);
      Rs[j] = select(0.0, D[P.D + wid.y * P.T + t], inside);
    }
    workgroupBarrier();
    if (valid) {
      for (var j = 0u; j < TILE; j++) {
        let t = t0 + j;
        if (t >= s && t < P.T && Ss[j] == seg) {
          var score = 0.0;
          var dp = 0.0;
          for (var i = 0u; i < HS; i++) {
            score += Qs[j * HS + i] * k[i];
            dp += Ds[j * HS + i] * v[i];
          }
          let p = exp(score - Ls[j]);
          let ds = p * (dp - Rs[j]);
          for (var i = 0u; i < HS; i++) {
            dv[i] += p * Ds[j * HS + i];
            dk[i] += ds * Qs[j * HS + i];
          }
        }
      }
    }
    workgroupBarrier();
  }
  if (valid) {
    for (var i = 0u; i < HS; i++) {
      dqkv[P.dqkv + qkv_at(b, s, 1u, h) + i] = dk[i];
      dqkv[P.dqkv + qkv_at(b, s, 2u, h) + i] = dv[i];
    }
  }
}`,
}));

/** Threads of a decode workgroup (one workgroup per sequence and head). */
export const DECODE_THREADS = 64;

/**
 * Decode: single-query attention against a `qkv [B, Tmax, 3C]` cache into `out [B, C]`; the query
 * is position `T - 1`, or `lengths[b] - 1` per sequence (clamped to 1..T), where `append`'s row is
 * stored first (each workgroup its head's slices). One workgroup per (sequence, head) on a `[NH, B]` grid. Keys come in chunks
 * of {@linkcode DECODE_THREADS}: each thread scores one key into workgroup memory, then every
 * thread runs the same ordered online softmax over the chunk (so all agree on the running max and
 * sum) and accumulates the value dimensions it owns. Plain ordered sums: deterministic, no atomics.
 */
export const attentionDecodeKernel = memo((hs: number) => ({
  name: `attention_decode_${hs}`,
  tensors: [["out", "f32"], ["qkv", "f32"], ["lengths", "u32"], ["append", "f32"]],
  params: [
    ["T", "u32"],
    ["Tmax", "u32"],
    ["C", "u32"],
    ["scale", "f32"],
    ["hasLengths", "u32"],
    ["hasAppend", "u32"],
  ],
  code: `
const HS = ${hs}u;
const WGS = ${DECODE_THREADS}u;
const PER = ${Math.ceil(hs / DECODE_THREADS)}u; // value dimensions a thread owns
var<workgroup> qs: array<f32, HS>;
var<workgroup> sc: array<f32, WGS>;
var<workgroup> row_length: u32;

@compute @workgroup_size(${DECODE_THREADS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let b = wid.y;
  let C3 = 3u * P.C;
  if (lid == 0u) {
    row_length = P.T;
    if (P.hasLengths != 0u) { row_length = clamp(lengths[P.lengths + b], 1u, P.T); }
  }
  // A storage read is not uniform to WGSL; the chunk loop below has barriers, so its bound must be.
  let T = workgroupUniformLoad(&row_length);
  let base = P.qkv + b * P.Tmax * C3 + h * HS; // position 0, q of head h
  if (P.hasAppend != 0u) {
    // This workgroup's head slices of the new row; only this workgroup reads them (after the barrier).
    for (var i = lid; i < 3u * HS; i += WGS) {
      let at = (i / HS) * P.C + i % HS;
      qkv[base + (T - 1u) * C3 + at] = append[P.append + b * C3 + h * HS + at];
    }
    storageBarrier();
  }
  for (var i = lid; i < HS; i += WGS) { qs[i] = qkv[base + (T - 1u) * C3 + i] * P.scale; }
  workgroupBarrier();
  var m = ${NEG};
  var l = 0.0;
  var o: array<f32, PER>;
  for (var s0 = 0u; s0 < T; s0 += WGS) {
    let s = s0 + lid;
    var score = ${NEG};
    if (s < T) {
      let ko = base + s * C3 + P.C;
      var dot = 0.0;
      for (var i = 0u; i < HS; i++) { dot += qs[i] * qkv[ko + i]; }
      score = dot;
    }
    sc[lid] = score;
    workgroupBarrier();
    let n = min(WGS, T - s0);
    var chunk_max = ${NEG};
    for (var j = 0u; j < n; j++) { chunk_max = max(chunk_max, sc[j]); }
    let m_new = max(m, chunk_max);
    let correction = exp(m - m_new);
    l *= correction;
    for (var k = 0u; k < PER; k++) { o[k] *= correction; }
    for (var j = 0u; j < n; j++) {
      let p = exp(sc[j] - m_new);
      l += p;
      let vo = base + (s0 + j) * C3 + 2u * P.C;
      for (var k = 0u; k < PER; k++) {
        let i = lid + k * WGS;
        if (i < HS) { o[k] += p * qkv[vo + i]; }
      }
    }
    m = m_new;
    workgroupBarrier();
  }
  for (var k = 0u; k < PER; k++) {
    let i = lid + k * WGS;
    if (i < HS) { out[P.out + b * P.C + h * HS + i] = o[k] / l; }
  }
}`,
}));

/** Workgroups a grid dimension holds. */
const MAX_GROUPS = 65535;

/** Checks the tensors of a training-time attention op; returns the head size. */
function checkAttention(
  op: string,
  { B, T, C, NH, segments }: AttentionOptions,
  tensors: Record<string, [Tensor, number]>,
): number {
  const hs = C / NH;
  if (!Number.isInteger(hs)) throw new Error(`attention: C (${C}) must be a multiple of NH (${NH})`);
  for (const [name, [t, need]] of Object.entries(tensors)) checkTensor(op, name, t, need);
  if (segments) checkTensor(op, "segments", segments, B * T, "u32");
  return hs;
}

/** Attention's ops of {@linkcode Backend}, recorded through `gpu`. */
export function attentionOps(
  gpu: Recorder,
): Pick<Backend, "attentionForward" | "attentionDecode" | "attentionBackward"> {
  return {
    attentionForward(out, lse, qkv, opts) {
      const { B, T, C, NH } = opts;
      const hs = checkAttention("attentionForward", opts, {
        out: [out, B * T * C],
        lse: [lse, B * NH * T],
        qkv: [qkv, B * T * 3 * C],
      });
      gpu.run(
        attentionForwardKernel(hs),
        { out, lse, qkv, segments: opts.segments ?? gpu.none("u32") },
        { T, C, NH, scale: 1 / Math.sqrt(hs), has_segments: opts.segments ? 1 : 0 },
        [Math.ceil(T / ATTN_ROWS), B * NH, 1],
      );
    },
    attentionDecode(out, qkv, opts) {
      const hs = checkAttentionDecode(out, qkv, opts);
      const { C, NH, T } = opts, B = opts.B ?? 1;
      if (NH > MAX_GROUPS || B > MAX_GROUPS) {
        throw new Error(`attentionDecode: B (${B}) and NH (${NH}) must be at most ${MAX_GROUPS}`);
      }
      const { lengths, append } = opts;
      gpu.run(
        attentionDecodeKernel(hs),
        { out, qkv, lengths: lengths ?? gpu.none("u32"), append: append ?? gpu.none("f32") },
        {
          T,
          Tmax: opts.Tmax ?? T,
          C,
          scale: 1 / Math.sqrt(hs),
          hasLengths: lengths ? 1 : 0,
          hasAppend: append ? 1 : 0,
        },
        [NH, B, 1],
      );
    },
    attentionBackward(dqkv, dout, qkv, out, lse, opts) {
      const { B, T, C, NH } = opts;
      const hs = checkAttention("attentionBackward", opts, {
        dqkv: [dqkv, B * T * 3 * C],
        dout: [dout, B * T * C],
        qkv: [qkv, B * T * 3 * C],
        out: [out, B * T * C],
        lse: [lse, B * NH * T],
      });
      const D = gpu.scratch(B * NH * T);
      gpu.run(
        attentionRowDotKernel(hs),
        { D, dout, out },
        { rows: B * NH * T, T, C, NH },
        Math.ceil(B * NH * T / ATTN_ROWS),
      );
      const tensors = { dqkv, dout, qkv, lse, D, segments: opts.segments ?? gpu.none("u32") };
      const params = { T, C, NH, scale: 1 / Math.sqrt(hs), has_segments: opts.segments ? 1 : 0 };
      const groups: [number, number, number] = [Math.ceil(T / ATTN_ROWS), B * NH, 1];
      gpu.run(attentionBackwardQueryKernel(hs), tensors, params, groups);
      gpu.run(attentionBackwardKeyKernel(hs), tensors, params, groups);
    },
  };
}
