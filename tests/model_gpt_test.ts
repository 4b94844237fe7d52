import { strict as assert } from "node:assert";
import { join } from "node:path";
import { createCpuBackend } from "../kernels/cpu.ts";
import { relativeError } from "./kernels_fixtures.ts";
import { gptConfig, toHFConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { GPT } from "../model/gpt.ts";
import { loadModelDir } from "../model/checkpoint.ts";
import { Rng } from "../model/rng.ts";
import { Optimizer, Trainer } from "../model/train.ts";
import { ScalarHead } from "../model/scalar_head.ts";
import type { Tensor } from "../kernels/backend.ts";

const tiny = gptConfig({ layers: 2, dim: 8, heads: 2, context: 5, vocab: 7 });

function batch(B: number, T: number, V: number, seed: number) {
  const rng = new Rng(seed);
  const inputs = Int32Array.from({ length: B * T }, () => rng.below(V));
  const targets = Int32Array.from({ length: B * T }, () => rng.below(V));
  return { inputs, targets };
}

Deno.test("gpt: whole-model gradient matches finite differences (CPU, float64)", () => {
  const backend = createCpuBackend({ precision: "f64" });
  const layout = paramLayout(tiny);
  // Larger-than-GPT-2 init so every path (LayerNorm gains, biases) carries real gradient.
  const params = initParams(layout, 11).map((x, i) => x * 10 + (i % 3) * 0.01);
  const model = new GPT(backend, layout, params, { training: true });
  const acts = model.activations(2, 5, { mask: true, segments: true });
  const { inputs, targets } = batch(2, 5, 7, 3);
  const lossMask = new Float32Array([1, 1, 0, 1, 1, 1, 0, 1, 1, 1]);
  const segments = new Int32Array([0, 0, 1, 1, 1, 0, 0, 0, 2, 2]);
  // Read the float64 buffers directly: a download rounds to float32, too coarse for differences.
  const loss = () => {
    model.forward(acts, inputs, { targets, lossMask, segments });
    model.recordLoss(acts, acts.lossSum);
    return backend.array(acts.lossSum)[0];
  };
  model.zeroGrads();
  model.forward(acts, inputs, { targets, lossMask, segments });
  model.backward(acts);
  const grads = backend.array(model.grads!).slice();
  const rng = new Rng(5);
  let checked = 0;
  for (const entry of layout.entries) {
    // A few coordinates of every tensor.
    for (let k = 0; k < 3; k++) {
      const i = entry.offset + rng.below(entry.size);
      const h = 1e-5;
      const at = backend.view(model.params, i, 1);
      backend.upload(at, [params[i] + h]);
      const plus = loss();
      backend.upload(at, [params[i] - h]);
      const minus = loss();
      backend.upload(at, [params[i]]);
      const numeric = (plus - minus) / (2 * h);
      const tol = 1e-6 + 1e-4 * Math.abs(numeric);
      assert.ok(
        Math.abs(grads[i] - numeric) < tol,
        `${entry.name}[${i - entry.offset}]: backward ${grads[i]}, finite difference ${numeric}`,
      );
      checked++;
    }
  }
  assert.equal(checked, layout.entries.length * 3);
  model.freeActivations(acts);
  model.dispose();
});

// ---- an independent reference: GPT-2 from the definition, on plain arrays ----

function referenceLogits(w: Map<string, Float64Array>, cfg: typeof tiny, tokens: number[]): number[][] {
  const { dim: C, heads: NH, layers: L, vocab: V } = cfg;
  const hs = C / NH;
  const get = (name: string) => w.get(name)!;
  const layernorm = (x: number[], g: Float64Array, b: Float64Array) => {
    const mean = x.reduce((s, v) => s + v, 0) / C;
    const variance = x.reduce((s, v) => s + (v - mean) ** 2, 0) / C;
    return x.map((v, i) => (v - mean) / Math.sqrt(variance + 1e-5) * g[i] + b[i]);
  };
  // y = x · W + b with HF Conv1D weights stored [in, out].
  const linear = (x: number[], W: Float64Array, b: Float64Array, out: number) =>
    Array.from({ length: out }, (_, j) => x.reduce((s, v, i) => s + v * W[i * out + j], b[j]));
  const gelu = (x: number) => 0.5 * x * (1 + Math.tanh(Math.sqrt(2 / Math.PI) * (x + 0.044715 * x ** 3)));
  let h = tokens.map((tok, t) =>
    Array.from({ length: C }, (_, c) => get("wte.weight")[tok * C + c] + get("wpe.weight")[t * C + c])
  );
  for (let l = 0; l < L; l++) {
    const p = (n: string) => get(`h.${l}.${n}`);
    const qkv = h.map((x) =>
      linear(
        layernorm(x, p("ln_1.weight"), p("ln_1.bias")),
        p("attn.c_attn.weight"),
        p("attn.c_attn.bias"),
        3 * C,
      )
    );
    const att = qkv.map((_, t) => {
      const y = new Array(C).fill(0);
      for (let hd = 0; hd < NH; hd++) {
        const q = qkv[t].slice(hd * hs, hd * hs + hs);
        const scores = Array.from(
          { length: t + 1 },
          (_, s) => q.reduce((acc, v, i) => acc + v * qkv[s][C + hd * hs + i], 0) / Math.sqrt(hs),
        );
        const max = Math.max(...scores);
        const e = scores.map((x) => Math.exp(x - max));
        const z = e.reduce((a, b) => a + b, 0);
        for (let s = 0; s <= t; s++) {
          for (let i = 0; i < hs; i++) y[hd * hs + i] += e[s] / z * qkv[s][2 * C + hd * hs + i];
        }
      }
      return y;
    });
    h = h.map((x, t) =>
      linear(att[t], p("attn.c_proj.weight"), p("attn.c_proj.bias"), C).map((v, i) => v + x[i])
    );
    h = h.map((x) => {
      const f = linear(
        layernorm(x, p("ln_2.weight"), p("ln_2.bias")),
        p("mlp.c_fc.weight"),
        p("mlp.c_fc.bias"),
        4 * C,
      ).map(gelu);
      return linear(f, p("mlp.c_proj.weight"), p("mlp.c_proj.bias"), C).map((v, i) => v + x[i]);
    });
  }
  const wte = get("wte.weight");
  return h.map((x) => {
    const y = layernorm(x, get("ln_f.weight"), get("ln_f.bias"));
    return Array.from({ length: V }, (_, v) => y.reduce((s, val, c) => s + val * wte[v * C + c], 0));
  });
}

/** A GPT-2 safetensors file as transformers writes it, built here byte by byte (F32, `transformer.` prefix). */
function hfSafetensors(tensors: [string, number[], Float64Array][]): Uint8Array {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  let offset = 0;
  for (const [name, shape, data] of tensors) {
    header[name] = { dtype: "F32", shape, data_offsets: [offset, offset + 4 * data.length] };
    offset += 4 * data.length;
  }
  const json = new TextEncoder().encode(JSON.stringify(header));
  const out = new Uint8Array(8 + json.length + offset);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(json.length), true);
  out.set(json, 8);
  let at = 8 + json.length;
  for (const [, , data] of tensors) for (const x of data) view.setFloat32((at += 4) - 4, x, true);
  return out;
}

