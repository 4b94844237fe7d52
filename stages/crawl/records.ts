/**
 * Which archived records are web pages. A WARC holds much that is not: `robots.txt` and sitemaps
 * fetched by the crawler, `metadata://` resources written by wget (its log, arguments and manifest),
 * `dns:` and `whois:` records. As text they look like documents (`text/plain`), so the content type
 * alone does not tell; the URL does. And a response with no Content-Type is sniffed from its first
 * bytes, as browsers do, instead of being read as HTML whatever it is.
 *
 * @example
 * ```ts
 * import { nonPageReason, sniffMediaType } from "./records.ts";
 * console.log(nonPageReason("http://example.com/robots.txt")); // "robots-txt"
 * console.log(nonPageReason("metadata://gnu.org/software/wget/warc/wget.log")); // "metadata"
 * console.log(nonPageReason("https://example.com/about")); // undefined: a page
 * console.log(sniffMediaType(new TextEncoder().encode("  <!doctype html><p>x"))); // "text/html"
 * ```
 * @module
 */

/** Why a record with this URL is not a page (a `skipped.<reason>` of the crawl stage), or undefined. */
export function nonPageReason(url: string | undefined): "robots-txt" | "sitemap" | "metadata" | undefined {
  if (!url) return undefined;
  const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(url)?.[1]?.toLowerCase();
  if (scheme !== "http" && scheme !== "https") return "metadata"; // metadata://, dns:, whois:, urn:…
  let path: string;
  try {
    path = new URL(url).pathname.toLowerCase();
  } catch {
    return undefined;
  }
  if (path === "/robots.txt") return "robots-txt";
  const name = path.slice(path.lastIndexOf("/") + 1);
  if (/^sitemap[\w.-]*\.xml(\.gz)?$/.test(name) || /^sitemap[\w.-]*\.txt$/.test(name)) return "sitemap";
  return undefined;
}

/**
 * The media type of a body that came without a Content-Type: `text/html` when it starts (after
 * whitespace and a BOM) like markup, `text/plain` when its first 1 KiB is text (no control bytes
 * but tab and line breaks), else `application/octet-stream`.
 */
export function sniffMediaType(bytes: Uint8Array): string {
  const head = bytes.subarray(0, 1024);
  let i = 0;
  if (head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf) i = 3;
  while (i < head.length && (head[i] === 0x20 || (head[i] >= 0x09 && head[i] <= 0x0d))) i++;
  const start = new TextDecoder("latin1").decode(head.subarray(i, i + 64)).toLowerCase();
  if (
    /^<(?:!doctype html|!--|(?:html|head|body|title|p|div|meta|h[1-6]|table|a|br|script|style)[\s>/])/.test(
      start,
    )
  ) {
    return "text/html";
  }
  for (const b of head) {
    if (b < 0x09 || (b > 0x0d && b < 0x20) || b === 0x7f) return "application/octet-stream";
  }
  return head.length ? "text/plain" : "application/octet-stream";
}
