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
 * - Resumable: finished pages are flushed in batches. A batch's documents are first written into the
 *   checkpoint, then the crawl state (frontier = queued + in-flight URLs, the seen set, counters) is
 *   saved atomically: that save is the commit point. Only then is the batch's output shard written,
 *   and a rerun rewrites any shard missing for a committed batch. So after kill -9 no page whose
 *   document was committed is fetched again and none is lost; pages in flight are fetched again.
 * - Every URL that does not become a document is recorded with its reason in
 *   `skipped/crawl-live-NNNNN.json`, and counted in the stats as `skipped.<reason>`.
 * - Optionally every fetch is also written as WARC request/response records
 *   (`warc/crawl-live-NNNNN.warc.gz`, gzip per record), and the documents then point at them.
 * @module
 */
import { Parser } from "htmlparser2";
import { gzipSync } from "node:zlib";
import type { Checkpoint, OutputWriter } from "../../pipeline/workspace.ts";
import { InterruptedError } from "../../pipeline/errors.ts";
import { type Document, DocumentWriter } from "../documents.ts";
import { type ExtractOptions, mediaType, pageDocument } from "./sources.ts";
import { MAX_ROBOTS_BYTES, type RobotsRules, robotsRules } from "./robots.ts";

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

interface QueueEntry {
  url: string;
  depth: number;
}

