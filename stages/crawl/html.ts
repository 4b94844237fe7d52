/**
 * A forgiving HTML tree builder that takes time linear in the page size whatever the nesting, on top of
 * `htmlparser2`'s tokenizer.
 *
 * Why not `htmlparser2`'s `Parser` or `parseDocument`: their open-element stack is an array used from
 * the front (`unshift`/`shift`), so every open tag costs the current depth: 200,000 nested `<div>`s
 * take over 30 s (measured, htmlparser2 12.0). Its `Tokenizer` is linear and handles the hard part
 * (raw text in `<script>`/`<style>`/`<title>`/`<textarea>`, comments, entities), so only tree
 * construction is done here: a stack used from the end, a count of open elements per tag name so an
 * end tag with no open element is ignored in O(1), and the common implied end tags (`<p>` closed by a
 * block, `<li>` by the next `<li>`, table cells and rows, `<option>`, `<dd>`/`<dt>`).
 *
 * Entities are decoded here rather than by the tokenizer: with `decodeEntities` on, it looks at text
 * and attribute values one character at a time, while without it skips to the next `<` or quote, and
 * most runs hold no `&` (0.65 s instead of 1.05 s for the 990 pages of the extraction benchmark).
 * `entities` (the tokenizer's own decoder) decodes the runs that do, with the same rules: text as
 * text (legacy entities without `;`), attribute values as attributes; raw text (`<script>`, `<style>`…)
 * not at all.
 *
 * @example
 * ```ts
 * import { parseHtml, textOf } from "./html.ts";
 * const root = parseHtml("<div class=a><p>Hello <b>world</b><p>again</div>");
 * console.log(root.children[0], textOf(root)); // the div; "Hello worldagain"
 * ```
 * @module
 */
import { Tokenizer } from "npm:htmlparser2@^12.0.0";
import { decodeHTML, decodeHTMLAttribute } from "npm:entities@^8.0.0";

/** An element: lower-cased tag and attribute names, its children in document order. */
export interface HtmlElement {
  /** Order of creation (document order), 0 for the root: an index for callers' own tables. */
  index: number;
  tag: string;
  attrs: Record<string, string>;
  parent: HtmlElement | undefined;
  children: HtmlNode[];
}
/** A child of an element: an element or a run of text (entities decoded). */
export type HtmlNode = HtmlElement | string;

const VOID = new Set([
  "area",
  "base",
  "basefont",
  "br",
  "col",
  "command",
  "embed",
  "frame",
  "hr",
  "img",
  "input",
  "isindex",
  "keygen",
  "link",
  "meta",
  "param",
  "source",
  "track",
  "wbr",
]);

const P_CLOSERS = [
  "address",
  "article",
  "aside",
  "blockquote",
  "details",
  "div",
  "dl",
  "fieldset",
  "figcaption",
  "figure",
  "footer",
  "form",
  "header",
  "hr",
  "main",
  "nav",
  "ol",
  "p",
  "pre",
  "section",
  "table",
  "ul",
  "h1",
  "h2",
  "h3",
  "h4",
  "h5",
  "h6",
];
/** An open tag closes the open elements on top of the stack that it cannot be inside of. */
const IMPLIES_CLOSE = new Map<string, Set<string>>([
  ...P_CLOSERS.map((tag) => [tag, new Set(["p"])] as [string, Set<string>]),
  ...["h1", "h2", "h3", "h4", "h5", "h6"].map((h) =>
    [h, new Set(["p", "h1", "h2", "h3", "h4", "h5", "h6"])] as [string, Set<string>]
  ),
  ["li", new Set(["li", "p"])],
  ["dd", new Set(["dd", "dt", "p"])],
  ["dt", new Set(["dd", "dt", "p"])],
  ["tr", new Set(["tr", "td", "th"])],
  ["td", new Set(["td", "th"])],
  ["th", new Set(["td", "th"])],
  ["tbody", new Set(["tbody", "thead", "tr", "td", "th"])],
  ["tfoot", new Set(["tbody", "thead", "tr", "td", "th"])],
  ["option", new Set(["option"])],
  ["optgroup", new Set(["optgroup", "option"])],
  ["a", new Set(["a"])],
  ["rt", new Set(["rt", "rp"])],
  ["rp", new Set(["rt", "rp"])],
]);
/**
 * Elements whose content the tokenizer reads as raw text, entities undecoded (outside SVG and MathML);
 * `<title>` and `<textarea>` are read to their end tag too, but with entities.
 */
