/**
 * Elementwise kernels: fill, copy (with f32 ↔ f16 conversion), scale, residual add, GELU.
 * One thread an element over a two-dimensional grid of 256-thread workgroups; the f32 ones also in a
 * vec4 form (four elements a thread) for views at offsets that are multiples of 4 (`mapKernel`).
 * Kernels first, then their launchers ({@linkcode elementwiseOps}).
 * @module
 */
import { type Backend, checkTensor } from "../backend.ts";
import {
  type BindingType,
  type Kernel,
  mapKernel,
  memo,
  type Recorder,
  runElementwise,
  runMap,
  WG,
} from "./kernel.ts";

const INDEX = `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = group_index(wid, nwg) * ${WG}u + lid;
  if (i >= P.n) { return; }`;

/** `t[i] = value` (u32 fills take the value's bits: used to zero any buffer). */
export const fillKernel = memo((dtype: "u32" | "f16"): Kernel => ({
  name: `fill_${dtype}`,
  tensors: [["t", dtype]],
  params: [["n", "u32"], ["value", dtype === "u32" ? "u32" : "f32"]],
  code: `${INDEX}\n  t[P.t + i] = ${dtype}(P.value);\n}`,
  sizes: (p) => ({ t: p.n }),
}));

/** `t[i] = value` for f32 (vec4 form where aligned): e.g. zeroing a whole gradient buffer a step. */
export const fillF32Kernel = memo((vec4: boolean) =>
  mapKernel({
    name: "fill_f32",
    tensors: ["t"],
    params: [["value", "f32"]],
    body: (v) => `${v.at("t")} = ${v.T}(P.value);`,
  }, vec4)
);

/** `dst[i] = src[i]`, converting between f32 and f16. */
export const copyKernel = memo((dst: BindingType, src: BindingType): Kernel => ({
  name: `copy_${dst}_${src}`,
  tensors: [["dst", dst], ["src", src]],
  params: [["n", "u32"]],
  code: `${INDEX}\n  dst[P.dst + i] = ${dst}(src[P.src + i]);\n}`,
  sizes: (p) => ({ dst: p.n, src: p.n }),
}));

/** `dst[i] = src[i]` for f32 (vec4 form where aligned). */
export const copyF32Kernel = memo((vec4: boolean) =>
  mapKernel(
    { name: "copy_f32", tensors: ["dst", "src"], body: (v) => `${v.at("dst")} = ${v.at("src")};` },
    vec4,
  )
);

/** `out[i] = alpha · inp[i]`. */
export const scaleKernel = memo((vec4: boolean) =>
  mapKernel({
    name: "scale",
    tensors: ["out", "inp"],
    params: [["alpha", "f32"]],
    body: (v) => `${v.at("out")} = P.alpha * ${v.at("inp")};`,
  }, vec4)
);

/** `out[i] = a[i] + b[i]`. */
export const addKernel = memo((vec4: boolean) =>
  mapKernel({
    name: "add",
    tensors: ["out", "a", "b"],
    body: (v) => `${v.at("out")} = ${v.at("a")} + ${v.at("b")};`,
  }, vec4)
);

const GELU_SCALE = "0.7978845608028654"; // √(2/π)
// tanh's argument is clamped: some drivers compute tanh from exp, which overflows to NaN for large
// inputs; tanh(±15) is already ±1 in f32, so the clamp changes no result.
const geluTanh = (T: string) =>
  `tanh(clamp(${GELU_SCALE} * (x + 0.044715 * x * x * x), ${T}(-15.0), ${T}(15.0)))`;

/** GELU, tanh form. */
export const geluForwardKernel = memo((vec4: boolean) =>
  mapKernel({
    name: "gelu_forward",
    tensors: ["out", "inp"],
    body: (v) => `
  let x = ${v.at("inp")};
  ${v.at("out")} = 0.5 * x * (1.0 + ${geluTanh(v.T)});`,
  }, vec4)
);

/** `dinp = gelu'(inp) · dout`. */
export const geluBackwardKernel = memo((vec4: boolean) =>
  mapKernel({
    name: "gelu_backward",
    tensors: ["dinp", "inp", "dout"],
    body: (v) => `
  let x = ${v.at("inp")};
  let th = ${geluTanh(v.T)};
  let sech2 = 1.0 - th * th;
  let grad = 0.5 * (1.0 + th) + 0.5 * x * sech2 * ${GELU_SCALE} * (1.0 + 3.0 * 0.044715 * x * x);
  ${v.at("dinp")} = grad * ${v.at("dout")};`,
  }, vec4)
);

/** The elementwise ops of {@linkcode Backend}, recorded through `gpu`. */
export function elementwiseOps(
  gpu: Recorder,
): Pick<Backend, "fill" | "copy" | "scale" | "add" | "geluForward" | "geluBackward"> {
  return {
    fill(t, value) {
      if (t.dtype === "f32") runMap(gpu, fillF32Kernel, { t }, {}, { n: t.length, value });
      else runElementwise(gpu, fillKernel(t.dtype), { t }, { n: t.length, value });
    },
    copy(dst, src) {
      checkTensor("copy", "src", src, dst.length, src.dtype);
      if (dst.dtype === "f32" && src.dtype === "f32") {
        runMap(gpu, copyF32Kernel, { dst, src }, {}, { n: dst.length });
      } else runElementwise(gpu, copyKernel(dst.dtype, src.dtype), { dst, src }, { n: dst.length });
    },
    scale(out, inp, alpha) {
      runMap(gpu, scaleKernel, { out, inp }, {}, { n: out.length, alpha });
    },
    add(out, a, b) {
      runMap(gpu, addKernel, { out, a, b }, {}, { n: out.length });
    },
    geluForward(out, inp) {
      runMap(gpu, geluForwardKernel, { out, inp }, {}, { n: out.length });
    },
    geluBackward(dinp, inp, dout) {
      runMap(gpu, geluBackwardKernel, { dinp, inp, dout }, {}, { n: dinp.length });
    },
  };
}
