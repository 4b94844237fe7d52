/**
 * Checkpoints: model weights as a Hugging Face GPT-2 directory (`model.safetensors` + `config.json`,
 * with the tokenizer's `bos_token_id`/`eos_token_id`/`pad_token_id`, and a `generation_config.json`
 * holding the stop tokens, so `transformers`' `generate()` stops where kiln does), and, while
 * training, the full training state beside them so a killed run resumes exactly.
 *
 * Loading checks before it allocates: `config.json` is read strictly (see ./config.ts), its sizes
 * are checked against the shapes in the safetensors header (read alone, without the data), and the
 * parameters must fit in the memory available; each failure names the file and the field. An
 * untied output layer (`tie_word_embeddings: false`) loads only when its `lm_head.weight` equals
 * `wte.weight` (kiln's GPT ties them); otherwise it is refused by name rather than dropped.
 *
 * A training checkpoint is written as `step-<n>/model.safetensors` and `step-<n>/optimizer.safetensors`
 * (AdamW's m and v), then a small JSON pointer (`train-state`) naming that directory, the SHA-256 of
 * both files, the step, and whatever else the trainer records (RNG state, data cursor, schedule).
 * Every write is atomic and the pointer is written last, so a crash at any moment leaves the previous
 * complete checkpoint in force; a file damaged afterwards fails its digest and is reported, never loaded.
 *
 * @example Save and load a model directory
 * ```ts
 * import { gptConfig } from "./config.ts";
 * import { initParams, paramLayout } from "./params.ts";
 * import { loadModelDir, saveModelDir } from "./checkpoint.ts";
 * const layout = paramLayout(gptConfig({ layers: 1, dim: 32, heads: 2, context: 16, vocab: 64 }));
 * await saveModelDir("/tmp/tiny-gpt", layout, initParams(layout, 1), { bos: 0, eos: 0, stop: [0] });
 * const { config, params } = await loadModelDir("/tmp/tiny-gpt");
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { DataError, KilnError, StageError } from "../pipeline/errors.ts";
import { writeFileAtomic } from "../pipeline/workspace.ts";
import {
  checkModelFits,
  fromHFConfig,
  type GPTConfig,
  gptConfig,
  type SpecialTokenIds,
  toGenerationConfig,
  toHFConfig,
} from "./config.ts";
import { END_OF_TEXT, type Tokenizer } from "../tokenizer/tokenizer.ts";
import { loadTokenizer } from "../tokenizer/load.ts";
import { type ParamLayout, paramLayout } from "./params.ts";
import { parseSafetensors, type SafeTensors, serializeSafetensors } from "./safetensors.ts";

/** The weights file of a model directory. */
export const MODEL_FILE = "model.safetensors";
/** The config file of a model directory. */
export const CONFIG_FILE = "config.json";
/** The generation settings of a model directory (HF's `generation_config.json`). */
export const GENERATION_CONFIG_FILE = "generation_config.json";

/**
 * The ids a checkpoint records from its tokenizer: `<|endoftext|>` as bos and eos (GPT-2's
 * convention), `<|pad|>` when the tokenizer has one, and `stop` (default `[eos]`) as the tokens that
 * end a generation (a chat model adds its end-of-turn token).
 */
export function specialTokenIds(tokenizer: Tokenizer, stop?: number[]): SpecialTokenIds {
  const eot = tokenizer.specialTokens[END_OF_TEXT];
  const pad = tokenizer.specialTokens["<|pad|>"];
  return {
    ...(eot === undefined ? {} : { bos: eot, eos: eot }),
    ...(pad === undefined ? {} : { pad }),
    ...(stop ? { stop } : eot === undefined ? {} : { stop: [eot] }),
  };
}

/** Serialises the weights under their Hugging Face GPT-2 names. */
export function serializeModel(layout: ParamLayout, params: Float32Array): Uint8Array {
  return serializeSafetensors(
    layout.entries.map((e) => ({
      name: e.name,
      shape: e.shape,
      data: params.subarray(e.offset, e.offset + e.size),
    })),
    { format: "pt" },
  );
}

const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value, null, 2) + "\n");

