/**
 * Document shards: the artifact kind `documents`. One JSON object a line,
 * `{"id": …, "text": …, "url"?: …, "meta"?: {…}}`, in files named `*.jsonl`, `*.jsonl.gz` or
 * `*.jsonl.zst` (compressed per file). Readers report malformed lines and bytes that are not UTF-8
 * with file and line number, and go on with the next line: one bad line never loses the good ones.
 * Files are streamed (zstd too), so memory does not grow with the file; `maxLineBytes` bounds it per
 * line as well, and `onDamage` keeps the documents before compressed data that is cut short.
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
import { Decompress as ZstdDecompress } from "npm:fzstd@^0.1.1";
import type { Artifact } from "../pipeline/artifact.ts";
import type { StageContext } from "../pipeline/stage.ts";
import type { PendingFile } from "../pipeline/workspace.ts";
import { DataError } from "../pipeline/errors.ts";

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

/** Compressed data that ends early or does not decode: `offset` is about where, in the file. */
class Damaged extends Error {
  constructor(readonly offset: number, message: string) {
    super(message);
  }
}

/**
 * The decompressed bytes of a shard, streamed (memory stays bounded whatever the file's size).
 * `position.bytes` follows how far into the file reading has got; damage throws {@linkcode Damaged}.
 */
async function* decompressed(path: string, position: { bytes: number }): AsyncGenerator<Uint8Array> {
  const file = await Deno.open(path, { read: true });
  if (path.endsWith(".gz")) {
    const counted = file.readable.pipeThrough(
      new TransformStream<Uint8Array<ArrayBuffer>, BufferSource>({
        transform(chunk, controller) {
          position.bytes += chunk.length;
          controller.enqueue(chunk);
        },
      }),
    );
    const reader = counted.pipeThrough(new DecompressionStream("gzip")).getReader();
    try {
      for (;;) {
        let next: ReadableStreamReadResult<Uint8Array>;
        try {
          next = await reader.read();
        } catch (e) {
          throw new Damaged(position.bytes, `gzip data ${(e as Error).message}`);
        }
        if (next.done) return;
        yield next.value;
      }
    } finally {
      await reader.cancel().catch(() => {}); // a reader that stops early closes the file
    }
  }
  if (!path.endsWith(".zst")) {
    for await (const chunk of file.readable) {
      position.bytes += chunk.length;
      yield chunk;
    }
    return;
  }
  const out: Uint8Array[] = [];
  const zstd = new ZstdDecompress((chunk) => out.push(chunk.slice())); // fzstd reuses its window
  const push = (chunk: Uint8Array, final: boolean) => {
    try {
      zstd.push(chunk, final);
    } catch (e) {
      throw new Damaged(position.bytes, `zstd data ${(e as Error).message}`);
    }
  };
  for await (const chunk of file.readable) {
    position.bytes += chunk.length;
    push(chunk, false);
    yield* out.splice(0);
  }
  if (position.bytes === 0) return;
  push(new Uint8Array(0), true);
  yield* out.splice(0);
}

/**
 * Splits a byte stream into lines (without `\n`, and without a trailing `\r`). A line longer than
 * `maxLineBytes` is not kept: the rest of it is read past and its length is yielded instead.
 */
async function* byteLines(
  chunks: AsyncIterable<Uint8Array>,
  maxLineBytes: number,
): AsyncGenerator<Uint8Array | number> {
  let parts: Uint8Array[] = []; // the line so far, from earlier chunks
  let size = 0; // its length
  for await (const chunk of chunks) {
    let start = 0;
    while (start < chunk.length) {
      const nl = chunk.indexOf(10, start);
      const piece = chunk.subarray(start, nl === -1 ? chunk.length : nl);
      size += piece.length;
      if (size > maxLineBytes) parts = [];
      if (nl === -1) {
        if (size <= maxLineBytes) parts.push(piece.slice());
        break;
      }
      yield size > maxLineBytes ? size : trimCR(parts.length ? concat([...parts, piece], size) : piece);
      parts = [];
      size = 0;
      start = nl + 1;
    }
  }
  if (size) yield size > maxLineBytes ? size : trimCR(concat(parts, size));
}

