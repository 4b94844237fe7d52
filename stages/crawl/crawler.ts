/**
 * The live crawler: from seed URLs, breadth-first within a scope, politely, to documents.
 *
 * - Politeness: one request at a time per host, `delayMs` between requests to a host (or the
 *   robots.txt Crawl-delay when larger); robots.txt obeyed (see robots.ts); a global `concurrency`.
 * - Limits: depth, pages, redirects (each hop is checked against scope and robots), a timeout until
 *   the response headers (`connectTimeoutMs`) and one for the whole fetch (`timeoutMs`), `maxBytes`
 *   of (decompressed) body, read as a stream and cut off there, so a huge page or a gzip bomb costs
 *   at most `maxBytes` of memory; a content-type filter decided from the headers, before the body.
 * - Retries: 429, 5xx and network errors are retried `retries` times with exponential backoff, or
 *   after the server's Retry-After (capped at `maxRetryAfterMs`).
 * - Resumable: finished pages are committed in batches of `batchPages`: the batch's documents and
 *   skips go into the checkpoint, then one segment (the batch's new, redirected-to and finished URLs
 *   and the counters) is appended to an fsynced frontier log: the commit point; then the batch's
 *   output is written. After kill -9 a rerun replays the log, so no page of a committed batch is
 *   fetched again and none is lost; only pages in flight or in an uncommitted batch are fetched
 *   again. frontier.ts has the log's format and the full argument. Memory and time per batch do not
 *   grow with the crawl (the seen set and the queue, a URL each, are what does).
 * - Addresses: every request's host is resolved and refused unless it is public (address.ts), so a
 *   page cannot send the crawler to loopback, private or link-local addresses (cloud metadata), nor
 *   can a redirect; `allowPrivateNetwork` in the stage config allows them.
 * - Every URL that does not become a document is recorded with its reason in
 *   `skipped/crawl-live-NNNNN.json`, and counted in the stats as `skipped.<reason>`.
 * - Optionally every fetch is also written as WARC request/response records
 *   (`warc/crawl-live-NNNNN.warc.gz`, gzip per record), and the documents then point at them.
 * @module
 */
import { scanStartTags } from "./html.ts";
import { gzipSync } from "node:zlib";
import { dirname } from "node:path";
import type { Checkpoint, OutputWriter } from "../../pipeline/workspace.ts";
import { InterruptedError, KilnError } from "../../pipeline/errors.ts";
import { type Document, DocumentWriter } from "../documents.ts";
import { type ExtractOptions, mediaType, pageDocument } from "./sources.ts";
import { MAX_ROBOTS_BYTES, type RobotsRules, robotsRules } from "./robots.ts";
import { FrontierLog, type Host, HostQueues, type QueueEntry } from "./frontier.ts";
import { AddressGuard } from "./address.ts";

/** Options of the live crawler (the stage's `urls` config). */
export interface CrawlOptions {
  seeds: string[];
  /** `host`: the seeds' hosts; `domain`: those hosts and their subdomains; `any`: everywhere. */
  scope: "host" | "domain" | "any";
  /** URL prefixes also in scope, whatever `scope` says. */
  allow: string[];
  /** URL prefixes never fetched. */
  deny: string[];
  maxDepth: number;
  maxPages: number;
  userAgent: string;
  robots: boolean;
  concurrency: number;
  delayMs: number;
  retries: number;
  backoffMs: number;
  maxRetryAfterMs: number;
  maxRedirects: number;
  connectTimeoutMs: number;
  timeoutMs: number;
  /** Pages a batch holds before it is flushed (written out and checkpointed). */
  batchPages: number;
  warc: boolean;
}

/** What the crawler needs from the stage context. */
export interface CrawlEnv {
  out: OutputWriter;
  checkpoint: Checkpoint;
  signal: AbortSignal;
  log(message: string): void;
  progress(update: { done: number; total?: number; unit?: string; bytes?: number }): void;
}

interface Skip {
  url: string;
  reason: string;
  detail?: string;
}

/** Result of fetching one URL (after redirects). */
type FetchOutcome =
  | { ok: true; url: string; status: number; headers: Headers; body: Uint8Array; fetchTime: string }
  | { ok: false; reason: string; detail?: string };

/** A request refused because its host's address is not public (see address.ts). */
class AddressRefused extends Error {}

/** The frontier log, in the checkpoint (see frontier.ts). */
export const FRONTIER_LOG = "live/frontier.log";
const batchName = (k: number) => `crawl-live-${String(k).padStart(5, "0")}`;

