/**
 * The safetensors format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header
 * length, a JSON header `{name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {…}}`, then
 * the raw little-endian tensor bytes. Written here because no maintained npm package reads and writes
 * it for Deno; the format is small and every rule the reference implementation enforces is checked.
 *
 * Files kiln writes carry `kiln.sha256` (SHA-256 of the data section) in `__metadata__`; a reader
 * that finds it verifies it, so a damaged checkpoint is reported instead of loaded.
 *
 * @example
 * ```ts
 * import { parseSafetensors, serializeSafetensors } from "./safetensors.ts";
 * const bytes = serializeSafetensors([{ name: "w", shape: [2, 2], data: new Float32Array([1, 2, 3, 4]) }]);
 * const file = parseSafetensors(bytes, "w.safetensors");
 * console.log(file.float32("w")); // Float32Array [1, 2, 3, 4]
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { DataError } from "../pipeline/errors.ts";

/** Element types and their sizes in bytes. */
const DTYPE_BYTES: Record<string, number> = {
  F64: 8,
  F32: 4,
  F16: 2,
  BF16: 2,
  I64: 8,
  I32: 4,
  I16: 2,
  I8: 1,
  U8: 1,
  BOOL: 1,
};

/** Whether typed arrays on this machine are little-endian, as safetensors data is (then bytes copy as is). */
const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;

/** A tensor's entry in the header. */
export interface TensorInfo {
  dtype: string;
  shape: number[];
  /** Byte range inside the data section. */
  begin: number;
  end: number;
}

/** A tensor to write (always stored as F32). */
export interface TensorToWrite {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** The metadata key holding the SHA-256 of the data section. */
export const DIGEST_KEY = "kiln.sha256";

/** Largest header accepted (the reference implementation's limit is 100 MB). */
const MAX_HEADER = 100_000_000;

/** A parsed safetensors file. Tensor data stays in the original bytes until asked for. */
export class SafeTensors {
  constructor(
    /** The file name, for errors. */
    readonly file: string,
    readonly tensors: Map<string, TensorInfo>,
    readonly metadata: Record<string, string>,
    private readonly data: Uint8Array,
  ) {}

  /** Tensor names in header order. */
  names(): string[] {
    return [...this.tensors.keys()];
  }

  /** A tensor's header entry; a {@linkcode DataError} if absent. */
  info(name: string): TensorInfo {
    const info = this.tensors.get(name);
    if (!info) throw new DataError(this.file, name, "no such tensor");
    return info;
  }

