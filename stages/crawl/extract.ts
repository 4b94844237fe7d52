/**
 * From page bytes to clean text: charset detection and decoding (`charset.ts`), main-text extraction
 * from HTML (below) and language identification with a calibrated score (`language.ts`).
 *
 * Extraction follows trafilatura, jusText and Readability.js rather than using one of them:
 * `@mozilla/readability` needs a full DOM (linkedom/jsdom, several times slower than the parse below)
 * and picks one article per page, returning nothing on many index and forum pages, where pretraining
 * corpora want all main-content text; trafilatura is Python. The tree comes from `html.ts` (linear in
 * the page size whatever the nesting). The rules are in {@linkcode extractText}.
 *
 * Measured on trafilatura's own evaluation set (990 pages, its metric): see `bench/extraction_bench.ts`
 * and BENCHMARKS.md.
 *
 * @example
 * ```ts
 * import { decodeHtml, detectLanguage, extractText } from "./extract.ts";
 * const bytes = new TextEncoder().encode("<title>Hi</title><nav>Home</nav><p>Hello there, world.</p>");
 * const { text: html } = decodeHtml(bytes, "text/html");
 * const page = extractText(html);
 * console.log(page.title, page.text, detectLanguage(page.text));
 * ```
 * @module
 */
import { type HtmlElement, parseHtml, textOf, walk } from "./html.ts";

export { charsetOf, type Decoded, decodeHtml } from "./charset.ts";
export { detectLanguage, type Language } from "./language.ts";

/** The text of a page. */
export interface Extracted {
  title: string;
  /** Main text: one block (heading, paragraph, list item…) a line, blank lines between blocks. */
  text: string;
}

/** Elements whose content is never text of the page (dropped while parsing). */
const DROP_CONTENT = new Set([
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
  "button",
  "select",
  "textarea",
  "input",
  "label",
  "dialog",
  // Captions and credits of images describe a picture, not the text.
  "figcaption",
  // Ruby annotations (furigana) gloss the characters they sit on; the text reads without them.
  "rt",
  "rp",
]);
/** The attributes the rules below read. */
const ATTRIBUTES = new Set(["class", "id", "role", "style", "hidden", "aria-hidden"]);
/** Elements that end a line of text. */
const BLOCK_TAGS = new Set([
  "p",
  "div",
  "section",
  "article",
  "main",
  "header",
  "footer",
  "nav",
  "aside",
  "form",
  "fieldset",
  "figure",
  "figcaption",
  "details",
  "summary",
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
  "table",
  "thead",
  "tbody",
  "tfoot",
  "caption",
  "tr",
  "td",
  "th",
  "blockquote",
  "pre",
  "br",
  "hr",
  "address",
  "center",
  "body",
  "html",
  "#root",
]);
const HEADINGS = new Set(["h1", "h2", "h3", "h4", "h5", "h6"]);
/** Elements that are boilerplate by their tag or ARIA role. */
const BOILERPLATE_TAGS = new Set(["nav", "footer", "aside", "menu"]);
const BOILERPLATE_ROLES = new Set([
  "navigation",
  "banner",
  "contentinfo",
  "complementary",
  "dialog",
  "menu",
  "menubar",
  "search",
  "alert",
]);
/** class/id words of boilerplate containers (cookie banners, menus, share bars, ads, comments…). */
const BOILERPLATE_WORDS = new Set([
  "cookie",
  "cookies",
  "consent",
  "gdpr",
  "banner",
  "navbar",
  "nav",
  "navigation",
  "menu",
  "breadcrumb",
  "breadcrumbs",
  "footer",
  "sidebar",
  "share",
  "sharing",
  "shariff",
  "sharedaddy",
  "social",
  "socials",
  "advert",
  "advertisement",
  "ad",
  "ads",
  "adslot",
  "sponsor",
  "sponsored",
  "promo",
  "popup",
  "modal",
  "newsletter",
  "subscribe",
  "subscription",
  "paywall",
  "related",
  "skip",
  "toolbar",
  "masthead",
  "signup",
  "login",
  "pagination",
  "pager",
  "popular",
  "trending",
  "recommended",
  "recommendations",
  "outbrain",
  "taboola",
  "tags",
  "tagcloud",
  "rss",
  "byline",
  "author",
  "meta",
  "topbar",
  "offcanvas",
  "overlay",
  "lightbox",
  "hidden",
  "noprint",
  "likes",
  "rating",
  "ratings",
  "caption",
  "credit",
  "credits",
  "copyright",
  "bio",
  "disclaimer",
  "cta",
  "donate",
  "donation",
  "follow",
]);
/** Words that mark comments and reader reactions, which no content word protects. */
const COMMENT_WORDS = new Set([
  "comment",
  "comments",
  "disqus",
  "respond",
  "replies",
  "kommentar",
  "kommentare",
]);
/** class/id words of containers that hold the content: they protect an element from the words above. */
const CONTENT_WORDS = new Set([
  "article",
  "articles",
  "content",
  "contents",
  "main",
  "body",
  "post",
  "entry",
  "story",
  "text",
  "embed",
  "blog",
  "artikel",
  "inhalt",
  "beitrag",
]);

