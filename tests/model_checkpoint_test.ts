import { strict as assert } from "node:assert";
import { join } from "node:path";
import { fromHFConfig, gptConfig, parameterCount, toHFConfig } from "../model/config.ts";
import { initParams, paramLayout } from "../model/params.ts";
import { parseSafetensors, serializeSafetensors } from "../model/safetensors.ts";
import {
  DamagedCheckpointError,
  GENERATION_CONFIG_FILE,
  loadModelDir,
  loadTrainCheckpoint,
  loadWeights,
  readStopTokens,
  saveModelDir,
  saveTrainCheckpoint,
  specialTokenIds,
} from "../model/checkpoint.ts";
import { Checkpoint } from "../pipeline/workspace.ts";
import { DataError, KilnError } from "../pipeline/errors.ts";
import { END_OF_TEXT, Tokenizer } from "../tokenizer/tokenizer.ts";
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
    await assert.rejects(
      () => loadModelDir(dir),
      /config\.json:n_embd: 16 does not match the weights in .*model\.safetensors \(wte\.weight is \[11,8\]\)/,
    );
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

/** GPT-2 124M's config.json as the Hugging Face hub serves it (sizes shrunk to `tiny`). */
const HUB_GPT2 = {
  activation_function: "gelu_new",
  architectures: ["GPT2LMHeadModel"],
  attn_pdrop: 0.1,
  bos_token_id: 50256,
  embd_pdrop: 0.1,
  eos_token_id: 50256,
  initializer_range: 0.02,
  layer_norm_epsilon: 1e-05,
  model_type: "gpt2",
  n_ctx: 6,
  n_embd: 8,
  n_head: 2,
  n_layer: 2,
  n_positions: 6,
  resid_pdrop: 0.1,
  summary_activation: null,
  summary_first_dropout: 0.1,
  summary_proj_to_labels: true,
  summary_type: "cls_index",
  summary_use_proj: true,
  task_specific_params: { "text-generation": { do_sample: true, max_length: 50 } },
  vocab_size: 11,
};