/** Normalises a URL for the frontier: http(s) only, no fragment; undefined when not crawlable. */
export function normalizeUrl(href: string, base?: string): string | undefined {
  let url: URL;
  try {
    url = new URL(href.trim(), base);
  } catch {
    return undefined;
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") return undefined;
  url.hash = "";
  return url.href.endsWith("?") ? url.href.slice(0, -1) : url.href; // `/a?` is `/a`
}

/** Links (`<a href>`, `<area href>`, honouring `<base href>`) of an HTML page, normalised. */
export function extractLinks(html: string, pageUrl: string): string[] {
  let base = pageUrl;
  const links: string[] = [];
  // Start tags alone, no tree: linear in the page whatever its nesting (htmlparser2's Parser is not).
  scanStartTags(html, (name, attrs) => {
    if (name === "base" && attrs.href) base = normalizeUrl(attrs.href, pageUrl) ?? base;
    if ((name === "a" || name === "area") && attrs.href && !/\bnofollow\b/i.test(attrs.rel ?? "")) {
      const url = normalizeUrl(attrs.href, base);
      if (url) links.push(url);
    }
  });
  return links;
}

/** Retry-After as milliseconds (seconds or an HTTP date), or undefined. */
export function retryAfterMs(value: string | null, now = Date.now()): number | undefined {
  if (!value) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const date = Date.parse(value);
  return isNaN(date) ? undefined : Math.max(0, date - now);
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal.aborted) return resolve();
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    }
    signal.addEventListener("abort", done, { once: true });
  });

/** Writes WARC/1.1 request and response records, each its own gzip member. */
class WarcRecords {
  chunks: Uint8Array[] = [];
  size = 0;
  #encoder = new TextEncoder();

  #record(type: string, url: string, date: string, contentType: string, block: Uint8Array, extra: string[]) {
    const head = [
      "WARC/1.1",
      `WARC-Type: ${type}`,
      `WARC-Record-ID: <urn:uuid:${crypto.randomUUID()}>`,
      `WARC-Date: ${date}`,
      `WARC-Target-URI: ${url}`,
      ...extra,
      `Content-Type: ${contentType}`,
      `Content-Length: ${block.length}`,
      "",
      "",
    ].join("\r\n");
    const headBytes = this.#encoder.encode(head);
    const raw = new Uint8Array(headBytes.length + block.length + 4);
    raw.set(headBytes);
    raw.set(block, headBytes.length);
    raw.set([13, 10, 13, 10], headBytes.length + block.length);
    const offset = this.size;
    const gz = gzipSync(raw);
    this.chunks.push(gz);
    this.size += gz.length;
    return offset;
  }

  /** Adds a request/response pair; returns the response record's offset in this batch's file. */
  add(
    page: { url: string; status: number; headers: Headers; body: Uint8Array; fetchTime: string },
    ua: string,
  ) {
    const id = `<urn:uuid:${crypto.randomUUID()}>`;
    const target = new URL(page.url);
    const request = `GET ${target.pathname}${target.search} HTTP/1.1\r\nHost: ${target.host}\r\n` +
      `User-Agent: ${ua}\r\nAccept-Encoding: gzip, deflate, br\r\n\r\n`;
    // fetch() has already undone the content and transfer encodings, so the stored headers say so.
    const headers = [...page.headers].filter(([k]) =>
      !["content-encoding", "transfer-encoding", "content-length"].includes(k)
    );
    const response = `HTTP/1.1 ${page.status} OK\r\n` + headers.map(([k, v]) => `${k}: ${v}\r\n`).join("") +
      `Content-Length: ${page.body.length}\r\n\r\n`;
    const responseHead = this.#encoder.encode(response);
    const block = new Uint8Array(responseHead.length + page.body.length);
    block.set(responseHead);
    block.set(page.body, responseHead.length);
    const date = page.fetchTime.replace(/\.\d+Z$/, "Z");
    const offset = this.#record("response", page.url, date, "application/http; msgtype=response", block, [
      `WARC-Concurrent-To: ${id}`,
    ]);
    this.#record(
      "request",
      page.url,
      date,
      "application/http; msgtype=request",
      this.#encoder.encode(request),
      [],
    );
    return offset;
  }
}

/**
 * Crawls from `options.seeds`, writing `crawl-live-NNNNN.jsonl.gz` shards. Resumes from the
 * checkpoint when an earlier attempt was interrupted. Returns the counters.
 */
