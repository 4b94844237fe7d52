import { strict as assert } from "node:assert";
import { join } from "node:path";
import { fromHFConfig, gptConfig, parameterCount, toHFConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { parseSafetensors, serializeSafetensors } from "../model/safetensors.ts";
import {
  DamagedCheckpointError,
  loadModelDir,
  loadTrainCheckpoint,
  loadWeights,
  saveModelDir,
  saveTrainCheckpoint,
} from "../model/checkpoint.ts";
import { Checkpoint } from "../pipeline/workspace.ts";
import { DataError } from "../pipeline/errors.ts";
import { learningRate } from "../model/schedule.ts";
import { Rng } from "../model/rng.ts";

const tiny = gptConfig({ layers: 2, dim: 8, heads: 2, context: 6, vocab: 11 });

Deno.test("config: validation names the field; HF config.json round-trips", () => {
  assert.throws(
    () => gptConfig({ ...tiny, heads: 3 }),
    /model\.heads: 3 heads do not divide the width dim=8/,
  );
  assert.throws(() => gptConfig({ ...tiny, layers: 0 }), /model\.layers: expected a positive integer/);
  assert.deepEqual(fromHFConfig(toHFConfig(tiny)), tiny);
  assert.throws(
    () => fromHFConfig({ ...toHFConfig(tiny), model_type: "llama" }, "x/config.json"),
    /x\/config.json/,
  );
  // GPT-2 124M has 124,439,808 parameters (tied embeddings counted once).
  assert.equal(parameterCount({ layers: 12, dim: 768, heads: 12, context: 1024, vocab: 50257 }), 124_439_808);
});

Deno.test("params: HF GPT-2 names and shapes, decayed tensors first, 256-byte aligned, seeded init", () => {
  const layout = paramLayout(tiny);
  assert.deepEqual(layout.get("wte.weight").shape, [11, 8]);
  assert.deepEqual(layout.get("h.1.attn.c_attn.weight").shape, [8, 24]);
  assert.deepEqual(layout.get("h.1.mlp.c_proj.weight").shape, [32, 8]);
  assert.deepEqual(layout.get("ln_f.bias").shape, [8]);
  for (const e of layout.entries) {
    assert.equal(e.offset % 64, 0);
    assert.equal(e.decay, e.offset < layout.decayEnd, e.name);
  }
  const a = initParams(layout, 7), b = initParams(layout, 7), c = initParams(layout, 8);
  assert.deepEqual(a, b);
  assert.notDeepEqual(a, c);
  const ln = layout.get("h.0.ln_1.weight");
  assert.ok(a.subarray(ln.offset, ln.offset + ln.size).every((x) => x === 1));
  const bias = layout.get("h.0.mlp.c_fc.bias");
  assert.ok(a.subarray(bias.offset, bias.offset + bias.size).every((x) => x === 0));
  // Residual projections are initialised with std 0.02/sqrt(2L): check on a larger layer.
  const big = paramLayout(gptConfig({ layers: 8, dim: 64, heads: 4, context: 8, vocab: 8 }));
  const p = initParams(big, 1);
  const std = (name: string) => {
    const e = big.get(name);
    const v = p.subarray(e.offset, e.offset + e.size);
    return Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);
  };
  assert.ok(Math.abs(std("h.0.mlp.c_fc.weight") - 0.02) < 0.001);
  assert.ok(Math.abs(std("h.0.mlp.c_proj.weight") - 0.02 / 4) < 0.0003);
});

Deno.test("safetensors: round trip, F16/BF16 read, damage detected with a clear error", () => {
  const bytes = serializeSafetensors([
    { name: "a", shape: [2, 3], data: new Float32Array([1, 2, 3, 4, 5, -6.5]) },
    { name: "b", shape: [1], data: new Float32Array([0.25]) },
  ], { note: "hi" });
  assert.equal(Number(new DataView(bytes.buffer).getBigUint64(0, true)) % 8, 0);
  const file = parseSafetensors(bytes, "t.safetensors");
  assert.deepEqual([...file.float32("a")], [1, 2, 3, 4, 5, -6.5]);
  assert.equal(file.metadata.note, "hi");

  // A flipped data byte fails the digest; a truncated file fails the layout check.
  const flipped = bytes.slice();
  flipped[flipped.length - 1] ^= 1;
  assert.throws(() => parseSafetensors(flipped, "t.safetensors"), /t\.safetensors: damaged.*SHA-256/);
  assert.throws(() => parseSafetensors(bytes.subarray(0, bytes.length - 4), "t.safetensors"), /damaged/);
  assert.throws(() => parseSafetensors(new Uint8Array(4), "t.safetensors"), DataError);
  const badHeader = bytes.slice();
  badHeader[9] = 0x7b; // corrupt the JSON
  badHeader[10] = 0x7b;
  assert.throws(() => parseSafetensors(badHeader, "t.safetensors"), /header/);

  // Hand-built F16 and BF16 tensors (as torch would write them), no kiln digest.
  const header = JSON.stringify({
    h: { dtype: "F16", shape: [3], data_offsets: [0, 6] },
    g: { dtype: "BF16", shape: [2], data_offsets: [6, 10] },
  });
  const raw = new Uint8Array(8 + header.length + 10);
  const view = new DataView(raw.buffer);
  view.setBigUint64(0, BigInt(header.length), true);
  raw.set(new TextEncoder().encode(header), 8);
  const d = 8 + header.length;
  view.setUint16(d, 0x3c00, true); // 1.0
  view.setUint16(d + 2, 0xc000, true); // -2.0
  view.setUint16(d + 4, 0x3555, true); // 0.333251953125
  view.setUint16(d + 6, 0x3f80, true); // bf16 1.0
  view.setUint16(d + 8, 0x4049, true); // bf16 3.140625
  const half = parseSafetensors(raw);
  assert.deepEqual([...half.float32("h")], [1, -2, 0.333251953125]);
  assert.deepEqual([...half.float32("g")], [1, 3.140625]);
});

