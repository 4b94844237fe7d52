/**
 * How a WGSL kernel is described, and the preamble every kernel shares.
 *
 * A kernel names its tensor bindings and its scalar parameters; the preamble declares them: one
 * uniform struct `P` holding each tensor's element offset (`P.out` for tensor `out`, the way llm.c
 * passes pointers) followed by the scalar parameters, then one `read_write` storage array per tensor.
 * Every binding is `read_write` because several views of one buffer (a flat activation or parameter
 * buffer) may be bound to one dispatch, and WebGPU only lets a buffer be bound twice when every
 * binding has the same (writable) usage.
 *
 * A launcher passes tensors and parameters by name; {@linkcode checkDispatch} checks them against the
 * declaration (names, element types and, where the kernel declares `sizes`, lengths) before anything
 * is recorded, so a mis-named, missing, extra or short binding is an error naming kernel and binding.
 * @module
 */
import type { DType, Tensor } from "../backend.ts";

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
  /**
   * Elements each binding needs for one dispatch, from its parameters (a binding left out, or given
   * 0, is not checked: e.g. an optional binding whose flag is off).
   */
  sizes?: (p: Params) => Record<string, number>;
}

/** A dispatch's tensors, by binding name. */
export type Bindings = Record<string, Tensor>;
/** A dispatch's scalar parameters, by name. */
export type Params = Record<string, number>;

/** The tensor dtype a binding of this WGSL element type takes. */
function bindingDType(type: BindingType): DType {
  return type.includes("f16") ? "f16" : type === "u32" ? "u32" : "f32";
}

/**
 * Checks a dispatch's tensors and parameters against the kernel's declaration: every declared
 * binding and parameter given, nothing undeclared, dtypes matching, lengths at least `sizes`.
 * Throws an error naming the kernel and the binding.
 */
export function checkDispatch(k: Kernel, tensors: Bindings, params: Params): void {
  const fail = (detail: string): never => {
    throw new Error(`kiln: kernel "${k.name}": ${detail}`);
  };
  const names = k.tensors.map(([n]) => n), paramNames = k.params.map(([n]) => n);
  for (const [name, type] of k.tensors) {
    const t = tensors[name];
    if (t === undefined) fail(`binding "${name}" is missing (it binds ${names.join(", ")})`);
    if (t.dtype !== bindingDType(type)) fail(`binding "${name}" is a ${t.dtype} tensor, declared ${type}`);
  }
  for (const name in tensors) {
    if (!names.includes(name)) fail(`binding "${name}" is not declared (it binds ${names.join(", ")})`);
  }
  for (const name of paramNames) {
    if (typeof params[name] !== "number") {
      fail(`parameter "${name}" is missing (it takes ${paramNames.join(", ")})`);
    }
  }
  for (const name in params) {
    if (!paramNames.includes(name)) {
      fail(`parameter "${name}" is not declared (it takes ${paramNames.join(", ")})`);
    }
  }
  if (!k.sizes) return;
  for (const [name, needed] of Object.entries(k.sizes(params))) {
    if (!names.includes(name)) fail(`sizes names binding "${name}", which is not declared`);
    if (tensors[name].length < needed) {
      fail(`binding "${name}" has ${tensors[name].length} elements, the dispatch needs ${needed}`);
    }
  }
}

/**
 * What an op's launcher records through: the device runtime of `webgpu.ts` (buffers, uniforms,
 * bind groups, the command encoder).
 */
export interface Recorder {
  /**
   * Records one dispatch of `kernel` on `groups` workgroups (a count, or an explicit x, y, z), its
   * tensors and parameters by name, checked by {@linkcode checkDispatch}. Tensors are bound whole;
   * their offsets go in the uniform.
   */
  run(kernel: Kernel, tensors: Bindings, params: Params, groups: number | [number, number, number]): void;
  /** A scratch tensor for the current step (contents undefined until written). */
  scratch(length: number, dtype?: DType): Tensor;
  /** A u32 tensor holding host data for the current step, recorded without a submit. */
  host(data: Uint32Array): Tensor;
  /** A placeholder bound where an optional tensor is absent (its flag parameter says so). */
  none(dtype: DType): Tensor;
  /** A view of `length` elements of `t` from `offset`. */
  view(t: Tensor, offset: number, length: number): Tensor;
}

