/**
 * Elementwise kernels: fill, copy (with f32 ↔ f16 conversion), scale, residual add, GELU.
 * One thread an element over a two-dimensional grid of 256-thread workgroups.
 * @module
 */
import { type BindingType, memo, WG } from "./kernel.ts";

const INDEX = `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = group_index(wid, nwg) * ${WG}u + lid;
  if (i >= P.n) { return; }`;

/** `t[i] = value` (u32 fills take the value's bits: used to zero any buffer). */
export const fillKernel = memo((dtype: "f32" | "u32" | "f16") => ({
  name: `fill_${dtype}`,
  tensors: [["t", dtype]],
  params: [["n", "u32"], ["value", dtype === "u32" ? "u32" : "f32"]],
  code: `${INDEX}\n  t[P.t + i] = ${dtype}(P.value);\n}`,
}));

/** `dst[i] = src[i]`, converting between f32 and f16. */
export const copyKernel = memo((dst: BindingType, src: BindingType) => ({
  name: `copy_${dst}_${src}`,
  tensors: [["dst", dst], ["src", src]],
  params: [["n", "u32"]],
  code: `${INDEX}\n  dst[P.dst + i] = ${dst}(src[P.src + i]);\n}`,
}));

/** `out[i] = alpha · inp[i]`. */
export const scaleKernel = memo(() => ({
  name: "scale",
  tensors: [["out", "f32"], ["inp", "f32"]],
  params: [["n", "u32"], ["alpha", "f32"]],
  code: `${INDEX}\n  out[P.out + i] = P.alpha * inp[P.inp + i];\n}`,
}));

/** `out[i] = a[i] + b[i]`. */
export const addKernel = memo(() => ({
  name: "add",
  tensors: [["out", "f32"], ["a", "f32"], ["b", "f32"]],
  params: [["n", "u32"]],
  code: `${INDEX}\n  out[P.out + i] = a[P.a + i] + b[P.b + i];\n}`,
}));

const GELU_SCALE = "0.7978845608028654"; // √(2/π)
// tanh's argument is clamped: some drivers compute tanh from exp, which overflows to NaN for large
// inputs; tanh(±15) is already ±1 in f32, so the clamp changes no result.
const GELU_TANH = `tanh(clamp(${GELU_SCALE} * (x + 0.044715 * x * x * x), -15.0, 15.0))`;

/** GELU, tanh form. */
export const geluForwardKernel = memo(() => ({
  name: "gelu_forward",
  tensors: [["out", "f32"], ["inp", "f32"]],
  params: [["n", "u32"]],
  code: `${INDEX}
  let x = inp[P.inp + i];
  out[P.out + i] = 0.5 * x * (1.0 + ${GELU_TANH});
}`,
}));

/** `dinp = gelu'(inp) · dout`. */
export const geluBackwardKernel = memo(() => ({
  name: "gelu_backward",
  tensors: [["dinp", "f32"], ["inp", "f32"], ["dout", "f32"]],
  params: [["n", "u32"]],
  code: `${INDEX}
  let x = inp[P.inp + i];
  let th = ${GELU_TANH};
  let sech2 = 1.0 - th * th;
  let grad = 0.5 * (1.0 + th) + 0.5 * x * sech2 * ${GELU_SCALE} * (1.0 + 3.0 * 0.044715 * x * x);
  dinp[P.dinp + i] = grad * dout[P.dout + i];
}`,
}));