/** First words of class names that say nothing about what an element is. */
const STATE_WORDS = new Set([
  "tag",
  "category",
  "has",
  "with",
  "without",
  "no",
  "non",
  "is",
  "show",
  "hide",
  "js",
]);
/** Last words of class names of layout boxes (`sidebar-layout`, `nav-wrapper` hold anything). */
const LAYOUT_WORDS = new Set([
  "layout",
  "wrapper",
  "wrap",
  "container",
  "grid",
  "row",
  "col",
  "column",
  "columns",
]);

/** Any of the words above inside a name: a quick test that most names fail. */
const ANY_WORD = new RegExp(
  `(?:^|[^a-z])(?:${[...BOILERPLATE_WORDS, ...COMMENT_WORDS, ...CONTENT_WORDS].join("|")})(?:$|[^a-z])`,
  "i",
);

/** What class and id say about an element: -2 comments, -1 boilerplate, 1 content, 0 nothing. */
const enum Marker {
  Comments = -2,
  Boilerplate = -1,
  None = 0,
  Content = 1,
}
/** What one class or id name says: bit 1 boilerplate, bit 2 content, bit 4 comments. */
const nameCache = new Map<string, number>();
/** Bit 8 beside those: the value holds one of the words at all (`ANY_WORD`). */
const HAS_WORD = 8;
/**
 * What a class or id value that holds one of the words says, with `HAS_WORD`. Pages and sites repeat
 * values: 194,000 such values in the 990 benchmark pages, 68,000 distinct ones.
 */
const valueCache = new Map<string, number>();

/**
 * Reads class and id: each name (`entry-footer`, `content-with-sidebar`) is split into words and
 * judged by its last boilerplate or content word (`entry-footer` is a footer, `post-author` an author
 * box); one content name among the element's names protects it (`has-section-nav main-content`);
 * comment words win over everything.
 */
function valueFlags(value: string): number {
  // Most class and id values hold none of the words: say so without building strings.
  if (!ANY_WORD.test(value)) return 0;
  const known = valueCache.get(value);
  if (known !== undefined) return known;
  const flags = HAS_WORD | namesFlags(value.toLowerCase());
  if (valueCache.size > 100_000) valueCache.clear();
  valueCache.set(value, flags);
  return flags;
}

/** The flags of the names in a lower-cased class or id value. */
function namesFlags(value: string): number {
  let flags = 0;
  for (const name of value.split(/\s+/)) {
    if (!name) continue;
    let f = nameCache.get(name);
    if (f === undefined) {
      f = judgeName(name);
      if (nameCache.size > 50_000) nameCache.clear();
      nameCache.set(name, f);
    }
    flags |= f;
  }
  return flags;
}