/** The bytes of `config.json` for a model, with the tokenizer's ids when given (see {@linkcode specialTokenIds}). */
export function serializeConfig(config: GPTConfig, tokens?: SpecialTokenIds): Uint8Array {
  return json(toHFConfig(config, tokens));
}

/** The bytes of `generation_config.json`: the stop tokens as `eos_token_id`, bos and pad. */
export function serializeGenerationConfig(tokens: SpecialTokenIds): Uint8Array {
  return json(toGenerationConfig(tokens));
}

/**
 * The files of a model directory, by name: `model.safetensors`, `config.json` and, with `tokens`
 * (see {@linkcode specialTokenIds}), their ids in `config.json` and a `generation_config.json`. A
 * stage writes each with `ctx.out.writeFile(name, bytes)`.
 */
export function modelDirFiles(
  layout: ParamLayout,
  params: Float32Array,
  tokens?: SpecialTokenIds,
): Record<string, Uint8Array> {
  return {
    [MODEL_FILE]: serializeModel(layout, params),
    [CONFIG_FILE]: serializeConfig(layout.config, tokens),
    ...(tokens ? { [GENERATION_CONFIG_FILE]: serializeGenerationConfig(tokens) } : {}),
  };
}

/** Writes {@linkcode modelDirFiles} into `dir`, each atomically. */
export async function saveModelDir(
  dir: string,
  layout: ParamLayout,
  params: Float32Array,
  tokens?: SpecialTokenIds,
): Promise<void> {
  for (const [name, bytes] of Object.entries(modelDirFiles(layout, params, tokens))) {
    await writeFileAtomic(join(dir, name), bytes);
  }
}

/**
 * The stop tokens of a model directory: `generation_config.json`'s `eos_token_id` (a number or a
 * list), else `config.json`'s; undefined when neither names one.
 */
export async function readStopTokens(dir: string): Promise<number[] | undefined> {
  for (const name of [GENERATION_CONFIG_FILE, CONFIG_FILE]) {
    const path = join(dir, name);
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue;
      throw e;
    }
    let eos: unknown;
    try {
      eos = (JSON.parse(text) as Record<string, unknown>)?.eos_token_id;
    } catch (e) {
      throw new DataError(path, undefined, `not valid JSON (${(e as Error).message})`);
    }
    if (eos === undefined || eos === null) continue;
    const ids = Array.isArray(eos) ? eos : [eos];
    if (!ids.every((id) => Number.isInteger(id) && id >= 0)) {
      throw new DataError(
        path,
        "eos_token_id",
        `expected a token id or a list of them, got ${JSON.stringify(eos)}`,
      );
    }
    return ids as number[];
  }
  return undefined;
}

/** Tensors in Hugging Face GPT-2 files that are buffers, not parameters. */
const BUFFERS = /(^|\.)attn\.(masked_)?bias$/;
const LM_HEAD = "lm_head.weight";

/** A stored tensor's name without `GPT2LMHeadModel`'s `transformer.` prefix. */
const bareName = (stored: string) =>
  stored.startsWith("transformer.") ? stored.slice("transformer.".length) : stored;

/**
 * Copies the weights of a safetensors file into a flat parameter buffer for `layout`. Accepts the
 * `transformer.` prefix of `GPT2LMHeadModel` files, F32/F16/BF16 data, and skips GPT-2's causal-mask
 * buffers. `lm_head.weight` is skipped when the config ties it to the embedding (HF does the same);
 * with `tieWordEmbeddings: false` it must be there and equal `wte.weight`, since kiln's GPT has no
 * separate output layer. A missing, unexpected or misshapen tensor is a {@linkcode DataError}.
 */
