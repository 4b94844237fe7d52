/**
 * The byte-level BPE {@linkcode Tokenizer}: encoding text to token ids, decoding ids to bytes or text,
 * and kiln's own tokenizer JSON file.
 *
 * A token is a byte string; ids 0…vocabSize-1 name them (a few ids may be unused). Text is split into
 * pieces by a pre-tokenisation pattern, each piece's UTF-8 bytes start as single-byte tokens, and
 * adjacent pairs merge, lowest priority first and leftmost among equals, until no pair merges. Two
 * merge rules exist, and both reproduce their reference implementations exactly:
 *
 * - **merge list** (GPT-2's `vocab.bpe`, Hugging Face, kiln's trainer): pair `(a, b)` merges with the
 *   priority of its index in the list, into the token whose bytes are `a‖b`;
 * - **ranks** (tiktoken): any adjacent pair whose concatenation is a token merges, with that token's
 *   id as its priority.
 *
 * Special tokens (`<|endoftext|>`, the chat roles) are recognised in text only when the caller allows
 * them, so a document that merely contains the string `<|endoftext|>` is encoded as ordinary text.
 *
 * @example
 * ```ts
 * import { loadTokenizer } from "./load.ts";
 * const tok = await loadTokenizer("gpt2");
 * const ids = tok.encode("Hello world");        // [15496, 995]
 * console.log(tok.decode(ids));                 // "Hello world"
 * console.log(tok.encode("<|endoftext|>", { allowedSpecial: "all" })); // [50256]
 * ```
 * @module
 */
import { DataError } from "../pipeline/errors.ts";
import { GPT2_PATTERN, gpt2PieceEnd, type Pretokenizer, pretokenizer } from "./pretokenize.ts";

/** Separates documents; also what a model emits to end a completion. */
export const END_OF_TEXT = "<|endoftext|>";

/**
 * The chat-format tokens SFT and PPO use. A conversation is rendered as
 * `<|system|>…<|end|><|user|>…<|end|><|assistant|>…<|end|>`, each role token opening a turn and
 * `<|end|>` closing it.
 */
export const CHAT_TOKENS = {
  system: "<|system|>",
  user: "<|user|>",
  assistant: "<|assistant|>",
  end: "<|end|>",
} as const;

/** The special tokens a kiln tokenizer has unless configured otherwise, in id order. */
export const DEFAULT_SPECIAL_TOKENS: readonly string[] = [
  END_OF_TEXT,
  CHAT_TOKENS.system,
  CHAT_TOKENS.user,
  CHAT_TOKENS.assistant,
  CHAT_TOKENS.end,
];

/**
 * The most ids a tokenizer may have (4,194,304; the largest published vocabularies have about 256k). Ids
 * index arrays as long as the largest id, so a file claiming id 2^31 is refused rather than walked.
 */
export const MAX_VOCAB_SIZE = 1 << 22;

/** What a {@linkcode Tokenizer} is built from. */
export interface TokenizerSpec {
  /** Bytes of each id's token; `null` for an unused id. Special tokens are listed in `specialTokens`. */
  tokens: (Uint8Array | null)[];
  /** Merge list in priority order (ids); absent for the ranks rule (priority = merged token's id). */
  merges?: [number, number][];
  /**
   * Pre-tokenisation regex: a known pattern (GPT-2's, cl100k's…) or any pattern RE2 runs (see
   * `pretokenize.ts`). Default: GPT-2's.
   */
  pattern?: string;
  /** Special token text → id (the id may be past the last ordinary token). */
  specialTokens?: Record<string, number>;
  /**
   * Use a piece's own token when the whole piece is one (Hugging Face `ignore_merges`, Llama 3);
   * otherwise always merge.
   */
  ignoreMerges?: boolean;
}

/** Options of {@linkcode Tokenizer.encode}. */
export interface EncodeOptions {
  /** Special tokens recognised in the text: "all", or a list of their texts. Default: none. */
  allowedSpecial?: "all" | Iterable<string>;
}

