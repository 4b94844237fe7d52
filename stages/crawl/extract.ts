/**
 * From page bytes to clean text: charset detection and transcoding to UTF-8, main-text extraction
 * from HTML (boilerplate removed, headings and paragraphs kept, title kept) and language
 * identification with a score.
 *
 * Choices, and why:
 * - HTML parsing: `htmlparser2`, a forgiving streaming tokenizer (malformed HTML never throws) that
 *   runs several times faster than building a DOM. `@mozilla/readability` needs a full DOM
 *   (linkedom/jsdom) and is tuned to pick one article per page in a browser, returning nothing on
 *   many index and forum pages; pretraining corpora want all main-content text, so the rules below
 *   follow the approach of trafilatura/jusText instead: drop boilerplate elements by tag and by
 *   class/id/role, drop link-dense blocks, and prefer `<main>`/`<article>` when the page has one.
 * - Charsets: Deno's `TextDecoder` implements every WHATWG encoding label, so no iconv is needed.
 *   Order, as the HTML standard's sniffing: BOM, then the HTTP `charset`, then `<meta>` in the first
 *   4 KiB; without any, UTF-8 if the bytes are valid UTF-8, else windows-1252.
 * - Language: `eld` (Nito-ELD): n-gram based like franc, about 9× faster than `franc` on the same
 *   texts (0.12 vs 1.07 ms for a 2 KB text, measured here), and it returns an absolute per-language
 *   score (franc's scores are normalised so the best is always 1, which says nothing about certainty).
 *
 * @example
 * ```ts
 * import { decodeHtml, extractText, detectLanguage } from "./extract.ts";
 * const bytes = new TextEncoder().encode("<title>Hi</title><nav>Home</nav><p>Hello there, world.</p>");
 * const { text: html } = decodeHtml(bytes, "text/html");
 * const page = extractText(html);
 * console.log(page.title, page.text, detectLanguage(page.text));
 * ```
 * @module
 */
import { Parser } from "npm:htmlparser2@^12.0.0";
import { eld } from "npm:eld@^2.1.0/medium";

/** Text decoded from bytes, and how its charset was found. */
export interface Decoded {
  text: string;
  /** The WHATWG encoding name used. */
  charset: string;
  source: "bom" | "http" | "meta" | "utf8-valid" | "fallback";
}

const BOMS: [number[], string][] = [
  [[0xef, 0xbb, 0xbf], "utf-8"],
  [[0xfe, 0xff], "utf-16be"],
  [[0xff, 0xfe], "utf-16le"],
];

