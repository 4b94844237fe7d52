/**
 * PPO's resumable state as one atomic unit: the policy, the value model, both optimizers' moments,
 * and the JSON state (iteration, RNG states, KL controller, prompt and ptx cursors, metrics so far).
 *
 * `model/checkpoint.ts` saves one trainer under a fixed pointer; PPO has two trainers whose states
 * must move together (a policy from iteration 8 with a value model from iteration 7 would not
 * reproduce an uninterrupted run). So every tensor group goes to `iter-<n>/<group>.safetensors` and
 * one JSON pointer, written last, names the directory, the SHA-256 of each file and the state. A
 * crash before the pointer leaves the previous checkpoint in force; a damaged file fails its digest
 * and is reported, never loaded.
 *
 * @example
 * ```ts ignore
 * await savePpoCheckpoint(ctx.checkpoint, 3, { policy: { params, m, v } }, { iteration: 3 });
 * const saved = await loadPpoCheckpoint(ctx.checkpoint); // { groups: { policy: { params, m, v } }, state }
 * ```
 * @module
 */
import { createHash } from "node:crypto";
import { dirname } from "node:path";
import { KilnError } from "../../pipeline/errors.ts";
import type { StateStore } from "../../model/checkpoint.ts";
import { parseSafetensors, serializeSafetensors } from "../../model/safetensors.ts";

/** Named flat tensors, grouped into one file each (e.g. `policy: { params, m, v }`). */
export type TensorGroups = Record<string, Record<string, Float32Array>>;

interface Pointer<S> {
  format: "kiln-ppo-checkpoint/1";
  dir: string;
  sha256: Record<string, string>;
  state: S;
}

const POINTER = "ppo-state";
const sha256 = (bytes: Uint8Array) => createHash("sha256").update(bytes).digest("hex");

/** Writes the groups and then the pointer (the commit point); removes the checkpoint it supersedes. */
export async function savePpoCheckpoint<S>(
  store: StateStore,
  iteration: number,
  groups: TensorGroups,
  state: S,
): Promise<void> {
  const previous = await store.load<Pointer<S>>(POINTER).catch(() => undefined);
  const dir = `iter-${String(iteration).padStart(8, "0")}`;
  const digests: Record<string, string> = {};
  for (const [group, tensors] of Object.entries(groups)) {
    const bytes = serializeSafetensors(
      Object.entries(tensors).map(([name, data]) => ({ name, shape: [data.length], data })),
    );
    await store.writeFile(`${dir}/${group}.safetensors`, bytes);
    digests[group] = sha256(bytes);
  }
  const pointer: Pointer<S> = { format: "kiln-ppo-checkpoint/1", dir, sha256: digests, state };
  await store.save(POINTER, pointer);
  if (previous?.dir && previous.dir !== dir) {
    await Deno.remove(dirname(store.path(`${previous.dir}/x`)), { recursive: true }).catch(() => {});
  }
}

/** A PPO checkpoint failed its checks; the message names the file and how to start over. */
export class DamagedPpoCheckpointError extends KilnError {}

/** The latest checkpoint, or undefined when none was saved; damaged state throws, naming the file. */
export async function loadPpoCheckpoint<S>(
  store: StateStore,
): Promise<{ groups: TensorGroups; state: S } | undefined> {
  const pointerPath = store.path(POINTER + ".json");
  const damaged = (file: string, why: string) =>
    new DamagedPpoCheckpointError(
      `${file}: damaged PPO checkpoint (${why}); it was not loaded. ` +
        `Delete ${dirname(pointerPath)} to restart this stage from iteration 0.`,
    );
  let pointer: Pointer<S> | undefined;
  try {
    pointer = await store.load<Pointer<S>>(POINTER);
  } catch (e) {
    throw damaged(pointerPath, `unreadable: ${(e as Error).message}`);
  }
  if (pointer === undefined) return undefined;
  if (pointer.format !== "kiln-ppo-checkpoint/1" || typeof pointer.dir !== "string" || !pointer.sha256) {
    throw damaged(pointerPath, "missing fields");
  }
  const groups: TensorGroups = {};
  for (const [group, digest] of Object.entries(pointer.sha256)) {
    const rel = `${pointer.dir}/${group}.safetensors`;
    const bytes = await store.readFile(rel);
    if (bytes === undefined) throw damaged(store.path(rel), "file missing");
    if (sha256(bytes) !== digest) throw damaged(store.path(rel), "SHA-256 does not match");
    const file = parseSafetensors(bytes, store.path(rel));
    groups[group] = Object.fromEntries(file.names().map((name) => [name, file.float32(name)]));
  }
  return { groups, state: pointer.state };
}