function judgeName(name: string): number {
  const words = name.split(/[^a-z]+/);
  // WordPress's `tag-…`/`category-…` names carry the author's own words; `has-sidebar`,
  // `with-ads`, `no-comments` describe a state, not what the element is.
  if (STATE_WORDS.has(words[0])) return 0;
  let comments = false;
  let last = Marker.None;
  for (const word of words) {
    if (STATE_WORDS.has(word)) break; // `section--has-ads`, `wrapper__with-sidebar`: the rest is a state
    if (COMMENT_WORDS.has(word)) comments = true;
    else if (BOILERPLATE_WORDS.has(word)) last = Marker.Boilerplate;
    else if (CONTENT_WORDS.has(word)) last = Marker.Content;
    else if (LAYOUT_WORDS.has(word)) last = Marker.None;
  }
  if (comments) return 4;
  // A name that starts with a boilerplate word is boilerplate too (`related-posts`, `share-content`),
  // unless it ends in an embed (`social-media-embed` is a tweet in the article).
  if (last === Marker.Boilerplate || (BOILERPLATE_WORDS.has(words[0]) && words.at(-1) !== "embed")) return 1;
  return last === Marker.Content ? 2 : 0;
}

/** What the extractor computes for each element. */
interface Info {
  el: HtmlElement;
  parent: Info | undefined;
  /** Characters of text (whitespace runs counted as one) under the element, dropped parts excluded. */
  chars: number;
  /** Of those, characters inside links. */
  linkChars: number;
  /** Characters of its own text runs: direct text and inline children, not text inside child blocks. */
  inlineChars: number;
  /** Commas in those runs. */
  inlineCommas: number;
  /** Characters inside links in those runs. */
  inlineLinks: number;
  /** Characters of its own text children, and commas in them. */
  ownChars: number;
  ownCommas: number;
  /** Characters of prose under it: text runs of 40 characters or more with few links. */
  prose: number;
  /** What its class and id say. */
  verdict: Marker;
  /** Its tag ends a line of text (`BLOCK_TAGS`). */
  block: boolean;
  /** Removed as boilerplate (itself or an ancestor). */
  removed: boolean;
  /** The content score of a candidate container (Readability's scoring). */
  score: number;
  /** Text blocks under it that count as paragraphs (for the candidate score). */
  scored: boolean;
}

function isHidden(el: HtmlElement): boolean {
  const a = el.attrs;
  return "hidden" in a || a["aria-hidden"] === "true" ||
    (a.style !== undefined && /(?:display\s*:\s*none|visibility\s*:\s*hidden)/i.test(a.style));
}

/** What class and id say about an element: only when one of them holds a word, all their names. */
function markerVerdict(el: HtmlElement): Marker {
  const { class: cls, id } = el.attrs;
  const ofClass = cls === undefined ? 0 : valueFlags(cls);
  const ofId = id === undefined ? 0 : valueFlags(id);
  if (!((ofClass | ofId) & HAS_WORD)) return Marker.None;
  // A value without the words has no flags, as far as `ANY_WORD` sees; its names are read all the
  // same (lower-casing could make a word of one, as the Kelvin sign `K` becomes `k`).
  const flags = (ofClass & HAS_WORD ? ofClass : cls ? namesFlags(cls.toLowerCase()) : 0) |
    (ofId & HAS_WORD ? ofId : id ? namesFlags(id.toLowerCase()) : 0);
  return flags & 4
    ? Marker.Comments
    : flags & 2
    ? Marker.Content
    : flags & 1
    ? Marker.Boilerplate
    : Marker.None;
}

/** Whether an element looks like boilerplate from its tag, role, class and id alone. */
function looksLikeBoilerplate(info: Info): boolean {
  const el = info.el;
  if (BOILERPLATE_TAGS.has(el.tag)) return true;
  if (el.attrs.role !== undefined && BOILERPLATE_ROLES.has(el.attrs.role.toLowerCase())) return true;
  if (el.tag === "body" || el.tag === "html" || el.tag === "main" || el.tag === "article") return false;
  return info.verdict < 0;
}

/** The text of the first `<title>` at or under an element (the one of the page: SVG titles are dropped). */
function titleIn(el: HtmlElement): string {
  let found: HtmlElement | undefined;
  walk(el, (e) => {
    if (found) return false;
    if (e.tag === "title") found = e;
  });
  return found ? textOf(found).replace(/\s+/g, " ").trim() : "";
}