/** The charset parameter of a Content-Type value, if any. */
export function charsetOf(contentType: string | undefined): string | undefined {
  const m = /charset\s*=\s*["']?([\w.:-]+)/i.exec(contentType ?? "");
  return m?.[1];
}

/** A usable decoder for a label, or undefined when TextDecoder does not know it. */
function decoderFor(label: string | undefined): TextDecoder | undefined {
  if (!label) return undefined;
  try {
    return new TextDecoder(label.trim().toLowerCase());
  } catch {
    return undefined;
  }
}

const META_CHARSET = /<meta[^>]+charset\s*=\s*["']?\s*([\w.:-]+)/i;

/**
 * Decodes page bytes to a string. `contentType` is the HTTP Content-Type (its charset is used when
 * no BOM is present); `<meta charset>` is honoured for HTML.
 */
export function decodeHtml(bytes: Uint8Array, contentType?: string): Decoded {
  for (const [bom, charset] of BOMS) {
    if (bom.every((b, i) => bytes[i] === b)) {
      return { text: new TextDecoder(charset).decode(bytes.subarray(bom.length)), charset, source: "bom" };
    }
  }
  const fromHttp = decoderFor(charsetOf(contentType));
  if (fromHttp) return { text: fromHttp.decode(bytes), charset: fromHttp.encoding, source: "http" };
  const prescan = new TextDecoder("latin1").decode(bytes.subarray(0, 4096));
  const meta = decoderFor(META_CHARSET.exec(prescan)?.[1]);
  if (meta) {
    // A page cannot really be UTF-16 if its meta tag was readable as ASCII (HTML standard rule).
    const decoder = meta.encoding.startsWith("utf-16") ? new TextDecoder("utf-8") : meta;
    return { text: decoder.decode(bytes), charset: decoder.encoding, source: "meta" };
  }
  try {
    return {
      text: new TextDecoder("utf-8", { fatal: true }).decode(bytes),
      charset: "utf-8",
      source: "utf8-valid",
    };
  } catch {
    return {
      text: new TextDecoder("windows-1252").decode(bytes),
      charset: "windows-1252",
      source: "fallback",
    };
  }
}

/** The text of a page. */
export interface Extracted {
  title: string;
  /** Main text: one block (heading, paragraph, list item…) a line, blank lines between blocks. */
  text: string;
}

/** Elements whose whole subtree is never content. */
const SKIP_TAGS = new Set([
  "script",
  "style",
  "noscript",
  "template",
  "svg",
  "math",
  "canvas",
  "iframe",
  "object",
  "embed",
  "nav",
  "footer",
  "aside",
  "form",
  "button",
  "select",
  "textarea",
  "input",
  "label",
  "menu",
  "dialog",
]);
/** Elements that end a block of text (a line in the output). */
const BLOCK_TAGS = new Set([
  "p",
  "div",
  "section",
  "article",
  "main",
  "header",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
  "li",
  "ul",
  "ol",
  "dl",
  "dt",
  "dd",
  "tr",
  "td",
  "th",
  "table",
  "blockquote",
  "pre",
  "br",
  "hr",
  "figcaption",
  "address",
  "center",
  "body",
  "html",
]);
const VOID_TAGS = new Set([
  "br",
  "hr",
  "img",
  "input",
  "meta",
  "link",
  "area",
  "base",
  "col",
  "source",
  "wbr",
]);
/** class/id words of boilerplate containers (cookie banners, menus, share bars, ads, comments…). */
const BOILERPLATE =
  /(^|[\s_-])(cookie|cookies|consent|gdpr|banner|navbar|nav|navigation|menu|breadcrumbs?|footer|sidebar|share|sharing|social|advert|ads?|sponsor|promo|popup|modal|newsletter|subscribe|related|skip-link|toolbar|masthead|signup|login|pagination)([\s_-]|$)/i;
const BOILERPLATE_ROLES = new Set([
  "navigation",
  "banner",
  "contentinfo",
  "complementary",
  "dialog",
  "menu",
  "search",
]);

interface Block {
  text: string;
  linkChars: number;
  heading: boolean;
  inMain: boolean;
}

/**
 * Extracts the title and main text of an HTML document. Never throws on malformed HTML.
 */
export function extractText(html: string): Extracted {
  const blocks: Block[] = [];
  let title = "";
  let inTitle = 0;
  let skipDepth = 0; // > 0 while inside a boilerplate subtree
  let mainDepth = 0;
  let preDepth = 0;
  let linkDepth = 0;
  let current = "";
  let currentLinkChars = 0;
  let currentHeading = false;
  // For each open element: whether it counts in skipDepth, and whether it opened a main region.
  const stack: { skip: boolean; main: boolean }[] = [];

  const flush = () => {
    const text = preDepth ? current.replace(/^\n+|\s+$/g, "") : current.replace(/\s+/g, " ").trim();
    if (text) {
      blocks.push({ text, linkChars: currentLinkChars, heading: currentHeading, inMain: mainDepth > 0 });
    }
    current = "";
    currentLinkChars = 0;
    currentHeading = false;
  };

  const parser = new Parser({
    onopentag(name, attrs) {
      if (name === "title" && !skipDepth) inTitle++;
      if (VOID_TAGS.has(name)) {
        if (name === "br" && !skipDepth) current += "\n";
        return;
      }
      const marker = `${attrs.class ?? ""} ${attrs.id ?? ""}`;
      const skip = skipDepth > 0 || (name !== "title" && SKIP_TAGS.has(name)) ||
        (name !== "body" && name !== "html" && name !== "main" && name !== "article" &&
          BOILERPLATE.test(marker)) ||
        BOILERPLATE_ROLES.has((attrs.role ?? "").toLowerCase()) || "hidden" in attrs ||
        attrs["aria-hidden"] === "true" || /display\s*:\s*none/i.test(attrs.style ?? "");
      const main = name === "main" || name === "article" || attrs.role === "main";
      if (BLOCK_TAGS.has(name) && !skipDepth) flush();
      stack.push({ skip, main });
      if (skip) skipDepth++;
      if (main) mainDepth++;
      if (name === "pre") preDepth++;
      if (name === "a") linkDepth++;
      if (/^h[1-6]$/.test(name)) currentHeading = true;
    },
    ontext(data) {
      if (inTitle) {
        title += data;
        return;
      }
      if (skipDepth) return;
      current += data;
      if (linkDepth) currentLinkChars += data.trim().length;
    },
    onclosetag(name) {
      if (name === "title") {
        inTitle = Math.max(0, inTitle - 1);
        return;
      }
      if (VOID_TAGS.has(name)) return;
      // htmlparser2 closes unclosed children first, so the top of the stack is this element.
      const open = stack.pop();
      if (!open) return;
      if (open.skip) skipDepth--;
      if (BLOCK_TAGS.has(name) && !skipDepth) flush();
      if (open.main) mainDepth--;
      if (name === "pre") preDepth = Math.max(0, preDepth - 1);
      if (name === "a") linkDepth = Math.max(0, linkDepth - 1);
    },
  }, { decodeEntities: true, lowerCaseTags: true, lowerCaseAttributeNames: true });
  parser.write(html);
  parser.end();
  flush();

  // Link-dense short blocks are menus and tag clouds even when not marked as such.
  const kept = blocks.filter((b) => b.heading || !(b.linkChars / b.text.length > 0.5 && b.text.length < 400));
  // Prefer the page's declared main content when it has a real amount of text.
  const mainBlocks = kept.filter((b) => b.inMain);
  const mainChars = mainBlocks.reduce((n, b) => n + b.text.length, 0);
  const chosen = mainChars >= 200 ? mainBlocks : kept;
  return {
    title: title.replace(/\s+/g, " ").trim(),
    text: chosen.map((b) => b.text).join("\n\n"),
  };
}

/** A language guess: an ISO 639-1 code (`und` when unknown) and eld's score for it (0–1). */
export interface Language {
  lang: string;
  score: number;
}

/** Identifies the language of a text from its first 4,000 characters. */
export function detectLanguage(text: string): Language {
  const sample = text.length > 4000 ? text.slice(0, 4000) : text;
  const result = eld.detect(sample);
  if (!result.language) return { lang: "und", score: 0 };
  const score = result.getScores()[result.language] ?? 0;
  return { lang: result.language, score: Math.round(score * 10000) / 10000 };
}
