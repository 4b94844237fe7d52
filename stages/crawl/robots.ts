/**
 * robots.txt per RFC 9309, on top of `robots-parser` (user-agent groups, merged groups, allow and
 * disallow with `*` and `$`, longest match wins, allow on ties, Crawl-delay). This module adds the
 * RFC's rules for fetching the file: a 4xx ("unavailable") allows everything, a 5xx or a network
 * failure ("unreachable") disallows everything, and at most 500 KiB of it is parsed (the crawler
 * reads the first 500 KiB of a longer file and drops the line the cut goes through).
 * @module
 */
import robotsParserModule from "npm:robots-parser@^3.0.1";

// The package's .d.ts opens with `declare module`, which hides its default export's call signature
// from Deno's type checker; this is that signature.
const robotsParser = robotsParserModule as unknown as (url: string, robotstxt: string) => {
  isAllowed(url: string, ua?: string): boolean | undefined;
  getCrawlDelay(ua?: string): number | undefined;
};

/** The rules of one origin. */
export interface RobotsRules {
  isAllowed(url: string): boolean;
  /** Crawl-delay in seconds for our user agent, if the file sets one. */
  crawlDelay?: number;
}

/** RFC 9309 §2.5: crawlers may stop parsing after 500 KiB. */
export const MAX_ROBOTS_BYTES = 500 * 1024;

/** Rules from a robots.txt body fetched with HTTP status `status` (0 for a network failure). */
export function robotsRules(robotsUrl: string, status: number, body: string, userAgent: string): RobotsRules {
  if (status >= 400 && status < 500) return { isAllowed: () => true };
  if (status < 200 || status >= 300) return { isAllowed: () => false };
  const robots = robotsParser(robotsUrl, body.slice(0, MAX_ROBOTS_BYTES));
  const delay = robots.getCrawlDelay(userAgent);
  return {
    isAllowed: (url) => robots.isAllowed(url, userAgent) !== false,
    crawlDelay: typeof delay === "number" && delay >= 0 ? delay : undefined,
  };
}
