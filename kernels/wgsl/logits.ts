/**
 * Kernels over logits rows, a workgroup a row: softmax fused with cross-entropy (losses and dlogits
 * in place), sampling (temperature, top-k, top-p, counter-based RNG), argmax, log-softmax gather and
 * entropy. Kernels first, then their launchers and shape checks ({@linkcode logitsOps}).
 * @module
 */
import {
  type Backend,
  checkEntropy,
  checkTensor,
  type CrossEntropyOptions,
  type SampleOptions,
} from "../backend.ts";
import { type Kernel, memo, type Params, type Recorder, REDUCE, WG } from "./kernel.ts";
import { reduce } from "./optimizer.ts";

/** Elements `rows` logits rows of `V` values, `Vp` apart, span. */
const rowsSpan = ({ rows, V, Vp }: Params) => rows > 0 ? (rows - 1) * Vp + V : 0;

const ROW_MAIN = `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let r = group_index(wid, nwg);
  if (r >= P.rows) { return; }
  let row = P.logits + r * P.Vp;`;

/**
 * The max and the sum of exp(x - max) of a row's first V logits divided by `temperature`, in one
 * read of the row: each thread keeps an online max and a sum rescaled when the max grows, then the
 * workgroup combines them (a fixed tree: deterministic). Returns (max, sum); every thread must call it.
 */
const SOFTMAX_STATS = `
fn softmax_stats(lid: u32, row: u32, temperature: f32) -> vec2<f32> {
  var m = -3.0e38;
  var s = 0.0;
  for (var i = lid; i < P.V; i += ${WG}u) {
    let x = logits[row + i] / temperature;
    if (x > m) { s = s * exp(m - x) + 1.0; m = x; } else { s += exp(x - m); }
  }
  let row_max = reduce_max(lid, m);
  return vec2<f32>(row_max, reduce_sum(lid, s * exp(m - row_max)));
}`;

/**
 * Cross-entropy: `losses[r] = w·(lse - x[target])`, `logits ← (softmax - onehot)·w·scale`, where
 * scale is `grad_scale / norm[0]` when `norm_from_tensor` (the mask's sum, computed on the device)
 * or `grad_scale / norm_value`.
 */
export const crossEntropyKernel = memo((): Kernel => ({
  name: "cross_entropy",
  tensors: [["losses", "f32"], ["logits", "f32"], ["targets", "u32"], ["mask", "f32"], ["norm", "f32"]],
  params: [
    ["rows", "u32"],
    ["V", "u32"],
    ["Vp", "u32"],
    ["has_mask", "u32"],
    ["norm_from_tensor", "u32"],
    ["norm_value", "f32"],
    ["grad_scale", "f32"],
  ],
  sizes: (p) => ({
    losses: p.rows,
    logits: rowsSpan(p),
    targets: p.rows,
    mask: p.has_mask ? p.rows : 0,
  }),
  code: `${REDUCE}${SOFTMAX_STATS}${ROW_MAIN}
  let stats = softmax_stats(lid, row, 1.0);
  let mx = stats.x;
  let sum = stats.y;
  let target_token = targets[P.targets + r];
  let weight = select(1.0, mask[P.mask + r], P.has_mask != 0u);
  let norm = select(P.norm_value, norm[P.norm], P.norm_from_tensor != 0u);
  let scale = select(0.0, P.grad_scale / norm, norm != 0.0) * weight;
  if (lid == 0u) { losses[P.losses + r] = weight * (mx + log(sum) - logits[row + target_token]); }
  workgroupBarrier(); // everyone has read logits[target] before it is overwritten
  for (var i = lid; i < P.Vp; i += ${WG}u) {
    var g = 0.0;
    if (i < P.V) { g = (exp(logits[row + i] - mx) / sum - select(0.0, 1.0, i == target_token)) * scale; }
    logits[row + i] = g;
  }
}`,
}));

/** Greedy decoding: the first index of the row's maximum. */
export const argmaxKernel = memo((): Kernel => ({
  name: "argmax",
  tensors: [["tokens", "u32"], ["logits", "f32"]],
  params: [["rows", "u32"], ["V", "u32"], ["Vp", "u32"]],
  sizes: (p) => ({ tokens: p.rows, logits: rowsSpan(p) }),
  code: `
var<workgroup> best_value: array<f32, ${WG}>;
var<workgroup> best_index: array<u32, ${WG}>;${ROW_MAIN}
  var value = -3.4e38;
  var index = 0xffffffffu;
  for (var i = lid; i < P.V; i += ${WG}u) {
    if (logits[row + i] > value) { value = logits[row + i]; index = i; }
  }
  best_value[lid] = value;
  best_index[lid] = index;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride >>= 1u) {
    if (lid < stride) {
      let v = best_value[lid + stride];
      let j = best_index[lid + stride];
      if (v > best_value[lid] || (v == best_value[lid] && j < best_index[lid])) {
        best_value[lid] = v;
        best_index[lid] = j;
      }
    }
    workgroupBarrier();
  }
  if (lid == 0u) { tokens[P.tokens + r] = best_index[0]; }
}`,
}));

