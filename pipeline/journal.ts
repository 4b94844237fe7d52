/**
 * The run journal: one JSONL file per run under `<workdir>/runs/`, one event a line (run and stage
 * starts and ends, progress, stats, logs, errors). `status` and reports read it; people can `tail` it.
 * @module
 */
import { join } from "node:path";

/** One journal line. `t` is an ISO timestamp; the rest depends on `event`. */
export interface JournalEvent {
  t: string;
  event: string;
  stage?: string;
  [field: string]: unknown;
}

/** Appends events to a run's journal file. */
export class Journal {
  readonly path: string;
  #queue: Promise<void> = Promise.resolve();

  constructor(workdir: string, runId: string) {
    this.path = join(workdir, "runs", `${runId}.jsonl`);
  }

  /** Appends one event (writes are queued, in order). */
  write(event: string, fields: Record<string, unknown> = {}): Promise<void> {
    const line = JSON.stringify({ t: new Date().toISOString(), event, ...fields }) + "\n";
    this.#queue = this.#queue.then(async () => {
      await Deno.mkdir(join(this.path, ".."), { recursive: true });
      await Deno.writeTextFile(this.path, line, { append: true });
    });
    return this.#queue;
  }

  /** Waits for queued writes. */
  flush(): Promise<void> {
    return this.#queue;
  }
}

/** Reads a journal file's events (skipping a torn last line from a crash). */
export async function readJournal(path: string): Promise<JournalEvent[]> {
  const text = await Deno.readTextFile(path);
  const events: JournalEvent[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    try {
      events.push(JSON.parse(line));
    } catch {
      // A run killed mid-write leaves at most one torn line at the end.
    }
  }
  return events;
}

/** The newest journal in a workdir, or undefined. */
export async function latestJournal(workdir: string): Promise<string | undefined> {
  try {
    const names = (await Array.fromAsync(Deno.readDir(join(workdir, "runs"))))
      .filter((e) => e.isFile && e.name.endsWith(".jsonl")).map((e) => e.name).sort();
    return names.length ? join(workdir, "runs", names[names.length - 1]) : undefined;
  } catch {
    return undefined;
  }
}
