/**
 * GPU MinHash signatures (`stages/dedupe/minhash_gpu.ts`) against the CPU MinHasher: bit-identical
 * on fresh random texts (empty, shorter than a shingle, long), and the dedupe stage's artifact is
 * byte-identical with `minhash: { gpu: true }` and without. Runs on any WebGPU adapter (llvmpipe,
 * Mesa's software rasteriser, works without a GPU); skipped when there is none or KILN_BACKEND=cpu.
 */
import { strict as assert } from "node:assert";
import { pipeline } from "../pipeline/pipeline.ts";
import { dedupe } from "../stages/dedupe.ts";
import { MinHasher } from "../stages/dedupe/minhash.ts";
import { GpuMinHasher, webGpuUnavailable } from "../stages/dedupe/minhash_gpu.ts";
import { spamSource } from "./dedupe_fixtures.ts";
import { mulberry32 } from "../model/rng.ts";

const why = await webGpuUnavailable();
if (why) console.warn(`skipping the GPU MinHash tests: ${why}`);
const ignore = why !== null;

const VOCABULARY = [
  "the",
  "of",
  "Café",
  "naïve",
  "2024",
  "x",
  "über",
  "日本語",
  "—",
  "hello,",
  "WORLD!",
  "42nd",
];

function randomText(random: () => number, words: number): string {
  const out: string[] = [];
  for (let i = 0; i < words; i++) {
    if (random() < 0.4) out.push(VOCABULARY[Math.floor(random() * VOCABULARY.length)]);
    else {
      const len = 1 + Math.floor(random() * 9);
      let w = "";
      for (let j = 0; j < len; j++) w += String.fromCharCode(97 + Math.floor(random() * 26));
      out.push(w);
    }
  }
  return out.join(random() < 0.5 ? " " : "  \n");
}

Deno.test({
  name: "GPU MinHash signatures equal the CPU's bit for bit (empty, short and long random texts)",
  ignore,
  async fn() {
    const seed = crypto.getRandomValues(new Uint32Array(1))[0];
    const random = mulberry32(seed);
    const texts = [
      "",
      "   ",
      "!!! ...",
      "one",
      "two words",
      "just four words here",
      "exactly five words in this",
    ];
    for (let i = 0; i < 600; i++) texts.push(randomText(random, Math.floor(random() * 40)));
    for (let i = 0; i < 20; i++) texts.push(randomText(random, 2000 + Math.floor(random() * 3000)));
    // Two settings: datatrove's 14 × 8 with 5-word shingles, and an odd layout with another seed.
    for (
      const params of [{ shingleWords: 5, bands: 14, rows: 8, seed: 1 }, {
        shingleWords: 3,
        bands: 9,
        rows: 13,
        seed: seed | 0,
      }]
    ) {
      const hasher = new MinHasher(params);
      const gpu = await GpuMinHasher.create(hasher);
      if (typeof gpu === "string") throw new Error(`an adapter was found, but: ${gpu}`);
      try {
        const shingles = texts.map((t) => hasher.shingles(t));
        const H = params.bands * params.rows;
        // All at once, then in small batches (buffers reused and grown), then an empty batch.
        const all = await gpu.signatures(shingles);
        assert.equal(all.length, texts.length * H);
        const batched: Uint32Array[] = [];
        for (let i = 0; i < shingles.length; i += 97) {
          batched.push(await gpu.signatures(shingles.slice(i, i + 97)));
        }
        assert.equal((await gpu.signatures([])).length, 0);
        let at = 0;
        for (const b of batched) {
          assert.deepEqual(b, all.subarray(at, at + b.length), `batched = whole (seed ${seed})`);
          at += b.length;
        }
        texts.forEach((text, d) => {
          const expected = hasher.signature(text);
          const actual = all.subarray(d * H, (d + 1) * H);
          assert.deepEqual(
            actual,
            expected,
            `document ${d} (${text.length} chars, params ${JSON.stringify(params)}, seed ${seed})`,
          );
        });
        // A set with no shingles at all (never made by shingles(), which gives at least one) stays at the maximum.
        assert.deepEqual(await gpu.signatures([new Uint32Array(0)]), hasher.signatureOf(new Uint32Array(0)));
      } finally {
        gpu.destroy();
      }
    }
  },
});

Deno.test({
  name: "dedupe with minhash.gpu gives the same artifact as on the CPU",
  ignore,
  async fn() {
    const source = spamSource({ groups: ["spam-1"], shards: 3 });
    const digests: string[] = [];
    const dirs: string[] = [];
    try {
      for (const gpu of [false, true]) {
        const workdir = await Deno.makeTempDir({ prefix: "kiln-dedupe-gpu-" });
        dirs.push(workdir);
        const result = await pipeline("dedupe-gpu-test", { workdir, workers: 2 })
          .pipe(source).pipe(dedupe({ minhash: { gpu } }))
          .execute({ command: "run", quiet: true });
        const artifact = result.artifacts["dedupe"];
        // deno-lint-ignore no-explicit-any -- stats are free-form JSON
        const stats = artifact.stats as Record<string, any>;
        assert.ok(stats.dropped["near-duplicate"].documents > 0, "the corpus has near duplicates to find");
        assert.equal(stats.minhashSignaturesOn.startsWith("webgpu: "), gpu, stats.minhashSignaturesOn);
        digests.push(artifact.digest);
      }
      assert.equal(digests[1], digests[0], "every output file is byte-identical with gpu: true");
    } finally {
      for (const d of dirs) await Deno.remove(d, { recursive: true });
    }
  },
});
