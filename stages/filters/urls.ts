/**
 * The URL filter: block lists of domains (with their subdomains), block-list files (UT1 or hosts-file
 * style) and words banned in a URL's host, path or query.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { filterModule, optional } from "./filter.ts";

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

/** What the URL filter's step is built from: domains, block-list files and banned words. */
export interface UrlOptions {
  domains: string[];
  domainFiles: string[];
  words: string[];
}

/** `urls: { domains, files, words }`; off by default. */
export const urlsModule = filterModule({
  name: "urls",
  schema: optional(z.strictObject({
    /** Blocked domains (their subdomains too). */
    domains: z.array(z.string()).default([]),
    /** Block-list files: one domain a line, `#` comments (UT1 or hosts-file style). */
    files: z.array(z.string()).default([]),
    /** Words that block a URL when they appear in its host, path or query. */
    words: z.array(z.string()).default([]),
  })),
  defaults: { domains: [], domainFiles: [], words: [] } as UrlOptions,
  files: (value) => value ? value.files : [],
  prepare: (value) =>
    value ? { domains: value.domains, domainFiles: value.files, words: value.words } : undefined,
  build: async (o: UrlOptions) => {
    const domains = [...o.domains];
    for (const file of o.domainFiles) domains.push(...UrlBlockList.parseList(await Deno.readTextFile(file)));
    const list = new UrlBlockList(domains, o.words);
    return {
      name: "urls",
      apply: (doc) => {
        const reason = list.check(doc.url);
        return reason ? { drop: reason } : { doc };
      },
    };
  },
});