/** kiln's tokenizer file (`tokenizer.json` in a `tokens` artifact). */
export interface TokenizerFile {
  format: "kiln-bpe";
  version: 1;
  /** Pre-tokenisation regex; "gpt2" for GPT-2's. */
  pattern: string;
  /** Base64 bytes of each id's token, `null` for unused and special ids. */
  tokens: (string | null)[];
  /** Merge list `[left, right]` in priority order; absent: the ranks rule. */
  merges?: [number, number][];
  specialTokens: Record<string, number>;
  ignoreMerges?: boolean;
}

/**
 * (left id, right id) → (priority, merged id), open addressing over typed arrays: the lookup in the
 * inner merge loop, several times faster than a Map keyed by packed pairs once ids pass 2^15.
 */
class PairTable {
  readonly mask: number;
  readonly left: Int32Array;
  readonly right: Int32Array;
  readonly priority: Int32Array;
  readonly merged: Int32Array;

  constructor(entries: number) {
    let size = 16;
    while (size < entries * 2) size *= 2;
    this.mask = size - 1;
    this.left = new Int32Array(size).fill(-1);
    this.right = new Int32Array(size);
    this.priority = new Int32Array(size);
    this.merged = new Int32Array(size);
  }

  /** Slot of the pair, or -1. */
  find(a: number, b: number): number {
    let h = hashPair(a, b) & this.mask;
    for (;;) {
      const l = this.left[h];
      if (l === -1) return -1;
      if (l === a && this.right[h] === b) return h;
      h = (h + 1) & this.mask;
    }
  }

  /** Adds a pair unless present (the first, highest-priority entry wins). */
  add(a: number, b: number, priority: number, merged: number): void {
    let h = hashPair(a, b) & this.mask;
    while (this.left[h] !== -1) {
      if (this.left[h] === a && this.right[h] === b) return;
      h = (h + 1) & this.mask;
    }
    this.left[h] = a;
    this.right[h] = b;
    this.priority[h] = priority;
    this.merged[h] = merged;
  }
}

function hashPair(a: number, b: number): number {
  let h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x7f4a7c15, 0x85ebca6b);
  h ^= h >>> 15;
  return Math.imul(h, 0x2c1b3c6d) ^ (h >>> 12);
}

/** A byte string as a JS string of char codes 0–255: a cheap Map key for byte strings. */
export function latin1(bytes: Uint8Array): string {
  if (bytes.length <= 1024) return String.fromCharCode.apply(null, bytes as unknown as number[]);
  let s = "";
  for (let i = 0; i < bytes.length; i += 1024) s += latin1(bytes.subarray(i, i + 1024));
  return s;
}

/** A copy of a string that shares no memory with it (V8's slices of 13+ characters keep their parent alive). */
export function flatCopy(s: string): string {
  const codes = new Array<number>(s.length);
  for (let i = 0; i < s.length; i++) codes[i] = s.charCodeAt(i);
  return String.fromCharCode(...codes);
}

/**
 * The vocabulary's byte strings in a trie (node 0 is the root; -1 is "no node"), with integer Map
 * keys: building a tokenizer looks up every split of every token, and slicing and hashing strings
 * for that took most of the load time.
 */
class ByteTrie {
  #children = new Map<number, number>();
  #ids: number[] = [-1];

  child(node: number, byte: number): number {
    return node < 0 ? -1 : this.#children.get(node * 256 + byte) ?? -1;
  }
  walk(node: number, bytes: Uint8Array, start: number, end: number): number {
    for (let i = start; i < end && node >= 0; i++) node = this.child(node, bytes[i]);
    return node;
  }
  id(node: number): number {
    return node < 0 ? -1 : this.#ids[node];
  }
  insert(bytes: Uint8Array, id: number): void {
    let node = 0;
    for (const b of bytes) {
      let next = this.#children.get(node * 256 + b);
      if (next === undefined) {
        next = this.#ids.length;
        this.#ids.push(-1);
        this.#children.set(node * 256 + b, next);
      }
      node = next;
    }
    this.#ids[node] = id;
  }
}

