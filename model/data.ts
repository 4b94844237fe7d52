/**
 * Training batches from token shards in llm.c's `.bin` layout: a 256 × int32 header (magic 20240520,
 * version 1, token count; or magic 20240801, version 7 for uint32 tokens) followed by the tokens.
 *
 * A shard of N tokens yields ⌊(N − 1) / T⌋ windows of T + 1 tokens (inputs and the next-token
 * targets), starting every T tokens. Each epoch visits every window of every shard once, in an
 * order drawn from the seed and the epoch number; the position in that order is the *cursor*, which
 * a checkpoint saves so a resumed run reads exactly the batches an uninterrupted one would have.
 *
 * @example
 * ```ts
 * import { TokenLoader } from "./data.ts";
 * const loader = new TokenLoader(["tokens/train-00000.bin"], { batch: 4, context: 64, seed: 1 });
 * const { inputs, targets } = loader.next(); // Int32Array of 4 × 64 each
 * const saved = loader.cursor();
 * loader.seek(saved); // the same next batch again
 * loader.close();
 * ```
 * @module
 */
import { DataError } from "../pipeline/errors.ts";
import { Rng } from "./rng.ts";

/** Header size of an llm.c token shard, in bytes. */
export const SHARD_HEADER_BYTES = 256 * 4;

/** A validated token shard. */
export interface TokenShardInfo {
  path: string;
  /** Number of tokens. */
  count: number;
  /** 2 (uint16, version 1) or 4 (uint32, version 7). */
  bytesPerToken: 2 | 4;
}

/** Reads and checks a shard's header and size; a {@linkcode DataError} names what is wrong. */
export function tokenShardInfo(path: string): TokenShardInfo {
  using file = Deno.openSync(path, { read: true });
  const header = new Uint8Array(SHARD_HEADER_BYTES);
  const got = readFully(file, header);
  if (got < SHARD_HEADER_BYTES) {
    throw new DataError(
      path,
      "header",
      `not a token shard: ${got} bytes, the header alone is ${SHARD_HEADER_BYTES}`,
    );
  }
  const words = new DataView(header.buffer);
  const magic = words.getInt32(0, true);
  const version = words.getInt32(4, true);
  const count = words.getInt32(8, true);
  let bytesPerToken: 2 | 4;
  if (magic === 20240520 && version === 1) bytesPerToken = 2;
  else if (magic === 20240801 && version === 7) bytesPerToken = 4;
  else {
    throw new DataError(
      path,
      "header",
      `not an llm.c token shard (magic ${magic}, version ${version}; expected 20240520/1 or 20240801/7)`,
    );
  }
  const size = file.statSync().size;
  if (count < 0 || size !== SHARD_HEADER_BYTES + count * bytesPerToken) {
    throw new DataError(
      path,
      "header",
      `header says ${count} tokens (${
        SHARD_HEADER_BYTES + count * bytesPerToken
      } bytes), the file has ${size} bytes`,
    );
  }
  return { path, count, bytesPerToken };
}

function readFully(file: Deno.FsFile, into: Uint8Array): number {
  let got = 0;
  while (got < into.length) {
    const n = file.readSync(into.subarray(got));
    if (n === null || n === 0) break;
    got += n;
  }
  return got;
}

/** Where a loader is in its stream of windows: saved in checkpoints. */
export interface LoaderCursor {
  epoch: number;
  /** Index into the epoch's window order of the next window to read. */
  index: number;
}

/** Options of a {@linkcode TokenLoader}. */
export interface LoaderOptions {
  /** Sequences per batch (B). */
  batch: number;
  /** Tokens per sequence (T). */
  context: number;
  /** Seeds the window order; ignored when `shuffle` is false. */
  seed?: number;
  /** Visit windows in a seeded random order each epoch (default true); false reads them in file order. */
  shuffle?: boolean;
  /** When given, every token read is checked to be below it (a mismatched tokenizer is a clear error). */
  vocab?: number;
}

/** One batch: `inputs[b*T + t]` is followed by `targets[b*T + t]` in the data. */
export interface Batch {
  inputs: Int32Array;
  targets: Int32Array;
}

/** Deterministic B × T batches over token shards, with a saveable cursor. */
export class TokenLoader {
  readonly shards: TokenShardInfo[];
  /** Windows in one epoch, over all shards. */
  readonly windowsPerEpoch: number;
  private readonly files: Deno.FsFile[];
  /** First global window index of each shard. */
  private readonly firstWindow: number[];
  private order: Uint32Array;
  private orderEpoch = -1;
  private epoch = 0;
  private index = 0;
  private readonly raw: Uint8Array;

