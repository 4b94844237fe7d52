/**
 * Committed artifacts: a directory of files plus `manifest.json`, which records every file's size
 * and SHA-256 at commit time. Deciding whether an artifact is intact enough to skip a stage reads
 * only the manifest and `stat`s the files; a stage that is about to *read* an artifact first checks
 * every digest, so a damaged artifact is rebuilt, never used silently.
 * @module
 */
import { createHash } from "node:crypto";
import { join } from "node:path";
import { ArtifactError } from "./errors.ts";
import { listFiles, syncDir, writeFileAtomic } from "./workspace.ts";

/** One file of an artifact as the manifest records it. */
export interface FileEntry {
  size: number;
  sha256: string;
}

/** `manifest.json` of a committed artifact. */
export interface Manifest {
  format: "kiln-artifact/1";
  stage: string;
  kind: string;
  key: string;
  /** SHA-256 over the sorted (path, size, sha256) list: what downstream keys depend on. */
  digest: string;
  files: Record<string, FileEntry>;
  stats: Record<string, unknown>;
  committedAt: string;
  durationMs: number;
}

export const MANIFEST = "manifest.json";

/** SHA-256 of a file, streamed (artifacts can be far larger than memory). */
export async function hashFile(path: string): Promise<string> {
  const hash = createHash("sha256");
  using file = await Deno.open(path, { read: true });
  for await (const chunk of file.readable) hash.update(chunk);
  return hash.digest("hex");
}

/** The digest of an artifact's content, from its file entries alone. */
export function contentDigest(files: Record<string, FileEntry>): string {
  const hash = createHash("sha256");
  for (const path of Object.keys(files).sort()) {
    hash.update(`${path}\0${files[path].size}\0${files[path].sha256}\n`);
  }
  return hash.digest("hex");
}

/** A committed artifact, as a downstream stage sees it. */
export class Artifact {
  constructor(readonly dir: string, readonly manifest: Manifest) {}

  get stage(): string {
    return this.manifest.stage;
  }
  get kind(): string {
    return this.manifest.kind;
  }
  get key(): string {
    return this.manifest.key;
  }
  get digest(): string {
    return this.manifest.digest;
  }
  get stats(): Record<string, unknown> {
    return this.manifest.stats;
  }

  /** Absolute path of one of the artifact's files. */
  path(rel: string): string {
    if (!(rel in this.manifest.files)) {
      throw new ArtifactError(`artifact ${this.dir} has no file "${rel}"`);
    }
    return join(this.dir, rel);
  }

  /** The artifact's files (relative paths, sorted), optionally those ending in `suffix`. */
  files(suffix = ""): string[] {
    return Object.keys(this.manifest.files).filter((f) => f.endsWith(suffix)).sort();
  }

  readText(rel: string): Promise<string> {
    return Deno.readTextFile(this.path(rel));
  }

  async readJson<T = unknown>(rel: string): Promise<T> {
    return JSON.parse(await this.readText(rel)) as T;
  }

  /**
   * Cheap check (no data read): every file exists with its recorded size. Returns the first
   * problem found, or undefined.
   */
  async quickCheck(): Promise<string | undefined> {
    if (contentDigest(this.manifest.files) !== this.manifest.digest) return "manifest digest mismatch";
    for (const [rel, entry] of Object.entries(this.manifest.files)) {
      try {
        const info = await Deno.stat(join(this.dir, rel));
        if (info.size !== entry.size) return `${rel}: size ${info.size}, manifest says ${entry.size}`;
      } catch {
        return `${rel}: missing`;
      }
    }
    return undefined;
  }

  /** Full check: every file's SHA-256 matches the manifest. Returns the first problem, or undefined. */
  async verify(): Promise<string | undefined> {
    const quick = await this.quickCheck();
    if (quick) return quick;
    for (const [rel, entry] of Object.entries(this.manifest.files)) {
      if (await hashFile(join(this.dir, rel)) !== entry.sha256) return `${rel}: content changed since commit`;
    }
    return undefined;
  }
}

/** Reads a committed artifact's manifest; undefined when there is none, an error when it is damaged. */
export async function openArtifact(dir: string): Promise<Artifact | undefined> {
  let text: string;
  try {
    text = await Deno.readTextFile(join(dir, MANIFEST));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return undefined;
    throw e;
  }
  let manifest: Manifest;
  try {
    manifest = JSON.parse(text);
  } catch {
    throw new ArtifactError(`${join(dir, MANIFEST)}: damaged manifest (not valid JSON)`);
  }
  if (manifest?.format !== "kiln-artifact/1" || typeof manifest.files !== "object") {
    throw new ArtifactError(`${join(dir, MANIFEST)}: damaged manifest (missing fields)`);
  }
  return new Artifact(dir, manifest);
}

/**
 * Commits a finished output directory: hashes every file, writes the manifest, fsyncs, and renames
 * the directory to its final place in one step. A crash before the rename leaves nothing visible.
 */
export async function commitArtifact(
  outDir: string,
  finalDir: string,
  info: Omit<Manifest, "format" | "digest" | "files" | "committedAt">,
): Promise<Artifact> {
  const files: Record<string, FileEntry> = {};
  for (const rel of await listFiles(outDir)) {
    if (rel === MANIFEST) continue;
    const path = join(outDir, rel);
    files[rel] = { size: (await Deno.stat(path)).size, sha256: await hashFile(path) };
  }
  const manifest: Manifest = {
    format: "kiln-artifact/1",
    ...info,
    digest: contentDigest(files),
    files,
    committedAt: new Date().toISOString(),
  };
  await writeFileAtomic(join(outDir, MANIFEST), new TextEncoder().encode(JSON.stringify(manifest, null, 1)));
  await Deno.rename(outDir, finalDir);
  await syncDir(join(finalDir, ".."));
  return new Artifact(finalDir, manifest);
}