const NO_MERGE = 0x7fffffff;
/** Pieces up to this many UTF-16 units are cached (long runs are rare and would bloat the cache). */
const CACHE_PIECE_MAX = 64;

/**
 * Piece → ids, looked up by a range of the text without slicing it: hashing and comparing char
 * codes in place is about three times faster than a `Map<string, …>`, whose lookups need a fresh
 * string (allocated and hashed) for every piece. Open addressing; cleared when half full, so its
 * size stays bounded on endless streams of new pieces.
 */
class PieceCache {
  #mask = (1 << 18) - 1;
  #size = 0;
  #keys: (string | undefined)[] = new Array(1 << 18);
  #hashes = new Int32Array(1 << 18);
  /** The piece's id when it is one token, else -1 and its ids in `multi`. */
  single = new Int32Array(1 << 18);
  multi: (Int32Array | undefined)[] = new Array(1 << 18);

  static hash(text: string, i: number, j: number): number {
    let h = 0x811c9dc5;
    for (let k = i; k < j; k++) h = Math.imul(h ^ text.charCodeAt(k), 0x01000193);
    return h | 1; // never 0: an empty slot's hash
  }

  /** Slot of `text[i, j)`, or -1. */
  find(text: string, i: number, j: number): number {
    const h = PieceCache.hash(text, i, j), len = j - i;
    for (let s = h & this.#mask;; s = (s + 1) & this.#mask) {
      const sh = this.#hashes[s];
      if (sh === 0) return -1;
      if (sh !== h) continue;
      const key = this.#keys[s]!;
      if (key.length !== len) continue;
      let k = 0;
      while (k < len && key.charCodeAt(k) === text.charCodeAt(i + k)) k++;
      if (k === len) return s;
    }
  }

  add(piece: string, single: number, multi: Int32Array | undefined): void {
    if (this.#size * 2 >= this.#mask) {
      this.#keys.fill(undefined);
      this.#hashes.fill(0);
      this.multi.fill(undefined);
      this.#size = 0;
    }
    let s = PieceCache.hash(piece, 0, piece.length) & this.#mask;
    while (this.#hashes[s] !== 0) s = (s + 1) & this.#mask;
    this.#hashes[s] = PieceCache.hash(piece, 0, piece.length);
    this.#keys[s] = piece;
    this.single[s] = single;
    this.multi[s] = multi;
    this.#size++;
  }
}

/** A byte-level BPE tokenizer. Immutable; safe to share. */
export class Tokenizer {
  /** Number of ids, special tokens included (what a model's embedding table needs). */
  readonly vocabSize: number;
  /** Pre-tokenisation pattern. */
  readonly pattern: string;
  /** Special token text → id. */
  readonly specialTokens: Readonly<Record<string, number>>;
  /** Merge list in priority order, or undefined under the ranks rule. */
  readonly merges: readonly [number, number][] | undefined;
  readonly ignoreMerges: boolean;

  readonly #tokens: (Uint8Array | null)[];
  readonly #byteToId = new Int32Array(256);
  readonly #trie = new ByteTrie();
  readonly #pairs: PairTable;
  readonly #split: Pretokenizer;
  readonly #gpt2: boolean;
  readonly #specialRegex: RegExp | undefined;
  readonly #specialIds = new Set<number>();
  #cache = new PieceCache();
  // Scratch buffers for the merge loop, grown on demand.
  #utf8 = new Uint8Array(256);
  #ids = new Int32Array(256);
  #prio = new Int32Array(256);

