/**
 * Shard functions of the crawl stage, one per kind of source. Each runs on the worker pool
 * (`ctx.runShards`), reads one source (a WARC/ARC file, a group of local files, a JSONL file), writes
 * one document shard, and returns its counters and warnings, so the stage is resumable per source
 * and its output does not depend on the worker count.
 * @module
 */
import { createHash } from "node:crypto";
import { basename, extname, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import type { ShardEnv } from "../../pipeline/pool.ts";
import { DataError } from "../../pipeline/errors.ts";
import { type Document, DocumentWriter, readDocuments } from "../documents.ts";
import { type ArchiveSource, openArchive, readArchive } from "./warc.ts";
import { AddressGuard } from "./address.ts";
import { parseHttpResponse } from "./http.ts";
import { decodeHtml, detectLanguage, extractText } from "./extract.ts";
import { nonPageReason, sniffMediaType } from "./records.ts";

/** Options every source shard gets from the stage config. */
export interface ExtractOptions {
  /** Media types to keep (`text/html`, `text/plain`…); others are skipped as `type`. */
  contentTypes: string[];
  /** Records, files, JSONL lines or pages larger than this (bytes) are skipped as `size`. */
  maxBytes: number;
  /** Documents with fewer characters of text are skipped as `empty`. */
  minChars: number;
  /**
   * Addresses that are not public the crawler and archive URLs may reach: `true` for any, or
   * address ranges (`127.0.0.1/32`); by default none (see address.ts). Skipped as `address`.
   */
  allowPrivateNetwork?: boolean | string[];
  /** Keep archived robots.txt, sitemaps and metadata records as documents (default: skipped by reason). */
  keepNonPages?: boolean;
}

/** What a shard returns: counters (records read, skipped by reason, bytes in, documents out) and warnings. */
export interface ShardResult {
  stats: Record<string, number>;
  /** The first warnings (file and byte offset or line); `stats.warnings` counts them all. */
  warnings: string[];
}

const MAX_WARNINGS = 20;

class Tally {
  stats: Record<string, number> = {};
  warnings: string[] = [];
  add(name: string, n = 1) {
    this.stats[name] = (this.stats[name] ?? 0) + n;
  }
  skip(reason: string) {
    this.add(`skipped.${reason}`);
  }
  warn(message: string) {
    this.add("warnings");
    if (this.warnings.length < MAX_WARNINGS) this.warnings.push(message);
  }
  result(): ShardResult {
    return { stats: this.stats, warnings: this.warnings };
  }
}

/** A short, stable document id from where the document came from. */
export function documentId(source: string, where: string | number): string {
  return createHash("sha256").update(`${source}\0${where}`).digest("hex").slice(0, 20);
}

/** The media type of a Content-Type value, lower-cased, without parameters. */
export function mediaType(contentType: string | undefined): string {
  return (contentType ?? "").split(";")[0].trim().toLowerCase();
}

/** Turns page bytes into a document text plus what was learned on the way. */
export function pageText(
  bytes: Uint8Array,
  contentType: string,
): { text: string; title?: string; charset: string } {
  const decoded = decodeHtml(bytes, contentType);
  const type = mediaType(contentType);
  if (type === "text/html" || type === "application/xhtml+xml" || type === "") {
    // The text is the page's main text alone (its headline first): the <title> is in `meta.title`; put
    // in the text it would repeat the headline, mostly with the site's name, on every page of a site.
    const page = extractText(decoded.text);
    return { text: page.text.trim(), title: page.title, charset: decoded.charset };
  }
  return { text: decoded.text.replace(/\r\n?/g, "\n").trim(), charset: decoded.charset };
}

/** Builds the document for one page, or the reason to skip it. */
export function pageDocument(
  page: {
    bytes: Uint8Array;
    contentType: string;
    url?: string;
    fetchTime?: string;
    status?: number;
    source: string;
    offset?: number;
  },
  opts: ExtractOptions,
): Document | { skip: string } {
  const contentType = page.contentType || sniffMediaType(page.bytes);
  const type = mediaType(contentType);
  if (type && !opts.contentTypes.includes(type)) return { skip: "type" };
  if (page.bytes.length > opts.maxBytes) return { skip: "size" };
  const { text, title, charset } = pageText(page.bytes, contentType);
  if (text.length < opts.minChars) return { skip: "empty" };
  const { lang, score } = detectLanguage(text);
  // Ids do not depend on where the inputs lie (a checkout, a CI clone): an archive record is its
  // archive's file name and offset; a local file (offset-less) is its content.
  const id = page.offset !== undefined
    ? documentId(basename(page.source), page.offset)
    : page.url?.startsWith("file:")
    ? documentId("file", createHash("sha256").update(page.bytes).digest("hex"))
    : documentId(page.source, page.url ?? "");
  return {
    id,
    text,
    url: page.url,
    meta: {
      url: page.url,
      fetchTime: page.fetchTime,
      status: page.status,
      contentType: page.contentType || undefined,
      charset,
      title: title || undefined,
      lang,
      langScore: score,
      source: page.source,
      offset: page.offset,
    },
  };
}

/**
 * Writes one output shard: `fill` writes its documents and counts what it read into the tally. The
 * shard file appears only when `fill` completes; on an error it is discarded. (Also used by the
 * Parquet source, `parquet.ts`.)
 */
export async function writeShard(
  env: ShardEnv,
  shard: string,
  fill: (writer: DocumentWriter, tally: Tally) => Promise<void>,
): Promise<ShardResult> {
  const tally = new Tally();
  const writer = new DocumentWriter(await env.out.create(shard), shard.endsWith(".gz"));
  try {
    await fill(writer, tally);
    await writer.close();
  } catch (e) {
    await writer.abort();
    throw e;
  }
  return tally.result();
}

/** Arguments of {@linkcode warcShard}. */
export interface WarcShardArgs {
  /** Local path or http(s) URL of a WARC or ARC file. */
  location: string;
  /** Output file name, e.g. `crawl-00000.jsonl.gz`. */
  shard: string;
  opts: ExtractOptions;
}

const MAX_ARCHIVE_REDIRECTS = 5;

/**
 * Opens an archive; an http(s) one only when its host, and that of every redirect, has a public
 * address or one `allowPrivateNetwork` allows (undefined and counted as `address` otherwise).
 */
async function openGuarded(location: string, opts: ExtractOptions, tally: Tally) {
  if (!/^https?:\/\//i.test(location) || opts.allowPrivateNetwork === true) {
    return await openArchive(location);
  }
  const guard = new AddressGuard(opts.allowPrivateNetwork);
  let url = location;
  for (let hop = 0; hop <= MAX_ARCHIVE_REDIRECTS; hop++) {
    let refused: string | undefined;
    let response: Response;
    try {
      refused = await guard.check(url);
      if (!refused) response = await fetch(url, { redirect: "manual" });
    } catch (e) {
      throw new DataError(location, undefined, `cannot fetch ${url}: ${(e as Error).message}`);
    }
    if (refused) {
      tally.skip("address");
      tally.warn(`${location}: not fetched: ${url === location ? "" : `redirect to ${url}: `}${refused}`);
      return undefined;
    }
    const next = response!.headers.get("location");
    if (response!.status >= 300 && response!.status < 400 && next) {
      await response!.body?.cancel();
      url = new URL(next, url).href;
      continue;
    }
    if (!response!.ok || !response!.body) {
      await response!.body?.cancel();
      throw new DataError(location, undefined, `HTTP ${response!.status} ${response!.statusText}`);
    }
    return { name: location, stream: response!.body } satisfies ArchiveSource;
  }
  throw new DataError(location, undefined, `more than ${MAX_ARCHIVE_REDIRECTS} redirects`);
}

/** Extracts a document from every HTML/text `response`, `resource` and ARC record of one archive. */
export async function warcShard(args: WarcShardArgs, env: ShardEnv): Promise<ShardResult> {
  return await writeShard(env, args.shard, async (writer, tally) => {
    const source = await openGuarded(args.location, args.opts, tally);
    if (!source) return;
    const records = readArchive(source, {
      maxRecordBytes: args.opts.maxBytes,
      onWarning: (w) => tally.warn(`${args.location}: byte ${w.offset}: ${w.message}`),
    });
    for await (const record of records) {
      tally.add("records");
      tally.add("bytesIn", record.length);
      if (record.type !== "response" && record.type !== "resource") {
        tally.skip("record-type");
        continue;
      }
      const nonPage = args.opts.keepNonPages ? undefined : nonPageReason(record.url);
      if (nonPage) {
        tally.skip(nonPage);
        continue;
      }
      if (!record.block) {
        tally.skip("size");
        continue;
      }
      let bytes = record.block;
      let contentType = record.headers.get("content-type") ?? "";
      let status: number | undefined;
      if (record.type === "response" && /^https?:/i.test(record.url ?? "")) {
        const http = parseHttpResponse(record.block, args.opts.maxBytes);
        if (!http) {
          tally.skip("not-http");
          continue;
        }
        if (http.problem) tally.warn(`${args.location}: byte ${record.offset}: ${http.problem}`);
        status = http.status;
        if (status !== 200) {
          tally.skip("status");
          continue;
        }
        bytes = http.body;
        contentType = http.headers.get("content-type") ?? "";
      } else if (record.type === "response") {
        tally.skip("record-type"); // dns:, whois: and other non-HTTP responses
        continue;
      }
      const doc = pageDocument({
        bytes,
        contentType,
        url: record.url,
        fetchTime: record.date,
        status,
        source: args.location,
        offset: record.offset,
      }, args.opts);
      if ("skip" in doc) {
        tally.skip(doc.skip);
        continue;
      }
      await writer.write(doc);
      tally.add("documents");
    }
  });
}

/** Arguments of {@linkcode filesShard}. */
export interface FilesShardArgs {
  paths: string[];
  shard: string;
  opts: ExtractOptions;
}

const TYPE_BY_EXTENSION: Record<string, string> = {
  ".html": "text/html",
  ".htm": "text/html",
  ".xhtml": "application/xhtml+xml",
  ".txt": "text/plain",
  ".text": "text/plain",
  ".md": "text/markdown",
  ".markdown": "text/markdown",
};

/** Reads a group of local HTML, text and Markdown files, one document each. */
export async function filesShard(args: FilesShardArgs, env: ShardEnv): Promise<ShardResult> {
  return await writeShard(env, args.shard, async (writer, tally) => {
    for (const path of args.paths) {
      tally.add("records");
      const type = TYPE_BY_EXTENSION[extname(path).toLowerCase()] ?? "application/octet-stream";
      const info = await Deno.stat(path);
      const bytes = await readAtMost(path, args.opts.maxBytes);
      tally.add("bytesIn", bytes?.length ?? info.size);
      if (!bytes) {
        tally.skip("size");
        continue;
      }
      const doc = pageDocument({
        bytes,
        contentType: type,
        url: pathToFileURL(resolve(path)).href,
        fetchTime: info.mtime?.toISOString(),
        source: path,
      }, { ...args.opts, contentTypes: [...args.opts.contentTypes, "text/markdown"] });
      if ("skip" in doc) {
        tally.skip(doc.skip);
        continue;
      }
      doc.meta!.title ??= basename(path);
      await writer.write(doc);
      tally.add("documents");
    }
  });
}

/**
 * The bytes of a file, or undefined when it holds more than `maxBytes` (read as a stream and stopped
 * there, so a file that grows, or a named pipe, costs no more than that).
 */
async function readAtMost(path: string, maxBytes: number): Promise<Uint8Array | undefined> {
  using file = await Deno.open(path, { read: true });
  const parts: Uint8Array[] = [];
  let size = 0;
  const buffer = new Uint8Array(Math.min(maxBytes + 1, 1 << 20));
  for (;;) {
    const n = await file.read(buffer);
    if (n === null) break;
    size += n;
    if (size > maxBytes) return undefined;
    parts.push(buffer.slice(0, n));
  }
  const out = new Uint8Array(size);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/** Arguments of {@linkcode jsonlShard}. */
export interface JsonlShardArgs {
  path: string;
  shard: string;
  opts: ExtractOptions;
}

/**
 * Copies a JSONL document file (`{id, text, url?, meta?}` a line, optionally .gz/.zst) into a shard,
 * adding the language where it is missing. Bad lines become warnings naming the line; lines over
 * `maxBytes` are skipped as `size` without being held in memory; compressed data cut short or
 * damaged is a warning with its byte offset, and the documents before it are kept.
 */
export async function jsonlShard(args: JsonlShardArgs, env: ShardEnv): Promise<ShardResult> {
  return await writeShard(env, args.shard, async (writer, tally) => {
    const docs = readDocuments(args.path, {
      onBadLine: (line, why) => {
        tally.add("records");
        tally.skip("bad-line");
        tally.warn(`${args.path}:${line}: ${why}`);
      },
      maxLineBytes: args.opts.maxBytes,
      onLongLine: (line, bytes) => {
        tally.add("records");
        tally.add("bytesIn", bytes);
        tally.skip("size");
        tally.warn(`${args.path}:${line}: ${bytes} bytes, over maxBytes (${args.opts.maxBytes}): skipped`);
      },
      onDamage: (offset, why) => tally.warn(`${args.path}: byte ${offset}: ${why}`),
    });
    for await (const { doc, line, bytes } of docs) {
      tally.add("records");
      tally.add("bytesIn", bytes);
      if (doc.text.trim().length < args.opts.minChars) {
        tally.skip("empty");
        continue;
      }
      const meta: Record<string, unknown> = { ...doc.meta, source: args.path, line };
      if (meta.lang === undefined) {
        const { lang, score } = detectLanguage(doc.text);
        Object.assign(meta, { lang, langScore: score });
      }
      await writer.write({ ...doc, meta });
      tally.add("documents");
    }
  });
}
