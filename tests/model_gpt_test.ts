import { strict as assert } from "node:assert";
import { join } from "node:path";
import { createCpuBackend } from "../kernels/cpu.ts";
import { gptConfig, toHFConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { GPT } from "../model/gpt.ts";
import { loadModelDir } from "../model/checkpoint.ts";
import { Rng } from "../model/rng.ts";

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