/** `out[r] = x[token]/T - logsumexp(x/T)`. */
export const logSoftmaxGatherKernel = memo((): Kernel => ({
  name: "log_softmax_gather",
  tensors: [["out", "f32"], ["logits", "f32"], ["tokens", "u32"]],
  params: [["rows", "u32"], ["V", "u32"], ["Vp", "u32"], ["temperature", "f32"]],
  sizes: (p) => ({ out: p.rows, logits: rowsSpan(p), tokens: p.rows }),
  code: `${REDUCE}${SOFTMAX_STATS}${ROW_MAIN}
  let stats = softmax_stats(lid, row, P.temperature);
  if (lid == 0u) {
    out[P.out + r] = logits[row + tokens[P.tokens + r]] / P.temperature - stats.x - log(stats.y);
  }
}`,
}));

/**
 * Entropy of softmax(x / temperature): with z = x / temperature, m = max z, e = exp(z - m),
 * `H = log Σe - Σ e·(z - m) / Σe` (every term ≤ 0 before the division, so no overflow or cancellation
 * of large values). One read of the row: each thread keeps an online max with both sums rescaled
 * when it grows (`Σe` by c = exp(m - m'), `Σe·(z - m)` to c·(it + (m - m')·Σe)), then the workgroup
 * combines them the same way.
 */
export const entropyKernel = memo((): Kernel => ({
  name: "entropy",
  tensors: [["out", "f32"], ["logits", "f32"]],
  params: [["rows", "u32"], ["V", "u32"], ["Vp", "u32"], ["temperature", "f32"]],
  sizes: (p) => ({ out: p.rows, logits: rowsSpan(p) }),
  code: `${REDUCE}${ROW_MAIN}
  var m = -3.0e38;
  var sum = 0.0;
  var weighted = 0.0;
  for (var i = lid; i < P.V; i += ${WG}u) {
    let z = logits[row + i] / P.temperature;
    if (z > m) {
      let c = exp(m - z);
      weighted = c * (weighted + (m - z) * sum);
      sum = c * sum + 1.0;
      m = z;
    } else {
      let e = exp(z - m);
      sum += e;
      weighted += e * (z - m);
    }
  }
  let row_max = reduce_max(lid, m);
  let c = exp(m - row_max);
  let total = reduce_sum(lid, c * sum);
  let total_weighted = reduce_sum(lid, c * (weighted + (m - row_max) * sum));
  if (lid == 0u) { out[P.out + r] = log(total) - total_weighted / total; }
}`,
}));

/**
 * Sampling. Thresholds are found exactly by bisection over the bits of an order-preserving u32 key
 * of the scaled logits (32 counting passes each), so no sort is needed: top-k keeps keys ≥ the
 * k-th largest; top-p keeps keys ≥ the largest threshold whose kept mass reaches p of the top-k mass.
 * The draw u (a PCG hash of seed, row and step) then picks the first kept index whose running
 * probability mass exceeds u: each thread sums a contiguous chunk, the chunk sums are scanned, and
 * the thread whose chunk holds u walks it.
 */
