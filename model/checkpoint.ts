/**
 * Checkpoints: model weights as a Hugging Face GPT-2 directory (`model.safetensors` + `config.json`),
 * and, while training, the full training state beside them so a killed run resumes exactly.
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
 * await saveModelDir("/tmp/tiny-gpt", layout, initParams(layout, 1));
 * const { config, params } = await loadModelDir("/tmp/tiny-gpt");
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";
import { DataError, KilnError } from "../pipeline/errors.ts";
import { writeFileAtomic } from "../pipeline/workspace.ts";
import { fromHFConfig, type GPTConfig, gptConfig, toHFConfig } from "./config.ts";
import { type ParamLayout, paramLayout } from "./params.ts";
import { parseSafetensors, type SafeTensors, serializeSafetensors } from "./safetensors.ts";

/** The weights file of a model directory. */
export const MODEL_FILE = "model.safetensors";
/** The config file of a model directory. */
export const CONFIG_FILE = "config.json";

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

/** The bytes of `config.json` for a layout. */
export function serializeConfig(config: GPTConfig): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(toHFConfig(config), null, 2) + "\n");
}

/** Writes `model.safetensors` and `config.json` into `dir`, each atomically. */
export async function saveModelDir(dir: string, layout: ParamLayout, params: Float32Array): Promise<void> {
  await writeFileAtomic(join(dir, MODEL_FILE), serializeModel(layout, params));
  await writeFileAtomic(join(dir, CONFIG_FILE), serializeConfig(layout.config));
}

/** Tensors in Hugging Face GPT-2 files that are buffers or duplicates, not parameters. */
const IGNORED = /(^|\.)attn\.(masked_)?bias$|^lm_head\.weight$/;

/**
 * Copies the weights of a safetensors file into a flat parameter buffer for `layout`. Accepts the
 * `transformer.` prefix of `GPT2LMHeadModel` files, F32/F16/BF16 data, and skips GPT-2's causal-mask
 * buffers and its tied `lm_head.weight`. A missing, unexpected or misshapen tensor is a {@linkcode DataError}.
 */
export function loadWeights(file: SafeTensors, layout: ParamLayout): Float32Array {
  const params = new Float32Array(layout.total);
  const byName = new Map<string, string>();
  for (const stored of file.names()) {
    const name = stored.startsWith("transformer.") ? stored.slice("transformer.".length) : stored;
    if (IGNORED.test(name)) continue;
    byName.set(name, stored);
  }
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
  return params;
}

/** A loaded model: its config, parameter layout and flat weights. */
export interface LoadedModel {
  config: GPTConfig;
  layout: ParamLayout;
  params: Float32Array;
}

/** Loads a model directory (kiln's output, or a local Hugging Face GPT-2 download). */
export async function loadModelDir(dir: string): Promise<LoadedModel> {
  const configPath = join(dir, CONFIG_FILE);
  let json: unknown;
  try {
    json = JSON.parse(await Deno.readTextFile(configPath));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new KilnError(`${dir}: not a model directory (no ${CONFIG_FILE})`);
    }
    throw new DataError(configPath, undefined, `not valid JSON (${(e as Error).message})`);
  }
  const config = fromHFConfig(json, configPath);
  const layout = paramLayout(config);
  const modelPath = join(dir, MODEL_FILE);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(modelPath);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new KilnError(`${dir}: not a model directory (no ${MODEL_FILE})`);
    }
    throw e;
  }
  return { config, layout, params: loadWeights(parseSafetensors(bytes, modelPath), layout) };
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
