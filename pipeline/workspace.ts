/**
 * A running stage's workspace: the output directory it fills and the checkpoint directory that lets
 * it resume. Every file appears atomically (written aside, fsynced, renamed), so a crash at any
 * moment leaves either the old file or the new one, never half of one.
 *
 * Layout of one attempt, `<workdir>/work/<id>-<key>/`:
 * - `out/`   the files that become the artifact when the stage commits;
 * - `state/` done-markers (`done/`) and state blobs that survive a crash;
 * - `tmp/`   files being written; emptied when the attempt (re)starts.
 * @module
 */
import { createHash } from "node:crypto";
import { dirname, join } from "node:path";

/** Writes `data` to `path` atomically: a temporary file in `tmpDir`, fsync, rename. */
export async function writeFileAtomic(
  path: string,
  data: Uint8Array | ReadableStream<Uint8Array>,
  tmpDir: string = dirname(path),
): Promise<void> {
  const tmp = join(tmpDir, `.${crypto.randomUUID()}.tmp`);
  await Deno.mkdir(tmpDir, { recursive: true });
  await Deno.mkdir(dirname(path), { recursive: true });
  const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
  try {
    if (data instanceof Uint8Array) {
      let written = 0;
      while (written < data.length) written += await file.write(data.subarray(written));
    } else {
      for await (const chunk of data) {
        let written = 0;
        while (written < chunk.length) written += await file.write(chunk.subarray(written));
      }
    }
    await file.sync();
  } catch (e) {
    file.close();
    await Deno.remove(tmp).catch(() => {});
    throw e;
  }
  file.close();
  await Deno.rename(tmp, path);
  await syncDir(dirname(path));
}

