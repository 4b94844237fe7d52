/**
 * How a WGSL kernel is described, and the preamble every kernel shares.
 *
 * A kernel names its tensor bindings and its scalar parameters; the preamble declares them: one
 * uniform struct `P` holding each tensor's element offset (`P.out` for tensor `out`, the way llm.c
 * passes pointers) followed by the scalar parameters, then one `read_write` storage array per tensor.
 * Every binding is `read_write` because several views of one buffer (a flat activation or parameter
 * buffer) may be bound to one dispatch, and WebGPU only lets a buffer be bound twice when every
 * binding has the same (writable) usage.
 * @module
 */

/** WGSL element type of a tensor binding. */
export type BindingType = "f32" | "u32" | "f16" | "vec4<f32>" | "vec4<f16>";

/** A compute kernel: its bindings, its parameters and its WGSL body (with `fn main`). */
export interface Kernel {
  /** Unique name: the pipeline cache key. */
  name: string;
  /** Storage bindings in order, with their element types. */
  tensors: Array<[name: string, type: BindingType]>;
  /** Scalar parameters, after the tensor offsets in the uniform struct. */
  params: Array<[name: string, type: "u32" | "f32"]>;
  /** Helper functions and `@compute fn main`. */
  code: string;
}

/** Threads per workgroup of the one-dimensional kernels. */
export const WG = 256;

/** The full WGSL source of a kernel. */
export function kernelSource(k: Kernel): string {
  const f16 = k.tensors.some(([, t]) => t.includes("f16"));
  const members = [...k.tensors.map(([n]) => `${n}: u32`), ...k.params.map(([n, t]) => `${n}: ${t}`)];
  const bindings = k.tensors.map(([n, t], i) =>
    `@group(0) @binding(${i + 1}) var<storage, read_write> ${n}: array<${t}>;`
  );
  return [
    f16 ? "enable f16;" : "",
    `struct Params { ${members.join(", ")} }`,
    "@group(0) @binding(0) var<uniform> P: Params;",
    ...bindings,
    // Grids are two-dimensional (at most 65,535 workgroups a dimension); this is the linear index.
    "fn group_index(wid: vec3u, nwg: vec3u) -> u32 { return wid.y * nwg.x + wid.x; }",
    k.code,
  ].join("\n");
}

/** Bytes of the uniform struct of a kernel (4 a member, padded to 16). */
export function paramBytes(k: Kernel): number {
  return Math.ceil((k.tensors.length + k.params.length) / 4) * 16;
}

/**
 * WGSL of workgroup tree reductions over `WG` values, one per thread: `reduce_sum` and `reduce_max`.
 * A fixed tree, so the result does not depend on timing (deterministic). Every thread must call it.
 */
export const REDUCE = `
var<workgroup> red: array<f32, ${WG}>;
fn reduce_sum(lid: u32, value: f32) -> f32 {
  red[lid] = value;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { red[lid] = red[lid] + red[lid + stride]; }
    workgroupBarrier();
  }
  let result = red[0];
  workgroupBarrier();
  return result;
}
fn reduce_max(lid: u32, value: f32) -> f32 {
  red[lid] = value;
  workgroupBarrier();
  for (var stride = ${WG / 2}u; stride > 0u; stride >>= 1u) {
    if (lid < stride) { red[lid] = max(red[lid], red[lid + stride]); }
    workgroupBarrier();
  }
  let result = red[0];
  workgroupBarrier();
  return result;
}`;

/** Memoises a kernel factory on its arguments, so a variant's WGSL is generated once. */
export function memo<A extends unknown[]>(build: (...args: A) => Kernel): (...args: A) => Kernel {
  const cache = new Map<string, Kernel>();
  return (...args: A) => {
    const key = JSON.stringify(args);
    let kernel = cache.get(key);
    if (!kernel) cache.set(key, kernel = build(...args));
    return kernel;
  };
}
