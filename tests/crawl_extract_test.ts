// Main-text extraction, charset detection, language identification and which archived records are
// pages: one minimal HTML reproduction for each failure pattern found on real pages (issue 15), and
// the bounds that hold whatever the input (linear time on any nesting).
import { strict as assert } from "node:assert";
import { join } from "node:path";
import { decodeHtml, detectLanguage, extractText } from "../stages/crawl/extract.ts";
import { type HtmlElement, parseHtml, textOf, walk } from "../stages/crawl/html.ts";
import { nonPageReason, sniffMediaType } from "../stages/crawl/records.ts";
import { pipeline } from "../pipeline/pipeline.ts";
import { crawl } from "../stages/crawl.ts";
import { readDocuments } from "../stages/documents.ts";

/** A paragraph of real-looking prose, long enough to count as content. */
const prose = (topic: string) =>
  `${topic} is the subject of this paragraph, which goes on for a while, with commas, clauses, and ` +
  `enough words to read like the body of an article rather than a menu, a button or a caption.`;

Deno.test("a <title> inside a skipped SVG does not swallow the rest of the page", () => {
  const html = `<html><head><title>Real title</title></head><body>
    <nav><a href="/"><svg viewBox="0 0 1 1"><title>Home icon</title><path d="M0 0"/></svg>Home</a></nav>
    <article><h1>Headline</h1><p>${prose("Kilns")}</p><p>${prose("Glazes")}</p></article></body></html>`;
  const page = extractText(html);
  assert.equal(page.title, "Real title");
  assert.equal(page.text, `Headline\n\n${prose("Kilns")}\n\n${prose("Glazes")}`);
});

Deno.test("layout wrappers whose class names contain boilerplate words keep the article", () => {
  for (
    const cls of [
      "l-sidebar-fixed l-article-body-segment",
      "content-with-sidebar-wrp",
      "Page-ad-margins",
      "has-section-nav main-content",
    ]
  ) {
    const html = `<body><div class="${cls}"><h1>Headline</h1><p>${prose("Clay")}</p><p>${prose("Firing")}</p>
      <div class="sidebar"><a href="/x">Most read</a><a href="/y">Another story</a></div></div></body>`;
    const page = extractText(html);
    assert.match(page.text, /^Headline\n\nClay is the subject/, cls);
    assert.match(page.text, /Firing is the subject/, cls);
    assert.doesNotMatch(page.text, /Most read/, cls);
  }
});

Deno.test("a page wrapped in one <form> (ASP.NET style) still has its text", () => {
  const html = `<body><form id="aspnetForm" method="post"><input type="hidden" name="__VIEWSTATE" value="x">
    <div class="page"><h1>Annual report</h1><p>${prose("The report")}</p><p>${prose("The budget")}</p></div>
    <label>Search</label><input type="text"><button>Go</button></form></body>`;
  const page = extractText(html);
  assert.equal(page.text, `Annual report\n\n${prose("The report")}\n\n${prose("The budget")}`);
});

Deno.test("a WordPress post keeps its body, not the comments that are <article>s too", () => {
  const comment = (who: string) =>
    `<li class="comment"><article class="comment-body"><footer class="comment-meta">${who} says:</footer>
      <div class="comment-content"><p>${prose(`${who}'s opinion`)}</p></div></article></li>`;
  const html = `<body><main id="main"><article class="post type-post hentry">
    <h1 class="entry-title">Post title</h1><div class="entry-content"><p>${prose("The post")}</p></div>
    </article><div id="comments" class="comments-area"><h2>3 thoughts on “Post title”</h2>
    <ol class="comment-list">${comment("Anna")}${comment("Ben")}${comment("Cleo")}</ol></div></main></body>`;
  const page = extractText(html);
  assert.equal(page.text, `Post title\n\n${prose("The post")}`);
});