Deno.test("gpt: a GPT-2-layout safetensors file loads and its logits match a from-definition forward", async () => {
  const { dim: C, layers: L, vocab: V, context: T } = tiny;
  const rng = new Rng(99);
  const rand = (n: number, scale = 0.3) =>
    Float64Array.from({ length: n }, () => Math.fround(scale * rng.normal()));
  const shapes: [string, number[]][] = [["wte.weight", [V, C]], ["wpe.weight", [T, C]]];
  for (let l = 0; l < L; l++) {
    shapes.push(
      [`h.${l}.ln_1.weight`, [C]],
      [`h.${l}.ln_1.bias`, [C]],
      [`h.${l}.attn.c_attn.weight`, [C, 3 * C]],
      [`h.${l}.attn.c_attn.bias`, [3 * C]],
      [`h.${l}.attn.c_proj.weight`, [C, C]],
      [`h.${l}.attn.c_proj.bias`, [C]],
      [`h.${l}.ln_2.weight`, [C]],
      [`h.${l}.ln_2.bias`, [C]],
      [`h.${l}.mlp.c_fc.weight`, [C, 4 * C]],
      [`h.${l}.mlp.c_fc.bias`, [4 * C]],
      [`h.${l}.mlp.c_proj.weight`, [4 * C, C]],
      [`h.${l}.mlp.c_proj.bias`, [C]],
    );
  }
  shapes.push(["ln_f.weight", [C]], ["ln_f.bias", [C]]);
  const weights = new Map<string, Float64Array>();
  for (const [name, shape] of shapes) {
    const n = shape.reduce((a, b) => a * b, 1);
    weights.set(
      name,
      name.includes("ln_") && name.endsWith("weight") ? rand(n, 0.2).map((x) => 1 + x) : rand(n),
    );
  }
  const dir = await Deno.makeTempDir();
  try {
    const tensors = shapes.map(([name, shape]) =>
      ["transformer." + name, shape, weights.get(name)!] as [string, number[], Float64Array]
    );
    tensors.push(["transformer.h.0.attn.bias", [1, 1, T, T], new Float64Array(T * T)]);
    await Deno.writeFile(join(dir, "model.safetensors"), hfSafetensors(tensors));
    await Deno.writeTextFile(
      join(dir, "config.json"),
      JSON.stringify({ ...toHFConfig(tiny), architectures: ["GPT2LMHeadModel"] }),
    );
    const loaded = await loadModelDir(dir);
    const backend = createCpuBackend();
    const model = new GPT(backend, loaded.layout, loaded.params);
    const tokens = [3, 0, 6, 2, 5];
    const acts = model.activations(1, 5);
    model.forward(acts, Int32Array.from(tokens));
    const [logits] = await backend.download(acts.logits);
    const expected = referenceLogits(weights, tiny, tokens);
    for (let t = 0; t < 5; t++) {
      for (let v = 0; v < V; v++) {
        assert.ok(
          Math.abs(logits[t * V + v] - expected[t][v]) < 1e-4,
          `logit [${t}, ${v}]: ${logits[t * V + v]} vs ${expected[t][v]}`,
        );
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

// ---- packed sequences: position ids, segment ids, masked evaluation ----

const packCfg = gptConfig({ layers: 2, dim: 8, heads: 2, context: 8, vocab: 7 });
/** Three examples (tokens, targets) of 3, 2 and 3 tokens: one packed row of 8. */
const examples = [[3, 1, 4], [1, 5], [2, 6, 5]].map((inputs, e) => ({
  inputs: Int32Array.from(inputs),
  targets: Int32Array.from(inputs, (t, i) => (t + i + e) % 7),
}));
const packed = {
  inputs: Int32Array.from(examples.flatMap((x) => [...x.inputs])),
  targets: Int32Array.from(examples.flatMap((x) => [...x.targets])),
  segments: Int32Array.from(examples.flatMap((x, e) => [...x.inputs].map(() => e))),
  positions: Uint32Array.from(examples.flatMap((x) => [...x.inputs].map((_, t) => t))),
};

Deno.test("gpt: a packed row with restarting positions and segment ids trains exactly like the examples unpacked", async () => {
  const backend = createCpuBackend();
  const layout = paramLayout(packCfg);
  const model = new GPT(backend, layout, initParams(layout, 4).map((x) => 10 * x), { training: true });
  const BT = packed.inputs.length;

  // Packed: the mean over all 8 tokens.
  const acts = model.activations(1, BT, { segments: true });
  model.zeroGrads();
  model.forward(acts, packed.inputs, packed);
  model.backward(acts);
  const [packedLosses, packedGrads] = await backend.download(acts.losses, model.grads!);

  // Unpacked at position 0: each example's mean, scaled by its share of the 8 tokens, sums to the same.
  model.zeroGrads();
  const unpackedLosses: number[] = [];
  for (const x of examples) {
    const a = model.activations(1, x.inputs.length);
    model.forward(a, x.inputs, { targets: x.targets, gradScale: x.inputs.length / BT });
    model.backward(a);
    unpackedLosses.push(...(await backend.download(a.losses))[0]);
    model.freeActivations(a);
  }
  const [unpackedGrads] = await backend.download(model.grads!);
  assert.ok(
    relativeError(packedLosses, unpackedLosses) < 1e-5,
    `losses ${packedLosses} vs ${unpackedLosses}`,
  );
  for (const e of layout.entries) {
    const at = (g: Float32Array | Uint32Array) => g.subarray(e.offset, e.offset + e.size);
    const err = relativeError(at(packedGrads), at(unpackedGrads));
    assert.ok(err < 1e-5, `${e.name}: packed and unpacked gradients differ by ${err} (relative)`);
  }

  // Without the position ids the later examples sit at positions 3… and 5…: not the same model input.
  model.forward(acts, packed.inputs, { targets: packed.targets, segments: packed.segments });
  const [shifted] = await backend.download(acts.losses);
  assert.ok(relativeError(shifted.subarray(3), unpackedLosses.slice(3)) > 1e-3);

  const outside = Uint32Array.from(packed.positions, (p, i) => i === 6 ? packCfg.context : p);
  assert.throws(
    () => model.forward(acts, packed.inputs, { ...packed, positions: outside }),
    /positions\[6\] \(row 0, column 6\) is 8, outside the model's context 0\.\.7/,
  );
  model.freeActivations(acts);
  model.dispose();
});

Deno.test("gpt: forward with logits: false leaves the trunk output as it was and never writes the logits", async () => {
  const backend = createCpuBackend();
  const layout = paramLayout(packCfg);
  const model = new GPT(backend, layout, initParams(layout, 8));
  const acts = model.activations(1, 8);
  model.forward(acts, packed.inputs);
  const [lnf, logits] = await backend.download(acts.lnf, acts.logits);
  assert.ok(logits.some((x) => x !== 0));
  backend.fill(acts.lnf, 0);
  backend.fill(acts.logits, 7);
  model.forward(acts, packed.inputs, { logits: false });
  const [lnf2, logits2] = await backend.download(acts.lnf, acts.logits);
  assert.deepEqual(lnf2, lnf);
  assert.ok(logits2.every((x) => x === 7), "the logits buffer was written");
  assert.throws(
    () => model.forward(acts, packed.inputs, { logits: false, targets: packed.targets }),
    /logits/,
  );
  model.freeActivations(acts);
  model.dispose();
});

Deno.test("trainer: evalLoss with loss masks, segments and positions is the token-weighted response loss", async () => {
  const backend = createCpuBackend();
  const layout = paramLayout(packCfg);
  const params = initParams(layout, 6).map((x) => 10 * x);
  const trainer = await Trainer.create(backend, layout, { params, batch: 1, seqLen: 8, masked: true });
  // Two batches with different numbers of counted tokens (4 and 2): a mean of batch means would differ.
  const mask1 = new Float32Array([0, 1, 1, 0, 1, 0, 1, 0]);
  const mask2 = new Float32Array([0, 0, 1, 0, 0, 0, 0, 1]);
  const loss = await trainer.evalLoss([
    { ...packed, lossMask: mask1 },
    { ...packed, lossMask: mask2 },
  ]);

  // The same from per-token losses of each example run alone at position 0.
  const model = new GPT(backend, layout, params);
  const perToken: number[] = [];
  for (const x of examples) {
    const a = model.activations(1, x.inputs.length);
    model.forward(a, x.inputs, { targets: x.targets });
    perToken.push(...(await backend.download(a.losses))[0]);
  }
  const weighted = (mask: Float32Array) => perToken.reduce((s, l, i) => s + l * mask[i], 0);
  const expected = (weighted(mask1) + weighted(mask2)) / 6;
  assert.ok(Math.abs(loss - expected) < 1e-5 * expected, `evalLoss ${loss}, expected ${expected}`);
  await assert.rejects(() => trainer.evalLoss([{ ...packed, lossMask: new Float32Array(8) }]), /no tokens/);
  trainer.dispose();
});

Deno.test("optimizer: AdamW over two buffers with one global clip matches AdamW written out on the host", async () => {
  const backend = createCpuBackend();
  const rng = new Rng(21);
  const sizes = [70, 10], decayEnds = [50, 6];
  const settings = { beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1, clip: 0.5 };
  const host = sizes.map((n) => ({
    p: Float64Array.from({ length: n }, () => rng.normal()),
    m: new Float64Array(n),
    v: new Float64Array(n),
  }));
  const groups = sizes.map((n, i) => {
    const params = backend.alloc(n), grads = backend.alloc(n);
    backend.upload(params, host[i].p);
    return { params, grads, decayEnd: decayEnds[i] };
  });
  const optimizer = new Optimizer(backend, groups, settings);
  for (let step = 1; step <= 3; step++) {
    const grads = sizes.map((n) => Float64Array.from({ length: n }, () => rng.normal()));
    grads.forEach((g, i) => backend.upload(groups[i].grads, g));
    optimizer.update(1e-2);
    // The reference: clip by the norm over both buffers together, then AdamW with decoupled decay.
    const norm = Math.sqrt(grads.flatMap((g) => [...g]).reduce((s, x) => s + x * x, 0));
    const scale = Math.min(1, settings.clip / (norm + 1e-6));
    assert.ok(scale < 1, "the test must exercise clipping");
    host.forEach((h, i) => {
      for (let j = 0; j < h.p.length; j++) {
        const g = grads[i][j] * scale;
        h.m[j] = 0.9 * h.m[j] + 0.1 * g;
        h.v[j] = 0.95 * h.v[j] + 0.05 * g * g;
        const update = h.m[j] / (1 - 0.9 ** step) / (Math.sqrt(h.v[j] / (1 - 0.95 ** step)) + 1e-8);
        h.p[j] -= 1e-2 * (update + (j < decayEnds[i] ? 0.1 * h.p[j] : 0));
      }
    });
    const [gradNorm] = await backend.download(optimizer.gradNorm);
    assert.ok(
      Math.abs(gradNorm[0] - norm) < 1e-5 * norm,
      `step ${step}: gradient norm ${gradNorm[0]} vs ${norm}`,
    );
  }
  const state = await optimizer.state();
  assert.equal(state.step, 3);
  host.forEach((h, i) => {
    assert.ok(relativeError(state.params[i], h.p) < 1e-5, `buffer ${i} parameters`);
    assert.ok(relativeError(state.m[i], h.m) < 1e-5, `buffer ${i} first moment`);
  });
  const [zeroed] = await backend.download(groups[1].grads);
  assert.ok(zeroed.every((x) => x === 0), "gradients are zeroed after the update");
});

Deno.test("scalar head: head and trunk gradients match finite differences (CPU, float64), with and without bias", async () => {
  const backend = createCpuBackend({ precision: "f64" });
  const layout = paramLayout(packCfg);
  const params = initParams(layout, 13).map((x) => x * 10);
  const rng = new Rng(17);
  const weight = Float32Array.from({ length: packCfg.dim }, () => rng.normal());
  // L = Σ_r c_r · value_r, so ∂L/∂value = c.
  const c = Float64Array.from({ length: packed.inputs.length }, () => rng.normal());
  for (const bias of [0.25, undefined]) {
    const gpt = new GPT(backend, layout, params, { training: true });
    const head = new ScalarHead(gpt, { weight, bias }, { training: true });
    assert.equal(head.params.length, packCfg.dim + (bias === undefined ? 0 : 1));
    const acts = gpt.activations(1, 8, { segments: true });
    const values = backend.alloc(8), dvalues = backend.alloc(8);
    const forward = () => {
      gpt.forward(acts, packed.inputs, {
        segments: packed.segments,
        positions: packed.positions,
        logits: false,
      });
      head.forward(acts, values);
      const v = backend.array(values);
      return c.reduce((s, ci, i) => s + ci * v[i], 0);
    };
    forward();
    backend.upload(dvalues, c);
    head.backward(acts, dvalues);
    const trunkGrads = backend.array(gpt.grads!).slice(), headGrads = backend.array(head.grads!).slice();
    const check = (t: Tensor, i: number, analytic: number, name: string) => {
      const at = backend.view(t, i, 1), x = backend.array(at)[0], h = 1e-5;
      backend.upload(at, [x + h]);
      const plus = forward();
      backend.upload(at, [x - h]);
      const minus = forward();
      backend.upload(at, [x]);
      const numeric = (plus - minus) / (2 * h);
      assert.ok(
        Math.abs(analytic - numeric) < 1e-6 + 1e-4 * Math.abs(numeric),
        `${name}: ${analytic} vs ${numeric}`,
      );
    };
    for (let i = 0; i < head.params.length; i++) check(head.params, i, headGrads[i], `head[${i}]`);
    for (const e of layout.entries) {
      const i = e.offset + rng.below(e.size);
      check(gpt.params, i, trunkGrads[i], `${e.name}[${i - e.offset}]`);
    }
    assert.deepEqual(await head.read(), bias === undefined ? { weight } : { weight, bias });
    assert.deepEqual(head.paramGroup().decayEnd, packCfg.dim);
    head.dispose();
    gpt.dispose();
  }
});