export function loadWeights(
  file: SafeTensors,
  layout: ParamLayout,
  options: { tieWordEmbeddings?: boolean; configFile?: string } = {},
): Float32Array {
  const tied = options.tieWordEmbeddings ?? true;
  const byName = new Map<string, string>();
  let lmHead: string | undefined;
  for (const stored of file.names()) {
    const name = bareName(stored);
    if (BUFFERS.test(name)) continue;
    if (name === LM_HEAD) lmHead = stored;
    else byName.set(name, stored);
  }
  const config = options.configFile ?? "config.json";
  if (!tied && lmHead === undefined) {
    throw new DataError(
      file.file,
      LM_HEAD,
      `tensor missing: ${config} sets tie_word_embeddings: false, so the output layer must be stored`,
    );
  }
  const params = new Float32Array(layout.total);
  for (const entry of layout.entries) {
    const stored = byName.get(entry.name);
    if (stored === undefined) {
      throw new DataError(file.file, entry.name, "tensor missing from the checkpoint");
    }
    byName.delete(entry.name);
    const info = file.info(stored);
    if (info.shape.join(",") !== entry.shape.join(",")) {
      throw new DataError(
        file.file,
        stored,
        `shape [${info.shape}] does not match the model's [${entry.shape}] (is config.json the one for these weights?)`,
      );
    }
    params.set(file.float32(stored), entry.offset);
  }
  if (byName.size > 0) {
    throw new DataError(file.file, [...byName.values()][0], "unexpected tensor: not part of a GPT-2 model");
  }
  if (!tied) {
    const { wte } = layout;
    const head = file.info(lmHead!);
    const same = head.shape.join(",") === wte.shape.join(",") &&
      file.float32(lmHead!).every((x, i) => Object.is(x, params[wte.offset + i]));
    if (!same) {
      throw new DataError(
        file.file,
        lmHead,
        `an untied output layer (${config}: tie_word_embeddings: false, lm_head.weight differs from ` +
          `wte.weight) is not supported: kiln's GPT uses the token embedding as its output layer`,
      );
    }
  }
  return params;
}

/** The tensor shapes of a safetensors file, read from its header alone (no tensor data is read). */
async function readShapes(path: string): Promise<{ shapes: Map<string, number[]>; size: number }> {
  using file = await Deno.open(path);
  const size = (await file.stat()).size;
  const read = async (n: number) => {
    const buf = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const got = await file.read(buf.subarray(at));
      if (got === null) break;
      at += got;
    }
    return buf.subarray(0, at);
  };
  const prefix = await read(8);
  const length = prefix.length === 8 ? Number(new DataView(prefix.buffer).getBigUint64(0, true)) : -1;
  // The full parse (parseSafetensors) reports damage precisely; here only what is needed to check shapes.
  if (length < 0 || length > 100_000_000 || 8 + length > size) return { shapes: new Map(), size };
  let header: Record<string, { shape?: unknown }>;
  try {
    header = JSON.parse(new TextDecoder().decode(await read(length)));
  } catch {
    return { shapes: new Map(), size };
  }
  const shapes = new Map<string, number[]>();
  for (const [name, entry] of Object.entries(header ?? {})) {
    if (name !== "__metadata__" && Array.isArray(entry?.shape)) {
      shapes.set(bareName(name), entry.shape as number[]);
    }
  }
  return { shapes, size };
}

/**
 * Checks the sizes `config.json` claims against the weights' own shapes, so a config that does not
 * belong to its weights (or claims a huge model) is named before anything is allocated.
 */
function checkShapes(
  config: GPTConfig,
  shapes: Map<string, number[]>,
  configPath: string,
  modelPath: string,
) {
  if (shapes.size === 0) return; // unreadable header: parseSafetensors reports it
  const claim = (field: string, value: number, found: string) =>
    new DataError(configPath, field, `${value} does not match the weights in ${modelPath} (${found})`);
  const wte = shapes.get("wte.weight"), wpe = shapes.get("wpe.weight");
  if (wte?.length === 2) {
    if (wte[1] !== config.dim) throw claim("n_embd", config.dim, `wte.weight is [${wte}]`);
    if (wte[0] !== config.vocab) throw claim("vocab_size", config.vocab, `wte.weight is [${wte}]`);
  }
  if (wpe?.length === 2 && wpe[0] !== config.context) {
    throw claim("n_positions", config.context, `wpe.weight is [${wpe}]`);
  }
  const blocks = new Set(
    [...shapes.keys()].map((n) => /^h\.(\d+)\./.exec(n)?.[1]).filter((b) => b !== undefined),
  );
  if (blocks.size > 0 && blocks.size !== config.layers) {
    throw claim("n_layer", config.layers, `${blocks.size} blocks h.0 … h.${blocks.size - 1}`);
  }
}

