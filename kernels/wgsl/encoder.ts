/**
 * Token + position embedding forward, and its deterministic backward: `dwpe` a thread per (t, c)
 * summing over the batch, `dwte` (and `dwpe` when positions are given) a thread per (bucket, c)
 * summing that token's (position's) rows in order (the buckets come from the host, see `host.ts`).
 * Kernels first, then their launchers and shape checks ({@linkcode encoderOps}).
 * @module
 */
import { type Backend, checkTensor, type Tensor } from "../backend.ts";
import { type TokenBuckets, tokenBuckets } from "../host.ts";
import { type Kernel, memo, type Recorder, runElementwise, WG } from "./kernel.ts";

const ELEMENT = `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = group_index(wid, nwg) * ${WG}u + lid;
  if (i >= P.n) { return; }`;

/** `out[b, t, c] = wte[tokens[b, t], c] + wpe[positions[b, t] (or t), c]`; n = B·T·C. */
export const encoderForwardKernel = memo((): Kernel => ({
  name: "encoder_forward",
  tensors: [["out", "f32"], ["tokens", "u32"], ["wte", "f32"], ["wpe", "f32"], ["positions", "u32"]],
  params: [["n", "u32"], ["T", "u32"], ["C", "u32"], ["hasPositions", "u32"]],
  sizes: ({ n, C, hasPositions }) => ({ out: n, tokens: n / C, positions: hasPositions ? n / C : 0 }),
  code: `${ELEMENT}
  let bt = i / P.C;
  let c = i % P.C;
  var position = bt % P.T;
  if (P.hasPositions != 0u) { position = positions[P.positions + bt]; }
  out[P.out + i] = wte[P.wte + tokens[P.tokens + bt] * P.C + c] + wpe[P.wpe + position * P.C + c];
}`,
}));

/** `dwpe[t, c] += Σ_b dout[b, t, c]`; n = T·C. */
export const encoderBackwardPositionKernel = memo((): Kernel => ({
  name: "encoder_backward_position",
  tensors: [["dwpe", "f32"], ["dout", "f32"]],
  params: [["n", "u32"], ["B", "u32"]],
  sizes: ({ n, B }) => ({ dwpe: n, dout: B * n }),
  code: `${ELEMENT}
  var sum = 0.0;
  for (var b = 0u; b < P.B; b++) { sum += dout[P.dout + b * P.n + i]; }
  dwpe[P.dwpe + i] += sum;
}`,
}));

/**
 * `dwte[token, c] += Σ_{rows of token} dout[row, c]`; n = buckets·C. With buckets of positions it
 * is the `dwpe` backward of explicit positions.
 */
export const encoderBackwardTokenKernel = memo((): Kernel => ({
  name: "encoder_backward_token",
  tensors: [["dwte", "f32"], ["dout", "f32"], ["buckets", "u32"]],
  params: [["n", "u32"], ["count", "u32"], ["C", "u32"]],
  sizes: ({ count }) => ({ buckets: 2 * count + 1 }),
  code: `${ELEMENT}
  let bucket = i / P.C;
  let c = i % P.C;
  let token = buckets[P.buckets + bucket];
  let start = buckets[P.buckets + P.count + bucket];
  let end = buckets[P.buckets + P.count + bucket + 1u];
  let positions = P.buckets + 2u * P.count + 1u;
  var sum = 0.0;
  for (var j = start; j < end; j++) { sum += dout[P.dout + buckets[positions + j] * P.C + c]; }
  dwte[P.dwte + token * P.C + c] += sum;
}`,
}));

/** The embedding ops of {@linkcode Backend}, recorded through `gpu`. */
export function encoderOps(gpu: Recorder): Pick<Backend, "encoderForward" | "encoderBackward"> {
  return {
    encoderForward(out, tokens, wte, wpe, { B, T, C, positions }) {
      if (positions) checkTensor("encoderForward", "positions", positions, B * T, "u32");
      runElementwise(
        gpu,
        encoderForwardKernel(),
        { out, tokens, wte, wpe, positions: positions ?? gpu.none("u32") },
        { n: B * T * C, T, C, hasPositions: positions ? 1 : 0 },
      );
    },
    encoderBackward(dwte, dwpe, dout, tokens, { B, T, C, hostPositions }) {
      // Rows bucketed by position, like dwte's by token (checked before anything is recorded).
      let byPosition: TokenBuckets | null = null;
      if (hostPositions) {
        if (hostPositions.length < B * T) {
          throw new Error(
            `encoderBackward: hostPositions has ${hostPositions.length} entries, needs ${B * T}`,
          );
        }
        byPosition = tokenBuckets(hostPositions.subarray(0, B * T));
        const last = byPosition.data[byPosition.count - 1]; // buckets are sorted: the largest position
        if ((last + 1) * C > dwpe.length) {
          throw new Error(`encoderBackward: position ${last} is outside wpe (${dwpe.length / C} rows)`);
        }
      }
      const bucketed = (grad: Tensor, { count, data }: TokenBuckets) =>
        runElementwise(
          gpu,
          encoderBackwardTokenKernel(),
          { dwte: grad, dout, buckets: gpu.host(data) },
          { n: count * C, count, C },
        );
      bucketed(dwte, tokenBuckets(tokens.subarray(0, B * T)));
      if (byPosition) bucketed(dwpe, byPosition);
      else runElementwise(gpu, encoderBackwardPositionKernel(), { dwpe, dout }, { n: T * C, B });
    },
  };
}