  constructor(paths: string[], readonly options: LoaderOptions) {
    if (paths.length === 0) throw new DataError("<tokens>", undefined, "no token shards to read");
    const T = options.context;
    this.shards = paths.map(tokenShardInfo);
    this.firstWindow = [];
    let windows = 0;
    for (const shard of this.shards) {
      this.firstWindow.push(windows);
      windows += Math.max(0, Math.floor((shard.count - 1) / T));
    }
    if (windows === 0) {
      throw new DataError(
        paths[0],
        undefined,
        `the shards hold too few tokens for one sequence of context ${T} (${T + 1} tokens needed)`,
      );
    }
    this.windowsPerEpoch = windows;
    this.files = paths.map((p) => Deno.openSync(p, { read: true }));
    this.order = new Uint32Array(0);
    this.raw = new Uint8Array((T + 1) * 4);
  }

  /** The position of the next batch. */
  cursor(): LoaderCursor {
    return { epoch: this.epoch, index: this.index };
  }

  /** Moves to a saved position. */
  seek(cursor: LoaderCursor): void {
    if (
      !Number.isInteger(cursor.epoch) || !Number.isInteger(cursor.index) ||
      cursor.index > this.windowsPerEpoch
    ) {
      throw new Error(`invalid data cursor ${JSON.stringify(cursor)} for ${this.windowsPerEpoch} windows`);
    }
    this.epoch = cursor.epoch;
    this.index = cursor.index;
  }

  /** The next batch; wraps into the next epoch (a fresh order) when this one runs out. */
  next(): Batch {
    const { batch: B, context: T } = this.options;
    const inputs = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    const window = new Int32Array(T + 1);
    for (let b = 0; b < B; b++) {
      if (this.index >= this.windowsPerEpoch) {
        this.epoch++;
        this.index = 0;
      }
      this.readWindow(this.windowOrder()[this.index++], window);
      inputs.set(window.subarray(0, T), b * T);
      targets.set(window.subarray(1), b * T);
    }
    return { inputs, targets };
  }

  /** Closes the shard files. */
  close(): void {
    for (const f of this.files) f.close();
  }

  [Symbol.dispose](): void {
    this.close();
  }

  private windowOrder(): Uint32Array {
    if (this.orderEpoch !== this.epoch) {
      const order = new Uint32Array(this.windowsPerEpoch);
      for (let i = 0; i < order.length; i++) order[i] = i;
      if (this.options.shuffle ?? true) {
        new Rng(((this.options.seed ?? 0) * 1_000_003 + this.epoch) >>> 0).shuffle(order);
      }
      this.order = order;
      this.orderEpoch = this.epoch;
    }
    return this.order;
  }

  private readWindow(global: number, into: Int32Array): void {
    const T = this.options.context;
    // Binary search for the shard holding this window.
    let lo = 0, hi = this.shards.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.firstWindow[mid] <= global) lo = mid;
      else hi = mid - 1;
    }
    const shard = this.shards[lo];
    const start = (global - this.firstWindow[lo]) * T;
    const bytes = this.raw.subarray(0, (T + 1) * shard.bytesPerToken);
    const file = this.files[lo];
    file.seekSync(SHARD_HEADER_BYTES + start * shard.bytesPerToken, Deno.SeekMode.Start);
    if (readFully(file, bytes) !== bytes.length) {
      throw new DataError(
        shard.path,
        `token ${start}`,
        "shard ended early (was it modified while training?)",
      );
    }
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let i = 0; i <= T; i++) {
      into[i] = shard.bytesPerToken === 2 ? view.getUint16(2 * i, true) : view.getUint32(4 * i, true);
    }
    const vocab = this.options.vocab;
    if (vocab !== undefined) {
      for (let i = 0; i <= T; i++) {
        if (into[i] >= vocab) {
          throw new DataError(
            shard.path,
            `token ${start + i}`,
            `token id ${into[i]} is outside the model's vocabulary of ${vocab}`,
          );
        }
      }
    }
  }
}

/** Writes an llm.c token shard (uint16 layout when every id fits, else uint32). For tests and tools. */
export function encodeTokenShard(tokens: ArrayLike<number>): Uint8Array {
  let max = 0;
  for (let i = 0; i < tokens.length; i++) max = Math.max(max, tokens[i]);
  const wide = max > 65535;
  const bytesPerToken = wide ? 4 : 2;
  const out = new Uint8Array(SHARD_HEADER_BYTES + tokens.length * bytesPerToken);
  const view = new DataView(out.buffer);
  view.setInt32(0, wide ? 20240801 : 20240520, true);
  view.setInt32(4, wide ? 7 : 1, true);
  view.setInt32(8, tokens.length, true);
  for (let i = 0; i < tokens.length; i++) {
    if (wide) view.setUint32(SHARD_HEADER_BYTES + 4 * i, tokens[i], true);
    else view.setUint16(SHARD_HEADER_BYTES + 2 * i, tokens[i], true);
  }
  return out;
}
