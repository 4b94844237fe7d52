/**
 * The small filters: document length, URL block lists, language, and PII masking.
 * @module
 */

/** Bounds of {@linkcode lengthFilter}; any may be left out. */
export interface LengthOptions {
  minChars?: number;
  maxChars?: number;
  minWords?: number;
  maxWords?: number;
}

/** Drops documents outside the character and word bounds. */
export function lengthFilter(text: string, o: LengthOptions): string | undefined {
  if (o.minChars !== undefined && text.length < o.minChars) return "too_few_chars";
  if (o.maxChars !== undefined && text.length > o.maxChars) return "too_many_chars";
  if (o.minWords !== undefined || o.maxWords !== undefined) {
    const words = text.split(/\s+/).filter(Boolean).length;
    if (o.minWords !== undefined && words < o.minWords) return "too_few_words";
    if (o.maxWords !== undefined && words > o.maxWords) return "too_many_words";
  }
  return undefined;
}

/** A compiled URL block list: blocked domains (with their subdomains) and words banned in URLs. */
export class UrlBlockList {
  readonly #domains: Set<string>;
  readonly #words: Set<string>;

  constructor(domains: Iterable<string>, words: Iterable<string> = []) {
    this.#domains = new Set(
      [...domains].map((d) => d.trim().toLowerCase().replace(/^\*?\./, "")).filter(Boolean),
    );
    this.#words = new Set([...words].map((w) => w.toLowerCase()));
  }

  /** Parses a block-list file: one domain a line, `#` comments (the UT1 and hosts-file styles). */
  static parseList(text: string): string[] {
    return text.split("\n").map((l) => l.replace(/#.*/, "").trim().split(/\s+/).at(-1) ?? "").filter(Boolean);
  }

  /** The reason a document's URL is blocked, or undefined. Documents without a URL pass. */
  check(url: string | undefined): string | undefined {
    if (!url) return undefined;
    let host: string, rest: string;
    try {
      const u = new URL(url);
      host = u.hostname.toLowerCase();
      rest = (u.hostname + u.pathname + u.search).toLowerCase();
    } catch {
      return undefined;
    }
    for (let h = host; h; h = h.includes(".") ? h.slice(h.indexOf(".") + 1) : "") {
      if (this.#domains.has(h)) return "blocked_domain";
    }
    if (this.#words.size && rest.split(/[^\p{L}\p{N}]+/u).some((t) => this.#words.has(t))) {
      return "banned_word_in_url";
    }
    return undefined;
  }
}

/** A language detector: the best language and its score. */
export type LanguageDetector = (text: string) => { language: string; score: number };

/**
 * The ELD detector (npm `eld`, n-gram based, 60 languages), loaded on first use. Its scores are
 * n-gram match ratios, not probabilities: clean English prose scores about 0.7–0.8.
 */
export async function eldDetector(): Promise<LanguageDetector> {
  const { eld } = await import("npm:eld@^2.1.0/medium");
  return (text) => {
    // ELD reads the first few thousand characters well; longer input only costs time.
    const result = eld.detect(text.slice(0, 4000));
    const scores = result.getScores() as Record<string, number>;
    return { language: result.language, score: scores[result.language] ?? 0 };
  };
}

const EMAIL = /\b[\w.%+-]+@[a-z\d-]+(?:\.[a-z\d-]+)*\.[a-z]{2,}\b/gi;
const IPV4 = /\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b/g;
const IPV6 =
  /(?<![\w:])(?:[a-f\d]{1,4}:){7}[a-f\d]{1,4}(?![\w:])|(?<![\w:])(?:[a-f\d]{1,4}:){1,6}:(?:[a-f\d]{1,4}:){0,5}[a-f\d]{1,4}(?![\w:])/gi;

/** What {@linkcode maskPii} replaces e-mail addresses and IP addresses with. */
export interface PiiOptions {
  emails: boolean;
  ips: boolean;
  emailReplacement: string;
  ipReplacement: string;
}

export const PII_DEFAULTS: PiiOptions = {
  emails: true,
  ips: true,
  emailReplacement: "email@example.com",
  ipReplacement: "0.0.0.0",
};

/** Replaces e-mail and IP addresses; returns the new text and how many of each were masked. */
export function maskPii(
  text: string,
  o: PiiOptions = PII_DEFAULTS,
): { text: string; emails: number; ips: number } {
  let emails = 0, ips = 0;
  if (o.emails) {
    text = text.replace(EMAIL, () => {
      emails++;
      return o.emailReplacement;
    });
  }
  if (o.ips) {
    const mask = () => {
      ips++;
      return o.ipReplacement;
    };
    text = text.replace(IPV4, mask).replace(IPV6, mask);
  }
  return { text, emails, ips };
}
