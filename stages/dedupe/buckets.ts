/**
 * The scalable half of near-duplicate detection, after datatrove's MinHash pipeline:
 *
 * 1. per shard, every document's band keys are written as one run per band, sorted by key
 *    (`writeBandFile`): `bands` runs of `(keyHi, keyLo, index)` uint32 triples;
 * 2. per band, the runs of all shards are merged in key order (`mergeBand`), which reads each run
 *    through a small window, so memory is bounded by the number of shards, not the corpus; documents
 *    with equal keys become duplicate pairs `(first, other)`, written to a pairs file;
 * 3. the pairs of all bands are joined into connected components (`UnionFind`), whose smallest member
 *    (earliest shard, then earliest document) is the one kept.
 * @module
 */

/** Bytes of one band record: key hi, key lo, document index (uint32 each, little-endian). */
export const RECORD_BYTES = 12;

/**
 * Serialises one shard's band keys: for each band, the `(hi, lo, index)` records sorted by key, then
 * index. `keys` holds `bands × 2` uint32 per document, in document order.
 */
export function bandFile(keys: Uint32Array, bands: number): Uint8Array {
  const docs = keys.length / (bands * 2);
  const out = new Uint32Array(bands * docs * 3);
  const order = Array.from({ length: docs }, (_, i) => i);
  for (let b = 0; b < bands; b++) {
    const hi = (i: number) => keys[(i * bands + b) * 2];
    const lo = (i: number) => keys[(i * bands + b) * 2 + 1];
    order.sort((x, y) => hi(x) - hi(y) || lo(x) - lo(y) || x - y);
    let o = b * docs * 3;
    for (const i of order) {
      out[o++] = hi(i);
      out[o++] = lo(i);
      out[o++] = i;
    }
  }
  return new Uint8Array(out.buffer);
}

/** One band's run in one band file: where it starts and how many records it has. */
export interface Run {
  path: string;
  /** Number of documents in the shard (= records in each band's run). */
  docs: number;
  /** Global id of the shard's first document; a record's global id is `base + index`. */
  base: number;
}

const WINDOW = 4096; // records read at a time from each run

class RunReader {
  hi = 0;
  lo = 0;
  gid = 0;
  #buf = new Uint32Array(WINDOW * 3);
  #bufLen = 0;
  #bufPos = 0;
  #read = 0;

  private constructor(private file: Deno.FsFile, private run: Run, private offset: number) {}

  static async open(run: Run, band: number): Promise<RunReader> {
    const file = await Deno.open(run.path, { read: true });
    return new RunReader(file, run, band * run.docs * RECORD_BYTES);
  }

