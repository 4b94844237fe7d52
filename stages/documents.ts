/**
 * Document shards: the artifact kind `documents`. One JSON object a line,
 * `{"id": …, "text": …, "url"?: …, "meta"?: {…}}`, in files named `*.jsonl`, `*.jsonl.gz` or
 * `*.jsonl.zst` (compressed per file). Readers report malformed lines and bytes that are not UTF-8
 * with file and line number, and go on with the next line: one bad line never loses the good ones.
 *
 * @example
 * ```ts
 * import { readDocuments } from "./documents.ts";
 * for await (const { doc, line } of readDocuments("shard-00000.jsonl.gz", {
 *   onBadLine: (line, why) => console.warn(`shard-00000.jsonl.gz:${line}: ${why}`),
 * })) {
 *   console.log(line, doc.id, doc.text.length);
 * }
 * ```
 * @module
 */
import { decompress as zstdDecompress } from "npm:fzstd@^0.1.1";
import type { Artifact } from "../pipeline/artifact.ts";
import type { PendingFile } from "../pipeline/workspace.ts";

/** One document. `meta` carries whatever earlier stages recorded (language, scores, source offset…). */
export interface Document {
  id: string;
  text: string;
  url?: string;
  meta?: Record<string, unknown>;
}

/**
 * Stages that drop documents write them aside under this folder of their output (`excluded/<why>/…`)
 * for inspection. They are document shards, but not the artifact's documents.
 */
export const EXCLUDED_DIR = "excluded/";

/** The document shards of an artifact (sorted), without the exclusion shards. */
export function documentShards(artifact: Artifact): string[] {
  return artifact.files().filter((f) => isDocumentShard(f) && !f.startsWith(EXCLUDED_DIR));
}

/** Whether a file name is a document shard. */
export function isDocumentShard(name: string): boolean {
  return /\.jsonl(\.gz|\.zst)?$/.test(name);
}

async function* decompressed(path: string): AsyncGenerator<Uint8Array> {
  const file = await Deno.open(path, { read: true });
  if (path.endsWith(".zst")) {
    // fzstd decodes whole buffers; zstd shards are written per shard, so they stay a bounded size.
    const bytes = new Uint8Array(await new Response(file.readable).arrayBuffer());
    yield zstdDecompress(bytes);
    return;
  }
  const stream = path.endsWith(".gz")
    ? file.readable.pipeThrough(new DecompressionStream("gzip"))
    : file.readable;
  yield* stream;
}

/** Splits a byte stream into lines (without `\n`, and without a trailing `\r`). */
async function* byteLines(chunks: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
  let rest = new Uint8Array(0);
  for await (const chunk of chunks) {
    let buf = rest.length ? concat(rest, chunk) : chunk;
    let start = 0;
    for (let nl = buf.indexOf(10, start); nl !== -1; nl = buf.indexOf(10, start)) {
      yield trimCR(buf.subarray(start, nl));
      start = nl + 1;
    }
    buf = buf.subarray(start);
    rest = buf.slice();
  }
  if (rest.length) yield trimCR(rest);
}

function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const out = new Uint8Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}

function trimCR(line: Uint8Array): Uint8Array {
  return line.length && line[line.length - 1] === 13 ? line.subarray(0, line.length - 1) : line;
}

/** Options of {@linkcode readDocuments}. */
export interface ReadOptions {
  /** Called for each line that is not a valid document (1-based line number, reason). */
  onBadLine?: (line: number, reason: string) => void;
}

/**
 * Reads a document shard, yielding each valid document with its 1-based line number. Invalid lines
 * (not UTF-8, not JSON, no string `text`, no `id`) go to `onBadLine` and are skipped; blank lines are
 * ignored.
 */
export async function* readDocuments(
  path: string,
  opts: ReadOptions = {},
): AsyncGenerator<{ doc: Document; line: number }> {
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  let line = 0;
  for await (const bytes of byteLines(decompressed(path))) {
    line++;
    if (bytes.length === 0) continue;
    let text: string;
    try {
      text = utf8.decode(bytes);
    } catch {
      opts.onBadLine?.(line, "bytes that are not UTF-8");
      continue;
    }
    let value: unknown;
    try {
      value = JSON.parse(text);
    } catch (e) {
      opts.onBadLine?.(line, `not JSON (${(e as Error).message})`);
      continue;
    }
    const doc = value as Document;
    if (typeof value !== "object" || value === null || Array.isArray(value)) {
      opts.onBadLine?.(line, "not a JSON object");
    } else if (typeof doc.text !== "string") {
      opts.onBadLine?.(line, 'field "text" is missing or not a string');
    } else if (typeof doc.id !== "string" && typeof doc.id !== "number") {
      opts.onBadLine?.(line, 'field "id" is missing');
    } else {
      if (typeof doc.id === "number") doc.id = String(doc.id);
      yield { doc, line };
    }
  }
}

/**
 * Writes documents to a pending output file as JSONL, gzip-compressed when the file name ends in
 * `.gz`. Call `close()` to commit the file (it appears atomically), or `abort()`.
 */
export class DocumentWriter {
  #file: PendingFile;
  #gzip?: { writer: WritableStreamDefaultWriter<BufferSource>; done: Promise<void> };
  #encoder = new TextEncoder();
  /** Documents written. */
  count = 0;
  /** UTF-8 bytes of text written. */
  textBytes = 0;

  constructor(file: PendingFile, gzip: boolean) {
    this.#file = file;
    if (gzip) {
      const cs = new CompressionStream("gzip");
      this.#gzip = { writer: cs.writable.getWriter(), done: cs.readable.pipeTo(file.writable) };
    }
  }

  async write(doc: Document): Promise<void> {
    const bytes = this.#encoder.encode(JSON.stringify(doc) + "\n");
    this.count++;
    this.textBytes += this.#encoder.encode(doc.text).length;
    if (this.#gzip) await this.#gzip.writer.write(bytes);
    else await this.#file.write(bytes);
  }

  async close(): Promise<void> {
    if (this.#gzip) {
      await this.#gzip.writer.close();
      await this.#gzip.done;
    }
    await this.#file.commit();
  }

  async abort(): Promise<void> {
    await this.#file.abort();
  }
}