/** Saved state: the commit point of every batch. */
interface CrawlState {
  queue: QueueEntry[];
  seen: string[];
  fetched: number;
  batches: number;
  stats: Record<string, number>;
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

const STATE = "live-state";
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
  const parser = new Parser({
    onopentag(name, attrs) {
      if (name === "base" && attrs.href) base = normalizeUrl(attrs.href, pageUrl) ?? base;
      if ((name === "a" || name === "area") && attrs.href && !/\bnofollow\b/i.test(attrs.rel ?? "")) {
        const url = normalizeUrl(attrs.href, base);
        if (url) links.push(url);
      }
    },
  }, { decodeEntities: true, lowerCaseTags: true, lowerCaseAttributeNames: true });
  parser.write(html);
  parser.end();
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
  const saved = await env.checkpoint.load<CrawlState>(STATE);
  const state: CrawlState = saved ?? { queue: [], seen: [], fetched: 0, batches: 0, stats: {} };
  const seen = new Set(state.seen);
  const queue: QueueEntry[] = state.queue;
  const stats = state.stats;
  const add = (name: string, n = 1) => stats[name] = (stats[name] ?? 0) + n;
  if (saved) {
    env.log(
      `crawl: resuming: ${state.fetched} pages fetched, ${queue.length} queued, ${state.batches} batches`,
    );
    // Batches committed by the state but whose shards were not written before the crash.
    for (let k = 0; k < state.batches; k++) await writeBatchOutput(k, env, options.warc);
  } else {
    for (const seed of options.seeds) {
      const url = normalizeUrl(seed);
      if (url && !seen.has(url)) {
        seen.add(url);
        queue.push({ url, depth: 0 });
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

  // Per host: busy while a request (or its retry wait) is under way, and when it may be asked next.
  const hosts = new Map<string, { busy: boolean; nextAt: number; delayMs: number }>();
  const robots = new Map<string, Promise<RobotsRules>>();
  const inFlight = new Map<number, QueueEntry>();
  let nextTaskId = 0;
  let pendingDocs: Document[] = [];
  let pendingSkips: Skip[] = [];
  let pendingWarc = new WarcRecords();
  let completedSinceFlush = 0;
  let flushing: Promise<void> = Promise.resolve();
  const abort = new AbortController();
  const onAbort = () => abort.abort();
  env.signal.addEventListener("abort", onAbort, { once: true });

  const hostOf = (url: string) => new URL(url).host;
  const hostState = (host: string) => {
    let h = hosts.get(host);
    if (!h) hosts.set(host, h = { busy: false, nextAt: 0, delayMs: options.delayMs });
    return h;
  };

  /** One HTTP GET with the timeouts and the body limit; redirects are returned, not followed. */
  const fetchOnce = async (url: string, maxBytes: number, accept?: (type: string) => boolean) => {
    const controller = new AbortController();
    const stop = () => controller.abort();
    abort.signal.addEventListener("abort", stop, { once: true });
    let timedOut = "";
    let tooBig = false;
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
      if (declared > maxBytes) {
        await response.body?.cancel();
        return { response, body: new Uint8Array(0), skip: "size" as const };
      }
      const parts: Uint8Array[] = [];
      let size = 0;
      if (response.body) {
        for await (const chunk of response.body) {
          size += chunk.length;
          if (size > maxBytes) {
            tooBig = true;
            break; // cancels the body stream: nothing more is read or decompressed
          }
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
      return { response, body };
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
  const fetchRetrying = async (url: string, maxBytes: number, accept?: (type: string) => boolean) => {
    for (let attempt = 0;; attempt++) {
      let wait: number;
      let why: string;
      try {
        const result = await fetchOnce(url, maxBytes, accept);
        const status = result.response.status;
        if (status !== 429 && status < 500) return result;
        why = `HTTP ${status}`;
        wait = Math.min(
          retryAfterMs(result.response.headers.get("retry-after")) ?? options.backoffMs * 2 ** attempt,
          options.maxRetryAfterMs,
        );
        if (attempt >= options.retries) return result;
      } catch (e) {
        if (e instanceof InterruptedError) throw e;
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
            const { response, body } = await fetchRetrying(target, MAX_ROBOTS_BYTES);
            add("robotsFetched");
            const location = response.headers.get("location");
            if (response.status >= 300 && response.status < 400 && location) {
              target = new URL(location, target).href;
              continue;
            }
            const text = new TextDecoder().decode(body);
            const r = robotsRules(robotsUrl, response.status, text, options.userAgent);
            if (r.crawlDelay !== undefined) {
              const h = hostState(new URL(url).host);
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

  /** Fetches a page, following redirects hop by hop (each hop checked against scope and robots). */
  const fetchPage = async (start: string): Promise<FetchOutcome> => {
    let url = start;
    for (let hop = 0;; hop++) {
      if (options.robots && !(await rulesFor(url)).isAllowed(url)) return { ok: false, reason: "robots" };
      const fetchTime = new Date().toISOString();
      let result;
      try {
        result = await fetchRetrying(url, extract.maxBytes, accept);
      } catch (e) {
        if (e instanceof InterruptedError) throw e;
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
        // The next hop may be on another host: wait our turn there too.
        if (hostOf(next) !== hostOf(url)) {
          const h = hostState(hostOf(next));
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

  const snapshotState = (): CrawlState => ({
    queue: [...inFlight.values(), ...queue],
    seen: [...seen],
    fetched: state.fetched,
    batches: state.batches,
    stats: { ...stats },
  });

  /** Commits what finished so far as one batch (see the module doc for the order of writes). */
  const flush = () => {
    if (completedSinceFlush === 0) return flushing;
    const k = state.batches++;
    const docs = pendingDocs;
    const skips = pendingSkips;
    const warc = pendingWarc;
    const snapshot = snapshotState();
    pendingDocs = [];
    pendingSkips = [];
    pendingWarc = new WarcRecords();
    completedSinceFlush = 0;
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
      await env.checkpoint.save(STATE, snapshot); // the commit point
      await writeBatchOutput(k, env, options.warc);
    });
    return flushing;
  };

  const process = async (entry: QueueEntry) => {
    const outcome = await fetchPage(entry.url);
    state.fetched++;
    add("fetched");
    if (!outcome.ok) {
      add(`skipped.${outcome.reason}`);
      pendingSkips.push({ url: entry.url, reason: outcome.reason, detail: outcome.detail });
      return;
    }
    const type = outcome.headers.get("content-type") ?? "";
    const offset = options.warc ? pendingWarc.add(outcome, options.userAgent) : undefined;
    const doc = pageDocument({
      bytes: outcome.body,
      contentType: type,
      url: outcome.url,
      fetchTime: outcome.fetchTime,
      status: outcome.status,
      source: options.warc ? `warc/${batchName(state.batches)}.warc.gz` : "live",
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
        seen.add(link);
        queue.push({ url: link, depth: entry.depth + 1 });
      }
    }
  };

  // The scheduler: start the first queued URL whose host is free and due, up to `concurrency`.
  let running = 0;
  let failure: unknown;
  let wake: () => void = () => {};
  try {
    while (!abort.signal.aborted && failure === undefined) {
      const budget = options.maxPages - state.fetched - running;
      if (running === 0 && (queue.length === 0 || budget <= 0)) break;
      let started = false;
      let earliest = Infinity;
      if (running < options.concurrency && budget > 0) {
        const now = Date.now();
        for (let i = 0; i < queue.length; i++) {
          const h = hostState(hostOf(queue[i].url));
          if (h.busy) continue;
          if (h.nextAt > now) {
            earliest = Math.min(earliest, h.nextAt);
            continue;
          }
          const entry = queue.splice(i, 1)[0];
          const id = nextTaskId++;
          inFlight.set(id, entry);
          h.busy = true;
          running++;
          started = true;
          process(entry).then(() => {
            inFlight.delete(id);
            completedSinceFlush++;
            if (completedSinceFlush >= options.batchPages) flush();
            env.progress({
              done: state.fetched,
              total: options.maxPages,
              unit: "pages",
              bytes: stats.bytesIn,
            });
          }, (e) => {
            failure ??= e;
          }).finally(() => {
            running--;
            h.busy = false;
            h.nextAt = Date.now() + h.delayMs;
            wake();
          });
          break;
        }
      }
      if (started) continue;
      // Nothing could start: wait for a task to finish or a host to become due.
      const wait = earliest === Infinity ? 1000 : Math.max(1, earliest - Date.now());
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
  } finally {
    env.signal.removeEventListener("abort", onAbort);
  }
  if (failure !== undefined && !(failure instanceof InterruptedError)) throw failure;
  await flush();
  if (abort.signal.aborted || failure !== undefined) throw new InterruptedError("interrupted");
  return stats;
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

/** Writes batch `k`'s output files from its checkpointed copy, unless they exist already. */
async function writeBatchOutput(k: number, env: CrawlEnv, warc: boolean): Promise<void> {
  const name = batchName(k);
  if (!(await env.out.exists(`${name}.jsonl.gz`))) {
    const bytes = await env.checkpoint.readFile(`live/${name}.jsonl`);
    const writer = new DocumentWriter(await env.out.create(`${name}.jsonl.gz`), true);
    for (const line of new TextDecoder().decode(bytes ?? new Uint8Array()).split("\n")) {
      if (line) await writer.write(JSON.parse(line));
    }
    await writer.close();
  }
  if (!(await env.out.exists(`skipped/${name}.json`))) {
    const bytes = await env.checkpoint.readFile(`live/${name}.skipped.json`);
    await env.out.writeFile(`skipped/${name}.json`, bytes ?? new TextEncoder().encode("[]"));
  }
  if (warc && !(await env.out.exists(`warc/${name}.warc.gz`))) {
    const bytes = await env.checkpoint.readFile(`live/${name}.warc.gz`);
    if (bytes) await env.out.writeFile(`warc/${name}.warc.gz`, bytes);
  }
}