/** fsyncs a directory so a rename inside it survives a power cut. */
export async function syncDir(path: string): Promise<void> {
  try {
    const dir = await Deno.open(path, { read: true });
    try {
      await dir.sync();
    } finally {
      dir.close();
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename is still atomic there.
  }
}

/** Files under `dir`, as sorted relative paths with `/` separators. */
export async function listFiles(dir: string, prefix = ""): Promise<string[]> {
  const out: string[] = [];
  let entries: Deno.DirEntry[];
  try {
    entries = await Array.fromAsync(Deno.readDir(join(dir, prefix)));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  for (const entry of entries) {
    const rel = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isDirectory) out.push(...await listFiles(dir, rel));
    else if (entry.isFile) out.push(rel);
  }
  return out.sort();
}

function checkRelative(rel: string): string {
  if (rel === "" || rel.startsWith("/") || rel.split("/").some((p) => p === ".." || p === "")) {
    throw new Error(`not a relative file path inside the output: "${rel}"`);
  }
  return rel;
}

/** An open output file that appears under its final name only on `commit()`. */
export interface PendingFile {
  readonly writable: WritableStream<Uint8Array>;
  write(chunk: Uint8Array | string): Promise<void>;
  commit(): Promise<void>;
  abort(): Promise<void>;
}

/**
 * The stage's output directory. All writes are atomic. It can be rebuilt in a worker thread from
 * `{ outDir, tmpDir }`, which is how shard workers write their files.
 */
export class OutputWriter {
  /** The files this writer has committed (relative paths), so a shard's done-marker can list them. */
  readonly written: string[] = [];

  constructor(readonly outDir: string, readonly tmpDir: string) {}

  /** Absolute path of an output file (to read back what an earlier attempt wrote). */
  path(rel: string): string {
    return join(this.outDir, checkRelative(rel));
  }

  /** Whether an output file exists (it is complete if it does). */
  async exists(rel: string): Promise<boolean> {
    try {
      return (await Deno.stat(this.path(rel))).isFile;
    } catch {
      return false;
    }
  }

  /** Files written so far, sorted. */
  list(): Promise<string[]> {
    return listFiles(this.outDir);
  }

  async writeFile(rel: string, data: Uint8Array | ReadableStream<Uint8Array>): Promise<void> {
    await writeFileAtomic(this.path(rel), data, this.tmpDir);
    this.written.push(rel);
  }

  writeText(rel: string, text: string): Promise<void> {
    return this.writeFile(rel, new TextEncoder().encode(text));
  }

  writeJson(rel: string, value: unknown): Promise<void> {
    return this.writeText(rel, JSON.stringify(value, null, 2) + "\n");
  }

  /** Opens a file to stream into; it appears under `rel` on `commit()`, never before. */
  async create(rel: string): Promise<PendingFile> {
    const final = this.path(rel);
    await Deno.mkdir(this.tmpDir, { recursive: true });
    await Deno.mkdir(dirname(final), { recursive: true });
    const tmp = join(this.tmpDir, `.${crypto.randomUUID()}.tmp`);
    const file = await Deno.open(tmp, { write: true, create: true, truncate: true });
    const encoder = new TextEncoder();
    let closed = false;
    const written = this.written;
    const writeAll = async (chunk: Uint8Array) => {
      let written = 0;
      while (written < chunk.length) written += await file.write(chunk.subarray(written));
    };
    return {
      writable: new WritableStream({ write: writeAll }),
      write: (chunk) => writeAll(typeof chunk === "string" ? encoder.encode(chunk) : chunk),
      async commit() {
        await file.sync();
        file.close();
        closed = true;
        await Deno.rename(tmp, final);
        await syncDir(dirname(final));
        written.push(rel);
      },
      async abort() {
        if (!closed) file.close();
        closed = true;
        await Deno.remove(tmp).catch(() => {});
      },
    };
  }
}

/**
 * Crash-safe progress inside a stage: done-markers for finished units of work (shards, files) and
 * named state blobs (JSON or bytes: a training step's model and optimizer state, a crawl frontier).
 * Cleared when the stage commits; kept across crashes and interrupts, so a rerun resumes.
 */
export class Checkpoint {
  constructor(readonly dir: string, private readonly tmpDir: string) {}

  private markerPath(id: string): string {
    // Ids are arbitrary strings (file names, URLs): hash them into safe, fixed-length file names.
    return join(this.dir, "done", createHash("sha256").update(id).digest("hex").slice(0, 32) + ".json");
  }

  /** Whether `markDone(id)` completed in this or an earlier attempt. */
  async isDone(id: string): Promise<boolean> {
    return (await this.doneInfo(id)) !== undefined;
  }

  /**
   * The info recorded with a done-marker, or undefined if the unit is not done. A damaged marker (cut
   * short by a crash or a full disk) means "not done": it is removed and the unit is done again.
   */
  async doneInfo<T = unknown>(id: string): Promise<T | undefined> {
    const path = this.markerPath(id);
    let text: string;
    try {
      text = await Deno.readTextFile(path);
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
    try {
      const marker = JSON.parse(text);
      if (marker?.id === id) return marker.info as T;
    } catch { /* damaged: fall through */ }
    await Deno.remove(path).catch(() => {});
    return undefined;
  }

  /** Marks a unit done, with optional JSON info (its stats, its result). Atomic. */
  async markDone(id: string, info: unknown = null): Promise<void> {
    const bytes = new TextEncoder().encode(JSON.stringify({ id, info }));
    await writeFileAtomic(this.markerPath(id), bytes, this.tmpDir);
  }

  /** Removes a done-marker, so the unit is done again. */
  async unmark(id: string): Promise<void> {
    await Deno.remove(this.markerPath(id)).catch((e) => {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
    });
  }

  /** Every done-marker: unit id and info (damaged markers are removed and left out). */
  async markers(): Promise<{ id: string; info: unknown }[]> {
    const out: { id: string; info: unknown }[] = [];
    for (const name of await listFiles(join(this.dir, "done"))) {
      try {
        const marker = JSON.parse(await Deno.readTextFile(join(this.dir, "done", name)));
        if (typeof marker?.id === "string") {
          out.push({ id: marker.id, info: marker.info });
          continue;
        }
      } catch (e) {
        if (e instanceof Deno.errors.NotFound) continue;
        if (!(e instanceof SyntaxError)) throw e;
      }
      await Deno.remove(join(this.dir, "done", name)).catch(() => {});
    }
    return out;
  }

  /** Saves a JSON state blob under `name`, atomically. */
  async save(name: string, value: unknown): Promise<void> {
    await this.writeFile(name + ".json", new TextEncoder().encode(JSON.stringify(value)));
  }

  /** Loads a JSON state blob, or undefined when none was saved. */
  async load<T = unknown>(name: string): Promise<T | undefined> {
    const bytes = await this.readFile(name + ".json");
    return bytes ? JSON.parse(new TextDecoder().decode(bytes)) as T : undefined;
  }

  /** Writes a binary state file (e.g. a safetensors checkpoint), atomically. */
  writeFile(name: string, data: Uint8Array | ReadableStream<Uint8Array>): Promise<void> {
    return writeFileAtomic(this.path(name), data, this.tmpDir);
  }

  /** Reads a state file, or undefined when it does not exist. */
  async readFile(name: string): Promise<Uint8Array | undefined> {
    try {
      return await Deno.readFile(this.path(name));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) return undefined;
      throw e;
    }
  }

  /** Absolute path of a state file. */
  path(name: string): string {
    return join(this.dir, "blobs", checkRelative(name));
  }
}
