/**
 * Small non-cryptographic hashes the stages share: MinHash shingles, the classifier's hashed features,
 * Gopher's repetition counts, the train/validation split by document id. One module, so none of those
 * stages imports another's internals for them.
 * @module
 */

/** murmur3's 32-bit finaliser: a bijection on uint32 that mixes every input bit into every output bit. */
export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** FNV-1a over UTF-16 code units, finalised with {@linkcode fmix32}: a fast 32-bit word hash. */
export function hashWord(word: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < word.length; i++) h = Math.imul(h ^ word.charCodeAt(i), 0x01000193);
  return fmix32(h);
}
