/**
 * Training a byte-level BPE tokenizer with memory bounded by the number of distinct pre-tokens.
 *
 * Two passes, as in GPT-2 and Hugging Face, but without their memory appetite:
 * 1. {@linkcode PieceCounter} streams over documents and counts each distinct piece (pre-token).
 *    The corpus itself is never held; memory is the table of distinct pieces.
 * 2. {@linkcode trainBpe} lays every distinct piece out once as a linked list of symbols, counts
 *    adjacent pairs (weighted by piece frequency) once, and then, for each merge, visits only the
 *    pieces that contain the merged pair (an index pair → pieces) and updates the counts of the pairs
 *    around each occurrence. The best pair comes from a max-heap whose stale entries (counts that
 *    have since dropped) are re-queued with their current count when popped; the counts are never
 *    recounted from scratch.
 *
 * Memory: the piece table, 12 bytes per byte of distinct piece text (symbols and links), and 8 bytes
 * an index entry (one per pair occurrence in a distinct piece, plus one per pair a merge creates):
 * a small multiple of the distinct pre-tokens, independent of the corpus size.
 *
 * Tie-breaking, so training is deterministic: the pair with the highest count merges first; among
 * equal counts, the pair with the smaller left id, then the smaller right id. Ids are assigned
 * deterministically (bytes 0–255 as themselves, then merges in order), so the result does not depend
 * on document order, thread count or hash iteration order.
 *
 * @example
 * ```ts
 * import { PieceCounter, trainBpe } from "./train.ts";
 * const counter = new PieceCounter();
 * for (const text of ["low lower lowest", "new newer newest"]) counter.add(text);
 * const tok = trainBpe(counter, { vocabSize: 300 });
 * console.log(tok.encode(" lowest").length); // 1 or 2, down from 7 bytes
 * ```
 * @module
 */
import { GPT2_PATTERN, gpt2PieceEnd, type Pretokenizer, pretokenizer } from "./pretokenize.ts";
import { DEFAULT_SPECIAL_TOKENS, flatCopy, Tokenizer } from "./tokenizer.ts";

/**
 * Counts distinct pieces of a stream of texts. An open-addressing table probed by hashing each
 * piece's range of the text in place, as the encoder's cache does: about twice as fast as a
 * `Map<string, number>`, which needs a new string per piece just to look it up. Keys are copied
 * (never slices), so no document outlives its `add` call.
 */
export class PieceCounter {
  /** UTF-16 units of text added. */
  chars = 0;
  readonly pattern: string;
  readonly #split: Pretokenizer;
  readonly #gpt2: boolean;
  #mask = (1 << 16) - 1;
  #size = 0;
  #keys: (string | undefined)[] = new Array(1 << 16);
  #hashes = new Int32Array(1 << 16);
  #counts = new Float64Array(1 << 16);

  constructor(pattern = GPT2_PATTERN) {
    this.pattern = pattern;
    this.#split = pretokenizer(pattern);
    this.#gpt2 = pattern === GPT2_PATTERN;
  }

  /** Number of distinct pieces. */
  get size(): number {
    return this.#size;
  }

  /** Each distinct piece with its count (in table order: training does not depend on it). */
  *entries(): IterableIterator<[string, number]> {
    for (let s = 0; s <= this.#mask; s++) if (this.#hashes[s] !== 0) yield [this.#keys[s]!, this.#counts[s]];
  }

  /** Counts the pieces of one text (a document; pieces never span two calls). */
  add(text: string): void {
    this.chars += text.length;
    const n = text.length;
    if (this.#gpt2) {
      for (let i = 0; i < n;) {
        const j = gpt2PieceEnd(text, i, n);
        this.#count(text, i, j);
        i = j;
      }
    } else this.#split(text, (i, j) => this.#count(text, i, j));
  }

  #count(text: string, i: number, j: number): void {
    let h = 0x811c9dc5;
    for (let k = i; k < j; k++) h = Math.imul(h ^ text.charCodeAt(k), 0x01000193);
    h |= 1;
    const len = j - i;
    for (let s = h & this.#mask;; s = (s + 1) & this.#mask) {
      const sh = this.#hashes[s];
      if (sh === 0) {
        this.#hashes[s] = h;
        this.#keys[s] = len < 13 ? text.slice(i, j) : flatCopy(text.slice(i, j));
        this.#counts[s] = 1;
        this.#size++;
        if (this.#size * 2 > this.#mask) this.#grow();
        return;
      }
      if (sh !== h) continue;
      const key = this.#keys[s]!;
      if (key.length !== len) continue;
      let k = 0;
      while (k < len && key.charCodeAt(k) === text.charCodeAt(i + k)) k++;
      if (k === len) {
        this.#counts[s]++;
        return;
      }
    }
  }

  #grow(): void {
    const keys = this.#keys, hashes = this.#hashes, counts = this.#counts;
    const size = hashes.length * 2;
    this.#mask = size - 1;
    this.#keys = new Array(size);
    this.#hashes = new Int32Array(size);
    this.#counts = new Float64Array(size);
    for (let old = 0; old < hashes.length; old++) {
      if (hashes[old] === 0) continue;
      let s = hashes[old] & this.#mask;
      while (this.#hashes[s] !== 0) s = (s + 1) & this.#mask;
      this.#hashes[s] = hashes[old];
      this.#keys[s] = keys[old];
      this.#counts[s] = counts[old];
    }
  }
}

/** Options of {@linkcode trainBpe}. */
export interface TrainOptions {
  /** Ids in the result, special tokens included; at least 256 + the special tokens. */
  vocabSize: number;
  /** Special tokens, given the last ids. Default: `<|endoftext|>` and the chat tokens. */
  specialTokens?: readonly string[];
  /** Stop merging when the best pair occurs fewer times than this (the vocabulary is then smaller). */
  minFrequency?: number;
  /** Called every 256 merges with (merges done, merges wanted). */
  onProgress?: (done: number, total: number) => void;
}

/** Max-heap of (count, pair key): higher count first, then smaller key (smaller left, then right id). */
class PairHeap {
  counts: Float64Array = new Float64Array(1024);
  keys: Float64Array = new Float64Array(1024);
  size = 0;