  /** A floating-point tensor converted to F32 (F32, F16, BF16 and F64 accepted). */
  float32(name: string): Float32Array {
    const { dtype, begin, end } = this.info(name);
    const bytes = this.data.subarray(begin, end);
    const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const n = bytes.byteLength / DTYPE_BYTES[dtype];
    const out = new Float32Array(n);
    if (dtype === "F32" && LITTLE_ENDIAN) {
      new Uint8Array(out.buffer).set(bytes);
    } else if (dtype === "F32") {
      for (let i = 0; i < n; i++) out[i] = view.getFloat32(4 * i, true);
    } else if (dtype === "F16") {
      for (let i = 0; i < n; i++) out[i] = halfToFloat(view.getUint16(2 * i, true));
    } else if (dtype === "BF16") {
      const word = new DataView(new ArrayBuffer(4));
      for (let i = 0; i < n; i++) {
        word.setUint32(0, view.getUint16(2 * i, true) << 16);
        out[i] = word.getFloat32(0);
      }
    } else if (dtype === "F64") {
      for (let i = 0; i < n; i++) out[i] = view.getFloat64(8 * i, true);
    } else {
      throw new DataError(this.file, name, `dtype ${dtype} is not a floating-point type`);
    }
    return out;
  }
}

/** IEEE half → number. */
function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

/**
 * Parses and validates a safetensors file held in memory: header length, JSON, known dtypes,
 * shapes matching byte ranges, ranges contiguous and covering the data section exactly, and the
 * kiln digest when present. Any violation is a {@linkcode DataError} naming `file` and the problem.
 */
export function parseSafetensors(bytes: Uint8Array, file = "<safetensors>"): SafeTensors {
  if (bytes.length < 8) {
    throw new DataError(file, undefined, `damaged safetensors file: only ${bytes.length} bytes`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const headerLength = Number(view.getBigUint64(0, true));
  if (headerLength > MAX_HEADER || 8 + headerLength > bytes.length) {
    throw new DataError(
      file,
      "header",
      `damaged safetensors file: header length ${headerLength} does not fit in ${bytes.length} bytes`,
    );
  }
  let header: Record<string, unknown>;
  try {
    header = JSON.parse(
      new TextDecoder("utf-8", { fatal: true }).decode(bytes.subarray(8, 8 + headerLength)),
    );
  } catch {
    throw new DataError(file, "header", "damaged safetensors file: header is not valid UTF-8 JSON");
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new DataError(file, "header", "damaged safetensors file: header is not a JSON object");
  }
  const data = bytes.subarray(8 + headerLength);
  const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
  if (
    typeof metadata !== "object" || Array.isArray(metadata) ||
    !Object.values(metadata).every((v) => typeof v === "string")
  ) {
    throw new DataError(file, "__metadata__", "damaged safetensors file: metadata must map names to strings");
  }
  const tensors = new Map<string, TensorInfo>();
  for (const [name, raw] of Object.entries(header)) {
    if (name === "__metadata__") continue;
    const entry = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const size = Object.hasOwn(DTYPE_BYTES, entry?.dtype as string) ? DTYPE_BYTES[entry.dtype as string] : 0;
    if (!size) throw new DataError(file, name, `unknown dtype ${JSON.stringify(entry?.dtype)}`);
    const shape = entry.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) {
      throw new DataError(file, name, `invalid shape ${JSON.stringify(shape)}`);
    }
    const offsets = entry.data_offsets;
    if (
      !Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isInteger(o) && o >= 0)
    ) {
      throw new DataError(file, name, `invalid data_offsets ${JSON.stringify(offsets)}`);
    }
    const [begin, end] = offsets as number[];
    const expected = shape.reduce((a: number, b: number) => a * b, 1) * size;
    if (end - begin !== expected) {
      throw new DataError(
        file,
        name,
        `data_offsets [${begin}, ${end}] hold ${end - begin} bytes, shape ${
          JSON.stringify(shape)
        } of ${entry.dtype} needs ${expected}`,
      );
    }
    tensors.set(name, { dtype: entry.dtype as string, shape, begin, end });
  }
  // The tensors must tile the data section exactly: no gaps, no overlaps, nothing past the end.
  const ranges = [...tensors.entries()].sort((a, b) => a[1].begin - b[1].begin || a[1].end - b[1].end);
  let cursor = 0;
  for (const [name, info] of ranges) {
    if (info.begin !== cursor) {
      throw new DataError(
        file,
        name,
        `damaged safetensors file: data starts at ${info.begin}, expected ${cursor}`,
      );
    }
    cursor = info.end;
  }
  if (cursor !== data.length) {
    throw new DataError(
      file,
      undefined,
      `damaged safetensors file: the header describes ${cursor} bytes of tensor data, the file holds ${data.length}`,
    );
  }
  const digest = metadata[DIGEST_KEY];
  if (digest !== undefined && createHash("sha256").update(data).digest("hex") !== digest) {
    throw new DataError(
      file,
      undefined,
      "damaged safetensors file: tensor data does not match its SHA-256 digest",
    );
  }
  return new SafeTensors(file, tensors, metadata, data);
}

/** Reads and validates a safetensors file from disk. */
export async function readSafetensors(path: string): Promise<SafeTensors> {
  return parseSafetensors(await Deno.readFile(path), path);
}

/**
 * Serialises F32 tensors, in the given order, with `metadata` plus the data digest under
 * {@linkcode DIGEST_KEY}. The header is padded with spaces to a multiple of 8 bytes, as the
 * reference writer does, so the data section stays aligned.
 */
export function serializeSafetensors(
  tensors: TensorToWrite[],
  metadata: Record<string, string> = {},
): Uint8Array {
  let dataBytes = 0;
  const entries: Record<string, unknown> = {};
  for (const t of tensors) {
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) {
      throw new Error(
        `tensor ${t.name}: shape ${JSON.stringify(t.shape)} has ${n} elements, data has ${t.data.length}`,
      );
    }
    entries[t.name] = { dtype: "F32", shape: t.shape, data_offsets: [dataBytes, dataBytes + 4 * n] };
    dataBytes += 4 * n;
  }
  const data = new Uint8Array(dataBytes);
  const dataView = new DataView(data.buffer);
  let at = 0;
  for (const t of tensors) {
    if (LITTLE_ENDIAN) {
      data.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
      at += t.data.byteLength;
    } else {
      for (let i = 0; i < t.data.length; i++, at += 4) dataView.setFloat32(at, t.data[i], true);
    }
  }
  const digest = createHash("sha256").update(data).digest("hex");
  const headerJson = JSON.stringify({ __metadata__: { ...metadata, [DIGEST_KEY]: digest }, ...entries });
  let header = new TextEncoder().encode(headerJson);
  const padded = Math.ceil(header.length / 8) * 8;
  if (padded !== header.length) {
    header = new TextEncoder().encode(headerJson + " ".repeat(padded - header.length));
  }
  const out = new Uint8Array(8 + header.length + data.length);
  new DataView(out.buffer).setBigUint64(0, BigInt(header.length), true);
  out.set(header, 8);
  out.set(data, 8 + header.length);
  return out;
}