Deno.test("checkpoint: model dir round trip; HF file with transformer. prefix and mask buffers loads", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const layout = paramLayout(tiny);
    const params = initParams(layout, 3);
    await saveModelDir(dir, layout, params);
    const loaded = await loadModelDir(dir);
    assert.deepEqual(loaded.config, tiny);
    assert.deepEqual(loaded.params, params);

    // As transformers' GPT2LMHeadModel saves it: prefix, causal-mask buffers, tied lm_head.
    const tensors = layout.entries.map((e) => ({
      name: "transformer." + e.name,
      shape: e.shape,
      data: params.subarray(e.offset, e.offset + e.size),
    }));
    tensors.push({ name: "transformer.h.0.attn.bias", shape: [1, 1, 6, 6], data: new Float32Array(36) });
    tensors.push({ name: "lm_head.weight", shape: [11, 8], data: params.subarray(0, 88) });
    assert.deepEqual(loadWeights(parseSafetensors(serializeSafetensors(tensors)), layout), params);
    // A missing tensor or wrong shape is named.
    assert.throws(
      () => loadWeights(parseSafetensors(serializeSafetensors(tensors.slice(1)), "gpt2.safetensors"), layout),
      /gpt2\.safetensors:wte\.weight: tensor missing/,
    );
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify({ ...toHFConfig(tiny), n_embd: 16 }));
    await assert.rejects(() => loadModelDir(dir), /shape \[11,8\] does not match the model's \[11,16\]/);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: training state round trip; a damaged checkpoint is reported, not loaded", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const store = new Checkpoint(join(dir, "state"), join(dir, "tmp"));
    const layout = paramLayout(tiny);
    assert.equal(await loadTrainCheckpoint(store, layout), undefined);
    const params = initParams(layout, 1);
    const m = params.map((x) => x * 0.5), v = params.map((x) => x * x);
    await saveTrainCheckpoint(store, layout, { params, m, v, state: { step: 5, rng: [1, 2, 3, 4] } });
    await saveTrainCheckpoint(store, layout, { params, m, v, state: { step: 10, rng: [5, 6, 7, 8] } });
    const loaded = await loadTrainCheckpoint(store, layout);
    assert.equal(loaded?.state.step, 10);
    assert.deepEqual(loaded?.state.rng, [5, 6, 7, 8]);
    assert.deepEqual(loaded?.m, m);
    assert.deepEqual(loaded?.v, v);
    // The superseded checkpoint is gone.
    assert.deepEqual([...Deno.readDirSync(join(dir, "state", "blobs"))].map((e) => e.name).sort(), [
      "step-00000010",
      "train-state.json",
    ]);
    // Flip one byte of the optimizer state: reported with its path, not loaded.
    const file = join(dir, "state", "blobs", "step-00000010", "optimizer.safetensors");
    const bytes = await Deno.readFile(file);
    bytes[bytes.length - 3] ^= 0x40;
    await Deno.writeFile(file, bytes);
    await assert.rejects(
      () => loadTrainCheckpoint(store, layout),
      (e: Error) =>
        e instanceof DamagedCheckpointError && e.message.includes("optimizer.safetensors") &&
        /damaged training checkpoint/.test(e.message),
    );
    // A checkpoint for another model shape is refused too.
    await assert.rejects(
      () => loadTrainCheckpoint(store, paramLayout({ ...tiny, layers: 1 })),
      /saved for model/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("schedule: linear warmup, cosine to min", () => {
  const s = { maxLr: 1e-3, minLr: 1e-4, warmupSteps: 10, totalSteps: 110 };
  assert.equal(learningRate(0, s), 1e-4);
  assert.equal(learningRate(9, s), 1e-3);
  assert.ok(Math.abs(learningRate(60, s) - 5.5e-4) < 1e-12);
  assert.equal(learningRate(110, s), 1e-4);
  assert.equal(learningRate(500, s), 1e-4);
});

Deno.test("rng: state save/restore continues the same stream", () => {
  const rng = new Rng(42);
  rng.normal();
  const saved = rng.state();
  const a = [rng.nextU32(), rng.normal(), rng.uniform()];
  const r2 = Rng.fromState(saved);
  assert.deepEqual([r2.nextU32(), r2.normal(), r2.uniform()], a);
  assert.notEqual(new Rng(1).nextU32(), new Rng(2).nextU32());
});