/** Records a one-element-a-thread kernel over `params.n` elements (nothing when n is 0). */
export function runElementwise(gpu: Recorder, kernel: Kernel, tensors: Bindings, params: Params): void {
  if (params.n > 0) gpu.run(kernel, tensors, params, Math.ceil(params.n / WG));
}

/**
 * Records a {@linkcode mapKernel} over `params.n` elements: its vec4 form (four a thread) when every
 * elementwise tensor's offset is a multiple of 4, else one element a thread. `extra` tensors are
 * bound as they are.
 */
export function runMap(
  gpu: Recorder,
  kernel: (vec4: boolean) => Kernel,
  tensors: Bindings,
  extra: Bindings,
  params: Params,
): void {
  const n = params.n;
  if (n === 0) return;
  const vec4 = Object.values(tensors).every((t) => t.offset % 4 === 0);
  const threads = vec4 ? Math.floor(n / 4) + 1 : n;
  gpu.run(kernel(vec4), { ...tensors, ...extra }, params, Math.ceil(threads / WG));
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

/** How the body of a {@linkcode MapSpec} reads and writes, in one form of the kernel. */
export interface MapAccess {
  /** The value type: `f32`, or `vec4<f32>` (four elements at once). */
  T: string;
  /** The matching index type: `u32` or `vec4u`. */
  U: string;
  /** WGSL reference to this thread's element (or four) of tensor `name`. */
  at(name: string): string;
  /** The element index (or four), of type `U`. */
  index: string;
}

/** An elementwise op over `n` elements, written once for both forms of {@linkcode mapKernel}. */
export interface MapSpec {
  name: string;
  /** f32 tensors read and written elementwise (vec4<f32> bindings in the vec4 form). */
  tensors: string[];
  /** Other bindings, read as they are (e.g. a one-element scale factor). */
  extra?: Array<[string, BindingType]>;
  /** Elements the `extra` bindings need (see {@linkcode Kernel.sizes}); every other tensor needs n. */
  extraSizes?: (p: Params) => Record<string, number>;
  /** Scalar parameters, after `n`. */
  params?: Array<[string, "u32" | "f32"]>;
  /** WGSL statements computing this thread's element(s); values of type `T`, scalars splat. */
  body(v: MapAccess): string;
}

/**
 * An elementwise kernel: one element a thread or, with `vec4` (every tensor's offset a multiple of
 * 4), four a thread through vec4<f32> bindings, the memory-bound kernels' widest loads; the thread
 * after the last full vec4 does the `n % 4` tail element by element through component references,
 * so nothing past `n` is written. The same statements run per component, so both forms compute the
 * same values (bit for bit on llvmpipe; a driver may contract multiply-adds differently).
 */
export function mapKernel(spec: MapSpec, vec4: boolean): Kernel {
  const head = `
@compute @workgroup_size(${WG})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(local_invocation_index) lid: u32) {
  let i = group_index(wid, nwg) * ${WG}u + lid;`;
  const element = (at: (t: string) => string, index: string): MapAccess => ({
    T: "f32",
    U: "u32",
    at,
    index,
  });
  const code = vec4
    ? `${head}
  if (i < P.n / 4u) {
${
      spec.body({
        T: "vec4<f32>",
        U: "vec4u",
        at: (t) => `${t}[P.${t} + i]`,
        index: "4u * i + vec4u(0u, 1u, 2u, 3u)",
      })
    }
  } else if (i == P.n / 4u) {
    for (var e = 0u; e < P.n % 4u; e++) {
${spec.body(element((t) => `${t}[P.${t} + i][e]`, "4u * i + e"))}
    }
  }
}`
    : `${head}
  if (i >= P.n) { return; }
${spec.body(element((t) => `${t}[P.${t} + i]`, "i"))}
}`;
  return {
    name: vec4 ? `${spec.name}_vec4` : spec.name,
    tensors: [
      ...spec.tensors.map((t): [string, BindingType] => [t, vec4 ? "vec4<f32>" : "f32"]),
      ...spec.extra ?? [],
    ],
    params: [["n", "u32"], ...spec.params ?? []],
    code,
    sizes: (p) => ({
      ...Object.fromEntries(spec.tensors.map((t) => [t, p.n])),
      ...spec.extraSizes?.(p),
    }),
  };
}