  /** Advances to the next record; false at the end of the run. */
  async next(): Promise<boolean> {
    if (this.#bufPos === this.#bufLen) {
      const n = Math.min(WINDOW, this.run.docs - this.#read);
      if (n === 0) return false;
      const bytes = new Uint8Array(this.#buf.buffer, 0, n * RECORD_BYTES);
      await this.file.seek(this.offset + this.#read * RECORD_BYTES, Deno.SeekMode.Start);
      let got = 0;
      while (got < bytes.length) {
        const r = await this.file.read(bytes.subarray(got));
        if (r === null) throw new Error(`${this.run.path}: band file is shorter than its index says`);
        got += r;
      }
      this.#read += n;
      this.#bufLen = n * 3;
      this.#bufPos = 0;
    }
    this.hi = this.#buf[this.#bufPos];
    this.lo = this.#buf[this.#bufPos + 1];
    this.gid = this.run.base + this.#buf[this.#bufPos + 2];
    this.#bufPos += 3;
    return true;
  }

  close() {
    this.file.close();
  }
}

function before(a: RunReader, b: RunReader): boolean {
  return a.hi !== b.hi ? a.hi < b.hi : a.lo !== b.lo ? a.lo < b.lo : a.gid < b.gid;
}

/** A binary min-heap of run readers ordered by (key, global id). */
class ReaderHeap {
  items: RunReader[] = [];
  push(r: RunReader) {
    const a = this.items;
    a.push(r);
    for (let i = a.length - 1; i > 0;) {
      const p = (i - 1) >> 1;
      if (!before(a[i], a[p])) break;
      [a[i], a[p]] = [a[p], a[i]];
      i = p;
    }
  }
  /** Restores order after the top reader advanced (or removes it when `exhausted`). */
  fixTop(exhausted: boolean) {
    const a = this.items;
    if (exhausted) {
      const last = a.pop()!;
      if (a.length === 0) return;
      a[0] = last;
    }
    for (let i = 0;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < a.length && before(a[l], a[m])) m = l;
      if (r < a.length && before(a[r], a[m])) m = r;
      if (m === i) break;
      [a[i], a[m]] = [a[m], a[i]];
      i = m;
    }
  }
}

/** Streams uint32 pairs to a file that appears under its final name only when finished. */
class PairWriter {
  #buf = new Uint32Array(2 * 65536);
  #len = 0;
  pairs = 0;
  private constructor(private file: Deno.FsFile, private tmp: string, private path: string) {}

  static async open(path: string): Promise<PairWriter> {
    const tmp = `${path}.${crypto.randomUUID()}.tmp`;
    return new PairWriter(await Deno.open(tmp, { write: true, create: true, truncate: true }), tmp, path);
  }
  async add(a: number, b: number) {
    this.#buf[this.#len++] = a;
    this.#buf[this.#len++] = b;
    this.pairs++;
    if (this.#len === this.#buf.length) await this.#flush();
  }
  async #flush() {
    const bytes = new Uint8Array(this.#buf.buffer, 0, this.#len * 4);
    let written = 0;
    while (written < bytes.length) written += await this.file.write(bytes.subarray(written));
    this.#len = 0;
  }
  async finish() {
    await this.#flush();
    await this.file.sync();
    this.file.close();
    await Deno.rename(this.tmp, this.path);
  }
}

/**
 * Merges one band of every run in key order and writes a pair `(first, other)` for each document
 * whose key equals the key of an earlier one (the first being the smallest global id with that key).
 * Pairs among ids below `skipBelow` (the documents of other datasets deduplicated against) are not
 * written: only this dataset's documents can be removed. Returns the number of pairs.
 */
export async function mergeBand(
  runs: Run[],
  band: number,
  pairsPath: string,
  skipBelow = 0,
): Promise<number> {
  const heap = new ReaderHeap();
  const readers: RunReader[] = [];
  try {
    for (const run of runs) {
      if (run.docs === 0) continue;
      const reader = await RunReader.open(run, band);
      readers.push(reader);
      if (await reader.next()) heap.push(reader);
    }
    const out = await PairWriter.open(pairsPath);
    let groupHi = -1, groupLo = -1, first = -1;
    while (heap.items.length) {
      const top = heap.items[0];
      if (top.hi === groupHi && top.lo === groupLo) {
        if (top.gid >= skipBelow) await out.add(first, top.gid);
      } else {
        groupHi = top.hi;
        groupLo = top.lo;
        first = top.gid;
      }
      heap.fixTop(!(await top.next()));
    }
    await out.finish();
    return out.pairs;
  } finally {
    for (const r of readers) r.close();
  }
}

/** Reads a pairs file written by {@linkcode mergeBand}, in chunks of whole pairs. */
export async function* readPairs(path: string): AsyncGenerator<Uint32Array> {
  using file = await Deno.open(path, { read: true });
  const buf = new Uint8Array(8 * 65536);
  for (let have = 0, eof = false; !eof;) {
    const r = await file.read(buf.subarray(have));
    if (r === null) eof = true;
    else have += r;
    if (have === buf.length || (eof && have > 0)) {
      const whole = have - (have % 8);
      yield new Uint32Array(buf.slice(0, whole).buffer);
      buf.copyWithin(0, whole, have);
      have -= whole;
    }
  }
}

/**
 * Union-find over the documents that appear in duplicate pairs (a Map, so memory grows with the
 * number of duplicates, not the corpus). Every component's root is its smallest id, which makes the
 * kept representative independent of the order pairs arrive in.
 */
export class UnionFind {
  readonly parent = new Map<number, number>();

  find(x: number): number {
    let root = x;
    for (let p = this.parent.get(root); p !== undefined && p !== root; p = this.parent.get(root)) root = p;
    // Path compression: point everything on the way at the root.
    for (let y = x; y !== root;) {
      const next = this.parent.get(y)!;
      this.parent.set(y, root);
      y = next;
    }
    return root;
  }

  union(a: number, b: number) {
    if (!this.parent.has(a)) this.parent.set(a, a);
    if (!this.parent.has(b)) this.parent.set(b, b);
    const ra = this.find(a), rb = this.find(b);
    if (ra < rb) this.parent.set(rb, ra);
    else if (rb < ra) this.parent.set(ra, rb);
  }
}