/** Readability's weight of a candidate's class and id. */
const classWeight = (info: Info) => info.verdict > 0 ? 25 : info.verdict < 0 ? -25 : 0;

const TAG_WEIGHT: Record<string, number> = {
  div: 5,
  article: 5,
  main: 5,
  section: 2,
  pre: 3,
  td: 3,
  blockquote: 3,
  address: -3,
  ol: -3,
  ul: -3,
  dl: -3,
  dd: -3,
  dt: -3,
  li: -3,
  form: -3,
  h1: -5,
  h2: -5,
  h3: -5,
  h4: -5,
  h5: -5,
  h6: -5,
  th: -5,
};

/** Commas seen by the last {@linkcode countChars} (a sign of prose, in Readability's score). */
let lastCommas = 0;

const isDigit = (c: number) => c >= 48 && c <= 57;

/** Whether `String.prototype.trim` removes a character (ECMAScript white space and line terminators). */
const isTrimmed = (c: number) =>
  c <= 32 ? c === 32 || (c >= 9 && c <= 13) : c >= 160 &&
    (c === 160 || c === 0x1680 || (c >= 0x2000 && c <= 0x200a) || c === 0x2028 || c === 0x2029 ||
      c === 0x202f || c === 0x205f || c === 0x3000 || c === 0xfeff);

/** Runs of the white space that {@linkcode countChars} counts once, and the commas it counts. */
const SPACE_RUN = /[\t\n\v\f\r \u00a0]{2,}/g;
const COMMA = /[,\uff0c\u3001\u060c]/g;

/**
 * Counts the characters of a text with whitespace runs as one (so indentation does not count), as if
 * trimmed first, and its commas. Regular expressions find the runs and the commas: a loop over every
 * character took twice as long (most text nodes are indentation between tags, found by the trim).
 */
function countChars(text: string): number {
  let start = 0;
  let end = text.length;
  while (start < end && isTrimmed(text.charCodeAt(start))) start++;
  if (start === end) {
    lastCommas = 0;
    return 0;
  }
  while (isTrimmed(text.charCodeAt(end - 1))) end--;
  // The trimmed text starts and ends with a character that is no white space, so each run lies
  // wholly inside it or wholly outside.
  let n = end - start;
  SPACE_RUN.lastIndex = start;
  for (let m = SPACE_RUN.exec(text); m && m.index < end; m = SPACE_RUN.exec(text)) n -= m[0].length - 1;
  let commas = 0;
  COMMA.lastIndex = start;
  for (let m = COMMA.exec(text); m && m.index < end; m = COMMA.exec(text)) {
    const i = m.index;
    // A comma between digits groups them (`17,546.65` in a stock ticker); it doesn't join clauses.
    // (The characters around the trimmed text are white space, never digits.)
    if (!(text.charCodeAt(i) === 44 && isDigit(text.charCodeAt(i - 1)) && isDigit(text.charCodeAt(i + 1)))) {
      commas++;
    }
  }
  lastCommas = commas;
  return n;
}

/** A block this long (characters) is a paragraph of the text; under {@linkcode SHORT_BLOCK}, a fragment. */
const LONG_BLOCK = 200;
const SHORT_BLOCK = 50;
/** A candidate container with fewer characters than this loses to any larger one. */
const MIN_CONTAINER = 100;
/** A block with `©` shorter than this (characters) is a copyright line or a credit, not prose. */
const COPYRIGHT_BLOCK = 1000;
/** A line shorter than this (characters) that repeats is a label. */
const REPEATED_LINE = 100;
/** An e-mail address or a web address written out in the text. */
const CONTACT = /\S@\S+\.[a-z]|https?:\/\/|\bwww\.\S/i;

