/**
 * The live crawler's frontier: the URLs it knows (seen), the ones waiting to be fetched (queued,
 * one FIFO per host), and a crash-safe record of both that grows by one small segment per batch.
 *
 * ## The log
 * `frontier.log` is append-only text, one record a line (URLs are normalised `URL.href`s: ASCII, no
 * spaces or newlines):
 * - `q <depth> <url>`: the URL was discovered and queued (a seed, or a link of a finished page);
 * - `s <url>`: the URL is known but not queued (a redirect target, fetched as part of another page);
 * - `d <url>`: the queued URL was fetched and dealt with (a document or a skip with its reason);
 * - `c {"batch","fetched","stats","bytes","sha"}`: the commit record that closes a batch's segment:
 *   the crawl's counters after the batch, and the length and SHA-256 (first 16 hex digits) of the
 *   segment's records before it.
 *
 * A segment is written with one append and then fsynced (`commit`); replaying the log (`open`)
 * applies segments in order and stops at the first one without a valid commit record, then cuts the
 * file there so later segments follow a complete one. Each page's records (`s`, `q` and its own `d`)
 * join the pending segment together, in the same synchronous step as its document or skip, once the
 * page is finished; pages in flight contribute nothing. So the log always describes whole pages, and
 * a URL's `q` precedes its `d`.
 *
 * ## Why a crash loses nothing and fetches nothing twice that was written out
 * The crawler commits batch k in this order: (1) the batch's documents and skips (and WARC records)
 * are written into the checkpoint as files of their own, atomically; (2) the segment is appended and
 * fsynced: the commit point; (3) the batch's output files are written (each atomically) from those
 * files, which are then deleted.
 * - Killed before (2) ends: replay ignores the torn segment, so the batch's pages are still queued
 *   (`q` without `d`) and are fetched again; the files of (1) are overwritten when batch k is
 *   committed anew. No output of batch k exists, since (3) had not begun.
 * - Killed after (2): replay marks the batch's pages done, and the rerun writes any output of a
 *   committed batch that is missing, from the files of (1) (deleted only once all of the batch's
 *   output exists). Those pages are never fetched again.
 * - So a URL is fetched again only if it was in flight, or finished in a batch not yet committed,
 *   when the process died; every URL queued is fetched in some run, and each page's document or skip
 *   reaches the output exactly once.
 *
 * ## Memory and time
 * A commit writes only the batch's own records (O(batch), not O(crawl)). Picking the next URL is
 * O(log hosts): hosts that are idle and have URLs queued sit in a heap ordered by when they may be
 * asked next (hosts due together take turns). The seen set and the queued URLs stay in memory (about
 * 100–200 bytes a URL), and the crawler queues at most `maxPages` URLs in all, so both are bounded
 * by the config, not by how many links the pages hold. The log (two lines a page, each about a URL
 * long) is read once, streaming, when a crawl resumes.
 * @module
 */
import { createHash } from "node:crypto";
import { dirname } from "node:path";
import { syncDir } from "../../pipeline/workspace.ts";

/** A URL waiting to be fetched, with its link distance from the seeds. */
export interface QueueEntry {
  url: string;
  depth: number;
}

/** What a commit record stores besides its checksum. */
export interface CommitInfo {
  /** The batch this segment closes (0, 1, …). */
  batch: number;
  /** Pages fetched by the end of the batch. */
  fetched: number;
  /** The crawl's counters by the end of the batch. */
  stats: Record<string, number>;
}

/** The frontier as the committed part of a log describes it. */
export interface Replay {
  seen: Set<string>;
  /** Queued and not yet done, in the order they were queued. */
  queue: QueueEntry[];
  /** The last commit record, or undefined when no batch was committed. */
  last?: CommitInfo;
  /** Length in bytes of the committed part of the log. */
  bytes: number;
}

const checksum = (text: string) => createHash("sha256").update(text).digest("hex").slice(0, 16);