Deno.test("config: a hub GPT-2 config.json loads; every field kiln does not implement is refused by name", () => {
  assert.deepEqual(fromHFConfig(HUB_GPT2), tiny);
  const refused: [Record<string, unknown>, RegExp][] = [
    [
      { layer_norm_epsilon: 1e-6 },
      /x\/config\.json:layer_norm_epsilon: 0\.000001 is not supported \(kiln needs 0\.00001/,
    ],
    [{ activation_function: "relu" }, /x\/config\.json:activation_function: "relu" is not supported/],
    [{ scale_attn_by_inverse_layer_idx: true }, /scale_attn_by_inverse_layer_idx: true is not supported/],
    [{ rotary_dim: 64 }, /x\/config\.json:rotary_dim: kiln's GPT-2 does not support this config field/],
    [{ n_inner: 12 }, /x\/config\.json:n_inner: 12 is not supported/],
    [{ n_ctx: 1024 }, /x\/config\.json:n_ctx: 1024 differs from n_positions 6/],
    [{ n_layer: 2.5 }, /x\/config\.json:n_layer: expected a positive integer, got 2\.5/],
    [{ n_head: 3 }, /x\/config\.json:n_head: 3 heads do not divide n_embd=8/],
  ];
  for (const [change, message] of refused) {
    assert.throws(() => fromHFConfig({ ...HUB_GPT2, ...change }, "x/config.json"), (e: Error) => {
      assert.ok(e instanceof DataError, e.message);
      assert.match(e.message, message);
      return true;
    });
  }
});

Deno.test("checkpoint: config.json carries the tokenizer's ids; generation_config.json the stop tokens", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const bytes = Array.from({ length: 256 }, (_, i) => Uint8Array.of(i));
    const tokenizer = new Tokenizer({
      tokens: bytes,
      specialTokens: { [END_OF_TEXT]: 256, "<|end|>": 257, "<|pad|>": 258 },
    });
    const layout = paramLayout({ ...tiny, vocab: 259 });
    await saveModelDir(dir, layout, initParams(layout, 1), specialTokenIds(tokenizer, [257, 256]));
    const config = JSON.parse(await Deno.readTextFile(join(dir, "config.json")));
    assert.deepEqual(
      [config.bos_token_id, config.eos_token_id, config.pad_token_id, config.tie_word_embeddings],
      [256, 256, 258, true],
    );
    assert.deepEqual(JSON.parse(await Deno.readTextFile(join(dir, GENERATION_CONFIG_FILE))), {
      bos_token_id: 256,
      eos_token_id: [257, 256],
      pad_token_id: 258,
    });
    assert.deepEqual(await readStopTokens(dir), [257, 256]);
    assert.deepEqual((await loadModelDir(dir)).config, layout.config);
    // No <|pad|>: no pad_token_id; GPT-2's single stop token.
    const plain = new Tokenizer({ tokens: bytes, specialTokens: { [END_OF_TEXT]: 256 } });
    assert.deepEqual(specialTokenIds(plain), { bos: 256, eos: 256, stop: [256] });
    await Deno.remove(join(dir, GENERATION_CONFIG_FILE));
    assert.deepEqual(
      await readStopTokens(dir),
      [256],
      "config.json's eos_token_id without a generation config",
    );
    // An id the model cannot produce is refused when the config is written.
    await assert.rejects(
      () => saveModelDir(dir, paramLayout(tiny), initParams(paramLayout(tiny), 1), specialTokenIds(plain)),
      /bos_token_id 256 is outside the model's vocabulary of 11/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: an untied lm_head.weight loads only when it equals wte, else it is refused by name", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const layout = paramLayout(tiny);
    const params = initParams(layout, 3);
    const write = async (head: Float32Array | undefined) => {
      const tensors = layout.entries.map((e) => ({
        name: "transformer." + e.name,
        shape: e.shape,
        data: params.subarray(e.offset, e.offset + e.size),
      }));
      if (head) tensors.push({ name: "lm_head.weight", shape: [11, 8], data: head });
      await Deno.writeFile(join(dir, "model.safetensors"), serializeSafetensors(tensors));
      await Deno.writeTextFile(
        join(dir, "config.json"),
        JSON.stringify({ ...HUB_GPT2, tie_word_embeddings: false }),
      );
    };
    const wte = params.slice(0, 88);
    await write(wte);
    assert.deepEqual((await loadModelDir(dir)).params, params);
    const other = wte.map((x) => x * 2);
    await write(other);
    await assert.rejects(
      () => loadModelDir(dir),
      /model\.safetensors:lm_head\.weight: an untied output layer \(.*config\.json: tie_word_embeddings: false/,
    );
    await write(undefined);
    await assert.rejects(
      () => loadModelDir(dir),
      /lm_head\.weight: tensor missing: .*tie_word_embeddings: false/,
    );
    // Tied (HF's default): lm_head.weight is HF's copy of wte and is not read.
    await Deno.writeTextFile(join(dir, "config.json"), JSON.stringify(HUB_GPT2));
    assert.deepEqual((await loadModelDir(dir)).params, params);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("checkpoint: a config.json claiming a huge model fails naming the file and field, before allocating", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const layout = paramLayout(tiny);
    await saveModelDir(dir, layout, initParams(layout, 1));
    const configPath = join(dir, "config.json");
    const claims: [Record<string, unknown>, RegExp][] = [
      [
        { n_layer: 1_000_000 },
        /config\.json:n_layer: 1000000 does not match the weights .*\(2 blocks h\.0 … h\.1\)/,
      ],
      [{ n_embd: 100_000, n_head: 1 }, /config\.json:n_embd: 100000 does not match the weights/],
      [{ vocab_size: 2 ** 40 }, /config\.json:vocab_size: 1099511627776 does not match the weights/],
      [{ n_positions: 1e9, n_ctx: 1e9 }, /config\.json:n_positions: 1000000000 does not match the weights/],
      [{ n_layer: 1e300 }, /config\.json:n_layer: expected a positive integer, got 1e\+300/],
    ];
    for (const [claim, message] of claims) {
      await Deno.writeTextFile(configPath, JSON.stringify({ ...HUB_GPT2, ...claim }));
      await assert.rejects(() => loadModelDir(dir), (e: Error) => {
        assert.ok(e instanceof DataError, e.message);
        assert.match(e.message, message);
        return true;
      });
    }
    // Weights whose header agrees with a huge config (no data read): refused for memory, not by a failed allocation.
    const huge = {
      ...HUB_GPT2,
      n_layer: 1,
      n_embd: 65_536,
      n_head: 1,
      vocab_size: 1_000_000,
      n_positions: 6,
      n_ctx: 6,
    };
    const header = new TextEncoder().encode(JSON.stringify({
      "wte.weight": { dtype: "F32", shape: [1_000_000, 65_536], data_offsets: [0, 4 * 65_536_000_000] },
      "wpe.weight": {
        dtype: "F32",
        shape: [6, 65_536],
        data_offsets: [4 * 65_536_000_000, 4 * 65_536_000_000 + 4 * 6 * 65_536],
      },
      "h.0.ln_1.weight": { dtype: "F32", shape: [65_536], data_offsets: [0, 0] },
    }));
    const file = new Uint8Array(8 + header.length);
    new DataView(file.buffer).setBigUint64(0, BigInt(header.length), true);
    file.set(header, 8);
    await Deno.writeFile(join(dir, "model.safetensors"), file);
    await Deno.writeTextFile(configPath, JSON.stringify(huge));
    await assert.rejects(() => loadModelDir(dir), (e: Error) => {
      assert.ok(e instanceof KilnError, e.message);
      assert.match(
        e.message,
        /config\.json: a model of [\d,]+ parameters \(n_layer 1, n_embd 65536, .*\) needs \d+(\.\d+)? GiB, more than the/,
      );
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
