/**
 * Token shards in llm.c's `.bin` layout, so nanoGPT and llm.c users can read kiln's output and kiln
 * can read theirs: a header of 256 little-endian int32 (magic, version, token count, zeros), then the
 * tokens. uint16 tokens (magic 20240520, version 1) while every id fits; uint32 tokens (magic
 * 20240801, version 7) for vocabularies over 65,536 ids.
 *
 * @example
 * ```ts
 * import { encodeTokenShard, readTokenShard } from "./shards.ts";
 * await Deno.writeFile("train-00000.bin", encodeTokenShard([50256, 15496, 995], 50257));
 * const tokens = await readTokenShard("train-00000.bin"); // Uint16Array [50256, 15496, 995]
 * ```
 * @module
 */
import { DataError } from "../pipeline/errors.ts";

/** llm.c's magic and version for uint16 tokens. */
export const MAGIC_U16 = 20240520, VERSION_U16 = 1;
/** llm.c's magic and version for uint32 tokens. */
export const MAGIC_U32 = 20240801, VERSION_U32 = 7;
/** Header size in bytes (256 int32). */
export const HEADER_BYTES = 1024;

/** Whether a vocabulary of `vocabSize` ids needs the uint32 layout. */
export function needsUint32(vocabSize: number): boolean {
  return vocabSize > 65536;
}

/** The 1024-byte header for `count` tokens. */
export function tokenShardHeader(count: number, uint32: boolean): Uint8Array {
  if (!Number.isInteger(count) || count < 0 || count > 0x7fffffff) {
    throw new RangeError(`a token shard holds at most 2^31-1 tokens, not ${count}`);
  }
  const header = new Int32Array(256);
  header[0] = uint32 ? MAGIC_U32 : MAGIC_U16;
  header[1] = uint32 ? VERSION_U32 : VERSION_U16;
  header[2] = count;
  return littleEndian(new Uint8Array(header.buffer));
}

/** A whole shard file for these tokens; uint16 unless `vocabSize` needs uint32. */
export function encodeTokenShard(tokens: ArrayLike<number>, vocabSize: number): Uint8Array {
  const uint32 = needsUint32(vocabSize);
  const width = uint32 ? 4 : 2;
  const out = new Uint8Array(HEADER_BYTES + tokens.length * width);
  out.set(tokenShardHeader(tokens.length, uint32));
  const view = new DataView(out.buffer, HEADER_BYTES);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (t < 0 || t >= vocabSize) {
      throw new RangeError(`token ${t} at ${i} is outside the vocabulary (${vocabSize})`);
    }
    if (uint32) view.setUint32(i * 4, t, true);
    else view.setUint16(i * 2, t, true);
  }
  return out;
}

const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
function littleEndian(bytes: Uint8Array): Uint8Array {
  if (LITTLE_ENDIAN) return bytes;
  throw new Error("token shards are written on little-endian machines only");
}

/**
 * Parses a shard's bytes, validating the header; `file` names it in errors. The tokens are a view
 * of `bytes` when aligned (copied otherwise).
 */
export function parseTokenShard(bytes: Uint8Array, file: string): Uint16Array | Uint32Array {
  if (bytes.length < HEADER_BYTES) {
    throw new DataError(file, "header", `${bytes.length} bytes: shorter than the 1024-byte llm.c header`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, HEADER_BYTES);
  const magic = view.getInt32(0, true), version = view.getInt32(4, true), count = view.getInt32(8, true);
  let width: 2 | 4;
  if (magic === MAGIC_U16 && version === VERSION_U16) width = 2;
  else if (magic === MAGIC_U32 && version === VERSION_U32) width = 4;
  else {
    throw new DataError(
      file,
      "header",
      `magic ${magic} version ${version} is not an llm.c token shard ` +
        `(${MAGIC_U16} v${VERSION_U16} for uint16, ${MAGIC_U32} v${VERSION_U32} for uint32)`,
    );
  }
  const expected = HEADER_BYTES + count * width;
  if (count < 0 || bytes.length !== expected) {
    throw new DataError(
      file,
      "header",
      `the header says ${count} tokens (${expected} bytes) but the file has ${bytes.length} bytes`,
    );
  }
  littleEndian(bytes);
  const start = bytes.byteOffset + HEADER_BYTES;
  if (start % width === 0) {
    return width === 2
      ? new Uint16Array(bytes.buffer, start, count)
      : new Uint32Array(bytes.buffer, start, count);
  }
  const copy = bytes.slice(HEADER_BYTES);
  return width === 2 ? new Uint16Array(copy.buffer) : new Uint32Array(copy.buffer);
}

/** Reads and validates a token shard; errors name the file and what is wrong with it. */
export async function readTokenShard(path: string): Promise<Uint16Array | Uint32Array> {
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) throw new DataError(path, undefined, "no such token shard");
    throw e;
  }
  return parseTokenShard(bytes, path);
}
