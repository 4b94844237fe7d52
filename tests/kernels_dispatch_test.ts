/**
 * A kernel's tensors and parameters are passed by name and checked against its declaration before
 * anything is recorded (`kernels/wgsl/kernel.ts`): a mis-named, missing, extra, mis-typed or short
 * binding is an error naming the kernel and the binding. No device needed.
 */
import { doesNotThrow, throws } from "node:assert";
import type { DType, Tensor } from "../kernels/backend.ts";
import { layernormForwardKernel } from "../kernels/wgsl/layernorm.ts";
import { adamwKernel } from "../kernels/wgsl/optimizer.ts";
import { checkDispatch } from "../kernels/wgsl/kernel.ts";

const tensor = (length: number, dtype: DType = "f32"): Tensor => ({
  storage: {},
  offset: 0,
  length,
  dtype,
});

const rows = 3, C = 8;
const layernorm = layernormForwardKernel(false);
const bindings = () => ({
  out: tensor(rows * C),
  mean: tensor(rows),
  rstd: tensor(rows),
  inp: tensor(rows * C),
  weight: tensor(C),
  bias: tensor(C),
});
const params = { rows, C, eps: 1e-5 };

Deno.test("dispatch check: a well-formed dispatch passes", () => {
  doesNotThrow(() => checkDispatch(layernorm, bindings(), params));
});

Deno.test("dispatch check: a mis-named binding names the kernel, the binding and what it binds", () => {
  const { weight, ...rest } = bindings();
  throws(
    () => checkDispatch(layernorm, { ...rest, wieght: weight }, params),
    {
      message:
        'kiln: kernel "layernorm_forward": binding "weight" is missing (it binds out, mean, rstd, inp, weight, bias)',
    },
  );
  throws(
    () => checkDispatch(layernorm, { ...bindings(), extra: tensor(4) }, params),
    /kernel "layernorm_forward": binding "extra" is not declared/,
  );
});

Deno.test("dispatch check: a mis-sized or mis-typed binding names the binding and the sizes", () => {
  throws(
    () => checkDispatch(layernorm, { ...bindings(), inp: tensor(rows * C - 1) }, params),
    { message: 'kiln: kernel "layernorm_forward": binding "inp" has 23 elements, the dispatch needs 24' },
  );
  throws(
    () => checkDispatch(layernorm, { ...bindings(), mean: tensor(rows, "u32") }, params),
    /kernel "layernorm_forward": binding "mean" is a u32 tensor, declared f32/,
  );
});

Deno.test("dispatch check: a missing or undeclared parameter is an error", () => {
  throws(
    () => checkDispatch(layernorm, bindings(), { rows, C }),
    /kernel "layernorm_forward": parameter "eps" is missing \(it takes rows, C, eps\)/,
  );
  throws(
    () => checkDispatch(layernorm, bindings(), { ...params, epsilon: 1e-5 }),
    /kernel "layernorm_forward": parameter "epsilon" is not declared/,
  );
});

Deno.test("dispatch check: an optional binding is sized only when its flag is on", () => {
  const adamw = adamwKernel(true), n = 10;
  const tensors = { params: tensor(n), grads: tensor(n), m: tensor(n), v: tensor(n), grad_scale: tensor(0) };
  const p = {
    n,
    lr: 1e-3,
    beta1: 0.9,
    beta2: 0.999,
    eps: 1e-8,
    weight_decay: 0,
    c1: 0.1,
    c2: 0.001,
    decay_start: 0,
    decay_end: n,
    has_grad_scale: 0,
  };
  doesNotThrow(() => checkDispatch(adamw, tensors, p));
  throws(
    () => checkDispatch(adamw, tensors, { ...p, has_grad_scale: 1 }),
    /kernel "adamw_vec4": binding "grad_scale" has 0 elements, the dispatch needs 1/,
  );
  throws(
    () => checkDispatch(adamw, { ...tensors, m: tensor(n - 1) }, p),
    /kernel "adamw_vec4": binding "m" has 9 elements, the dispatch needs 10/,
  );
});
