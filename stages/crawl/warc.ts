/**
 * Streaming reader for web archives: WARC 1.0/1.1 and ARC (v1 and v2), plain or gzip-compressed per
 * record (or as one gzip stream), from a local file or an http(s) URL. Records come out one at a time
 * with the byte offset where they start in the file (the gzip member's offset for compressed files, as
 * CDX indexes record it), so a document can always be traced back to its record.
 *
 * Damage never stops the good records: a record whose block is shorter than its Content-Length, a
 * header that cannot be parsed, a gzip member that is cut off or corrupt, each becomes a
 * {@linkcode ArchiveWarning} with the byte offset, and the reader resynchronises on the next record
 * header it can find (or stops at the end of the readable data).
 *
 * Why not `npm:warcio`: warcio.js 2.4 was evaluated on every file in the test corpus. It reads WARC
 * well, but it has no ARC support (it parses an ARC header line as HTTP headers and yields one bogus
 * record per file), reports damage only through `console.warn`, and returns a silently shortened block
 * for a truncated record. Record framing is a small, fully specified part of the job, so it is done
 * here; gzip decoding uses pako 1.x (warcio's own inflater), which stops at each member's end and so
 * gives record offsets (pako 2 and DecompressionStream join members without saying where).
 *
 * @example
 * ```ts
 * import { openArchive, readArchive } from "./warc.ts";
 * const source = await openArchive("examples/data/kiln-example.warc.gz");
 * for await (const record of readArchive(source, { onWarning: (w) => console.warn(w.message) })) {
 *   console.log(record.offset, record.type, record.url, record.block?.length);
 * }
 * ```
 * @module
 */
// pako 1.x ships no types; the small part used here is typed by hand below.
import pako from "npm:pako@^1.0.11";
import { DataError } from "../../pipeline/errors.ts";

/** One record of a WARC or ARC file. */
export interface ArchiveRecord {
  format: "warc" | "arc";
  /** WARC-Type (`response`, `resource`, `request`, `warcinfo`, `metadata`, `revisit`…); ARC: `response`. */
  type: string;
  /** WARC-Target-URI (angle brackets removed, spaces escaped) or the ARC URL. */
  url?: string;
  /** WARC-Date or the ARC date, as an ISO 8601 string. */
  date?: string;
  /** Byte offset of the record (of its gzip member, when compressed) in the file. */
  offset: number;
  /** The record's header fields, names lower-cased. */
  headers: Map<string, string>;
  /** Declared length of the record block. */
  length: number;
  /** The record block (for a response: HTTP status line, headers and payload); absent when over `maxRecordBytes`. */
  block?: Uint8Array;
}

/** Damage found in an archive; reading goes on after it where possible. */
export interface ArchiveWarning {
  offset: number;
  message: string;
}

/** An opened archive: its byte stream and the name to use in messages. */
export interface ArchiveSource {
  name: string;
  stream: ReadableStream<Uint8Array>;
}

/** Options of {@linkcode readArchive}. */
export interface ReadArchiveOptions {
  /** Blocks longer than this are skipped (streamed past, never held in memory). Default 64 MiB. */
  maxRecordBytes?: number;
  /** Receives each problem found, with its byte offset. Default: ignore. */
  onWarning?: (warning: ArchiveWarning) => void;
}

/** Opens a local path or an http(s) URL as a stream (never read whole into memory). */
export async function openArchive(location: string, signal?: AbortSignal): Promise<ArchiveSource> {
  if (/^https?:\/\//i.test(location)) {
    let response: Response;
    try {
      response = await fetch(location, { signal });
    } catch (e) {
      throw new DataError(location, undefined, `cannot fetch: ${(e as Error).message}`);
    }
    if (!response.ok || !response.body) {
      await response.body?.cancel();
      throw new DataError(location, undefined, `HTTP ${response.status} ${response.statusText}`);
    }
    return { name: location, stream: response.body };
  }
  try {
    const file = await Deno.open(location, { read: true });
    return { name: location, stream: file.readable };
  } catch (e) {
    throw new DataError(location, undefined, `cannot open: ${(e as Error).message}`);
  }
}

/** Decompressed bytes and the file offset of the gzip member (or raw position) they came from. */
interface Piece {
  bytes: Uint8Array;
  /** For plain input: the file offset of `bytes[0]`; for gzip: the offset of the member. */
  origin: number;
  gzip: boolean;
}

interface PakoInflate {
  push(data: Uint8Array, mode: boolean): boolean;
  onData(chunk: Uint8Array): void;
  ended: boolean;
  err: number;
  msg: string;
  strm: { avail_in: number };
}
const Inflate = (pako as unknown as { Inflate: new (opts: object) => PakoInflate }).Inflate;