/** A loaded model: its config, parameter layout and flat weights. */
export interface LoadedModel {
  config: GPTConfig;
  layout: ParamLayout;
  params: Float32Array;
}

/**
 * The `config.json` of a model directory, read and checked: the config, the file's JSON and its path
 * (`what` names the directory's kind in the error when there is none).
 */
export async function readModelConfig(
  dir: string,
  what = "model",
): Promise<{ config: GPTConfig; json: Record<string, unknown>; path: string }> {
  const configPath = join(dir, CONFIG_FILE);
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(configPath));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new KilnError(`${dir}: not a ${what} directory (no ${CONFIG_FILE})`);
    }
    throw new DataError(configPath, undefined, `not valid JSON (${(e as Error).message})`);
  }
  return { config: fromHFConfig(json, configPath), json: json as Record<string, unknown>, path: configPath };
}

/** Loads a model directory (kiln's output, or a local Hugging Face GPT-2 download). */
export async function loadModelDir(dir: string): Promise<LoadedModel> {
  const { config, json, path: configPath } = await readModelConfig(dir);
  const modelPath = join(dir, MODEL_FILE);
  let header;
  try {
    header = await readShapes(modelPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new KilnError(`${dir}: not a model directory (no ${MODEL_FILE})`);
    }
    throw e;
  }
  checkShapes(config, header.shapes, configPath, modelPath);
  // The file's bytes and the f32 parameters are in memory together while loading.
  checkModelFits(config, configPath, 1, header.size);
  const layout = paramLayout(config);
  const file = parseSafetensors(await Deno.readFile(modelPath), modelPath);
  const tieWordEmbeddings = json.tie_word_embeddings !== false;
  return { config, layout, params: loadWeights(file, layout, { tieWordEmbeddings, configFile: configPath }) };
}

/** Where training checkpoints go: {@linkcode Checkpoint} from the stage context satisfies it. */
export interface StateStore {
  writeFile(name: string, data: Uint8Array): Promise<void>;
  readFile(name: string): Promise<Uint8Array | undefined>;
  save(name: string, value: unknown): Promise<void>;
  load<T = unknown>(name: string): Promise<T | undefined>;
  /** Absolute path of a state file (to remove superseded checkpoints and name files in errors). */
  path(name: string): string;
}

/** What a training checkpoint holds besides the weights and AdamW moments. */
export interface TrainState {
  /** Optimizer steps completed. */
  step: number;
  /** Trainer-specific JSON state (RNG, data cursor, schedule, metrics so far). */
  [key: string]: unknown;
}

/** A loaded training checkpoint. */
export interface TrainCheckpoint<S extends TrainState = TrainState> {
  params: Float32Array;
  /** AdamW first moment (same layout as params). */
  m: Float32Array;
  /** AdamW second moment. */
  v: Float32Array;
  state: S;
}

interface Pointer {
  format: "kiln-train-checkpoint/1";
  dir: string;
  config: GPTConfig;
  sha256: Record<string, string>;
  state: TrainState;
}

const POINTER = "train-state";
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");
const stepDir = (step: number) => `step-${String(step).padStart(8, "0")}`;

/** Saves a training checkpoint atomically (see the module doc) and removes the one it supersedes. */
export async function saveTrainCheckpoint(
  store: StateStore,
  layout: ParamLayout,
  checkpoint: TrainCheckpoint,
): Promise<void> {
  const previous = await store.load<Pointer>(POINTER).catch(() => undefined);
  const dir = stepDir(checkpoint.state.step);
  const model = serializeModel(layout, checkpoint.params);
  const optimizer = serializeSafetensors([
    { name: "adamw.m", shape: [layout.total], data: checkpoint.m },
    { name: "adamw.v", shape: [layout.total], data: checkpoint.v },
  ]);
  await store.writeFile(`${dir}/${MODEL_FILE}`, model);
  await store.writeFile(`${dir}/optimizer.safetensors`, optimizer);
  const pointer: Pointer = {
    format: "kiln-train-checkpoint/1",
    dir,
    config: layout.config,
    sha256: { [MODEL_FILE]: sha256(model), "optimizer.safetensors": sha256(optimizer) },
    state: checkpoint.state,
  };
  await store.save(POINTER, pointer);
  if (previous?.dir && previous.dir !== dir) {
    await Deno.remove(dirname(store.path(`${previous.dir}/${MODEL_FILE}`)), { recursive: true }).catch(
      () => {},
    );
  }
}