Deno.test("list items that lead with a link are kept; link lists and linked headings are dropped", () => {
  const html = `<body><article><h1>Ten tools</h1><p>${prose("Choosing a tool")}</p><ul>
    <li><a href="/wheel">Potter's wheel</a>: spins the clay so that walls rise evenly under wet hands.</li>
    <li><a href="/kiln">Electric kiln</a>: fires greenware to bisque and then to glaze temperature.</li>
    </ul></article>
    <div class="popular-posts"><h3><a href="/other">Another story headline here</a></h3>
      <ul><li><a href="/1">First popular story</a></li><li><a href="/2">Second popular story</a></li></ul></div>
    <section><h3><a href="/more">More from the site</a></h3><p><a href="/a">Read more</a></p></section></body>`;
  const page = extractText(html);
  assert.match(page.text, /Potter's wheel: spins the clay/);
  assert.match(page.text, /Electric kiln: fires greenware/);
  assert.doesNotMatch(page.text, /popular story|Another story headline|More from the site|Read more/);
});

Deno.test("an embedded tweet in the article is content; share bars around it are not", () => {
  const html = `<body><article><h1>Reactions</h1><p>${prose("The decision")}</p>
    <div class="social-media-embed"><blockquote class="twitter-tweet"><p>This is a quoted tweet about the
    decision, with its own words.</p>— Someone (@someone)</blockquote></div>
    <div class="share-bar"><a href="/fb">Share on Facebook</a><a href="/tw">Tweet</a></div>
    <p>${prose("The aftermath")}</p></article></body>`;
  const page = extractText(html);
  assert.match(page.text, /This is a quoted tweet about the decision/);
  assert.doesNotMatch(page.text, /Share on Facebook/);
  assert.match(page.text, /The aftermath is the subject/);
});

Deno.test("lists and tables come out as readable lines; <pre> keeps its layout", () => {
  const html = `<body><article><h2>Schedule</h2><p>${prose("The course")}</p><table>
    <tr><th>Day</th><th>Topic</th></tr><tr><td>Monday</td><td>Wedging</td></tr></table>
    <pre>line one
  indented line</pre><ol><li>First step</li><li>Second step</li></ol></article></body>`;
  const page = extractText(html);
  assert.match(page.text, /Day\n\nTopic\n\nMonday\n\nWedging/);
  assert.match(page.text, /line one\n {2}indented line/);
  assert.match(page.text, /First step\n\nSecond step$/);
});

Deno.test("200,000 nested elements parse and extract (time linear in the page: see the benchmark)", () => {
  const depth = 200_000;
  const html = "<div>".repeat(depth) + `<p>${prose("Depth")}</p>` + "</div>".repeat(depth);
  assert.equal(extractText(html).text, prose("Depth"));
  const unclosed = "<span><b>".repeat(depth / 2) + "deep text" + "</i></u>".repeat(depth / 2);
  assert.equal(textOf(parseHtml(unclosed)), "deep text");
});

Deno.test("the tree builder closes what HTML leaves open and ignores stray end tags", () => {
  const root = parseHtml("<html><head><title>t</title><body><p>one<p>two<div>three</span></div><li>a<li>b");
  const html = root.children[0] as ReturnType<typeof parseHtml>;
  const head = html.children[0] as ReturnType<typeof parseHtml>;
  assert.equal(head.tag, "head");
  const body = head.children.find((c) => typeof c !== "string" && c.tag === "body");
  assert.equal(body, undefined, "an unclosed <head> ends where <body> starts");
  assert.equal(textOf(root), "tonetwothreeab");
  const body2 = html.children[1] as ReturnType<typeof parseHtml>;
  assert.deepEqual(body2.children.map((c) => typeof c === "string" ? c : c.tag), [
    "p",
    "p",
    "div",
    "li",
    "li",
  ]);
});

Deno.test("entities are decoded as browsers do: in text and attributes, not in script or style", () => {
  const root = parseHtml(
    `<title>Fish &amp; chips</title><p class="a&amp;b &copy=x" id=x&lt;y>AT&amp;T &copy 2024 &notit; &#x41;&#66</p>` +
      `<script>if (a &amp;&amp; b) x = "&lt;";</script><svg><style>s &amp; t</style></svg><textarea>&lt;b&gt;</textarea>`,
  );
  const find = (tag: string) => {
    let found: HtmlElement | undefined;
    walk(root, (el) => {
      if (!found && el.tag === tag) found = el;
    });
    return found!;
  };
  assert.equal(textOf(find("title")), "Fish & chips");
  // In an attribute, `&copy=` is not an entity (a URL's query), and `&lt;` is one.
  assert.deepEqual(find("p").attrs, { class: "a&b &copy=x", id: "x<y" });
  // In text, the legacy entities work without `;` (`&copy`, `&not` of `&notit;`), as do numeric ones.
  assert.equal(textOf(find("p")), "AT&T © 2024 ¬it; AB");
  assert.equal(textOf(find("script")), 'if (a &amp;&amp; b) x = "&lt;";');
  assert.equal(textOf(find("style")), "s & t", "<style> in SVG is markup, not raw text");
  assert.equal(textOf(find("textarea")), "<b>");
});

Deno.test("a page that never closes <head> has its body from the first element that can't be in a head", () => {
  const html = `<html><head><meta charset="utf-8"><title>T</title>
    <div class="container"><h1>Headline</h1><p>${prose("The market")}</p></div></html>`;
  assert.equal(extractText(html).text, `Headline\n\n${prose("The market")}`);
});

Deno.test("a second <html>/<body> pasted into a post (and its end tags) does not cut the post", () => {
  const html = `<html><body><article><h1>Cake</h1><p>${prose("The cake")}</p>
    <html><body><div class="recipe"><p>${prose("The recipe card")}</p></div></body></html>
    <p>${prose("The serving")}</p></article><aside><a href="/x">More cakes</a></aside></body></html>`;
  const page = extractText(html);
  assert.equal(
    page.text,
    `Cake\n\n${prose("The cake")}\n\n${prose("The recipe card")}\n\n${prose("The serving")}`,
  );
});

Deno.test("ruby annotations (furigana) are left out of the text", () => {
  const html =
    `<article><p><ruby>子<rt>こ</rt></ruby>どもへの<ruby>虐待<rp>(</rp><rt>ぎゃくたい</rt><rp>)</rp></ruby>を` +
    `なくすための<ruby>法律<rt>ほうりつ</ruby>ができて、<ruby>親<rt>おや</rt></ruby>が<ruby>子<rt>こ</rt></ruby>どもを` +
    `<ruby>教育<rt>きょういく</rt></ruby>するために、たたいたり<ruby>蹴<rt>け</rt></ruby>ったりすることを禁止します。</p></article>`;
  assert.equal(
    extractText(html).text,
    "子どもへの虐待をなくすための法律ができて、親が子どもを教育するために、たたいたり蹴ったりすることを禁止します。",
  );
});

Deno.test("a page whose text is written by a script falls back to its <noscript> copy, and only then", () => {
  const app = `<body><div id="app"></div><noscript><div class="post"><h1>Release notes</h1>
    <p>${prose("The release")}</p><p>${prose("The upgrade")}</p></div></noscript></body>`;
  assert.equal(extractText(app).text, `Release notes\n\n${prose("The release")}\n\n${prose("The upgrade")}`);
  const page = `<body><article><p>${prose("The page")}</p><p>${prose("More")}</p></article>
    <noscript><p>Please enable JavaScript to view the comments, which need it to load at all.</p></noscript></body>`;
  assert.equal(extractText(page).text, `${prose("The page")}\n\n${prose("More")}`);
});

Deno.test("copyright lines and credits go; after the last paragraph, so do contact lines with addresses", () => {
  const html = `<body><article><h1>Rain</h1><p>${prose("Rain")} Write to rain@example.org for the data.</p>
    <p>Photo: © Jane Doe / Agency</p><p>${prose("Flooding")}</p>
    <p>Send us your tips at tips@example.com or call the newsroom.</p>
    <p>For the latest news download our app at www.example.com today.</p>
    <p>© 2022 Example News. All rights reserved. Reprint only with written permission of the publisher.</p>
    </article></body>`;
  const page = extractText(html);
  assert.equal(
    page.text,
    `Rain\n\n${prose("Rain")} Write to rain@example.org for the data.\n\n${prose("Flooding")}`,
  );
});

Deno.test("a short line repeated three times is a template label; repeated table cells stay", () => {
  const item = (topic: string) => `<li><p>${prose(topic)}</p><p>via Example Wire</p></li>`;
  const html = `<body><article><h1>Links of the day</h1><ul>${item("Solar")}${item("Wind")}${
    item("Tides")
  }</ul>
    <table><tr><th>Plant</th><th>Open</th></tr><tr><td>North</td><td>yes</td></tr>
    <tr><td>South</td><td>yes</td></tr><tr><td>East</td><td>yes</td></tr></table></article></body>`;
  const page = extractText(html);
  assert.doesNotMatch(page.text, /via Example Wire/);
  assert.match(page.text, /Tides is the subject/);
  assert.match(page.text, /North\n\nyes\n\nSouth\n\nyes\n\nEast\n\nyes/);
});

Deno.test("labels whose content was dropped go with it; a label of kept content stays", () => {
  const html = `<body><article><h1>Crumble</h1><p>${prose("The crumble")}</p>
    <p>Ingredients:</p><ul><li>200 g flour</li><li>100 g butter</li></ul><p>${prose("Baking")}</p>
    <p>More recipes</p><ul><li><a href="/a">Apple pie</a></li><li><a href="/b">Plum cake</a></li></ul>
    <p>Related:</p><p><a href="/c">Our ten best crumbles of the year</a></p>
    <p>Contact:</p></article></body>`;
  assert.equal(
    extractText(html).text,
    `Crumble\n\n${prose("The crumble")}\n\nIngredients:\n\n200 g flour\n\n100 g butter\n\n${prose("Baking")}`,
  );
});

/** A slide show: short captions, one a section, with no commas. */
const slides = (...topics: string[]) =>
  `<main><h1>The phone</h1>${
    topics.map((topic) =>
      `<section class="slide"><h2>${topic}</h2><p><span>${topic} is shown on this slide. It is bigger than ` +
      `the last one and costs less than the one before it.</span></p></section>`
    ).join("")
  }</main>`;

Deno.test("a box smaller than a short paragraph never wins on its class name", () => {
  const html =
    `<body><div class="band"><div class="band-content"><div>Index 17546.65 -15.35, gold 1951.10 +2.5</div></div></div>
    ${slides("The front", "The back", "The side")}</body>`;
  const page = extractText(html);
  assert.match(page.text, /^The phone\n\nThe front\n\nThe front is shown/);
  assert.match(page.text, /The side is shown on this slide/);
  assert.doesNotMatch(page.text, /17546/);
});

Deno.test("commas that group digits don't score as prose (a stock ticker is not the text)", () => {
  const quotes = "17,546.65 1,951.10 2,227.45 3,100.20 4,500.10 5,600.00 6,700.25 7,800.50 8,900.75 9,100.05";
  const html = `<body>${slides("The front", "The back", "The side", "The top")}
    <div class="markets"><div>Index ${quotes}</div></div></body>`;
  const page = extractText(html);
  assert.match(page.text, /^The phone\n\nThe front/);
  assert.match(page.text, /The top is shown on this slide/);
  assert.doesNotMatch(page.text, /17,546/);
});

const hex = (h: string) => new Uint8Array(h.match(/../g)!.map((b) => parseInt(b, 16)));
const SAMPLES = {
  shiftJis: {
    text:
      "<html><head><title>猫について</title></head><body><p>吾輩は猫である。名前はまだ無い。どこで生れたかとんと見当がつかぬ。何でも薄暗いじめじめした所でニャーニャー泣いていた事だけは記憶している。</p></body></html>",
    hex: "3c68746d6c3e3c686561643e3c7469746c653e944c82c982c282a282c43c2f7469746c653e3c2f686561643e3c626f64" +
      "793e3c703e8ce1947982cd944c82c582a082e9814296bc914f82cd82dc82be96b382a2814282c782b182c590b682ea82" +
      "bd82a982c682f182c68ca9939682aa82c282a982ca814289bd82c582e0949688c382a282b682df82b682df82b582bd8f" +
      "8a82c5836a8383815b836a8383815b8b8382a282c482a282bd8e9682be82af82cd8b4c89af82b582c482a282e981423c" +
      "2f703e3c2f626f64793e3c2f68746d6c3e",
  },
  windows1251: {
    text:
      "<html><body><p>Съешь же ещё этих мягких французских булок, да выпей чаю. Москва — столица России, крупнейший город страны.</p></body></html>",
    hex: "3c68746d6c3e3c626f64793e3c703ed1fae5f8fc20e6e520e5f9b820fdf2e8f520ecffe3eae8f520f4f0e0edf6f3e7f1" +
      "eae8f520e1f3ebeeea2c20e4e020e2fbefe5e920f7e0fe2e20cceef1eae2e0209720f1f2eeebe8f6e020d0eef1f1e8e8" +
      "2c20eaf0f3efede5e9f8e8e920e3eef0eee420f1f2f0e0edfb2e3c2f703e3c2f626f64793e3c2f68746d6c3e",
  },
  gb18030: {
    text:
      "<html><body><p>我能吞下玻璃而不伤身体。北京是中华人民共和国的首都，也是全国的政治和文化中心。</p></body></html>",
    hex: "3c68746d6c3e3c626f64793e3c703eced2c4dccdcccfc2b2a3c1a7b6f8b2bbc9cbc9edcce5a1a3b1b1bea9cac7d6d0bb" +
      "aac8cbc3f1b9b2bacdb9fab5c4cad7b6bca3acd2b2cac7c8abb9fab5c4d5fed6cebacdcec4bbafd6d0d0c4a1a33c2f70" +
      "3e3c2f626f64793e3c2f68746d6c3e",
  },
  latin1: {
    text:
      "<html><head><meta charset=utf-8></head><body><p>Café crème à la française, déjà vu, naïve façade, Ärger über Öl und Süßes.</p></body></html>",
    hex: "3c68746d6c3e3c686561643e3c6d65746120636861727365743d7574662d383e3c2f686561643e3c626f64793e3c703e" +
      "436166e9206372e86d6520e0206c61206672616ee7616973652c2064e96ae02076752c206e61ef7665206661e7616465" +
      "2c20c47267657220fc62657220d66c20756e642053fcdf65732e3c2f703e3c2f626f64793e3c2f68746d6c3e",
  },
};

Deno.test("charset: undeclared Shift_JIS, windows-1251 and GB18030 are detected; Latin-1 under a UTF-8 label too", () => {
  const cases: [keyof typeof SAMPLES, string | undefined, string][] = [
    ["shiftJis", "text/html", "shift_jis"],
    ["windows1251", "text/html", "windows-1251"],
    ["gb18030", "text/html", "gb18030"],
    ["latin1", "text/html; charset=utf-8", "windows-1252"],
  ];
  for (const [name, contentType, charset] of cases) {
    const decoded = decodeHtml(hex(SAMPLES[name].hex), contentType);
    assert.equal(decoded.text, SAMPLES[name].text, name);
    assert.equal(decoded.charset, charset, name);
    assert.equal(decoded.source, "detected", name);
  }
  // A declaration the bytes agree with is used as it is.
  const declared = decodeHtml(hex(SAMPLES.windows1251.hex), "text/html; charset=windows-1251");
  assert.deepEqual([declared.text, declared.source], [SAMPLES.windows1251.text, "http"]);
  // A UTF-8 page with one stray Latin-1 byte stays UTF-8: one U+FFFD, not mojibake everywhere.
  const stray = new Uint8Array([...new TextEncoder().encode("<p>Ärger über Öl – "), 0xe9, 0x3c]);
  assert.equal(decodeHtml(stray, "text/html; charset=utf-8").text, "<p>Ärger über Öl – \ufffd<");
  // UTF-8 bytes under an old single-byte label are UTF-8 (a page re-encoded, its header not updated).
  const utf8 = new TextEncoder().encode("<p>Ärger über Öl</p>");
  assert.deepEqual(decodeHtml(utf8, "text/html; charset=iso-8859-1"), {
    text: "<p>Ärger über Öl</p>",
    charset: "utf-8",
    source: "utf8-valid",
  });
});

Deno.test("language: `und` for words that are not language; a threshold separates prose from junk", () => {
  const junk = ["ok", "550e8400-e29b-41d4-a716-446655440000", "https://example.com/a/b?id=42", "", "12:30"];
  for (const text of junk) assert.deepEqual(detectLanguage(text), { lang: "und", score: 0 }, text);
  const prose = [
    ["The cat sat on the mat.", "en"],
    ["Der schnelle braune Fuchs springt über den faulen Hund.", "de"],
    ["吾輩は猫である。名前はまだ無い。", "ja"],
    ["The quick brown fox jumps over the lazy dog and keeps running through the forest.", "en"],
  ];
  for (const [text, lang] of prose) {
    const found = detectLanguage(text);
    assert.equal(found.lang, lang, text);
    assert.ok(found.score >= 0.3 && found.score <= 1, `${text}: ${found.score}`);
  }
  // More evidence, more certainty.
  assert.ok(detectLanguage(prose[3][0]).score > detectLanguage(prose[0][0]).score);
});

Deno.test("language: a long text is identified from its beginning, whatever follows", () => {
  const german = "Der schnelle braune Fuchs springt über den faulen Hund und läuft weiter durch den Wald. ";
  const english = "The quick brown fox jumps over the lazy dog and keeps running through the forest. ";
  const head = german.repeat(14); // over 1,000 characters
  const found = detectLanguage(head);
  assert.equal(found.lang, "de");
  assert.deepEqual(detectLanguage(head + english.repeat(30)), found);
  assert.equal(detectLanguage(english.repeat(14) + german.repeat(30)).lang, "en");
});

Deno.test("records that are not pages: robots.txt, sitemaps, metadata; bodies without a Content-Type are sniffed", () => {
  assert.equal(nonPageReason("http://example.com/robots.txt"), "robots-txt");
  assert.equal(nonPageReason("https://example.com/sitemap_index.xml"), "sitemap");
  assert.equal(nonPageReason("https://example.com/news/sitemap-2024.xml.gz"), "sitemap");
  assert.equal(nonPageReason("metadata://gnu.org/software/wget/warc/wget.log"), "metadata");
  assert.equal(nonPageReason("dns:example.com"), "metadata");
  assert.equal(nonPageReason("https://example.com/robots.txt.html"), undefined);
  assert.equal(nonPageReason("https://example.com/blog/sitemaps-explained"), undefined);
  const enc = (s: string) => new TextEncoder().encode(s);
  assert.equal(sniffMediaType(enc("\n  <!DOCTYPE html><html>")), "text/html");
  assert.equal(sniffMediaType(enc("<p>para</p>")), "text/html");
  assert.equal(sniffMediaType(enc("Just some text.\n")), "text/plain");
  assert.equal(
    sniffMediaType(new Uint8Array([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0])),
    "application/octet-stream",
  );
});

/** A plain (uncompressed) WARC file of the given records. */
function warcOf(records: { type: string; url: string; contentType: string; block: string }[]): Uint8Array {
  const enc = new TextEncoder();
  const parts: Uint8Array[] = [];
  for (const [i, r] of records.entries()) {
    const block = enc.encode(r.block);
    parts.push(
      enc.encode(
        `WARC/1.0\r\nWARC-Type: ${r.type}\r\nWARC-Record-ID: <urn:uuid:00000000-0000-0000-0000-00000000000${i}>\r\n` +
          `WARC-Target-URI: ${r.url}\r\nWARC-Date: 2024-01-01T00:00:00Z\r\nContent-Type: ${r.contentType}\r\n` +
          `Content-Length: ${block.length}\r\n\r\n`,
      ),
      block,
      enc.encode("\r\n\r\n"),
    );
  }
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) out.set(p, at), at += p.length;
  return out;
}