const RAW_TEXT = new Set(["script", "style", "iframe", "noembed", "noframes", "xmp", "plaintext"]);

/** What may stand in `<head>`: any other start tag there opens the body (a page that forgot `</head>`). */
const HEAD_CONTENT = new Set([
  "base",
  "link",
  "meta",
  "title",
  "style",
  "script",
  "noscript",
  "template",
  "object",
  "param",
]);

/** Options of {@linkcode parseHtml}. */
export interface ParseHtmlOptions {
  /** Elements kept as empty leaves: their content (text and elements) is dropped while parsing. */
  dropContent?: Set<string>;
  /** Attributes to keep (lower-case names); default all. Keeping few makes parsing faster. */
  attributes?: Set<string>;
}

/**
 * Parses HTML into a tree under a synthetic root element (tag `#root`). Never throws; time and memory
 * are linear in the input length.
 */
export function parseHtml(html: string, options: ParseHtmlOptions = {}): HtmlElement {
  const dropContent = options.dropContent;
  const keepAttribute = options.attributes;
  let keep = false; // whether the attribute being read is kept
  const longestKept = Math.max(0, ...[...keepAttribute ?? []].map((name) => name.length));
  let count = 0;
  const element = (tag: string): HtmlElement => ({
    index: count++,
    tag,
    attrs: {},
    parent: undefined,
    children: [],
  });
  const root = element("#root");
  const stack: HtmlElement[] = [root];
  const openCount = new Map<string, number>();
  let dropDepth = 0; // > 0 inside an element of `dropContent`
  let pending: HtmlElement | undefined; // the element whose start tag is being read
  let attrName = "";
  let attrValue = "";
  let inForeign = 0; // inside <svg>/<math>, where `<x/>` closes itself
  let pendingRaw = false; // the start tag being read opens raw text
  let rawText = false; // in raw text: from the start tag of a RAW_TEXT element to the next end tag

  const top = () => stack[stack.length - 1];
  const addText = (text: string) => {
    if (dropDepth || !text) return;
    const children = top().children;
    const last = children.length - 1;
    if (last >= 0 && typeof children[last] === "string") children[last] += text;
    else children.push(text);
  };
  const pop = () => {
    const el = stack.pop()!;
    openCount.set(el.tag, openCount.get(el.tag)! - 1);
    if (dropContent?.has(el.tag)) dropDepth--;
    if (el.tag === "svg" || el.tag === "math") inForeign--;
    return el;
  };
  let seenBody = false;
  const open = (el: HtmlElement) => {
    // A page has one <html> and one <body>: a second (a document pasted into a post) adds nothing.
    if ((el.tag === "html" && stack.length > 1) || (el.tag === "body" && seenBody)) return;
    if (el.tag === "body") seenBody = true;
    // `</head>` may be left out: the body starts with `<body>` or with the first element that cannot be
    // in the head (the body's own start tag may be missing too).
    if (top().tag === "head" && (el.tag === "body" || !HEAD_CONTENT.has(el.tag))) close("head");
    else if (el.tag === "body" && openCount.get("head")) close("head");
    const closes = IMPLIES_CLOSE.get(el.tag);
    if (closes) { while (stack.length > 1 && closes.has(top().tag)) pop(); }
    el.parent = top();
    if (!dropDepth) el.parent.children.push(el);
    if (VOID.has(el.tag)) return;
    stack.push(el);
    openCount.set(el.tag, (openCount.get(el.tag) ?? 0) + 1);
    if (dropContent?.has(el.tag)) dropDepth++;
    if (el.tag === "svg" || el.tag === "math") inForeign++;
  };
  const close = (tag: string) => {
    // `</body>` and `</html>` close nothing: text after them still belongs to the body (as in browsers).
    if (tag === "body" || tag === "html") return;
    if (VOID.has(tag)) {
      if (tag === "br") open(element(tag));
      return;
    }
    if (!openCount.get(tag)) {
      if (tag === "p") open(element(tag)); // `</p>` alone: an empty p
      return;
    }
    // Every element popped here is closed for good, so the loops over a whole parse stay linear.
    while (stack.length > 1 && pop().tag !== tag);
  };

  const tokenizer = new Tokenizer({ decodeEntities: false }, {
    onopentagname(start, end) {
      pending = element(html.slice(start, end).toLowerCase());
      pendingRaw = !inForeign && RAW_TEXT.has(pending.tag);
    },
    onattribname(start, end) {
      keep = !keepAttribute ||
        (end - start <= longestKept && keepAttribute.has(attrName = html.slice(start, end).toLowerCase()));
      if (!keepAttribute) attrName = html.slice(start, end).toLowerCase();
      attrValue = "";
    },
    onattribdata(start, end) {
      if (keep) attrValue += html.slice(start, end);
    },
    onattribentity() {}, // entities are decoded in `onattribend`
    onattribend() {
      if (keep && pending && !(attrName in pending.attrs)) {
        pending.attrs[attrName] = attrValue.includes("&") ? decodeHTMLAttribute(attrValue) : attrValue;
      }
    },
    onopentagend() {
      rawText = pendingRaw;
      if (pending) open(pending);
      pending = undefined;
    },
    onselfclosingtag() {
      rawText = pendingRaw; // `<script/>` opens raw text all the same in HTML
      if (!pending) return;
      const el = pending;
      pending = undefined;
      open(el);
      if (inForeign && top() === el) pop();
    },
    onclosetag(start, end) {
      rawText = false;
      close(html.slice(start, end).toLowerCase());
    },
    ontext(start, end) {
      if (dropDepth) return;
      const text = html.slice(start, end);
      addText(rawText || !text.includes("&") ? text : decodeHTML(text));
    },
    ontextentity() {}, // entities are decoded in `ontext`
    oncdata(start, end) {
      addText(html.slice(start, end));
    },
    oncomment() {},
    ondeclaration() {},
    onprocessinginstruction() {},
    onend() {},
    isInForeignContext: () => inForeign > 0,
  });
  tokenizer.write(html);
  tokenizer.end();
  return root;
}

