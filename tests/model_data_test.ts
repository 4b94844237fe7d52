import { strict as assert } from "node:assert";
import { join } from "node:path";
import { encodeTokenShard, TokenLoader, tokenShardInfo } from "../model/data.ts";

async function withShards(shards: number[][], fn: (paths: string[]) => void | Promise<void>) {
  const dir = await Deno.makeTempDir();
  try {
    const paths = shards.map((_, i) => join(dir, `train-${String(i).padStart(5, "0")}.bin`));
    for (let i = 0; i < shards.length; i++) await Deno.writeFile(paths[i], encodeTokenShard(shards[i]));
    await fn(paths);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

const range = (from: number, n: number) => Array.from({ length: n }, (_, i) => from + i);

Deno.test("token shards: llm.c headers (uint16 and uint32) are read; bad files named", async () => {
  await withShards([range(0, 10), [1, 70000, 3]], (paths) => {
    assert.deepEqual(tokenShardInfo(paths[0]), { path: paths[0], count: 10, bytesPerToken: 2 });
    assert.deepEqual(tokenShardInfo(paths[1]), { path: paths[1], count: 3, bytesPerToken: 4 });
    const truncated = Deno.readFileSync(paths[0]).subarray(0, 1030);
    Deno.writeFileSync(paths[0], truncated);
    assert.throws(() => tokenShardInfo(paths[0]), /train-00000\.bin:header: header says 10 tokens/);
    Deno.writeFileSync(paths[0], new Uint8Array(2000));
    assert.throws(() => tokenShardInfo(paths[0]), /not an llm\.c token shard \(magic 0/);
  });
});

Deno.test("loader: every window once per epoch, targets shifted by one, seeded order, exact cursor", async () => {
  // Two shards: 0..40 (10 windows of T=4) and 100..120 (5 windows).
  await withShards([range(0, 41), range(100, 21)], (paths) => {
    using loader = new TokenLoader(paths, { batch: 3, context: 4, seed: 9 });
    assert.equal(loader.windowsPerEpoch, 15);
    const starts = new Set<number>();
    for (let i = 0; i < 5; i++) {
      const { inputs, targets } = loader.next();
      for (let b = 0; b < 3; b++) {
        for (let t = 0; t < 4; t++) assert.equal(targets[b * 4 + t], inputs[b * 4 + t] + 1);
        starts.add(inputs[b * 4]);
      }
    }
    assert.equal(starts.size, 15); // one epoch = all windows exactly once
    assert.deepEqual(loader.cursor(), { epoch: 0, index: 15 });
    const saved = loader.cursor();
    const next = [loader.next(), loader.next()];
    assert.deepEqual(loader.cursor(), { epoch: 1, index: 6 });
    using again = new TokenLoader(paths, { batch: 3, context: 4, seed: 9 });
    again.seek(saved);
    assert.deepEqual([again.next(), again.next()], next);
    // Another seed, another order; no shuffle reads in file order.
    using other = new TokenLoader(paths, { batch: 3, context: 4, seed: 10 });
    using first = new TokenLoader(paths, { batch: 3, context: 4, seed: 9 });
    using ordered = new TokenLoader(paths, { batch: 3, context: 4, shuffle: false });
    assert.notDeepEqual(other.next().inputs, first.next().inputs);
    assert.deepEqual([...ordered.next().inputs], [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });
});

Deno.test("loader: tokens outside the vocabulary and too-short shards are clear errors", async () => {
  await withShards([[1, 2, 3, 99, 5, 6]], (paths) => {
    using loader = new TokenLoader(paths, { batch: 1, context: 5, vocab: 50, shuffle: false });
    assert.throws(
      () => loader.next(),
      /train-00000\.bin:token 3: token id 99 is outside the model's vocabulary of 50/,
    );
    assert.throws(() => new TokenLoader(paths, { batch: 1, context: 8 }), /too few tokens for one sequence/);
  });
});