export async function crawl(
  options: CrawlOptions,
  extract: ExtractOptions,
  env: CrawlEnv,
): Promise<Record<string, number>> {
  const { log, replay } = await FrontierLog.open(env.checkpoint.path(FRONTIER_LOG));
  const seen = replay.seen;
  const queues = new HostQueues(options.delayMs);
  for (const entry of replay.queue) queues.push(entry);
  const stats = { ...replay.last?.stats };
  let fetched = replay.last?.fetched ?? 0;
  let batches = replay.last ? replay.last.batch + 1 : 0;
  // Every URL taken from the queue counts towards maxPages, whatever its outcome, so at most
  // maxPages URLs are ever queued: links found after that would never be fetched, and not keeping
  // them bounds the queue and the seen set by maxPages rather than by the web's fan-out.
  let queueRoom = options.maxPages - fetched - replay.queue.length;
  const add = (name: string, n = 1) => stats[name] = (stats[name] ?? 0) + n;
  /** Frontier log records of the finished pages not yet committed (see frontier.ts). */
  let pendingRecords: string[] = [];
  if (replay.last) {
    env.log(`crawl: resuming: ${fetched} pages fetched, ${queues.size} queued, ${batches} batches`);
    // Batches committed in the log whose output was not written before the crash.
    for (let k = 0; k < batches; k++) await writeBatchOutput(k, env, options.warc);
  } else {
    for (const seed of options.seeds) {
      const url = normalizeUrl(seed);
      if (url && !seen.has(url)) {
        seen.add(url);
        queues.push({ url, depth: 0 });
        pendingRecords.push(`q 0 ${url}\n`);
        queueRoom--;
      }
    }
  }

  const seedHosts = options.seeds.map((s) => new URL(s).hostname);
  const inScope = (url: string) => {
    if (options.deny.some((p) => url.startsWith(p))) return false;
    if (options.allow.some((p) => url.startsWith(p))) return true;
    const host = new URL(url).hostname;
    if (options.scope === "any") return true;
    if (options.scope === "host") return seedHosts.includes(host);
    return seedHosts.some((h) => host === h || host.endsWith("." + h));
  };

  const robots = new Map<string, Promise<RobotsRules>>();
  let pendingDocs: Document[] = [];
  let pendingSkips: Skip[] = [];
  let pendingWarc = new WarcRecords();
  let pendingPages = 0;
  let flushing: Promise<void> = Promise.resolve();
  /** The first error of a page or a commit; the crawl stops at it. */
  let failure: unknown;
  const abort = new AbortController();
  const onAbort = () => abort.abort();
  env.signal.addEventListener("abort", onAbort, { once: true });

  const hostOf = (url: string) => new URL(url).host;
  const guard = new AddressGuard(extract.allowPrivateNetwork);

  /**
   * One HTTP GET with the timeouts and the body limit; redirects are returned, not followed. A body
   * over `maxBytes` is skipped ("size"), or with `cut` kept up to `maxBytes` (`truncated`).
   */
  const fetchOnce = async (
    url: string,
    maxBytes: number,
    accept?: (type: string) => boolean,
    cut = false,
  ) => {
    const refused = await guard.check(url); // every request, so every redirect hop (robots.txt too)
    if (refused) throw new AddressRefused(refused);
    const controller = new AbortController();
    const stop = () => controller.abort();
    abort.signal.addEventListener("abort", stop, { once: true });
    let timedOut = "";
    let tooBig = false;
    let truncated = false;
    const total = setTimeout(() => (timedOut = "total", controller.abort()), options.timeoutMs);
    const connect = setTimeout(() => (timedOut = "connect", controller.abort()), options.connectTimeoutMs);
    try {
      const response = await fetch(url, {
        redirect: "manual",
        signal: controller.signal,
        headers: { "user-agent": options.userAgent, "accept-encoding": "gzip, deflate, br" },
      });
      clearTimeout(connect);
      const type = response.headers.get("content-type") ?? "";
      const declared = Number(response.headers.get("content-length") ?? NaN);
      if (response.status !== 200) {
        await response.body?.cancel();
        return { response, body: new Uint8Array(0) };
      }
      if (response.status === 200 && accept && !accept(type)) {
        await response.body?.cancel();
        return { response, body: new Uint8Array(0), skip: "type" as const };
      }
      if (declared > maxBytes && !cut) {
        await response.body?.cancel();
        return { response, body: new Uint8Array(0), skip: "size" as const };
      }
      const parts: Uint8Array[] = [];
      let size = 0;
      if (response.body) {
        for await (const chunk of response.body) {
          if (size + chunk.length > maxBytes) {
            // Either way the loop is left, which cancels the body: nothing more is read or decompressed.
            if (cut) {
              parts.push(chunk.subarray(0, maxBytes - size));
              size = maxBytes;
              truncated = true;
            } else tooBig = true;
            break;
          }
          size += chunk.length;
          parts.push(chunk);
        }
      }
      if (tooBig) return { response, body: new Uint8Array(0), skip: "size" as const };
      const body = new Uint8Array(size);
      let at = 0;
      for (const p of parts) {
        body.set(p, at);
        at += p.length;
      }
      add("bytesIn", size);
      return { response, body, truncated };
    } catch (e) {
      if (abort.signal.aborted) throw new InterruptedError("interrupted");
      if (timedOut) {
        throw new Error(`${timedOut === "connect" ? "no response headers" : "fetch not done"} in time`);
      }
      throw e;
    } finally {
      clearTimeout(total);
      clearTimeout(connect);
      abort.signal.removeEventListener("abort", stop);
    }
  };

  /** GET with retries on 429/5xx/network errors. */
  const fetchRetrying = async (
    url: string,
    maxBytes: number,
    accept?: (type: string) => boolean,
    cut = false,
  ) => {
    for (let attempt = 0;; attempt++) {
      let wait: number;
      let why: string;
      try {
        const result = await fetchOnce(url, maxBytes, accept, cut);
        const status = result.response.status;
        if (status !== 429 && status < 500) return result;
        why = `HTTP ${status}`;
        wait = Math.min(
          retryAfterMs(result.response.headers.get("retry-after")) ?? options.backoffMs * 2 ** attempt,
          options.maxRetryAfterMs,
        );
        if (attempt >= options.retries) return result;
      } catch (e) {
        if (e instanceof InterruptedError || e instanceof AddressRefused) throw e;
        why = (e as Error).message;
        if (attempt >= options.retries) throw e;
        wait = options.backoffMs * 2 ** attempt;
      }
      add("retries");
      env.log(`crawl: ${url}: ${why}; retry ${attempt + 1} of ${options.retries} in ${wait} ms`);
      await sleep(wait, abort.signal);
      if (abort.signal.aborted) throw new InterruptedError("interrupted");
    }
  };

  const rulesFor = (url: string): Promise<RobotsRules> => {
    const origin = new URL(url).origin;
    let rules = robots.get(origin);
    if (!rules) {
      const robotsUrl = `${origin}/robots.txt`;
      rules = (async () => {
        try {
          // robots.txt may redirect (RFC 9309 §2.3.1.2: follow at least five hops).
          let target = robotsUrl;
          for (let hop = 0; hop <= 5; hop++) {
            // RFC 9309 §2.5: parse at least the first 500 KiB of a longer file.
            const { response, body, truncated } = await fetchRetrying(
              target,
              MAX_ROBOTS_BYTES,
              undefined,
              true,
            );
            add("robotsFetched");
            const location = response.headers.get("location");
            if (response.status >= 300 && response.status < 400 && location) {
              target = new URL(location, target).href;
              continue;
            }
            let text = new TextDecoder().decode(body);
            // The line the cut went through may be a rule cut short (`Allow: /p` of `Allow: /private`).
            if (truncated) text = text.slice(0, text.lastIndexOf("\n") + 1);
            const r = robotsRules(robotsUrl, response.status, text, options.userAgent);
            if (r.crawlDelay !== undefined) {
              const h = queues.host(hostOf(url));
              h.delayMs = Math.max(h.delayMs, Math.min(r.crawlDelay * 1000, 60_000));
            }
            return r;
          }
          return robotsRules(robotsUrl, 0, "", options.userAgent);
        } catch (e) {
          if (e instanceof InterruptedError) throw e;
          return robotsRules(robotsUrl, 0, "", options.userAgent); // unreachable: disallow all
        }
      })();
      robots.set(origin, rules);
    }
    return rules;
  };

  const accept = (type: string) => extract.contentTypes.includes(mediaType(type)) || mediaType(type) === "";

  /**
   * Fetches a page, following redirects hop by hop (each hop checked against scope and robots);
   * the redirect targets it marks seen are added to `hops`.
   */
  const fetchPage = async (start: string, hops: string[]): Promise<FetchOutcome> => {
    let url = start;
    for (let hop = 0;; hop++) {
      // Refused before robots.txt is asked for. A failed lookup is left to the fetch, which retries it.
      const refused = await guard.check(url).catch(() => undefined);
      if (refused) return { ok: false, reason: "address", detail: refused };
      if (options.robots && !(await rulesFor(url)).isAllowed(url)) return { ok: false, reason: "robots" };
      const fetchTime = new Date().toISOString();
      let result;
      try {
        result = await fetchRetrying(url, extract.maxBytes, accept);
      } catch (e) {
        if (e instanceof InterruptedError) throw e;
        if (e instanceof AddressRefused) return { ok: false, reason: "address", detail: e.message };
        return { ok: false, reason: "error", detail: (e as Error).message };
      }
      const { response, body, skip } = result as typeof result & { skip?: string };
      const status = response.status;
      if (status >= 300 && status < 400) {
        const location = response.headers.get("location");
        const next = location ? normalizeUrl(location, url) : undefined;
        if (!next) return { ok: false, reason: "status", detail: `HTTP ${status} without a usable Location` };
        if (hop >= options.maxRedirects) {
          return { ok: false, reason: "redirects", detail: `more than ${hop}` };
        }
        if (!inScope(next)) return { ok: false, reason: "scope", detail: `redirect to ${next}` };
        if (seen.has(next) && next !== start) {
          return { ok: false, reason: "duplicate", detail: `redirect to ${next}, already seen` };
        }
        if (next === url || next === start) {
          return { ok: false, reason: "redirects", detail: "redirect loop" };
        }
        seen.add(next);
        hops.push(next);
        // The next hop may be on another host: wait our turn there too.
        if (hostOf(next) !== hostOf(url)) {
          const h = queues.host(hostOf(next));
          while (h.busy || Date.now() < h.nextAt) {
            await sleep(Math.max(10, h.nextAt - Date.now()), abort.signal);
          }
        }
        url = next;
        continue;
      }
      if (skip) return { ok: false, reason: skip, detail: response.headers.get("content-type") ?? undefined };
      if (status !== 200) return { ok: false, reason: "status", detail: `HTTP ${status}` };
      return { ok: true, url, status, headers: response.headers, body, fetchTime };
    }
  };

  /** Commits what finished so far as one batch (frontier.ts says why in this order). */
  const flush = () => {
    if (pendingPages === 0) return flushing;
    const k = batches++;
    const docs = pendingDocs;
    const skips = pendingSkips;
    const warc = pendingWarc;
    const records = pendingRecords.join("");
    const info = { batch: k, fetched, stats: { ...stats } };
    pendingDocs = [];
    pendingSkips = [];
    pendingWarc = new WarcRecords();
    pendingRecords = [];
    pendingPages = 0;
    flushing = flushing.then(async () => {
      const lines = docs.map((d) => JSON.stringify(d) + "\n").join("");
      await env.checkpoint.writeFile(`live/${batchName(k)}.jsonl`, new TextEncoder().encode(lines));
      await env.checkpoint.writeFile(
        `live/${batchName(k)}.skipped.json`,
        new TextEncoder().encode(JSON.stringify(skips)),
      );
      if (options.warc) {
        await env.checkpoint.writeFile(`live/${batchName(k)}.warc.gz`, concat(warc.chunks, warc.size));
      }
      await log.commit(records, info); // the commit point
      await writeBatchOutput(k, env, options.warc);
    });
    flushing.catch((e) => failure ??= e);
    return flushing;
  };

  /**
   * Books a finished page: its document or skip, its links queued, and its frontier records, all in
   * one synchronous step, so a batch taken by `flush` only ever holds whole pages.
   */
  const finish = (entry: QueueEntry, outcome: FetchOutcome, hops: string[]) => {
    fetched++;
    add("fetched");
    for (const hop of hops) pendingRecords.push(`s ${hop}\n`);
    if (!outcome.ok) {
      add(`skipped.${outcome.reason}`);
      pendingSkips.push({ url: entry.url, reason: outcome.reason, detail: outcome.detail });
    } else {
      const type = outcome.headers.get("content-type") ?? "";
      const offset = options.warc ? pendingWarc.add(outcome, options.userAgent) : undefined;
      const doc = pageDocument({
        bytes: outcome.body,
        contentType: type,
        url: outcome.url,
        fetchTime: outcome.fetchTime,
        status: outcome.status,
        source: options.warc ? `warc/${batchName(batches)}.warc.gz` : "live",
        offset,
      }, extract);
      if ("skip" in doc) {
        add(`skipped.${doc.skip}`);
        pendingSkips.push({ url: entry.url, reason: doc.skip });
      } else {
        pendingDocs.push(doc);
        add("documents");
      }
      if (entry.depth < options.maxDepth && /html/.test(mediaType(type))) {
        const html = new TextDecoder().decode(outcome.body);
        for (const link of extractLinks(html, outcome.url)) {
          if (seen.has(link) || !inScope(link)) continue;
          if (queueRoom <= 0) {
            add("linksBeyondMaxPages");
            continue;
          }
          queueRoom--;
          seen.add(link);
          queues.push({ url: link, depth: entry.depth + 1 });
          pendingRecords.push(`q ${entry.depth + 1} ${link}\n`);
        }
      }
    }
    pendingRecords.push(`d ${entry.url}\n`);
    if (++pendingPages >= options.batchPages) flush();
    env.progress({ done: fetched, total: options.maxPages, unit: "pages", bytes: stats.bytesIn });
  };

  // The scheduler: start a URL of the idle host due first, up to `concurrency` at a time.
  let running = 0;
  let wake: () => void = () => {};
  try {
    while (!abort.signal.aborted && failure === undefined) {
      const budget = options.maxPages - fetched - running;
      if (running === 0 && (queues.size === 0 || budget <= 0)) break;
      let next: ReturnType<HostQueues["take"]> = undefined;
      if (running < options.concurrency && budget > 0) {
        next = queues.take(Date.now());
        if (typeof next === "object") {
          const { entry, host } = next;
          const hops: string[] = [];
          running++;
          fetchPage(entry.url, hops)
            .then((outcome) => finish(entry, outcome, hops))
            .catch((e) => failure ??= e)
            .finally(() => release(host));
          continue;
        }
      }
      // Nothing could start: wait for a task to finish or a host to become due.
      const wait = typeof next === "number" ? Math.max(1, next - Date.now()) : 1000;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, wait);
        wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    // Let the pages in flight finish (or abort them on interrupt), then commit what is done.
    while (running > 0) await new Promise<void>((resolve) => wake = resolve);
    await flush().catch(() => {});
  } finally {
    env.signal.removeEventListener("abort", onAbort);
    log.close();
  }
  if (failure !== undefined && !(failure instanceof InterruptedError)) throw failure;
  if (abort.signal.aborted || failure !== undefined) throw new InterruptedError("interrupted");
  return stats;

  function release(host: Host) {
    running--;
    queues.release(host, Date.now());
    wake();
  }
}

