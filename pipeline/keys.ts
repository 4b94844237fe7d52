/**
 * Cache keys. A stage's key is the SHA-256 of its parts: name, version, the hash of its code (its
 * module and everything that imports, see {@linkcode hashModuleGraph}), its canonical config, the
 * fingerprint of external files its config names, and the digests of its input artifacts. The parts
 * are kept beside each commit, so `status` can say which of them changed.
 * @module
 */
import { createHash } from "node:crypto";

/** What a stage's cache key is made of. */
export interface KeyParts {
  name: string;
  version: number;
  code: string;
  config: unknown;
  /** Fingerprint of external inputs the config names (files: path, size, mtime), or null. */
  external: unknown;
  /** Input slot ("input" or a `uses` name) → artifact digest. */
  inputs: Record<string, string>;
}

/** JSON with object keys sorted at every level: equal values give equal text. */
export function canonicalJson(value: unknown): string {
  return JSON.stringify(sortKeys(value));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value && typeof value === "object") {
    const out: Record<string, unknown> = {};
    for (const key of Object.keys(value).sort()) {
      const v = (value as Record<string, unknown>)[key];
      if (v !== undefined) out[key] = sortKeys(v);
    }
    return out;
  }
  return value;
}

/** The cache key of a stage: hex SHA-256 of its canonical parts. */
export function cacheKey(parts: KeyParts): string {
  return createHash("sha256").update(canonicalJson(parts)).digest("hex");
}

/** Dotted paths where two JSON values differ (`a.b`, `list[2]`), at most `limit` of them. */
export function diffPaths(before: unknown, after: unknown, limit = 8): string[] {
  const out: string[] = [];
  const walk = (a: unknown, b: unknown, path: string) => {
    if (out.length >= limit) return;
    if (canonicalJson(a) === canonicalJson(b)) return;
    const isObj = (v: unknown) => v !== null && typeof v === "object" && !Array.isArray(v);
    if (isObj(a) && isObj(b)) {
      const keys = new Set([...Object.keys(a as object), ...Object.keys(b as object)]);
      for (const k of [...keys].sort()) {
        walk((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], path ? `${path}.${k}` : k);
      }
    } else if (Array.isArray(a) && Array.isArray(b) && a.length === b.length) {
      a.forEach((v, i) => walk(v, b[i], `${path}[${i}]`));
    } else {
      out.push(path || "(whole config)");
    }
  };
  walk(before, after, "");
  return out;
}

/** Human reasons why `now` differs from `before` (empty when equal). */
export function explainChange(before: KeyParts, now: KeyParts): string[] {
  const reasons: string[] = [];
  if (before.version !== now.version) reasons.push(`version ${before.version} → ${now.version}`);
  if (before.code !== now.code) reasons.push("code changed");
  const fields = diffPaths(before.config, now.config);
  if (fields.length) reasons.push(`config changed: ${fields.join(", ")}`);
  if (canonicalJson(before.external) !== canonicalJson(now.external)) reasons.push("input files changed");
  const slots = new Set([...Object.keys(before.inputs), ...Object.keys(now.inputs)]);
  for (const slot of [...slots].sort()) {
    if (before.inputs[slot] !== now.inputs[slot]) {
      reasons.push(slot === "input" ? "input artifact changed" : `input "${slot}" changed`);
    }
  }
  return reasons;
}