  #above(a: number, b: number): boolean {
    return this.counts[a] > this.counts[b] ||
      (this.counts[a] === this.counts[b] && this.keys[a] < this.keys[b]);
  }
  #swap(a: number, b: number): void {
    const c = this.counts[a], k = this.keys[a];
    this.counts[a] = this.counts[b];
    this.keys[a] = this.keys[b];
    this.counts[b] = c;
    this.keys[b] = k;
  }
  push(count: number, key: number): void {
    if (this.size === this.counts.length) {
      const c = new Float64Array(this.size * 2), k = new Float64Array(this.size * 2);
      c.set(this.counts);
      k.set(this.keys);
      this.counts = c;
      this.keys = k;
    }
    let i = this.size++;
    this.counts[i] = count;
    this.keys[i] = key;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#above(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }
  pop(): void {
    this.size--;
    this.counts[0] = this.counts[this.size];
    this.keys[0] = this.keys[this.size];
    for (let i = 0;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < this.size && this.#above(l, m)) m = l;
      if (r < this.size && this.#above(r, m)) m = r;
      if (m === i) break;
      this.#swap(i, m);
      i = m;
    }
  }
}

/**
 * Learns merges from counted pieces until the vocabulary reaches `vocabSize` (or no pair occurs
 * `minFrequency` times). Ids 0–255 are the bytes, 256… the merges in order, then the special tokens.
 */
export function trainBpe(counter: PieceCounter, opts: TrainOptions): Tokenizer {
  const specials = [...(opts.specialTokens ?? DEFAULT_SPECIAL_TOKENS)];
  const wanted = opts.vocabSize - 256 - specials.length;
  if (!Number.isInteger(opts.vocabSize) || wanted < 0) {
    throw new RangeError(
      `vocabSize must be an integer ≥ ${256 + specials.length} (256 bytes + special tokens)`,
    );
  }
  const minFrequency = Math.max(1, opts.minFrequency ?? 1);
  const K = opts.vocabSize; // pair key = left * K + right: a small integer while K² < 2^30
  const encoder = new TextEncoder();

  // Lay the pieces out: symbols with links inside each piece (-1 at the ends).
  let total = 0;
  for (const [piece] of counter.entries()) total += utf8Length(piece);
  const sym = new Int32Array(total), next = new Int32Array(total), prev = new Int32Array(total);
  const words = counter.size;
  const wordStart = new Int32Array(words), wordCount = new Float64Array(words);
  let scratch = new Uint8Array(1024);
  let at = 0, w = 0;
  for (const [piece, count] of counter.entries()) {
    if (scratch.length < piece.length * 3) scratch = new Uint8Array(piece.length * 3);
    const { written } = encoder.encodeInto(piece, scratch);
    wordStart[w] = at;
    wordCount[w] = count;
    for (let k = 0; k < written; k++) {
      sym[at + k] = scratch[k];
      next[at + k] = k + 1 < written ? at + k + 1 : -1;
      prev[at + k] = k > 0 ? at + k - 1 : -1;
    }
    at += written;
    w++;
  }

  // Per pair (key → slot): its count, and the index pair → pieces containing it, a linked list of
  // piece ids (newest first) in one pool of typed arrays: 8 bytes an entry, nothing for the GC to
  // trace. A piece may be listed twice, or no longer contain the pair: the merge loop skips those.
  // One Map lookup per update; slots of pairs that die are reused.
  const slotOf = new Map<number, number>();
  let slotCount = new Float64Array(1 << 16), slotHead = new Int32Array(1 << 16), slots = 0;
  const freeSlots: number[] = [];
  let poolWord = new Int32Array(1 << 16), poolNext = new Int32Array(1 << 16), poolSize = 0;
  /** Adds `c` occurrences of a pair in `word`. */
  const gain = (key: number, c: number, word: number) => {
    let s = slotOf.get(key);
    if (s === undefined) {
      s = freeSlots.pop() ?? slots++;
      if (s === slotCount.length) {
        const counts = new Float64Array(s * 2), heads = new Int32Array(s * 2);
        counts.set(slotCount);
        heads.set(slotHead);
        slotCount = counts;
        slotHead = heads;
      }
      slotCount[s] = 0;
      slotHead[s] = -1;
      slotOf.set(key, s);
    }
    slotCount[s] += c;
    const head = slotHead[s];
    if (head !== -1 && poolWord[head] === word) return;
    if (poolSize === poolWord.length) {
      const size = Math.ceil(poolSize * 1.5); // not 2: the pool is most of the trainer's memory
      const w = new Int32Array(size), n = new Int32Array(size);
      w.set(poolWord);
      n.set(poolNext);
      poolWord = w;
      poolNext = n;
    }
    poolWord[poolSize] = word;
    poolNext[poolSize] = head;
    slotHead[s] = poolSize++;
  };
  /** Removes `c` occurrences of a pair; a pair no piece contains is forgotten (index included). */
  const lose = (key: number, c: number) => {
    const s = slotOf.get(key);
    if (s === undefined) return; // the pair being merged (a pair (x, x) overlapping itself)
    if ((slotCount[s] -= c) <= 0) {
      slotOf.delete(key);
      freeSlots.push(s);
    }
  };
  const countOf = (key: number) => {
    const s = slotOf.get(key);
    return s === undefined ? 0 : slotCount[s];
  };
  for (let word = 0; word < words; word++) {
    const c = wordCount[word];
    for (let i = wordStart[word]; next[i] !== -1; i = next[i]) gain(sym[i] * K + sym[next[i]], c, word);
  }
  const heap = new PairHeap();
  for (const [key, s] of slotOf) heap.push(slotCount[s], key);

  const tokens: Uint8Array[] = [];
  for (let b = 0; b < 256; b++) tokens.push(Uint8Array.of(b));
  const merges: [number, number][] = [];
  const visited = new Int32Array(words).fill(-1);
  const created = new Set<number>(); // pairs with the new token, queued once each after the merge
  while (merges.length < wanted) {
    // Pop until the top entry's count is current; re-queue stale ones with their current count.
    let best = -1;
    while (heap.size > 0) {
      const count = heap.counts[0], key = heap.keys[0];
      heap.pop();
      const current = countOf(key);
      if (current === count) {
        best = key;
        break;
      }
      if (current > 0) heap.push(current, key);
    }
    if (best < 0 || countOf(best) < minFrequency) break;
    const a = Math.floor(best / K), b = best - a * K;
    const z = 256 + merges.length;
    merges.push([a, b]);
    const merged = new Uint8Array(tokens[a].length + tokens[b].length);
    merged.set(tokens[a]);
    merged.set(tokens[b], tokens[a].length);
    tokens.push(merged);

    created.clear();
    const bestSlot = slotOf.get(best)!;
    slotOf.delete(best); // merged away everywhere below; its slot is freed after the walk
    for (let node = slotHead[bestSlot]; node !== -1; node = poolNext[node]) {
      const word = poolWord[node];
      if (visited[word] === z) continue;
      visited[word] = z;
      const c = wordCount[word];
      for (let i = wordStart[word]; i !== -1 && next[i] !== -1;) {
        const j = next[i];
        if (sym[i] !== a || sym[j] !== b) {
          i = j;
          continue;
        }
        const p = prev[i], q = next[j];
        if (p !== -1) {
          lose(sym[p] * K + a, c);
          gain(sym[p] * K + z, c, word);
          created.add(sym[p] * K + z);
        }
        if (q !== -1) {
          lose(b * K + sym[q], c);
          gain(z * K + sym[q], c, word);
          created.add(z * K + sym[q]);
        }
        sym[i] = z;
        next[i] = q;
        if (q !== -1) prev[q] = i;
        i = q;
      }
    }
    freeSlots.push(bestSlot);
    for (const key of created) {
      const count = countOf(key);
      if (count > 0) heap.push(count, key);
    }
    if (merges.length % 256 === 0) opts.onProgress?.(merges.length, wanted);
  }
  opts.onProgress?.(merges.length, wanted);

  const specialTokens: Record<string, number> = {};
  specials.forEach((s, i) => (specialTokens[s] = tokens.length + i));
  return new Tokenizer({ tokens, merges, pattern: counter.pattern, specialTokens });
}

/** UTF-8 length of a string (lone surrogates count as U+FFFD, 3 bytes, as TextEncoder writes them). */
function utf8Length(s: string): number {
  let n = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) n += 1;
    else if (c < 0x800) n += 2;
    else if (c >= 0xd800 && c < 0xdc00 && i + 1 < s.length) {
      const d = s.charCodeAt(i + 1);
      if (d >= 0xdc00 && d < 0xe000) {
        n += 4;
        i++;
      } else n += 3;
    } else n += 3;
  }
  return n;
}