/**
 * Extracts the title and main text of an HTML document. Never throws on malformed HTML; time is linear
 * in the length of the page whatever its nesting.
 *
 * The approach, after trafilatura and Readability: parse a tree; drop what is never text (scripts,
 * styles, form controls, SVG, image captions, ruby annotations…) and hidden elements; remove
 * boilerplate containers (navigation, footers, sidebars, share bars, comments…) by tag, ARIA role and
 * class/id words (see `valueFlags`), unless the container holds most of the page's prose (a layout
 * wrapper); score candidate containers by the paragraphs under them (Readability's score: commas and
 * length, less link text; commas between digits don't count, and a box with less text than a short
 * paragraph can't win on its class name) and keep the best one with its siblings that score close to
 * it; take every block in them but link-dense ones (menus, tag lists, "read more" links), and long
 * prose outside them too (text the layout split from its container). Then drop, by the shape of the
 * text rather than its words (so in any language): the short pieces after the last paragraph (the
 * tail: "Related", "Share", credits) and before the headline (kicker, breadcrumbs, date line); a label
 * ending in a colon right before a block that was dropped, and a short line that is no sentence right
 * before a dropped link list (their headings); lines with
 * `©` (copyright notices, picture credits); after the last paragraph, lines with an e-mail or web
 * address written out (contact lines, "get our app at www…"); short lines repeated three times or
 * more (a template's labels). A page with almost no text whose `<noscript>` holds it gets that text.
 *
 * Measured on trafilatura's evaluation set, with its metric: F1 0.935 (trafilatura 2.2: 0.924);
 * `bench/extraction_bench.ts`.
 */
export function extractText(html: string): Extracted {
  const page = extractFrom(html, DROP_CONTENT);
  // A page that writes its text with a script may carry it in <noscript> for clients without one.
  if (page.text.length < NOSCRIPT_FALLBACK && html.includes("<noscript")) {
    const fallback = extractFrom(html, DROP_WITH_NOSCRIPT);
    if (fallback.text.length > 2 * page.text.length + 100) return fallback;
  }
  return page;
}

/** Below this many characters of text, the text inside `<noscript>` is looked at. */
const NOSCRIPT_FALLBACK = 250;
const DROP_WITH_NOSCRIPT = new Set([...DROP_CONTENT].filter((tag) => tag !== "noscript"));