/** A training checkpoint failed its checks; the message names the file and how to start over. */
export class DamagedCheckpointError extends KilnError {}

/**
 * Loads the latest training checkpoint, or undefined when none was saved. Every file is checked
 * against the digests recorded when it was written; a damaged or mismatched checkpoint throws
 * {@linkcode DamagedCheckpointError} (naming the file) instead of training on bad state.
 */
export async function loadTrainCheckpoint<S extends TrainState = TrainState>(
  store: StateStore,
  layout: ParamLayout,
): Promise<TrainCheckpoint<S> | undefined> {
  const pointerPath = store.path(POINTER + ".json");
  const damaged = (file: string, why: string) =>
    new DamagedCheckpointError(
      `${file}: damaged training checkpoint (${why}); it was not loaded. ` +
        `Delete ${dirname(pointerPath)} to restart this stage from step 0.`,
    );
  let pointer: Pointer | undefined;
  try {
    pointer = await store.load<Pointer>(POINTER);
  } catch (e) {
    throw damaged(pointerPath, `unreadable: ${(e as Error).message}`);
  }
  if (pointer === undefined) return undefined;
  if (pointer.format !== "kiln-train-checkpoint/1" || typeof pointer.dir !== "string" || !pointer.sha256) {
    throw damaged(pointerPath, "missing fields");
  }
  if (JSON.stringify(gptConfig(pointer.config)) !== JSON.stringify(layout.config)) {
    throw damaged(
      pointerPath,
      `saved for model ${JSON.stringify(pointer.config)}, not ${JSON.stringify(layout.config)}`,
    );
  }
  const read = async (name: string) => {
    const rel = `${pointer.dir}/${name}`;
    const bytes = await store.readFile(rel);
    if (bytes === undefined) throw damaged(store.path(rel), "file missing");
    if (sha256(bytes) !== pointer.sha256[name]) throw damaged(store.path(rel), "SHA-256 does not match");
    try {
      return parseSafetensors(bytes, store.path(rel));
    } catch (e) {
      throw damaged(store.path(rel), (e as Error).message);
    }
  };
  const params = loadWeights(await read(MODEL_FILE), layout);
  const optimizer = await read("optimizer.safetensors");
  return {
    params,
    m: optimizer.float32("adamw.m"),
    v: optimizer.float32("adamw.v"),
    state: pointer.state as S,
  };
}

/**
 * The tokenizer of a stage that starts from a model: `name` when given, else the `tokenizer.json` of
 * the `init` directory or the input artifact.
 */
export async function modelTokenizer(
  stage: string,
  name: string | undefined,
  dirs: (string | undefined)[],
): Promise<{ tokenizer: Tokenizer; file?: string }> {
  if (name) return { tokenizer: await loadTokenizer(name), file: name.includes("/") ? name : undefined };
  for (const dir of dirs) {
    if (!dir) continue;
    const file = `${dir}/tokenizer.json`;
    if (await Deno.stat(file).then(() => true, () => false)) {
      return { tokenizer: await loadTokenizer(file), file };
    }
  }
  throw new StageError(
    stage,
    `no tokenizer.json in ${dirs.filter(Boolean).join(" or ")}; set the "tokenizer" option`,
  );
}

/** The starting weights: `init` when set, else the input artifact (`inputDir`); checks the tokenizer fits. */
export async function startingModel(
  stage: string,
  init: string | undefined,
  inputDir: string,
  tokenizer: Tokenizer,
): Promise<LoadedModel> {
  const model = await loadModelDir(init ?? inputDir);
  if (tokenizer.vocabSize > model.config.vocab) {
    throw new StageError(
      stage,
      `the tokenizer has ${tokenizer.vocabSize} ids but the model's vocabulary only ` +
        `${model.config.vocab}: use the model's own tokenizer, or chat markers that are plain text`,
    );
  }
  return model;
}