function concat(parts: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function trimCR(line: Uint8Array): Uint8Array {
  return line.length && line[line.length - 1] === 13 ? line.subarray(0, line.length - 1) : line;
}

/** Options of {@linkcode readDocuments}. */
export interface ReadOptions {
  /** Called for each line that is not a valid document (1-based line number, reason). */
  onBadLine?: (line: number, reason: string) => void;
  /**
   * Lines longer than this many bytes are skipped without being held in memory (default: no limit),
   * and reported to `onLongLine`, or else to `onBadLine`.
   */
  maxLineBytes?: number;
  /** Called for each line over `maxLineBytes`, with its length in bytes. */
  onLongLine?: (line: number, bytes: number) => void;
  /**
   * Called when compressed data is cut short or damaged (`offset`: about where, in bytes of the
   * file): reading then ends after the last whole line before it, as with a truncated WARC. Without
   * it, such damage throws a `DataError` naming the file and the offset.
   */
  onDamage?: (offset: number, reason: string) => void;
}

/**
 * Reads a document shard, yielding each valid document with its 1-based line number and its size in
 * bytes. Invalid lines (not UTF-8, not JSON, no string `text`, no `id`) go to `onBadLine` and are
 * skipped; blank lines are ignored.
 */
export async function* readDocuments(
  path: string,
  opts: ReadOptions = {},
): AsyncGenerator<{ doc: Document; line: number; bytes: number }> {
  const utf8 = new TextDecoder("utf-8", { fatal: true });
  const maxLineBytes = opts.maxLineBytes ?? Infinity;
  const position = { bytes: 0 };
  const lines = byteLines(decompressed(path, position), maxLineBytes);
  let line = 0;
  for (;;) {
    let next: IteratorResult<Uint8Array | number>;
    try {
      next = await lines.next();
    } catch (e) {
      if (!(e instanceof Damaged)) throw e;
      const why = `${e.message}: truncated or damaged after line ${line}`;
      if (!opts.onDamage) throw new DataError(path, `byte ${e.offset}`, why);
      opts.onDamage(e.offset, why);
      return;
    }
    if (next.done) return;
    const bytes = next.value;
    line++;
    if (typeof bytes === "number") {
      if (opts.onLongLine) opts.onLongLine(line, bytes);
      else opts.onBadLine?.(line, `longer than ${maxLineBytes} bytes (${bytes})`);
      continue;
    }
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
      yield { doc, line, bytes: bytes.length };
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

/** The output name of an input shard in a stage that rewrites shards: the same path, always gzip-compressed JSONL. */
export function outputName(file: string): string {
  return file.replace(/\.jsonl(\.gz|\.zst)?$/, ".jsonl.gz");
}

/** {@linkcode outputName} of each input shard; no two may map to one name (e.g. `a.jsonl` and `a.jsonl.gz`). */
export function outputNames(inputs: string[]): string[] {
  const seen = new Map<string, string>();
  return inputs.map((file) => {
    const name = outputName(file);
    const other = seen.get(name);
    if (other) throw new Error(`input shards "${other}" and "${file}" would both be written as "${name}"`);
    seen.set(name, file);
    return name;
  });
}

/**
 * Logs each malformed input line with its file and line number, and records the count (and the first
 * thousand, as `file:line: reason`) in the stage's stats, for stages that read document shards on the
 * worker pool (`results[i]` is what the shard of `inputs[i]` reported).
 */
export function reportBadLines(
  ctx: Pick<StageContext<unknown>, "log" | "stats">,
  inputs: string[],
  results: { badLines: { line: number; reason: string }[]; badLineCount: number }[],
): void {
  let total = 0;
  const listed: string[] = [];
  results.forEach((r, i) => {
    total += r.badLineCount;
    for (const bad of r.badLines) {
      const where = `${inputs[i]}:${bad.line}: ${bad.reason}`;
      ctx.log(`skipped a malformed line: ${where}`);
      listed.push(where);
    }
    if (r.badLineCount > r.badLines.length) {
      ctx.log(`${inputs[i]}: ${r.badLineCount - r.badLines.length} more malformed lines not listed`);
    }
  });
  ctx.stats.set("badLines", total);
  if (listed.length) ctx.stats.set("badLineList", listed.slice(0, 1000));
}

/** An excluded document: what the report shows of it. */
export interface Example {
  id: string;
  url?: string;
  /** The first characters of its text. */
  excerpt: string;
  /** Characters of text in all. */
  characters: number;
  /** For a duplicate: the id of the document kept instead. */
  duplicateOf?: string;
}

/** Options of {@linkcode excludedExamples}. */
export interface ExampleOptions {
  /** Examples kept per reason (default 3). */
  perReason?: number;
  /** Documents read at most per excluded folder (default 2,000): the report stays fast on big runs. */
  maxDocuments?: number;
  /** Characters of text shown (default 280). */
  excerptChars?: number;
}

/**
 * The first few documents each filter dropped, by reason: `{ <folder under excluded/>: { <reason>:
 * Example[] } }`. The reason is `meta.filter_reason` (quality filter) or `meta.dedupe.reason`
 * (dedupe), else the folder's name. Reads each folder's shards in order and stops once every
 * reason has its examples or `maxDocuments` were read.
 */
export async function excludedExamples(
  files: string[],
  path: (rel: string) => string,
  stats: Record<string, unknown>,
  opts: ExampleOptions = {},
): Promise<Record<string, Record<string, Example[]>>> {
  const { perReason = 3, maxDocuments = 2000, excerptChars = 280 } = opts;
  const folders = new Map<string, string[]>();
  for (const file of files) {
    if (!file.startsWith(EXCLUDED_DIR) || !isDocumentShard(file)) continue;
    const folder = file.slice(EXCLUDED_DIR.length).split("/")[0];
    if (!folders.has(folder)) folders.set(folder, []);
    folders.get(folder)!.push(file);
  }
  const out: Record<string, Record<string, Example[]>> = {};
  for (const [folder, files] of folders) {
    const expected = expectedReasons(stats, folder);
    const reasons: Record<string, Example[]> = out[folder] = {};
    const full = () => expected.length > 0 && expected.every((r) => (reasons[r]?.length ?? 0) >= perReason);
    let read = 0;
    files: for (const file of files) {
      for await (const { doc } of readDocuments(path(file))) {
        if (++read > maxDocuments || full()) break files;
        const dedupe = doc.meta?.dedupe as { reason?: string; duplicate_of?: string } | undefined;
        const reason = String(doc.meta?.filter_reason ?? dedupe?.reason ?? folder);
        const list = reasons[reason] ??= [];
        if (list.length >= perReason) continue;
        const text = doc.text.replace(/\s+/g, " ").trim();
        list.push({
          id: doc.id,
          url: doc.url,
          excerpt: text.length > excerptChars ? text.slice(0, excerptChars) + "…" : text,
          characters: doc.text.length,
          duplicateOf: dedupe?.duplicate_of,
        });
      }
    }
  }
  return out;
}

/** The reasons the stats say a folder's documents were dropped for (to know when to stop reading). */
function expectedReasons(stats: Record<string, unknown>, folder: string): string[] {
  const filters = stats.filters as Record<string, { reasons?: Record<string, number> }> | undefined;
  if (filters?.[folder]?.reasons) return Object.keys(filters[folder].reasons!);
  const dropped = stats.dropped as Record<string, { documents?: number }> | undefined;
  if (folder === "dedupe" && dropped) {
    return Object.entries(dropped).filter(([, d]) => (d.documents ?? 0) > 0).map(([r]) => r);
  }
  return [];
}