Deno.test("the crawl stage makes documents of pages only, counts the rest by reason, and keeps them on request", async () => {
  const http = (type: string, body: string) => `HTTP/1.1 200 OK\r\nContent-Type: ${type}\r\n\r\n${body}`;
  const response = "application/http; msgtype=response";
  const dir = await Deno.makeTempDir();
  try {
    await Deno.writeFile(
      join(dir, "a.warc"),
      warcOf([
        {
          type: "response",
          url: "http://a.test/robots.txt",
          contentType: response,
          block: http("text/plain", "User-agent: *\nDisallow:\n"),
        },
        {
          type: "response",
          url: "http://a.test/sitemap.xml",
          contentType: response,
          block: http("text/plain", "http://a.test/\n"),
        },
        {
          type: "resource",
          url: "metadata://gnu.org/software/wget/warc/wget.log",
          contentType: "text/plain",
          block: "wget log line\n",
        },
        {
          type: "response",
          url: "http://a.test/",
          contentType: response,
          block: http("text/html", `<p>${prose("The page")}</p>`),
        },
        {
          type: "response",
          url: "http://a.test/untyped",
          contentType: response,
          block: `HTTP/1.1 200 OK\r\n\r\n\u0000\u0001binary`,
        },
      ]),
    );
    const run = async (keepNonPages: boolean) => {
      const result = await pipeline("t", { workdir: join(dir, `w-${keepNonPages}`), workers: 1 })
        .pipe(crawl({ warc: [join(dir, "a.warc")], keepNonPages })).execute({ quiet: true });
      const artifact = result.artifacts.crawl;
      const docs = [];
      for (const file of artifact.files(".jsonl.gz")) {
        for await (const { doc } of readDocuments(artifact.path(file))) docs.push(doc);
      }
      return { docs, stats: artifact.stats };
    };
    const pages = await run(false);
    assert.deepEqual(pages.docs.map((d) => d.url), ["http://a.test/"]);
    assert.equal(pages.stats["skipped.robots-txt"], 1);
    assert.equal(pages.stats["skipped.sitemap"], 1);
    assert.equal(pages.stats["skipped.metadata"], 1);
    assert.equal(pages.stats["skipped.type"], 1, "a body with no Content-Type that is not text");
    const all = await run(true);
    assert.deepEqual(all.docs.map((d) => d.url), [
      "http://a.test/robots.txt",
      "http://a.test/sitemap.xml",
      "metadata://gnu.org/software/wget/warc/wget.log",
      "http://a.test/",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
