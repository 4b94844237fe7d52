/**
 * The HTTP message inside a WARC `response` record (or an ARC record): status line, headers and the
 * payload with its transfer and content encodings undone, as a browser would have seen it.
 * @module
 */
import { brotliDecompressSync, gunzipSync, inflateRawSync, inflateSync } from "node:zlib";

/** A parsed HTTP response. */
export interface HttpResponse {
  status: number;
  /** Header fields, names lower-cased (repeated fields joined with `, `). */
  headers: Map<string, string>;
  /** The payload, de-chunked and decompressed. */
  body: Uint8Array;
}

const latin1 = new TextDecoder("latin1");

function findHeaderEnd(block: Uint8Array): { end: number; sep: number } | undefined {
  for (let i = 0; i < block.length - 1 && i < 256 * 1024; i++) {
    if (block[i] !== 10) continue;
    if (block[i + 1] === 10) return { end: i, sep: 2 };
    if (block[i + 1] === 13 && block[i + 2] === 10) return { end: i, sep: 3 };
  }
  return undefined;
}

/**
 * Parses an HTTP/1.x response. Returns undefined when the block is not one (no status line). A
 * malformed chunked body or compressed body is left as it is and reported in `problem`.
 */
export function parseHttpResponse(
  block: Uint8Array,
  maxBodyBytes = Infinity,
): (HttpResponse & { problem?: string }) | undefined {
  const head = findHeaderEnd(block);
  const headText = latin1.decode(block.subarray(0, head ? head.end : Math.min(block.length, 8192)));
  const lines = headText.split(/\r?\n/);
  const status = /^HTTP\/\d(?:\.\d)?\s+(\d{3})/.exec(lines[0]);
  if (!status) return undefined;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  let body = head ? block.subarray(head.end + head.sep) : new Uint8Array(0);
  let problem: string | undefined;
  if (/chunked/i.test(headers.get("transfer-encoding") ?? "")) {
    const dechunked = dechunk(body);
    if (dechunked) body = dechunked;
    else problem = "malformed chunked encoding (body kept as stored)";
  }
  const encoding = (headers.get("content-encoding") ?? "").trim().toLowerCase();
  if (encoding && encoding !== "identity" && body.length) {
    try {
      body = decompress(body, encoding, maxBodyBytes);
    } catch (e) {
      problem = `cannot decode content-encoding ${encoding}: ${(e as Error).message}`;
    }
  }
  return { status: Number(status[1]), headers, body, problem };
}

/** Undoes chunked transfer encoding; undefined when the chunk sizes do not match the data. */
export function dechunk(body: Uint8Array): Uint8Array | undefined {
  const parts: Uint8Array[] = [];
  let at = 0;
  let total = 0;
  while (at < body.length) {
    const nl = body.indexOf(10, at);
    if (nl === -1) return undefined;
    const size = parseInt(latin1.decode(body.subarray(at, nl)).split(";")[0].trim(), 16);
    if (!Number.isFinite(size) || size < 0) return undefined;
    if (size === 0) break;
    const start = nl + 1;
    if (start + size > body.length) return undefined;
    parts.push(body.subarray(start, start + size));
    total += size;
    at = start + size;
    if (body[at] === 13) at++;
    if (body[at] === 10) at++;
  }
  const out = new Uint8Array(total);
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Decompresses a body by its Content-Encoding, refusing output over `maxBytes` (gzip bombs). */
export function decompress(body: Uint8Array, encoding: string, maxBytes = Infinity): Uint8Array {
  const opts = Number.isFinite(maxBytes) ? { maxOutputLength: maxBytes } : {};
  switch (encoding) {
    case "gzip":
    case "x-gzip":
      return new Uint8Array(gunzipSync(body, opts));
    case "deflate":
      // Servers send zlib-wrapped or raw deflate under this name; try both.
      try {
        return new Uint8Array(inflateSync(body, opts));
      } catch {
        return new Uint8Array(inflateRawSync(body, opts));
      }
    case "br":
      return new Uint8Array(brotliDecompressSync(body, opts));
    default:
      throw new Error(`unsupported content-encoding "${encoding}"`);
  }
}
