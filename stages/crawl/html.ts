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

/** What the tree builder knows of one tag name (see `IMPLIES_CLOSE`, `VOID`, `HEAD_CONTENT`, `RAW_TEXT`). */
interface TagState {
  tag: string;
  /** Open elements of this tag. */
  open: number;
  closes: Set<string> | undefined;
  isVoid: boolean;
  inHead: boolean;
  /** In `dropContent`. */
  drop: boolean;
  raw: boolean;
  /** `<svg>`, `<math>`. */
  foreign: boolean;
}

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
  // The kept names by length: a name is matched in place, without building a string for every
  // attribute of the page (most are not kept).
  const keptByLength: string[][] = [];
  for (const name of keepAttribute ?? []) (keptByLength[name.length] ??= []).push(name);
  /** The kept name that `html[start, end)` is, lower-cased, if any. */
  const keptName = (start: number, end: number): string | undefined => {
    const names = keptByLength[end - start];
    if (!names) return undefined;
    for (const name of names) {
      let i = 0;
      for (; i < name.length; i++) {
        let c = html.charCodeAt(start + i);
        if (c >= 128) { // lower-casing outside ASCII has its own rules (the Kelvin sign is a `k`)
          const lower = html.slice(start, end).toLowerCase();
          return keepAttribute!.has(lower) ? lower : undefined;
        }
        if (c >= 65 && c <= 90) c += 32;
        if (c !== name.charCodeAt(i)) break;
      }
      if (i === name.length) return name;
    }
    return undefined;
  };
  let count = 0;
  const element = (tag: string): HtmlElement => ({
    index: count++,
    tag,
    attrs: {},
    parent: undefined,
    children: [],
  });
  // What the rules below need of each tag name, looked up once per start or end tag in a table of the
  // page's own tags (a few dozen), with the count of its open elements.
  const tags = new Map<string, TagState>();
  const stateOf = (tag: string): TagState => {
    let state = tags.get(tag);
    if (!state) {
      state = {
        tag,
        open: 0,
        closes: IMPLIES_CLOSE.get(tag),
        isVoid: VOID.has(tag),
        inHead: HEAD_CONTENT.has(tag),
        drop: dropContent?.has(tag) ?? false,
        raw: RAW_TEXT.has(tag),
        foreign: tag === "svg" || tag === "math",
      };
      tags.set(tag, state);
    }
    return state;
  };
  // Tag names as read: a small table by length and first and last letters, checked in place, saves
  // building and lower-casing a string and looking it up for nearly every tag of a page.
  const recent: (TagState | undefined)[] = new Array(256);
  const tagAt = (start: number, end: number): TagState => {
    const length = end - start;
    const slot = (length * 7 + (html.charCodeAt(start) | 0x20) * 3 + (html.charCodeAt(end - 1) | 0x20)) & 255;
    const known = recent[slot];
    if (known && known.tag.length === length) {
      const name = known.tag;
      let i = 0;
      for (; i < length; i++) {
        let c = html.charCodeAt(start + i);
        if (c >= 65 && c <= 90) c += 32;
        else if (c >= 128) break; // lower-casing outside ASCII has its own rules
        if (c !== name.charCodeAt(i)) break;
      }
      if (i === length) return known;
    }
    return recent[slot] = stateOf(html.slice(start, end).toLowerCase());
  };
  const root = element("#root");
  const stack: HtmlElement[] = [root];
  const states: TagState[] = [stateOf("#root")]; // of the elements in `stack`
  let dropDepth = 0; // > 0 inside an element of `dropContent`
  let pending: HtmlElement | undefined; // the element whose start tag is being read
  let pendingState = states[0];
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
  const pop = (): TagState => {
    stack.pop();
    const state = states.pop()!;
    state.open--;
    if (state.drop) dropDepth--;
    if (state.foreign) inForeign--;
    return state;
  };
  let seenBody = false;
  const open = (el: HtmlElement, state: TagState) => {
    // A page has one <html> and one <body>: a second (a document pasted into a post) adds nothing.
    if ((el.tag === "html" && stack.length > 1) || (el.tag === "body" && seenBody)) return;
    if (el.tag === "body") seenBody = true;
    // `</head>` may be left out: the body starts with `<body>` or with the first element that cannot be
    // in the head (the body's own start tag may be missing too).
    if (top().tag === "head" && (el.tag === "body" || !state.inHead)) close(stateOf("head"));
    else if (el.tag === "body" && tags.get("head")?.open) close(stateOf("head"));
    const closes = state.closes;
    if (closes) { while (stack.length > 1 && closes.has(top().tag)) pop(); }
    el.parent = top();
    if (!dropDepth) el.parent.children.push(el);
    if (state.isVoid) return;
    stack.push(el);
    states.push(state);
    state.open++;
    if (state.drop) dropDepth++;
    if (state.foreign) inForeign++;
  };
  const close = (state: TagState) => {
    const tag = state.tag;
    // `</body>` and `</html>` close nothing: text after them still belongs to the body (as in browsers).
    if (tag === "body" || tag === "html") return;
    if (state.isVoid) {
      if (tag === "br") open(element(tag), state);
      return;
    }
    if (!state.open) {
      if (tag === "p") open(element(tag), state); // `</p>` alone: an empty p
      return;
    }
    // Every element popped here is closed for good, so the loops over a whole parse stay linear.
    while (stack.length > 1 && pop() !== state);
  };

  const tokenizer = new Tokenizer({ decodeEntities: false }, {
    onopentagname(start, end) {
      pendingState = tagAt(start, end);
      pending = element(pendingState.tag);
      pendingRaw = !inForeign && pendingState.raw;
    },
    onattribname(start, end) {
      if (keepAttribute) {
        const name = keptName(start, end);
        keep = name !== undefined;
        if (keep) attrName = name!;
      } else {
        keep = true;
        attrName = html.slice(start, end).toLowerCase();
      }
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
      if (pending) open(pending, pendingState);
      pending = undefined;
    },
    onselfclosingtag() {
      rawText = pendingRaw; // `<script/>` opens raw text all the same in HTML
      if (!pending) return;
      const el = pending;
      pending = undefined;
      open(el, pendingState);
      if (inForeign && top() === el) pop();
    },
    onclosetag(start, end) {
      rawText = false;
      close(tagAt(start, end));
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
