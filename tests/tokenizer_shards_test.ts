import { strict as assert } from "node:assert";
import { join } from "node:path";
import { encodeTokenShard, parseTokenShard, readTokenShard } from "../tokenizer/shards.ts";
import { DataError } from "../pipeline/errors.ts";

Deno.test("uint16 shards: llm.c header (20240520, v1, count) then little-endian tokens", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const path = join(dir, "train-00000.bin");
    await Deno.writeFile(path, encodeTokenShard([50256, 15496, 995, 0, 65535], 65536));
    const bytes = await Deno.readFile(path);
    assert.equal(bytes.length, 1024 + 5 * 2);
    const header = new DataView(bytes.buffer);
    assert.deepEqual([header.getInt32(0, true), header.getInt32(4, true), header.getInt32(8, true)], [
      20240520,
      1,
      5,
    ]);
    assert.ok(bytes.subarray(12, 1024).every((b) => b === 0));
    assert.equal(header.getUint16(1024, true), 50256);
    const tokens = await readTokenShard(path);
    assert.ok(tokens instanceof Uint16Array);
    assert.deepEqual([...tokens], [50256, 15496, 995, 0, 65535]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("uint32 shards over 65,536 ids (20240801, v7)", () => {
  const bytes = encodeTokenShard([100257, 1, 65536], 100277);
  const header = new DataView(bytes.buffer);
  assert.deepEqual([header.getInt32(0, true), header.getInt32(4, true), header.getInt32(8, true)], [
    20240801,
    7,
    3,
  ]);
  const tokens = parseTokenShard(bytes, "x.bin");
  assert.ok(tokens instanceof Uint32Array);
  assert.deepEqual([...tokens], [100257, 1, 65536]);
  assert.throws(() => encodeTokenShard([70000], 65536), /token 70000 at 0 is outside the vocabulary/);
});

Deno.test("invalid shards: errors name the file and what is wrong", async () => {
  const good = encodeTokenShard([1, 2, 3], 50257);
  const cases: [Uint8Array, RegExp][] = [
    [good.subarray(0, 100), /^val-00003\.bin:header: 100 bytes: shorter than the 1024-byte llm\.c header/],
    [
      good.subarray(0, good.length - 2),
      /^val-00003\.bin:header: the header says 3 tokens \(1030 bytes\) but the file has 1028/,
    ],
    [
      (() => {
        const b = good.slice();
        b[0] = 7;
        return b;
      })(),
      /^val-00003\.bin:header: magic 20240391 version 1 is not an llm\.c token shard/,
    ],
  ];
  for (const [bytes, message] of cases) {
    assert.throws(() => parseTokenShard(bytes, "val-00003.bin"), (e: unknown) => {
      assert.ok(e instanceof DataError);
      assert.match(e.message, message);
      return true;
    });
  }
  await assert.rejects(
    readTokenShard("/nonexistent/train-00009.bin"),
    /train-00009\.bin: no such token shard/,
  );
});