function extractFrom(html: string, drop: Set<string>): Extracted {
  const root = parseHtml(html, { dropContent: drop, attributes: ATTRIBUTES });
  let title = "";
  // Preorder list of the elements worth looking at, with their info.
  const infos: Info[] = [];
  const infoAt: (Info | undefined)[] = []; // by element index
  const infoOf = (el: HtmlElement) => infoAt[el.index];
  walk(root, (el) => {
    if (el.tag === "title" || el.tag === "head") {
      if (!title) title = titleIn(el);
      return false;
    }
    if (drop.has(el.tag) || isHidden(el)) return false;
    const info: Info = {
      el,
      parent: el.parent && infoOf(el.parent),
      verdict: markerVerdict(el),
      block: BLOCK_TAGS.has(el.tag),
      chars: 0,
      linkChars: 0,
      inlineChars: 0,
      inlineCommas: 0,
      inlineLinks: 0,
      ownChars: 0,
      ownCommas: 0,
      prose: 0,
      removed: false,
      score: 0,
      scored: false,
    };
    infos.push(info);
    infoAt[el.index] = info;
  });
  // Sizes, bottom up (reverse preorder visits children before parents).
  for (const info of infos) {
    for (const child of info.el.children) {
      if (typeof child !== "string") continue;
      info.ownChars += countChars(child);
      info.ownCommas += lastCommas;
    }
  }
  const aggregate = () => {
    for (const info of infos) {
      info.chars = info.inlineChars = info.ownChars;
      info.inlineCommas = info.ownCommas;
      info.linkChars = info.inlineLinks = info.prose = 0;
    }
    for (let i = infos.length - 1; i >= 0; i--) {
      const info = infos[i];
      if (info.removed) continue;
      if (info.el.tag === "a") info.linkChars = info.inlineLinks = info.chars;
      const isBlock = info.block;
      if (isBlock && info.inlineChars >= 40 && info.inlineLinks < 0.3 * info.inlineChars) {
        info.prose += info.inlineChars;
      }
      const parent = info.parent;
      if (parent) {
        parent.chars += info.chars;
        parent.linkChars += info.linkChars;
        parent.prose += info.prose;
        if (!isBlock) {
          parent.inlineChars += info.inlineChars;
          parent.inlineCommas += info.inlineCommas;
          parent.inlineLinks += info.inlineLinks;
        }
      }
    }
  };
  aggregate();
  const pageProse = Math.max(1, infos[0]?.prose ?? 1);

  // Boilerplate, top down: a removed element removes its subtree. A container that holds most of the
  // page's text with few links is a layout wrapper whatever its class says (comments aside).
  for (const info of infos) {
    if (info.parent?.removed) {
      info.removed = true;
      continue;
    }
    if (!looksLikeBoilerplate(info)) continue;
    const wrapper = info.prose > 0.5 * pageProse && info.verdict !== Marker.Comments;
    if (!wrapper) info.removed = true;
  }
  aggregate();

  // Candidate containers scored by the paragraphs under them.
  const candidates: Info[] = [];
  for (const info of infos) {
    if (info.removed || !info.block || info.inlineChars < 25) continue;
    if (HEADINGS.has(info.el.tag)) continue;
    const score = 1 + info.inlineCommas + Math.min(Math.floor(info.inlineChars / 100), 3);
    let ancestor = info.parent;
    for (let level = 0; ancestor && level < 5; level++, ancestor = ancestor.parent) {
      if (!ancestor.scored) {
        ancestor.scored = true;
        ancestor.score = (TAG_WEIGHT[ancestor.el.tag] ?? 0) + classWeight(ancestor);
        candidates.push(ancestor);
      }
      ancestor.score += score / (level === 0 ? 1 : level === 1 ? 2 : level * 3);
    }
  }
  let top: Info | undefined;
  let topScore = -Infinity;
  // A container with less text than a short paragraph can't be the page's text, however its class
  // scores (a `content` class on a ticker box); it wins only when nothing larger scores.
  let small: Info | undefined;
  let smallScore = -Infinity;
  for (const c of candidates) {
    const s = c.score * (1 - c.linkChars / Math.max(1, c.chars));
    c.score = s;
    if (c.chars < MIN_CONTAINER) {
      if (s > smallScore) {
        smallScore = s;
        small = c;
      }
    } else if (s > topScore) {
      topScore = s;
      top = c;
    }
  }
  if (!top) {
    top = small;
    topScore = smallScore;
  }

  // The containers to take text from: the best candidate and its siblings that score close to it.
  let chosen: Info[];
  if (!top) {
    chosen = infos.length ? [infos[0]] : [];
  } else {
    top = widen(top, candidates);
    chosen = [];
    const threshold = Math.max(10, topScore * 0.2);
    for (const sibling of top.parent ? top.parent.el.children : [top.el]) {
      if (typeof sibling === "string") continue;
      const info = infoOf(sibling);
      if (!info || info.removed) continue;
      if (info === top || (info.scored && info.score >= threshold)) {
        chosen.push(info);
        continue;
      }
      const linkDensity = info.linkChars / Math.max(1, info.chars);
      if (info.el.tag === "p" && info.chars > 80 && linkDensity < 0.25) chosen.push(info);
    }
  }
  const found = infos.length ? textBlocks(infos[0], new Set(chosen), infoOf) : [];
  // What follows the last paragraph of the text in short pieces is its tail: "Related:", "Share this",
  // credits, a contact line, a call to subscribe.
  let lastLong = -1;
  for (let i = 0; i < found.length; i++) if (found[i].text.length >= LONG_BLOCK) lastLong = i;
  if (lastLong >= 0) {
    let end = found.length;
    while (end > lastLong + 1 && found[end - 1].text.length < SHORT_BLOCK) end--;
    found.length = end;
  }
  const kept = found.filter((b, i) =>
    !b.label &&
    // A copyright notice or picture credit (`© 2022 Site`, `Photo: © AFP`) whatever its language.
    !(b.chars < COPYRIGHT_BLOCK && b.text.includes("©")) &&
    // After the last paragraph, an address or a link written out is a contact line or a pitch
    // ("write to us at…", "download our app at www…").
    !(lastLong >= 0 && i > lastLong && CONTACT.test(b.text))
  );
  // A short line that comes back three times or more is a template's label ("Read more", "via…",
  // "Advertisement"), not text (table cells aside: their values repeat).
  const copies = new Map<string, number>();
  for (const b of kept) if (!b.cell) copies.set(b.text, (copies.get(b.text) ?? 0) + 1);
  const blocks = kept.filter((b) => b.cell || b.text.length >= REPEATED_LINE || copies.get(b.text)! < 3)
    .map((b) => b.text);
  // The headline often sits above the container of the text (in a page header): keep it.
  const headline = infos.find((i) => i.el.tag === "h1" && !i.removed && i.chars > 0);
  if (headline && !chosen.some((c) => isWithin(headline, c))) {
    const text = textOf(headline.el).replace(/\s+/g, " ").trim();
    if (text && !blocks.includes(text)) blocks.unshift(text);
  }
  // Short pieces before the headline are its kicker, breadcrumbs, date line.
  if (headline) {
    const at = blocks.indexOf(textOf(headline.el).replace(/\s+/g, " ").trim());
    if (at > 0 && blocks.slice(0, at).every((b) => b.length < SHORT_BLOCK)) blocks.splice(0, at);
  }
  return { title, text: blocks.join("\n\n") };
}