/** Reads a frontier log (streaming), up to its last valid commit record. */
export async function replayFrontier(path: string): Promise<Replay> {
  const seen = new Set<string>();
  const queued = new Map<string, number>();
  let last: CommitInfo | undefined;
  let bytes = 0;
  let file: Deno.FsFile;
  try {
    file = await Deno.open(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return { seen, queue: [], bytes };
    throw e;
  }
  // Records of the segment being read, applied only once its commit record checks out.
  let segment = "";
  let records: string[] = [];
  let rest = "";
  const decoder = new TextDecoder();
  /** Handles one complete line; false once the log stops making sense (a torn or damaged tail). */
  const line = (text: string): boolean => {
    if (!/^[\x20-\x7e]*$/.test(text)) return false;
    if (!text.startsWith("c ")) {
      if (!/^(q \d+|s|d) \S+$/.test(text)) return false;
      segment += text + "\n";
      records.push(text);
      return true;
    }
    let commit: CommitInfo & { bytes: number; sha: string };
    try {
      commit = JSON.parse(text.slice(2));
    } catch {
      return false;
    }
    if (commit.bytes !== segment.length || commit.sha !== checksum(segment)) return false;
    for (const record of records) {
      const [kind, a, b] = record.split(" ");
      if (kind === "q") {
        seen.add(b);
        queued.set(b, Number(a));
      } else if (kind === "s") seen.add(a);
      else queued.delete(a);
    }
    last = { batch: commit.batch, fetched: commit.fetched, stats: commit.stats };
    bytes += segment.length + text.length + 1;
    segment = "";
    records = [];
    return true;
  };
  try {
    read: for await (const chunk of file.readable) {
      rest += decoder.decode(chunk, { stream: true });
      let start = 0;
      for (let end; (end = rest.indexOf("\n", start)) >= 0; start = end + 1) {
        if (!line(rest.slice(start, end))) break read;
      }
      rest = rest.slice(start);
    }
  } finally {
    try {
      file.close();
    } catch {
      // already closed by the finished stream
    }
  }
  return { seen, queue: [...queued].map(([url, depth]) => ({ url, depth })), last, bytes };
}

/** The append side of a frontier log. */
export class FrontierLog {
  #file: Deno.FsFile;
  #encoder = new TextEncoder();

  private constructor(file: Deno.FsFile) {
    this.#file = file;
  }

  /** Replays the log at `path` and opens it for appending after its last committed segment. */
  static async open(path: string): Promise<{ log: FrontierLog; replay: Replay }> {
    const replay = await replayFrontier(path);
    await Deno.mkdir(dirname(path), { recursive: true });
    const file = await Deno.open(path, { write: true, create: true });
    await file.truncate(replay.bytes); // drop a torn tail, so new segments follow a committed one
    await file.seek(replay.bytes, Deno.SeekMode.Start);
    await file.syncData();
    await syncDir(dirname(path));
    return { log: new FrontierLog(file), replay };
  }

  /** Appends a segment (`records`: complete lines) and its commit record, and fsyncs: the commit point. */
  async commit(records: string, info: CommitInfo): Promise<void> {
    const closing = JSON.stringify({ ...info, bytes: records.length, sha: checksum(records) });
    const data = this.#encoder.encode(records + "c " + closing + "\n");
    let written = 0;
    while (written < data.length) written += await this.#file.write(data.subarray(written));
    await this.#file.syncData();
  }

  close(): void {
    this.#file.close();
  }
}

/** One host's politeness state and its queue. */
export interface Host {
  readonly name: string;
  /** A request (or its retry wait) is under way. */
  busy: boolean;
  /** When it may be asked next (ms since the epoch). */
  nextAt: number;
  /** Delay between two requests (delayMs, or robots.txt's Crawl-delay when larger). */
  delayMs: number;
  queue: QueueEntry[];
  /** Index of the queue's first entry (entries before it were taken). */
  head: number;
  /** Its place in the ready heap, or -1. */
  slot: number;
  /** When it joined the heap (a counter): hosts due at the same time take turns. */
  turn: number;
}

/**
 * Per-host FIFO queues, and a heap of the hosts that are idle and have URLs queued, ordered by
 * `nextAt`: taking the next URL to fetch is O(log hosts) whatever the queues hold.
 */
export class HostQueues {
  #hosts = new Map<string, Host>();
  #ready: Host[] = [];
  #turns = 0;
  /** URLs queued over all hosts. */
  size = 0;

  constructor(private readonly delayMs: number) {}

  /** The state of `name` (host[:port]), created on first use. */
  host(name: string): Host {
    let h = this.#hosts.get(name);
    if (!h) {
      h = { name, busy: false, nextAt: 0, delayMs: this.delayMs, queue: [], head: 0, slot: -1, turn: 0 };
      this.#hosts.set(name, h);
    }
    return h;
  }

  push(entry: QueueEntry): void {
    const h = this.host(new URL(entry.url).host);
    h.queue.push(entry);
    this.size++;
    if (!h.busy && h.slot < 0) this.#insert(h);
  }

  /**
   * The next URL of the idle host that is due first, which is marked busy until `release`; or, when
   * no host is due yet, the time the first becomes due; undefined when every queued URL's host is busy.
   */
  take(now: number): { entry: QueueEntry; host: Host } | number | undefined {
    const h = this.#ready[0];
    if (!h) return undefined;
    if (h.nextAt > now) return h.nextAt;
    this.#removeTop();
    const entry = h.queue[h.head++];
    if (h.head > 1024 && h.head * 2 > h.queue.length) {
      h.queue = h.queue.slice(h.head);
      h.head = 0;
    }
    this.size--;
    h.busy = true;
    return { entry, host: h };
  }

  /** Ends a host's request: it may be asked again `delayMs` from `now`. */
  release(h: Host, now: number): void {
    h.busy = false;
    h.nextAt = now + h.delayMs;
    if (h.head < h.queue.length && h.slot < 0) this.#insert(h);
  }

  // A binary min-heap on (nextAt, turn); each host knows its slot.
  #before(a: Host, b: Host) {
    return a.nextAt < b.nextAt || (a.nextAt === b.nextAt && a.turn < b.turn);
  }

  #insert(h: Host) {
    h.turn = this.#turns++;
    h.slot = this.#ready.length;
    this.#ready.push(h);
    this.#up(h.slot);
  }

  #removeTop() {
    const top = this.#ready[0];
    const last = this.#ready.pop()!;
    top.slot = -1;
    if (last !== top) {
      this.#ready[0] = last;
      last.slot = 0;
      this.#down(0);
    }
  }

  #swap(i: number, j: number) {
    const heap = this.#ready;
    [heap[i], heap[j]] = [heap[j], heap[i]];
    heap[i].slot = i;
    heap[j].slot = j;
  }

  #up(i: number) {
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#before(this.#ready[i], this.#ready[parent])) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  #down(i: number) {
    const heap = this.#ready;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let min = i;
      if (l < heap.length && this.#before(heap[l], heap[min])) min = l;
      if (r < heap.length && this.#before(heap[r], heap[min])) min = r;
      if (min === i) return;
      this.#swap(i, min);
      i = min;
    }
  }
}