/**
 * Calls `onTag` with the name and attributes of every start tag, in document order, without building
 * a tree (for link extraction: linear time, constant memory beyond the tag being read).
 */
export function scanStartTags(
  html: string,
  onTag: (tag: string, attrs: Record<string, string>) => void,
): void {
  let tag = "";
  let attrs: Record<string, string> = {};
  let attrName = "";
  let attrValue = "";
  const noop = () => {};
  const tokenizer = new Tokenizer({ decodeEntities: true }, {
    onopentagname(start, end) {
      tag = html.slice(start, end).toLowerCase();
      attrs = {};
    },
    onattribname(start, end) {
      attrName = html.slice(start, end).toLowerCase();
      attrValue = "";
    },
    onattribdata(start, end) {
      attrValue += html.slice(start, end);
    },
    onattribentity(codepoint) {
      attrValue += String.fromCodePoint(codepoint);
    },
    onattribend() {
      if (!(attrName in attrs)) attrs[attrName] = attrValue;
    },
    onopentagend: () => onTag(tag, attrs),
    onselfclosingtag: () => onTag(tag, attrs),
    onclosetag: noop,
    ontext: noop,
    ontextentity: noop,
    oncdata: noop,
    oncomment: noop,
    ondeclaration: noop,
    onprocessinginstruction: noop,
    onend: noop,
  });
  tokenizer.write(html);
  tokenizer.end();
}

/**
 * Visits the elements under `root` in document order (without recursion, so any depth is fine).
 * `enter` returning false skips the element's subtree; `leave` runs after its subtree.
 */
export function walk(
  root: HtmlElement,
  enter: (el: HtmlElement) => boolean | void,
  leave?: (el: HtmlElement) => void,
  text?: (text: string, parent: HtmlElement) => void,
): void {
  const els: HtmlElement[] = [root];
  const next: number[] = [0];
  if (enter(root) === false) return;
  while (els.length) {
    const depth = els.length - 1;
    const el = els[depth];
    const i = next[depth];
    if (i >= el.children.length) {
      els.pop();
      next.pop();
      leave?.(el);
      continue;
    }
    next[depth] = i + 1;
    const child = el.children[i];
    if (typeof child === "string") {
      text?.(child, el);
    } else if (enter(child) !== false) {
      els.push(child);
      next.push(0);
    }
  }
}

/** The text under an element, concatenated as it appears (no whitespace added between blocks). */
export function textOf(el: HtmlElement): string {
  let out = "";
  walk(el, () => {}, undefined, (t) => (out += t));
  return out;
}