export const sampleKernel = memo((): Kernel => ({
  name: "sample",
  tensors: [["tokens", "u32"], ["logits", "f32"]],
  params: [
    ["rows", "u32"],
    ["V", "u32"],
    ["Vp", "u32"],
    ["temperature", "f32"],
    ["top_k", "u32"],
    ["top_p", "f32"],
    ["seed", "u32"],
    ["step", "u32"],
  ],
  sizes: (p) => ({ tokens: p.rows, logits: rowsSpan(p) }),
  code: `${REDUCE}
var<workgroup> chunk_start: array<f32, ${WG + 1}>;
var<workgroup> chosen: atomic<u32>;

fn pcg_hash(x: u32) -> u32 {
  let state = x * 747796405u + 2891336453u;
  let word = ((state >> ((state >> 28u) + 4u)) ^ state) * 277803737u;
  return (word >> 22u) ^ word;
}
// Order-preserving key of a float: larger floats get larger keys.
fn key_of(x: f32) -> u32 {
  let bits = bitcast<u32>(x);
  return select(bits | 0x80000000u, ~bits, (bits & 0x80000000u) != 0u);
}
fn scaled(row: u32, i: u32) -> f32 { return logits[row + i] / P.temperature; }
// Probability mass (unnormalised, relative to the max) of the logits whose key is ≥ threshold.
fn mass_above(lid: u32, row: u32, mx: f32, threshold: u32) -> f32 {
  var sum = 0.0;
  for (var i = lid; i < P.V; i += ${WG}u) {
    let x = scaled(row, i);
    if (key_of(x) >= threshold) { sum += exp(x - mx); }
  }
  return reduce_sum(lid, sum);
}
${ROW_MAIN}
  var mx = -3.4e38;
  for (var i = lid; i < P.V; i += ${WG}u) { mx = max(mx, scaled(row, i)); }
  mx = reduce_max(lid, mx);

  var threshold = 0u;
  if (P.top_k > 0u && P.top_k < P.V) {
    for (var bit = 31; bit >= 0; bit--) {
      let candidate = threshold | (1u << u32(bit));
      var count = 0.0;
      for (var i = lid; i < P.V; i += ${WG}u) { count += select(0.0, 1.0, key_of(scaled(row, i)) >= candidate); }
      if (reduce_sum(lid, count) >= f32(P.top_k)) { threshold = candidate; }
    }
  }
  if (P.top_p < 1.0) {
    let wanted = P.top_p * mass_above(lid, row, mx, threshold);
    var nucleus = 0u;
    for (var bit = 31; bit >= 0; bit--) {
      let candidate = nucleus | (1u << u32(bit));
      if (mass_above(lid, row, mx, max(candidate, threshold)) >= wanted) { nucleus = candidate; }
    }
    threshold = max(threshold, nucleus);
  }

  // Each thread's contiguous chunk of indices, its kept mass, and an exclusive scan of those.
  let chunk = (P.V + ${WG - 1}u) / ${WG}u;
  let begin = min(P.V, lid * chunk);
  let end = min(P.V, begin + chunk);
  var own = 0.0;
  for (var i = begin; i < end; i++) {
    let x = scaled(row, i);
    if (key_of(x) >= threshold) { own += exp(x - mx); }
  }
  chunk_start[lid + 1u] = own;
  if (lid == 0u) { chunk_start[0] = 0.0; atomicStore(&chosen, 0xffffffffu); }
  workgroupBarrier();
  if (lid == 0u) { for (var j = 1u; j <= ${WG}u; j++) { chunk_start[j] += chunk_start[j - 1u]; } }
  workgroupBarrier();
  let draw = f32(pcg_hash(pcg_hash(pcg_hash(P.seed) ^ r) ^ P.step) >> 8u) / 16777216.0;
  let u = draw * chunk_start[${WG}u];
  if (own > 0.0 && u >= chunk_start[lid] && u < chunk_start[lid + 1u]) {
    var cumulative = chunk_start[lid];
    var pick = 0u;
    for (var i = begin; i < end; i++) {
      let x = scaled(row, i);
      if (key_of(x) >= threshold) {
        cumulative += exp(x - mx);
        pick = i;
        if (cumulative > u) { break; }
      }
    }
    atomicStore(&chosen, pick);
  }
  workgroupBarrier();
  // Rounding can leave u at the very top of the range: then the last kept index is the pick.
  if (lid == 0u) {
    var pick = atomicLoad(&chosen);
    if (pick == 0xffffffffu) {
      for (var i = P.V; i > 0u; i--) {
        if (key_of(scaled(row, i - 1u)) >= threshold) { pick = i - 1u; break; }
      }
    }
    tokens[P.tokens + r] = pick;
  }
}`,
}));

/** The logits-row ops of {@linkcode Backend}, recorded through `gpu`. */
export function logitsOps(
  gpu: Recorder,
): Pick<Backend, "crossEntropy" | "sample" | "argmax" | "logSoftmaxGather" | "entropy"> {
  return {
    crossEntropy(losses, logits, targets, o: CrossEntropyOptions) {
      const { rows, V } = o, Vp = o.Vp ?? V;
      checkTensor("crossEntropy", "logits", logits, rows * Vp);
      checkTensor("crossEntropy", "targets", targets, rows, "u32");
      let norm = gpu.none("f32");
      const fromMask = o.mask !== undefined && o.normalize !== "count";
      if (fromMask) {
        norm = gpu.scratch(1);
        reduce(gpu, norm, gpu.view(o.mask!, 0, rows), false, 0);
      }
      gpu.run(
        crossEntropyKernel(),
        { losses, logits, targets, mask: o.mask ?? gpu.none("f32"), norm },
        {
          rows,
          V,
          Vp,
          has_mask: o.mask ? 1 : 0,
          norm_from_tensor: fromMask ? 1 : 0,
          norm_value: rows,
          grad_scale: o.gradScale ?? 1,
        },
        rows,
      );
    },
    sample(tokens, logits, o: SampleOptions) {
      const Vp = o.Vp ?? o.V;
      if (!(o.temperature > 0)) throw new Error("sample: temperature must be > 0 (use argmax for greedy)");
      gpu.run(
        sampleKernel(),
        { tokens, logits },
        {
          rows: o.rows,
          V: o.V,
          Vp,
          temperature: o.temperature,
          top_k: o.topK ?? 0,
          top_p: o.topP ?? 1,
          seed: o.seed,
          step: o.step,
        },
        o.rows,
      );
    },
    argmax(tokens, logits, { rows, V, Vp = V }) {
      gpu.run(argmaxKernel(), { tokens, logits }, { rows, V, Vp }, rows);
    },
    logSoftmaxGather(out, logits, tokens, { rows, V, Vp = V, temperature = 1 }) {
      gpu.run(logSoftmaxGatherKernel(), { out, logits, tokens }, { rows, V, Vp, temperature }, rows);
    },
    entropy(out, logits, { rows, V, Vp = V, temperature = 1 }) {
      checkEntropy(out, logits, rows, V, Vp, temperature);
      gpu.run(entropyKernel(), { out, logits }, { rows, V, Vp, temperature }, rows);
    },
  };
}