function concat(chunks: Uint8Array[], size: number): Uint8Array {
  const out = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    out.set(c, at);
    at += c.length;
  }
  return out;
}

/**
 * Writes batch `k`'s output files from its checkpointed copy, unless they exist already; then drops
 * that copy, so the checkpoint holds only batches in the making (disk, like memory, stays O(batch)).
 */
async function writeBatchOutput(k: number, env: CrawlEnv, warc: boolean): Promise<void> {
  const name = batchName(k);
  /** The checkpointed copy of a committed batch's file; it is only deleted once all output exists. */
  const copy = async (suffix: string) => {
    const bytes = await env.checkpoint.readFile(`live/${name}${suffix}`);
    if (bytes) return bytes;
    throw new KilnError(
      `crawl: batch ${name} is committed in ${env.checkpoint.path(FRONTIER_LOG)}, but neither its ` +
        `output nor its copy ${env.checkpoint.path(`live/${name}${suffix}`)} exists (were files removed ` +
        `from the work directory?); delete ${dirname(env.checkpoint.dir)} to crawl again`,
    );
  };
  if (!(await env.out.exists(`${name}.jsonl.gz`))) {
    const bytes = await copy(".jsonl");
    const writer = new DocumentWriter(await env.out.create(`${name}.jsonl.gz`), true);
    for (const line of new TextDecoder().decode(bytes).split("\n")) {
      if (line) await writer.write(JSON.parse(line));
    }
    await writer.close();
  }
  if (!(await env.out.exists(`skipped/${name}.json`))) {
    await env.out.writeFile(`skipped/${name}.json`, await copy(".skipped.json"));
  }
  if (warc && !(await env.out.exists(`warc/${name}.warc.gz`))) {
    await env.out.writeFile(`warc/${name}.warc.gz`, await copy(".warc.gz"));
  }
  for (const suffix of [".jsonl", ".skipped.json", ".warc.gz"]) {
    await Deno.remove(env.checkpoint.path(`live/${name}${suffix}`)).catch(() => {});
  }
}