/** Whether the first bytes look like a gzip member. */
function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/**
 * Turns raw file chunks into decompressed pieces, member by member for gzip input. Corrupt or
 * truncated gzip data ends the stream with a warning (the records before it are intact).
 */
async function* decode(
  stream: ReadableStream<Uint8Array>,
  warn: (w: ArchiveWarning) => void,
): AsyncGenerator<Piece> {
  const reader = stream.getReader();
  let mode: "unknown" | "plain" | "gzip" = "unknown";
  let position = 0; // raw bytes consumed from the file
  let inflator: PakoInflate | undefined;
  let memberStart = 0;
  let out: Uint8Array[] = [];
  const newInflator = () => {
    const inf = new Inflate({ windowBits: 15 + 16, chunkSize: 65536 });
    inf.onData = (chunk) => out.push(chunk);
    return inf;
  };
  try {
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      let chunk = value;
      if (mode === "unknown") mode = isGzip(chunk) ? "gzip" : "plain";
      if (mode === "plain") {
        yield { bytes: chunk, origin: position, gzip: false };
        position += chunk.length;
        continue;
      }
      while (chunk.length) {
        if (!inflator) {
          if (!isGzip(chunk) && !(chunk.length === 1 && chunk[0] === 0x1f)) {
            if (chunk.every((b) => b === 0 || b === 10 || b === 13)) break; // padding after the last member
            warn({
              offset: position,
              message: `data after the gzip member ending here is not gzip; stopped`,
            });
            return;
          }
          inflator = newInflator();
          memberStart = position;
        }
        inflator.push(chunk, false);
        const piecesOut = out;
        out = [];
        for (const bytes of piecesOut) yield { bytes, origin: memberStart, gzip: true };
        if (!inflator.ended) {
          position += chunk.length;
          break;
        }
        if (inflator.err) {
          warn({
            offset: memberStart,
            message: `corrupt gzip member (${inflator.msg || inflator.err}); stopped`,
          });
          return;
        }
        const used = chunk.length - inflator.strm.avail_in;
        position += used;
        chunk = chunk.subarray(used);
        inflator = undefined;
      }
    }
    if (inflator) {
      warn({ offset: memberStart, message: "file ends inside a gzip member (truncated file)" });
    }
  } finally {
    reader.releaseLock();
    await stream.cancel().catch(() => {});
  }
}

/**
 * A pull reader over decoded pieces with lines, exact reads and skips, tracking the decompressed
 * position and which file offset a record starting at the current position has.
 */
class PieceReader {
  #pieces: AsyncGenerator<Piece>;
  #buf: Uint8Array = new Uint8Array(0);
  #pos = 0;
  /** Decompressed position of `#buf[#pos]` in the whole stream. */
  #abs = 0;
  /** Decompressed end of the buffered data. */
  #absEnd = 0;
  /** Where each buffered piece starts (decompressed), oldest first; pruned as reading passes them. */
  #starts: { abs: number; piece: Piece }[] = [];
  eof = false;

  constructor(pieces: AsyncGenerator<Piece>) {
    this.#pieces = pieces;
  }

