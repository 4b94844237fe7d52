import { strict as assert } from "node:assert";
import { join } from "node:path";
import { Checkpoint } from "../pipeline/workspace.ts";
import { DamagedPpoCheckpointError, loadPpoCheckpoint, savePpoCheckpoint } from "../stages/ppo/checkpoint.ts";

Deno.test("PPO checkpoint: groups and state round-trip; a newer one supersedes; damage is reported", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const store = new Checkpoint(join(dir, "ckpt"), join(dir, "tmp"));
    await Deno.mkdir(join(dir, "tmp"), { recursive: true });
    assert.equal(await loadPpoCheckpoint(store), undefined);

    const policy = {
      params: Float32Array.of(1, 2, 3),
      m: Float32Array.of(0.1, 0.2, 0.3),
      v: Float32Array.of(4, 5, 6),
    };
    const value = { params: Float32Array.of(-1), m: Float32Array.of(0), v: Float32Array.of(1e-9) };
    await savePpoCheckpoint(store, 1, { policy, value }, { iteration: 1, rng: [1, 2, 3, 4] });
    await savePpoCheckpoint(store, 2, { policy, value: { ...value, params: Float32Array.of(7) } }, {
      iteration: 2,
      rng: [5, 6, 7, 8],
    });
    const loaded = await loadPpoCheckpoint<{ iteration: number; rng: number[] }>(store);
    assert.deepEqual(loaded?.state, { iteration: 2, rng: [5, 6, 7, 8] });
    assert.deepEqual(loaded?.groups.policy, policy);
    assert.deepEqual(Array.from(loaded!.groups.value.params), [7]);
    // The superseded iteration's files are gone.
    await assert.rejects(Deno.stat(store.path("iter-00000001/policy.safetensors")), Deno.errors.NotFound);

    // A flipped byte in a tensor file is reported with the file's path, not loaded.
    const file = store.path("iter-00000002/value.safetensors");
    const bytes = await Deno.readFile(file);
    bytes[bytes.length - 1] ^= 1;
    await Deno.writeFile(file, bytes);
    await assert.rejects(loadPpoCheckpoint(store), (e: Error) => {
      assert.ok(e instanceof DamagedPpoCheckpointError);
      assert.match(
        e.message,
        /iter-00000002\/value\.safetensors: damaged PPO checkpoint \(SHA-256 does not match\)/,
      );
      return true;
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
