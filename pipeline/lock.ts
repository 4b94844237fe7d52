/**
 * One writer per workdir. The lock is an OS file lock (flock) on `<workdir>/lock`: the kernel drops
 * it when its process dies, even by kill -9, so a crashed run never blocks the next one. The file
 * also names its holder, so a second run can say who holds it, and a new holder can say that the
 * previous one ended without releasing it.
 * @module
 */
import { join } from "node:path";
import { LockedError } from "./errors.ts";

/** Who holds a workdir lock. */
export interface LockHolder {
  pid: number;
  startedAt: string;
  command: string;
}

/** A held lock; `release()` it when the run ends. */
export interface WorkdirLock {
  /** The previous holder, when it ended without releasing (a crash); undefined otherwise. */
  readonly tookOverFrom?: LockHolder;
  release(): void;
}

function describe(holder: LockHolder | undefined): string {
  if (!holder) return "another process";
  return `pid ${holder.pid}, started ${holder.startedAt} (${holder.command})`;
}

/**
 * Takes the workdir lock. When another live process holds it, throws {@linkcode LockedError} naming
 * the holder, or, with `wait`, waits for it.
 */
export async function lockWorkdir(
  workdir: string,
  opts: { wait?: boolean; onWait?: (holder?: LockHolder) => void } = {},
): Promise<WorkdirLock> {
  await Deno.mkdir(workdir, { recursive: true });
  const path = join(workdir, "lock");
  const file = await Deno.open(path, { read: true, write: true, create: true });
  if (!await file.tryLock(true)) {
    const holder = await readHolderAt(path);
    if (!opts.wait) {
      file.close();
      throw new LockedError(
        `workdir ${workdir} is in use by ${describe(holder)}; wait for it to finish, or pass --wait`,
      );
    }
    opts.onWait?.(holder);
    await file.lock(true);
  }
  const previous = await readHolderAt(path);
  const me: LockHolder = {
    pid: Deno.pid,
    startedAt: new Date().toISOString(),
    command: [Deno.mainModule.replace(/^file:\/\//, ""), ...Deno.args].join(" "),
  };
  await file.truncate(0);
  await file.seek(0, Deno.SeekMode.Start);
  await file.write(new TextEncoder().encode(JSON.stringify(me)));
  await file.sync();
  return {
    tookOverFrom: previous,
    release() {
      try {
        file.truncateSync(0);
        file.unlockSync();
      } finally {
        file.close();
      }
    },
  };
}

async function readHolderAt(path: string): Promise<LockHolder | undefined> {
  try {
    const text = await Deno.readTextFile(path);
    return text.trim() ? JSON.parse(text) as LockHolder : undefined;
  } catch {
    return undefined;
  }
}
