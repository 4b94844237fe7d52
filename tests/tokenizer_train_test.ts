import { strict as assert } from "node:assert";
import { PieceCounter, trainBpe } from "../tokenizer/train.ts";
import { DEFAULT_SPECIAL_TOKENS, latin1, Tokenizer } from "../tokenizer/tokenizer.ts";
import { brownTexts } from "./tokenizer_corpus.ts";

const brown = await brownTexts();
const sample = brown.slice(0, 6).map((d) => d.text.slice(0, 6000));

/** Textbook BPE: recount every pair after every merge. Slow, obviously right, same tie-breaking. */
function naiveMerges(texts: string[], merges: number): [number, number][] {
  const counter = new PieceCounter();
  for (const t of texts) counter.add(t);
  const words = [...counter.entries()].map(([piece, count]) => ({
    syms: [...new TextEncoder().encode(piece)],
    count,
  }));
  const out: [number, number][] = [];
  for (let z = 256; out.length < merges; z++) {
    const counts = new Map<string, number>();
    for (const { syms, count } of words) {
      for (let i = 0; i + 1 < syms.length; i++) {
        const k = `${syms[i]},${syms[i + 1]}`;
        counts.set(k, (counts.get(k) ?? 0) + count);
      }
    }
    let best: [number, number] | undefined, bestCount = 0;
    for (const [k, c] of counts) {
      const [a, b] = k.split(",").map(Number);
      if (c > bestCount || (c === bestCount && (a < best![0] || (a === best![0] && b < best![1])))) {
        best = [a, b];
        bestCount = c;
      }
    }
    if (!best) break;
    out.push(best);
    for (const w of words) {
      const next: number[] = [];
      for (let i = 0; i < w.syms.length; i++) {
        if (i + 1 < w.syms.length && w.syms[i] === best[0] && w.syms[i + 1] === best[1]) {
          next.push(z);
          i++;
        } else next.push(w.syms[i]);
      }
      w.syms = next;
    }
  }
  return out;
}

Deno.test("incremental pair counting learns exactly the merges of recounting from scratch", () => {
  const counter = new PieceCounter();
  for (const t of sample) counter.add(t);
  const merges = 300;
  const tok = trainBpe(counter, { vocabSize: 256 + merges + DEFAULT_SPECIAL_TOKENS.length });
  assert.deepEqual(tok.merges, naiveMerges(sample, merges));
});

Deno.test("repeated symbols (aaaa, abab) merge like the textbook algorithm", () => {
  const texts = ["aaaaaaa aaaa aaa", "abababab ababab", "xxyxxyxxy  zz zz zz", "aaaa".repeat(9)];
  const counter = new PieceCounter();
  for (const t of texts) counter.add(t);
  const tok = trainBpe(counter, { vocabSize: 256 + 12, specialTokens: [] });
  assert.deepEqual(tok.merges, naiveMerges(texts, tok.merges!.length));
  assert.ok(tok.merges!.length >= 8);
});

Deno.test("training is deterministic and independent of document order", () => {
  const train = (texts: string[]) => {
    const counter = new PieceCounter();
    for (const t of texts) counter.add(t);
    return trainBpe(counter, { vocabSize: 1000 }).toJSON();
  };
  const texts = brown.slice(0, 20).map((d) => d.text);
  const a = train(texts), b = train([...texts].reverse());
  assert.deepEqual(a, b);
});

Deno.test("vocabulary layout: bytes, merges, then special tokens; encode/decode round-trips", () => {
  const counter = new PieceCounter();
  for (const d of brown.slice(0, 40)) counter.add(d.text);
  const tok = trainBpe(counter, { vocabSize: 2048 });
  assert.equal(tok.vocabSize, 2048);
  assert.equal(tok.merges!.length, 2048 - 256 - DEFAULT_SPECIAL_TOKENS.length);
  assert.deepEqual(DEFAULT_SPECIAL_TOKENS.map((s) => tok.specialId(s)), [2043, 2044, 2045, 2046, 2047]);
  for (let b = 0; b < 256; b++) assert.equal(latin1(tok.tokenBytes(b)), String.fromCharCode(b));
  const text = brown[100].text;
  const ids = tok.encode(text);
  assert.equal(tok.decode(ids), text);
  assert.ok(text.length / ids.length > 3, "an English BPE of 2k tokens compresses Brown over 3 bytes/token");
  assert.ok(ids.every((id) => id < 2043));
  // Saved and loaded, it encodes identically.
  const back = Tokenizer.fromJSON(JSON.parse(JSON.stringify(tok.toJSON())));
  assert.deepEqual(back.encode(text), ids);
});

Deno.test("minFrequency stops merging early; too small a vocabulary is refused", () => {
  const counter = new PieceCounter();
  counter.add("hello hello hello world");
  const tok = trainBpe(counter, { vocabSize: 5000, minFrequency: 2 });
  // " hello" occurs twice ("hello" once): 5 merges reach " hello", nothing else occurs twice.
  assert.equal(tok.merges!.length, 5);
  assert.deepEqual(tok.encode(" hello"), [tok.merges!.length + 255]);
  assert.equal(tok.vocabSize, 256 + 5 + DEFAULT_SPECIAL_TOKENS.length);
  assert.throws(() => trainBpe(counter, { vocabSize: 258 }), /vocabSize must be an integer ≥ 261/);
});
