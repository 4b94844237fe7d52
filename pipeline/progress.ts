/**
 * Progress on the terminal: a live line per running stage (counts, rate, ETA) when stderr is a TTY,
 * plain periodic lines without ANSI codes when it is not (CI logs, files).
 * @module
 */
import type { Progress } from "./stage.ts";

/** Formats seconds as `1:02:03` or `2:03`. */
export function formatDuration(seconds: number): string {
  if (!isFinite(seconds) || seconds < 0) return "?";
  const s = Math.round(seconds);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), sec = s % 60;
  const mm = h ? String(m).padStart(2, "0") : String(m);
  return `${h ? h + ":" : ""}${mm}:${String(sec).padStart(2, "0")}`;
}

function formatCount(n: number): string {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + "G";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + "M";
  if (n >= 1e4) return (n / 1e3).toFixed(1) + "k";
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function formatBytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/**
 * One progress line: `[stage] 120/500 files · 35.2 files/s · 12.1 MB · ETA 0:11 · elapsed 0:03`.
 * The rate counts `doneThisAttempt` units (a resumed stage starts with work already done).
 */
export function progressLine(stage: string, p: Progress, elapsedS: number, doneThisAttempt = p.done): string {
  const unit = p.unit ?? "items";
  const parts = [
    `[${stage}] ${formatCount(p.done)}${p.total !== undefined ? "/" + formatCount(p.total) : ""} ${unit}`,
  ];
  const rate = elapsedS > 0 ? doneThisAttempt / elapsedS : 0;
  if (rate > 0) parts.push(`${formatCount(rate)} ${unit}/s`);
  if (p.bytes !== undefined) parts.push(formatBytes(p.bytes));
  if (p.total !== undefined && rate > 0 && p.done < p.total) {
    parts.push(`ETA ${formatDuration((p.total - p.done) / rate)}`);
  }
  parts.push(`elapsed ${formatDuration(elapsedS)}`);
  return parts.join(" · ");
}

/** Where progress goes: a live TTY line, plain lines every `intervalS`, or nowhere. */
export class ProgressReporter {
  readonly #tty: boolean;
  readonly #quiet: boolean;
  readonly #intervalMs: number;
  #stage = "";
  #started = 0;
  #resumedFrom = 0;
  #lastDraw = 0;
  #last?: Progress;
  #live = false;
  #encoder = new TextEncoder();

  constructor(opts: { quiet?: boolean; tty?: boolean; intervalS?: number } = {}) {
    this.#quiet = opts.quiet ?? false;
    this.#tty = opts.tty ?? Deno.stderr.isTerminal();
    this.#intervalMs = (opts.intervalS ?? 10) * 1000;
  }

  #ticker?: ReturnType<typeof setInterval>;

  /** Starts timing a stage (on a terminal, the line is redrawn every second so elapsed and ETA move). */
  start(stage: string): void {
    this.finish();
    if (this.#tty && !this.#quiet) {
      const ticker = setInterval(() => this.#draw(), 1000);
      Deno.unrefTimer(ticker as unknown as number);
      this.#ticker = ticker;
    }
    this.#stage = stage;
    this.#started = performance.now();
    this.#lastDraw = this.#started;
    this.#last = undefined;
    this.#resumedFrom = -1;
  }

  /** Takes an update; draws it when due. */
  update(p: Progress): void {
    // Rate and ETA count only work done in this attempt: a resumed stage starts with done > 0.
    if (this.#resumedFrom < 0) this.#resumedFrom = p.done;
    this.#last = p;
    if (this.#quiet) return;
    const now = performance.now();
    const due = this.#tty ? now - this.#lastDraw >= 100 : now - this.#lastDraw >= this.#intervalMs;
    if (!due) return;
    this.#lastDraw = now;
    this.#draw();
  }

  #draw() {
    if (!this.#last) return;
    const elapsed = (performance.now() - this.#started) / 1000;
    const shown = progressLine(this.#stage, this.#last, elapsed, this.#last.done - this.#resumedFrom);
    if (this.#tty) {
      this.#live = true;
      Deno.stderr.writeSync(this.#encoder.encode(`\r\x1b[K${shown}`));
    } else {
      Deno.stderr.writeSync(this.#encoder.encode(shown + "\n"));
    }
  }

  /** Prints a finished line (clearing the live line first). */
  line(text: string): void {
    if (this.#quiet) return;
    this.clear();
    Deno.stderr.writeSync(this.#encoder.encode(text + "\n"));
  }

  /** Stops the redraw timer of the current stage. */
  finish(): void {
    if (this.#ticker !== undefined) clearInterval(this.#ticker);
    this.#ticker = undefined;
  }

  /** Removes the live line, if any. */
  clear(): void {
    if (this.#live) Deno.stderr.writeSync(this.#encoder.encode("\r\x1b[K"));
    this.#live = false;
  }
}