const STOP_CLIMB = new Set(["#root", "html", "body"]);

/** Whether an element is the only element in its parent, beside whitespace. */
function onlyChild(info: Info): boolean {
  for (const sibling of info.parent!.el.children) {
    if (sibling === info.el) continue;
    if (typeof sibling === "string" ? /\S/.test(sibling) : sibling.tag !== "br") return false;
  }
  return true;
}

/** Whether `inner` is `outer` or under it. */
function isWithin(inner: Info, outer: Info): boolean {
  for (let a: Info | undefined = inner; a; a = a.parent) if (a === outer) return true;
  return false;
}

/**
 * Readability's second look at the best candidate: content split over several containers (a grid,
 * paragraphs grouped in boxes) makes several good candidates with a common ancestor, which is the real
 * container; a parent scoring higher than its child is a better container; an only child says no more
 * than its parent.
 */
function widen(top: Info, candidates: Info[]): Info {
  const best = candidates.filter((c) => c !== top && c.score >= top.score * 0.75)
    .sort((a, b) => b.score - a.score).slice(0, 4);
  if (best.length >= 3) {
    // The nearest ancestor of `top` that holds three of them (each walk stops at top's ancestors).
    const ancestors: Info[] = [];
    for (let a = top.parent; a && a.el.tag !== "#root"; a = a.parent) ancestors.push(a);
    const rank = new Map(ancestors.map((a, i) => [a, i]));
    const meets: number[] = [];
    for (const c of best) {
      let a = c.parent;
      while (a && !rank.has(a)) a = a.parent;
      if (a) meets.push(rank.get(a)!);
    }
    meets.sort((x, y) => x - y);
    if (meets.length >= 3) top = ancestors[meets[2]];
  }
  let lastScore = top.score;
  const floor = lastScore / 3;
  for (let parent = top.parent; parent && parent.el.tag !== "body"; parent = parent.parent) {
    if (!parent.scored) continue;
    if (parent.score < floor) break;
    if (parent.score > lastScore) {
      top = parent;
      break;
    }
    lastScore = parent.score;
  }
  while (top.parent && !STOP_CLIMB.has(top.parent.el.tag) && onlyChild(top)) top = top.parent;
  return top;
}

/**
 * Prose outside the chosen containers this long (characters) is kept too (content the layout split
 * from its container): before the end of the main text, and after it.
 */
const EXTRA_PROSE_BEFORE = 80;
const EXTRA_PROSE_AFTER = 250;