  constructor(spec: TokenizerSpec) {
    this.pattern = spec.pattern ?? GPT2_PATTERN;
    this.ignoreMerges = spec.ignoreMerges ?? false;
    const special = spec.specialTokens ?? {};
    this.specialTokens = Object.freeze({ ...special });
    this.merges = spec.merges
      ? Object.freeze(spec.merges.map(([a, b]) => [a, b] as [number, number]))
      : undefined;
    if (spec.tokens.length > MAX_VOCAB_SIZE) {
      throw new Error(`${spec.tokens.length} ids: more than the ${MAX_VOCAB_SIZE} kiln supports`);
    }
    let size = spec.tokens.length;
    const specialOf = new Map<number, string>();
    for (const [text, id] of Object.entries(special)) {
      if (!Number.isInteger(id) || id < 0 || id >= MAX_VOCAB_SIZE) {
        throw new Error(`special token ${text} has id ${id}, not an integer from 0 below ${MAX_VOCAB_SIZE}`);
      }
      // An empty one would match everywhere (and never advance) once special tokens are allowed.
      if (text === "") throw new Error(`a special token is empty (id ${id})`);
      if (specialOf.has(id)) {
        throw new Error(`special tokens ${specialOf.get(id)} and ${text} share id ${id}`);
      }
      specialOf.set(id, text);
      size = Math.max(size, id + 1);
    }
    this.vocabSize = size;
    this.#tokens = spec.tokens.slice();
    this.#tokens.length = size;
    for (let id = 0; id < size; id++) this.#tokens[id] ??= null;
    for (const [text, id] of Object.entries(special)) {
      if (spec.tokens[id]) {
        throw new Error(`special token ${text} has id ${id}, which an ordinary token already uses`);
      }
      this.#tokens[id] = encoder.encode(text);
      this.#specialIds.add(id);
    }
    for (let id = 0; id < spec.tokens.length; id++) {
      const bytes = spec.tokens[id];
      if (bytes && !this.#specialIds.has(id)) this.#trie.insert(bytes, id);
    }
    for (let b = 0; b < 256; b++) {
      const id = this.#trie.id(this.#trie.child(0, b));
      if (id < 0) throw new Error(`byte 0x${b.toString(16)} has no token: not a byte-level BPE`);
      this.#byteToId[b] = id;
    }
    if (spec.merges) {
      this.#pairs = new PairTable(spec.merges.length);
      spec.merges.forEach(([a, b], i) => {
        const left = this.#tokens[a], right = this.#tokens[b];
        if (!left || !right) throw new Error(`merge ${i}: id ${left ? b : a} has no token`);
        const merged = this.#trie.id(
          this.#trie.walk(this.#trie.walk(0, left, 0, left.length), right, 0, right.length),
        );
        if (merged < 0) throw new Error(`merge ${i}: the merged token is not in the vocabulary`);
        this.#pairs.add(a, b, i, merged);
      });
    } else {
      // Ranks rule: every split of every token into two tokens is a pair that merges into it.
      const entries: number[] = [];
      for (let id = 0; id < spec.tokens.length; id++) {
        const bytes = spec.tokens[id];
        if (!bytes || bytes.length < 2 || this.#specialIds.has(id)) continue;
        // Prefixes come from one walk down the trie; a suffix is looked up only after a prefix token.
        for (let k = 1, node = 0; k < bytes.length; k++) {
          node = this.#trie.child(node, bytes[k - 1]);
          const a = this.#trie.id(node);
          if (a < 0) continue;
          const b = this.#trie.id(this.#trie.walk(0, bytes, k, bytes.length));
          if (b >= 0) entries.push(a, b, id);
        }
      }
      this.#pairs = new PairTable(entries.length / 3);
      for (let i = 0; i < entries.length; i += 3) {
        this.#pairs.add(entries[i], entries[i + 1], entries[i + 2], entries[i + 2]);
      }
    }
    this.#gpt2 = this.pattern === GPT2_PATTERN;
    this.#split = pretokenizer(this.pattern);
    const names = Object.keys(special).sort((a, b) => b.length - a.length);
    this.#specialRegex = names.length
      ? new RegExp(names.map((s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|"), "g")
      : undefined;
  }

  /** Id of a special token; throws naming the token when the tokenizer lacks it. */
  specialId(text: string): number {
    const id = this.specialTokens[text];
    if (id === undefined) {
      throw new Error(
        `the tokenizer has no special token ${text} (it has ${Object.keys(this.specialTokens)})`,
      );
    }
    return id;
  }

  /** Whether `id` is a special token. */
  isSpecial(id: number): boolean {
    return this.#specialIds.has(id);
  }

  /** The bytes of one token (a special token's are its UTF-8 text). */
  tokenBytes(id: number): Uint8Array {
    const bytes = this.#tokens[id];
    if (!bytes) throw new RangeError(`token id ${id} is not in the vocabulary (size ${this.vocabSize})`);
    return bytes;
  }

  /** Id of the ordinary token with exactly these bytes, if any. */
  idOf(bytes: Uint8Array): number | undefined {
    const id = this.#trie.id(this.#trie.walk(0, bytes, 0, bytes.length));
    return id < 0 ? undefined : id;
  }

  /**
   * A tokenizer with the given special tokens added (those missing get ids after the last one), so
   * a GPT-2 vocabulary can carry the chat tokens. Returns `this` when none is missing.
   */
  withSpecialTokens(texts: Iterable<string>): Tokenizer {
    const special = { ...this.specialTokens };
    let next = this.vocabSize;
    for (const text of texts) special[text] ??= next++;
    if (next === this.vocabSize) return this;
    return new Tokenizer({ ...this.#spec(), specialTokens: special });
  }

  #spec(): TokenizerSpec {
    return {
      tokens: this.#tokens.map((t, id) => (this.#specialIds.has(id) ? null : t)),
      merges: this.merges?.map(([a, b]) => [a, b]),
      pattern: this.pattern,
      specialTokens: { ...this.specialTokens },
      ignoreMerges: this.ignoreMerges,
    };
  }

  /** Encodes text. Special token texts are ordinary text unless `allowedSpecial` names them. */
  encode(text: string, opts: EncodeOptions = {}): number[] {
    const out: number[] = [];
    this.encodeInto(text, out, opts);
    return out;
  }

  /** Encodes text, appending the ids to `out` (avoids a copy when concatenating documents). */
  encodeInto(text: string, out: number[], opts: EncodeOptions = {}): void {
    const allowed = opts.allowedSpecial;
    if (allowed === undefined || !this.#specialRegex) return this.#encodeOrdinary(text, out);
    const allow = allowed === "all" ? undefined : new Set(allowed);
    if (allow) {
      for (const s of allow) this.specialId(s);
    }
    const re = this.#specialRegex;
    re.lastIndex = 0;
    let start = 0;
    for (let m = re.exec(text); m; m = re.exec(text)) {
      if (allow && !allow.has(m[0])) {
        re.lastIndex = m.index + 1;
        continue;
      }
      if (m.index > start) this.#encodeOrdinary(text.slice(start, m.index), out);
      out.push(this.specialTokens[m[0]]);
      start = m.index + m[0].length;
    }
    if (start < text.length) this.#encodeOrdinary(start === 0 ? text : text.slice(start), out);
  }

  #encodeOrdinary(text: string, out: number[]): void {
    const n = text.length;
    if (this.#gpt2) {
      // The hot loop, inlined rather than a callback: scan a piece, look it up, push its ids.
      for (let i = 0; i < n;) {
        const j = gpt2PieceEnd(text, i, n);
        this.#encodePiece(text, i, j, out);
        i = j;
      }
      return;
    }
    this.#split(text, (i, j) => this.#encodePiece(text, i, j, out));
  }

  /** Appends the ids of `text[i, j)`: from the cache, else by BPE (then cached if short). */
  #encodePiece(text: string, i: number, j: number, out: number[]): void {
    const cache = this.#cache;
    const slot = cache.find(text, i, j);
    if (slot >= 0) {
      const id = cache.single[slot];
      if (id >= 0) out.push(id);
      else {
        const ids = cache.multi[slot]!;
        for (let k = 0; k < ids.length; k++) out.push(ids[k]);
      }
      return;
    }
    const piece = text.slice(i, j);
    if (this.#utf8.length < piece.length * 3) this.#utf8 = new Uint8Array(piece.length * 3 + 16);
    const { written } = encoder.encodeInto(piece, this.#utf8);
    const whole = this.ignoreMerges ? this.#trie.id(this.#trie.walk(0, this.#utf8, 0, written)) : -1;
    let ids: Int32Array | undefined;
    let single = -1;
    if (whole >= 0) single = whole;
    else {
      const len = written <= 64 ? this.#mergeSmall(written) : this.#mergeLarge(written);
      if (len === 1) single = this.#ids[0];
      else ids = this.#ids.slice(0, len);
    }
    if (single >= 0) out.push(single);
    else for (let k = 0; k < ids!.length; k++) out.push(ids![k]);
    // A copy, not a slice: V8's slices of 13+ characters keep the whole document alive.
    if (piece.length <= CACHE_PIECE_MAX) cache.add(piece.length < 13 ? piece : flatCopy(piece), single, ids);
  }

  #ensureScratch(n: number): void {
    if (this.#ids.length < n) {
      this.#ids = new Int32Array(n * 2);
      this.#prio = new Int32Array(n * 2);
    }
  }

  /**
   * Merges the `n` bytes in the UTF-8 scratch in place (result in `#ids`), returns the count. Keeps
   * each adjacent pair's priority in an array and rescans it for the minimum: linear per merge,
   * fastest for short pieces.
   */
  #mergeSmall(n: number): number {
    this.#ensureScratch(n);
    const ids = this.#ids, prio = this.#prio, bytes = this.#utf8, pairs = this.#pairs;
    for (let i = 0; i < n; i++) ids[i] = this.#byteToId[bytes[i]];
    for (let i = 0; i + 1 < n; i++) {
      const slot = pairs.find(ids[i], ids[i + 1]);
      prio[i] = slot < 0 ? NO_MERGE : pairs.priority[slot];
    }
    let len = n;
    while (len > 1) {
      let best = NO_MERGE, at = -1;
      for (let i = 0; i + 1 < len; i++) {
        if (prio[i] < best) {
          best = prio[i];
          at = i;
        }
      }
      if (at < 0) break;
      ids[at] = pairs.merged[pairs.find(ids[at], ids[at + 1])];
      for (let i = at + 1; i + 1 < len; i++) {
        ids[i] = ids[i + 1];
        prio[i] = prio[i + 1];
      }
      len--;
      if (at > 0) {
        const slot = pairs.find(ids[at - 1], ids[at]);
        prio[at - 1] = slot < 0 ? NO_MERGE : pairs.priority[slot];
      }
      if (at + 1 < len) {
        const slot = pairs.find(ids[at], ids[at + 1]);
        prio[at] = slot < 0 ? NO_MERGE : pairs.priority[slot];
      }
    }
    return len;
  }

  /**
   * The same merges for long pieces (runs of spaces, digits, minified code) in O(n log n): symbols in
   * a linked list, candidate pairs in a binary heap ordered by (priority, position) with stale
   * entries skipped when popped, so a 100 kB run does not take quadratic time.
   */
  #mergeLarge(n: number): number {
    this.#ensureScratch(n);
    const bytes = this.#utf8, pairs = this.#pairs;
    const ids = new Int32Array(n), next = new Int32Array(n), prev = new Int32Array(n);
    const prio = new Int32Array(n).fill(NO_MERGE);
    for (let i = 0; i < n; i++) {
      ids[i] = this.#byteToId[bytes[i]];
      next[i] = i + 1;
      prev[i] = i - 1;
    }
    const heap = new MinHeap(n);
    const setPair = (i: number) => {
      const j = next[i];
      const slot = j < n ? pairs.find(ids[i], ids[j]) : -1;
      prio[i] = slot < 0 ? NO_MERGE : pairs.priority[slot];
      if (slot >= 0) heap.push(prio[i], i);
    };
    for (let i = 0; i + 1 < n; i++) setPair(i);
    const dead = -2;
    while (heap.size > 0) {
      const p = heap.topPriority(), i = heap.topPosition();
      heap.pop();
      if (next[i] === dead || prio[i] !== p) continue; // stale
      const j = next[i];
      ids[i] = pairs.merged[pairs.find(ids[i], ids[j])];
      next[i] = next[j];
      if (next[j] < n) prev[next[j]] = i;
      next[j] = dead;
      if (prev[i] >= 0) setPair(prev[i]);
      setPair(i);
    }
    let len = 0;
    for (let i = 0; i < n; i = next[i]) this.#ids[len++] = ids[i];
    return len;
  }

  /** The bytes of a sequence of ids (special tokens as their text). Throws on an unknown id. */
  decodeBytes(ids: ArrayLike<number>): Uint8Array {
    let size = 0;
    for (let i = 0; i < ids.length; i++) size += this.tokenBytes(ids[i]).length;
    const out = new Uint8Array(size);
    let at = 0;
    for (let i = 0; i < ids.length; i++) {
      const bytes = this.#tokens[ids[i]]!;
      out.set(bytes, at);
      at += bytes.length;
    }
    return out;
  }

  /** Decodes ids to text; bytes that are not valid UTF-8 become U+FFFD. */
  decode(ids: ArrayLike<number>): string {
    return decoder.decode(this.decodeBytes(ids));
  }

  /** kiln's JSON tokenizer file. */
  toJSON(): TokenizerFile {
    const spec = this.#spec();
    return {
      format: "kiln-bpe",
      version: 1,
      pattern: this.pattern === GPT2_PATTERN ? "gpt2" : this.pattern,
      tokens: spec.tokens.map((t) => (t ? toBase64(t) : null)),
      ...(spec.merges ? { merges: spec.merges } : {}),
      specialTokens: spec.specialTokens!,
      ...(this.ignoreMerges ? { ignoreMerges: true } : {}),
    };
  }

  /** Writes kiln's tokenizer file. */
  async save(path: string): Promise<void> {
    await Deno.writeTextFile(path, JSON.stringify(this.toJSON()) + "\n");
  }

  /** Reads kiln's tokenizer file from its parsed JSON; `file` names it in errors. */
  static fromJSON(json: unknown, file = "tokenizer.json"): Tokenizer {
    const f = json as TokenizerFile;
    if (typeof f !== "object" || f === null || f.format !== "kiln-bpe") {
      throw new DataError(file, undefined, 'not a kiln tokenizer file (no "format": "kiln-bpe")');
    }
    if (f.version !== 1) throw new DataError(file, "version", `unsupported version ${f.version}`);
    if (!Array.isArray(f.tokens)) throw new DataError(file, "tokens", "missing or not an array");
    if (f.tokens.length > MAX_VOCAB_SIZE) {
      throw new DataError(
        file,
        "tokens",
        `${f.tokens.length} ids: more than the ${MAX_VOCAB_SIZE} kiln supports`,
      );
    }
    const tokens = f.tokens.map((t: unknown, id) => {
      if (t === null) return null;
      if (typeof t === "string") {
        try {
          return fromBase64(t);
        } catch { /* not base64: refused below */ }
      }
      throw new DataError(file, `tokens[${id}]`, "not base64 text or null");
    });
    if (f.merges !== undefined) {
      if (!Array.isArray(f.merges)) throw new DataError(file, "merges", "not an array");
      f.merges.forEach((m: unknown, i) => {
        const isId = (v: unknown) => Number.isInteger(v) && (v as number) >= 0;
        if (!Array.isArray(m) || m.length !== 2 || !isId(m[0]) || !isId(m[1])) {
          throw new DataError(file, `merges[${i}]`, "not a pair of ids [left, right]");
        }
      });
    }
    const special: unknown = f.specialTokens ?? {};
    if (typeof special !== "object" || special === null || Array.isArray(special)) {
      throw new DataError(file, "specialTokens", "not an object (text → id)");
    }
    for (const [text, id] of Object.entries(special)) {
      if (!Number.isInteger(id) || id < 0 || id >= MAX_VOCAB_SIZE) {
        throw new DataError(
          file,
          `specialTokens[${JSON.stringify(text)}]`,
          `id ${JSON.stringify(id)} is not an integer from 0 below ${MAX_VOCAB_SIZE}`,
        );
      }
    }
    if (f.ignoreMerges !== undefined && typeof f.ignoreMerges !== "boolean") {
      throw new DataError(file, "ignoreMerges", "not true or false");
    }
    const pattern = f.pattern === "gpt2" || f.pattern === undefined ? GPT2_PATTERN : f.pattern;
    if (typeof pattern !== "string") throw new DataError(file, "pattern", "not a string");
    try {
      pretokenizer(pattern);
    } catch (e) {
      throw new DataError(file, "pattern", (e as Error).message);
    }
    try {
      return new Tokenizer({
        tokens,
        merges: f.merges,
        pattern,
        specialTokens: special as Record<string, number>,
        ignoreMerges: f.ignoreMerges,
      });
    } catch (e) {
      throw new DataError(file, undefined, (e as Error).message);
    }
  }
}

const encoder = new TextEncoder();
// ignoreBOM: a leading U+FEFF is text the caller encoded, not a byte-order mark to drop.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** A binary min-heap of (priority, position) pairs, ties broken by the lower position. */
class MinHeap {
  #prio: Int32Array;
  #pos: Int32Array;
  size = 0;
  constructor(capacity: number) {
    this.#prio = new Int32Array(Math.max(4, capacity * 2));
    this.#pos = new Int32Array(Math.max(4, capacity * 2));
  }
  #less(a: number, b: number): boolean {
    return this.#prio[a] < this.#prio[b] || (this.#prio[a] === this.#prio[b] && this.#pos[a] < this.#pos[b]);
  }
  #swap(a: number, b: number): void {
    const p = this.#prio[a], q = this.#pos[a];
    this.#prio[a] = this.#prio[b];
    this.#pos[a] = this.#pos[b];
    this.#prio[b] = p;
    this.#pos[b] = q;
  }
  push(priority: number, position: number): void {
    if (this.size === this.#prio.length) {
      const p = new Int32Array(this.size * 2), q = new Int32Array(this.size * 2);
      p.set(this.#prio);
      q.set(this.#pos);
      this.#prio = p;
      this.#pos = q;
    }
    let i = this.size++;
    this.#prio[i] = priority;
    this.#pos[i] = position;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#less(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }
  topPriority(): number {
    return this.#prio[0];
  }
  topPosition(): number {
    return this.#pos[0];
  }
  pop(): void {
    this.size--;
    if (this.size === 0) return;
    this.#prio[0] = this.#prio[this.size];
    this.#pos[0] = this.#pos[this.size];
    let i = 0;
    for (;;) {
      const l = 2 * i + 1, r = l + 1;
      let m = i;
      if (l < this.size && this.#less(l, m)) m = l;
      if (r < this.size && this.#less(r, m)) m = r;
      if (m === i) break;
      this.#swap(i, m);
      i = m;
    }
  }
}

/** Base64 of bytes (the token encoding of tiktoken files and kiln's). */
export function toBase64(bytes: Uint8Array): string {
  return btoa(latin1(bytes));
}

/** Bytes of base64 text; throws on invalid base64. */
export function fromBase64(text: string): Uint8Array {
  const s = atob(text);
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
  return out;
}
