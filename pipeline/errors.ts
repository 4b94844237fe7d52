/**
 * The errors kiln reports to users. Each names what is wrong and where (stage, field, file, line), so
 * the CLI can print one clear line and exit non-zero.
 * @module
 */

/** Base class: the CLI prints `message` alone (no stack) for these. */
export class KilnError extends Error {
  override name = "KilnError";
}

/** A stage config value is invalid. `field` is the path inside the config, e.g. `urls.maxPages`. */
export class ConfigError extends KilnError {
  override name = "ConfigError";
  readonly field: string;
  constructor(readonly stage: string, path: string[], readonly detail: string, where?: string) {
    const field = path.join(".");
    super(`${where ? where + ": " : ""}stage "${stage}": config${field ? "." + field : ""}: ${detail}`);
    this.field = field;
  }
}

/** A stage's own failure: the message starts with `stage "<id>": `, so every stage says it the same way. */
export class StageError extends KilnError {
  override name = "StageError";
  constructor(readonly stage: string, readonly detail: string) {
    super(`stage "${stage}": ${detail}`);
  }
}

/** The pipeline itself is malformed: unknown stage, mismatched kinds, duplicate ids, bad YAML. */
export class PipelineError extends KilnError {
  override name = "PipelineError";
}

/** Input data is malformed; names the file and, where known, the line or byte offset. */
export class DataError extends KilnError {
  override name = "DataError";
  constructor(readonly file: string, readonly where: string | undefined, detail: string) {
    super(`${file}${where ? ":" + where : ""}: ${detail}`);
  }
}

/** A committed artifact does not match its manifest. */
export class ArtifactError extends KilnError {
  override name = "ArtifactError";
}

/** Another run holds the workdir. */
export class LockedError extends KilnError {
  override name = "LockedError";
}

/** A permission the stage needs was not granted; names the flag to add. */
export class PermissionError extends KilnError {
  override name = "PermissionError";
}

/** The run was interrupted (SIGINT/SIGTERM) after checkpointing. */
export class InterruptedError extends KilnError {
  override name = "InterruptedError";
}

const KILN_ERROR_NAMES = new Set([
  "KilnError",
  "StageError",
  "ConfigError",
  "PipelineError",
  "DataError",
  "ArtifactError",
  "LockedError",
  "PermissionError",
  "InterruptedError",
]);

/** Whether `e` is one of kiln's user-facing errors, also after crossing a worker boundary as data. */
export function isKilnError(e: unknown): boolean {
  return e instanceof KilnError || (e instanceof Error && KILN_ERROR_NAMES.has(e.name));
}