/** One block of text with what the rules read about it. */
interface Block {
  text: string;
  /** Characters, whitespace runs counted as one. */
  chars: number;
  /** A table cell. */
  cell: boolean;
  /** A label whose content was dropped ("Related:", "Contact:" before a link list or a form). */
  label: boolean;
}

/** A short line ending in a colon: a label of what follows ("Read more:", "Contact:", "Photo:"). */
const isLabel = (b: Block) => b.chars < SHORT_BLOCK && b.text.endsWith(":");

/** A short line that doesn't end a sentence: a heading or a caption of what follows. */
const isCaption = (b: Block) => b.chars < SHORT_BLOCK && !/[.!?…。！？]$/.test(b.text);

/**
 * The text blocks of the page in document order: every block in the chosen containers but link-dense
 * ones (menus, tag lists, "read more" links), and outside them only long runs of prose.
 */
function textBlocks(
  root: Info,
  chosen: Set<Info>,
  infoOf: (el: HtmlElement) => Info | undefined,
): Block[] {
  const blocks: Block[] = [];
  let current = "";
  let linkChars = 0;
  let linkDepth = 0;
  let preDepth = 0;
  let chosenDepth = 0;
  let chosenLeft = chosen.size; // chosen containers not yet left behind
  const owners: Info[] = [];
  let previous: Block | undefined; // the block the last flush kept, if it kept one
  const flush = () => {
    let text = preDepth ? current.replace(/^\n+|\s+$/g, "") : current.trim();
    if (!preDepth && text.length) {
      // Text nodes arrive with their whitespace runs already made single spaces; joined, two may meet.
      if (text.includes("  ")) text = text.replace(/ {2,}/g, " ");
      if (text.includes("\n")) text = text.replace(/ ?\n ?/g, "\n");
    }
    current = "";
    const links = linkChars;
    linkChars = 0;
    if (!text) return;
    const chars = countChars(text);
    const owner = owners[owners.length - 1];
    const cell = owner?.el.tag === "td" || owner?.el.tag === "th";
    const before = previous;
    previous = undefined;
    let block: Block | undefined;
    let dense = false;
    if (chosenDepth > 0) {
      dense = links / chars > 0.5 && chars < 400;
      if (!dense) block = { text, chars, cell, label: false };
    } else {
      // Prose before the end of the main text is often its lead or intro split off by the layout; after
      // it come sidebars, teasers and footers, so only long prose counts there.
      const need = chosenLeft > 0 ? EXTRA_PROSE_BEFORE : EXTRA_PROSE_AFTER;
      if (owner && !HEADINGS.has(owner.el.tag) && chars >= need && links < 0.2 * chars) {
        block = { text, chars, cell, label: false };
      }
    }
    if (block) {
      blocks.push(block);
      previous = block;
    } else if (before && (isLabel(before) || (dense && isCaption(before)))) {
      // A label right before what was dropped, or a short line that is no sentence right before a link
      // list (its heading: "Read more", "On the same topic"), introduces nothing that is kept.
      before.label = true;
    }
  };
  walk(
    root.el,
    (el) => {
      const info = infoOf(el);
      if (!info || info.removed) return false;
      if (el.tag === "br") current += "\n";
      else if (info.block) {
        flush();
        owners.push(info);
      }
      if (chosen.has(info)) chosenDepth++;
      if (el.tag === "a") linkDepth++;
      if (el.tag === "pre") preDepth++;
    },
    (el) => {
      const info = infoOf(el)!;
      if (info.block && el.tag !== "br") {
        flush();
        owners.pop();
      }
      if (chosen.has(info)) {
        chosenDepth--;
        chosenLeft--;
      }
      if (el.tag === "a") linkDepth--;
      if (el.tag === "pre") preDepth--;
    },
    (text) => {
      // Line breaks in the source are spaces; only <br> and blocks break lines (<pre> aside).
      current += preDepth || !/\s\s|[\t\n\r\f\v\u00a0]/.test(text) ? text : text.replace(/\s+/g, " ");
      if (linkDepth) linkChars += countChars(text);
    },
  );
  flush();
  if (previous && isLabel(previous)) previous.label = true;
  return blocks;
}