  /** File offset of the next unread byte (plain input) or of the gzip member it comes from. */
  async offset(): Promise<number> {
    if (this.#pos >= this.#buf.length) await this.#fill(); // the next byte may start a new member
    while (this.#starts.length > 1 && this.#starts[1].abs <= this.#abs) this.#starts.shift();
    const start = this.#starts[0];
    if (!start) return this.#abs;
    return start.piece.gzip ? start.piece.origin : start.piece.origin + (this.#abs - start.abs);
  }

  async #fill(): Promise<boolean> {
    if (this.eof) return false;
    const next = await this.#pieces.next();
    if (next.done) {
      this.eof = true;
      return false;
    }
    const rest = this.#buf.subarray(this.#pos);
    const bytes = next.value.bytes;
    if (rest.length === 0) {
      this.#buf = bytes;
    } else {
      const joined = new Uint8Array(rest.length + bytes.length);
      joined.set(rest);
      joined.set(bytes, rest.length);
      this.#buf = joined;
    }
    this.#pos = 0;
    this.#starts.push({ abs: this.#absEnd, piece: next.value });
    this.#absEnd += bytes.length;
    return true;
  }

  #advance(n: number) {
    this.#pos += n;
    this.#abs += n;
  }

  /** Reads one line including its `\n` (at most `max` bytes), or null at the end of input. */
  async readLine(max: number): Promise<Uint8Array | null> {
    while (true) {
      const nl = this.#buf.indexOf(10, this.#pos);
      if (nl !== -1 && nl - this.#pos < max) {
        const line = this.#buf.subarray(this.#pos, nl + 1);
        this.#advance(line.length);
        return line;
      }
      if (this.#buf.length - this.#pos >= max || !(await this.#fill())) {
        const n = Math.min(max, this.#buf.length - this.#pos);
        if (n === 0) return null;
        const line = this.#buf.subarray(this.#pos, this.#pos + n);
        this.#advance(n);
        return line;
      }
    }
  }

  /** Reads up to `n` bytes (fewer only at the end of input). */
  async read(n: number): Promise<Uint8Array> {
    const parts: Uint8Array[] = [];
    let got = 0;
    while (got < n) {
      if (this.#pos >= this.#buf.length && !(await this.#fill())) break;
      const take = Math.min(n - got, this.#buf.length - this.#pos);
      parts.push(this.#buf.subarray(this.#pos, this.#pos + take));
      this.#advance(take);
      got += take;
    }
    if (parts.length === 1) return parts[0];
    const out = new Uint8Array(got);
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    return out;
  }

  /** Skips up to `n` bytes without keeping them; returns how many were skipped. */
  async skip(n: number): Promise<number> {
    let skipped = 0;
    while (skipped < n) {
      if (this.#pos >= this.#buf.length && !(await this.#fill())) break;
      const take = Math.min(n - skipped, this.#buf.length - this.#pos);
      this.#advance(take);
      skipped += take;
    }
    return skipped;
  }

  /** Peeks at the next `n` bytes without consuming them. */
  async peek(n: number): Promise<Uint8Array> {
    while (this.#buf.length - this.#pos < n && await this.#fill());
    return this.#buf.subarray(this.#pos, Math.min(this.#buf.length, this.#pos + n));
  }
}

const latin1 = new TextDecoder("latin1");
const MAX_LINE = 64 * 1024;
const MAX_HEADER_BYTES = 256 * 1024;
/** An ARC header line: URL, IP, 14-digit date, then more fields, the last being the length. */
const ARC_HEADER = /^(\S+) (\S+) (\d{12,18}) (.*)$/;

function isBlank(line: Uint8Array): boolean {
  return line.length === 1 && line[0] === 10 || line.length === 2 && line[0] === 13 && line[1] === 10;
}

function looksLikeHeader(line: string): boolean {
  return line.startsWith("WARC/") || ARC_HEADER.test(line.trimEnd());
}

/** WARC-Target-URI as found in the wild: some writers wrap it in `<…>` or leave spaces in it. */
function cleanUri(uri: string | undefined): string | undefined {
  if (uri === undefined) return undefined;
  let u = uri.trim();
  if (u.startsWith("<") && u.endsWith(">")) u = u.slice(1, -1);
  return u.replace(/ /g, "%20");
}

/** `20140216050221` → `2014-02-16T05:02:21Z` (extra digits past the seconds are dropped). */
function arcDate(digits: string): string | undefined {
  const d = digits.padEnd(14, "0");
  const iso = `${d.slice(0, 4)}-${d.slice(4, 6)}-${d.slice(6, 8)}T${d.slice(8, 10)}:${d.slice(10, 12)}:${
    d.slice(12, 14)
  }Z`;
  return isNaN(Date.parse(iso)) ? undefined : iso;
}

/**
 * Reads the records of an archive in order. Damaged records are reported through `onWarning` with
 * their byte offset and skipped; reading continues at the next record header found.
 */
export async function* readArchive(
  source: ArchiveSource,
  opts: ReadArchiveOptions = {},
): AsyncGenerator<ArchiveRecord> {
  const maxRecordBytes = opts.maxRecordBytes ?? 64 * 1024 * 1024;
  const warn = opts.onWarning ?? (() => {});
  const reader = new PieceReader(decode(source.stream, warn));
  let resync = false; // true after damage: skip lines until something that looks like a header
  while (true) {
    // Records are separated by blank lines (WARC: exactly two CRLFs; writers vary, so any number).
    let offset = await reader.offset();
    let line = await reader.readLine(MAX_LINE);
    while (line && (isBlank(line) || (resync && !looksLikeHeader(latin1.decode(line))))) {
      offset = await reader.offset();
      line = await reader.readLine(MAX_LINE);
    }
    if (!line) return;
    resync = false;
    const first = latin1.decode(line).trimEnd();
    const record = first.startsWith("WARC/")
      ? await readWarcRecord(reader, offset, maxRecordBytes, warn)
      : await readArcRecord(reader, first, offset, maxRecordBytes, warn);
    if (record === "damaged") {
      resync = true;
      continue;
    }
    if (record === "end") return;
    if (record.format === "arc" && record.url?.startsWith("filedesc:")) continue; // the ARC version block
    yield record;
  }
}

async function readWarcRecord(
  reader: PieceReader,
  offset: number,
  maxRecordBytes: number,
  warn: (w: ArchiveWarning) => void,
): Promise<ArchiveRecord | "damaged" | "end"> {
  const headers = new Map<string, string>();
  let headerBytes = 0;
  let lastName = "";
  while (true) {
    const line = await reader.readLine(MAX_LINE);
    if (!line) {
      warn({ offset, message: "WARC record header cut off by the end of the file" });
      return "end";
    }
    if (isBlank(line)) break;
    headerBytes += line.length;
    if (headerBytes > MAX_HEADER_BYTES) {
      warn({ offset, message: `WARC record header longer than ${MAX_HEADER_BYTES} bytes; skipped` });
      return "damaged";
    }
    const text = latin1.decode(line).replace(/\r?\n$/, "");
    if ((text.startsWith(" ") || text.startsWith("\t")) && lastName) {
      headers.set(lastName, headers.get(lastName) + " " + text.trim()); // folded continuation line
      continue;
    }
    const colon = text.indexOf(":");
    if (colon <= 0) {
      warn({
        offset,
        message: `malformed WARC header line ${JSON.stringify(text.slice(0, 80))}; record skipped`,
      });
      return "damaged";
    }
    lastName = text.slice(0, colon).trim().toLowerCase();
    headers.set(lastName, text.slice(colon + 1).trim());
  }
  const lengthField = headers.get("content-length");
  const length = Number(lengthField);
  if (lengthField === undefined || !Number.isSafeInteger(length) || length < 0) {
    warn({ offset, message: `WARC record without a valid Content-Length (${lengthField}); skipped` });
    return "damaged";
  }
  const record: ArchiveRecord = {
    format: "warc",
    type: (headers.get("warc-type") ?? "unknown").toLowerCase(),
    url: cleanUri(headers.get("warc-target-uri")),
    date: headers.get("warc-date"),
    offset,
    headers,
    length,
  };
  if (length <= maxRecordBytes) {
    record.block = await reader.read(length);
    if (record.block.length < length) {
      warn({ offset, message: `WARC record truncated: ${record.block.length} of ${length} bytes; skipped` });
      return "end";
    }
  } else if (await reader.skip(length) < length) {
    warn({ offset, message: `WARC record truncated (${length} bytes declared); skipped` });
    return "end";
  }
  // The block must be followed by CRLF CRLF; anything else means Content-Length was wrong.
  const tail = await reader.peek(4);
  const endsWell = tail.length === 0 || (tail[0] === 13 && tail[1] === 10) || tail[0] === 10;
  if (!endsWell) {
    warn({
      offset,
      message: "WARC record block does not end where its Content-Length says (wrong length?); record skipped",
    });
    return "damaged";
  }
  return record;
}

async function readArcRecord(
  reader: PieceReader,
  first: string,
  offset: number,
  maxRecordBytes: number,
  warn: (w: ArchiveWarning) => void,
): Promise<ArchiveRecord | "damaged" | "end"> {
  const match = ARC_HEADER.exec(first);
  if (!match) {
    warn({
      offset,
      message: `neither a WARC nor an ARC record header: ${JSON.stringify(first.slice(0, 80))}`,
    });
    return "damaged";
  }
  const [, url, ip, date, rest] = match;
  const fields = rest.split(" ");
  const length = Number(fields[fields.length - 1]);
  if (!Number.isSafeInteger(length) || length < 0) {
    warn({ offset, message: `ARC record with invalid length ${JSON.stringify(fields.at(-1))}; skipped` });
    return "damaged";
  }
  const headers = new Map([["ip-address", ip], ["content-type", fields[0]]]);
  const record: ArchiveRecord = {
    format: "arc",
    type: "response",
    url: cleanUri(url),
    date: arcDate(date),
    offset,
    headers,
    length,
  };
  if (length <= maxRecordBytes) {
    record.block = await reader.read(length);
    if (record.block.length < length) {
      warn({ offset, message: `ARC record truncated: ${record.block.length} of ${length} bytes; skipped` });
      return "end";
    }
  } else if (await reader.skip(length) < length) {
    warn({ offset, message: `ARC record truncated (${length} bytes declared); skipped` });
    return "end";
  }
  return record;
}
