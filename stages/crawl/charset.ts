/**
 * Page bytes to text: which charset, and decoding with it.
 *
 * Order, as the HTML standard's sniffing with the corrections browsers and crawlers make for the
 * web as it is: a BOM; then the declared charset (HTTP `charset`, else `<meta>` in the first 4 KiB),
 * checked against the bytes — a page declared UTF-8 whose bytes are not UTF-8 (Latin-1 text under a
 * UTF-8 header) and a page declared in a single-byte charset whose bytes are valid UTF-8 with
 * non-ASCII text (re-encoded pages under an old header) are detected instead of decoded into U+FFFD or
 * mojibake; then, undeclared, UTF-8 if the bytes are valid UTF-8, else a detector.
 *
 * The detector is `chardet` (npm, a port of ICU's charset detection, maintained): on Shift_JIS,
 * windows-1251, GB18030 and Latin-1 samples it named all four, where `jschardet` 4.0 took Latin-1
 * for windows-1251. It runs only on bytes that are not UTF-8 (rare on today's web), on their
 * non-ASCII bytes with a little context. Decoding is Deno's `TextDecoder`, which knows every WHATWG encoding label.
 *
 * @example
 * ```ts
 * import { decodeHtml } from "./charset.ts";
 * const latin1 = new Uint8Array([0x63, 0x61, 0x66, 0xe9]); // "café" in Latin-1, no declaration
 * console.log(decodeHtml(latin1, "text/html").text); // "café" (windows-1252)
 * ```
 * @module
 */
import chardet from "npm:chardet@^2.2.0";

/** Text decoded from bytes, and how its charset was found. */
export interface Decoded {
  text: string;
  /** The WHATWG encoding name used. */
  charset: string;
  /** `detected`: by the detector, because nothing was declared or the declaration did not fit the bytes. */
  source: "bom" | "http" | "meta" | "utf8-valid" | "detected" | "fallback";
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
const strictUtf8 = new TextDecoder("utf-8", { fatal: true });
/** Reads the first bytes of a page as ASCII-compatible text, to find its `<meta>` charset. */
const latin1 = new TextDecoder("latin1");

/** The bytes as UTF-8, or undefined when they are not valid UTF-8. */
function asUtf8(bytes: Uint8Array): string | undefined {
  try {
    return strictUtf8.decode(bytes);
  } catch {
    return undefined;
  }
}

/** Whether any byte is outside ASCII. */
function hasHighBytes(bytes: Uint8Array): boolean {
  for (let i = 0; i < bytes.length; i++) if (bytes[i] >= 0x80) return true;
  return false;
}

/**
 * Whether well-formed UTF-8 sequences outnumber the bytes that cannot be UTF-8. Text in a legacy
 * encoding almost never forms a well-formed multi-byte sequence (`Ã©` in Latin-1 would).
 */
function mostlyUtf8(bytes: Uint8Array): boolean {
  let good = 0;
  let bad = 0;
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b < 0x80) continue;
    const length = b >= 0xc2 && b <= 0xdf ? 2 : b >= 0xe0 && b <= 0xef ? 3 : b >= 0xf0 && b <= 0xf4 ? 4 : 0;
    let ok = length > 0 && i + length <= bytes.length;
    for (let k = 1; ok && k < length; k++) ok = (bytes[i + k] & 0xc0) === 0x80;
    if (ok) {
      good++;
      i += length - 1;
    } else {
      bad++;
    }
  }
  return good > bad;
}

/** Encodings where one byte is one character: valid UTF-8 under such a label is a wrong label. */
const SINGLE_BYTE = /^(windows-125\d|iso-8859-\d+|koi8-[ru]|macintosh|ibm866|x-mac-cyrillic)$/;

/**
 * The bytes the detector needs, at most 8 KiB: the non-ASCII ones with a little context. Pages are
 * mostly ASCII markup, and the detector's time grows with its input (150–200 ms for 64 KiB here).
 */
function nonAsciiSample(bytes: Uint8Array, max = 8192): Uint8Array {
  const sample = new Uint8Array(Math.min(max, bytes.length));
  let n = 0;
  let copiedTo = 0; // end of the last copied window
  for (let i = 0; i < bytes.length && n < sample.length; i++) {
    if (bytes[i] < 0x80) continue;
    const from = Math.max(i - 8, copiedTo);
    const to = Math.min(i + 24, bytes.length, from + sample.length - n);
    sample.set(bytes.subarray(from, to), n);
    n += to - from;
    copiedTo = to;
    i = to - 1;
  }
  return sample.subarray(0, n);
}

/** Single-byte encodings of Latin-alphabet languages: they differ from windows-1252 in a few letters. */
const LATIN = /^(iso-8859-(1|2|3|4|9|10|13|14|15|16)|windows-(1250|1252|1254|1257|1258))$/i;

/**
 * The detector's best guess for bytes that are not UTF-8, as a decoder. Its single-byte guesses
 * between Latin-alphabet encodings are unreliable on short texts ("Naïve" comes out ISO-8859-9,
 * "Café crème" ISO-8859-2), so any of them means windows-1252, the web's own default, unless the
 * detector is sure (confidence ≥ 60 of 100); Cyrillic, Greek, Hebrew, Arabic and the multi-byte
 * CJK encodings are distinct enough to take as named.
 */
function detect(bytes: Uint8Array): TextDecoder | undefined {
  const best = chardet.analyse(nonAsciiSample(bytes))[0];
  if (!best || best.confidence <= 0) return undefined;
  const decoder = decoderFor(best.name);
  if (!decoder || decoder.encoding === "utf-8") return undefined;
  if (LATIN.test(best.name) && best.confidence < 60) return new TextDecoder("windows-1252");
  return decoder;
}

/**
 * Decodes page bytes to a string. `contentType` is the HTTP Content-Type (its charset is used when no
 * BOM is present); `<meta charset>` is honoured for HTML; declarations that the bytes contradict
 * and undeclared non-UTF-8 bytes go to the detector.
 */
export function decodeHtml(bytes: Uint8Array, contentType?: string): Decoded {
  for (const [bom, charset] of BOMS) {
    if (bom.every((b, i) => bytes[i] === b)) {
      return { text: new TextDecoder(charset).decode(bytes.subarray(bom.length)), charset, source: "bom" };
    }
  }
  let declared: TextDecoder | undefined = decoderFor(charsetOf(contentType));
  let source: Decoded["source"] = "http";
  if (!declared) {
    const prescan = latin1.decode(bytes.subarray(0, 4096));
    declared = decoderFor(META_CHARSET.exec(prescan)?.[1]);
    source = "meta";
    // A page cannot really be UTF-16 if its meta tag was readable as ASCII (HTML standard rule).
    if (declared?.encoding.startsWith("utf-16")) declared = new TextDecoder("utf-8");
  }
  if (declared && declared.encoding !== "utf-8" && !SINGLE_BYTE.test(declared.encoding)) {
    return { text: declared.decode(bytes), charset: declared.encoding, source }; // multi-byte: trusted
  }
  const utf8 = asUtf8(bytes);
  if (utf8 !== undefined) {
    if (declared?.encoding === "utf-8") return { text: utf8, charset: "utf-8", source };
    if (!declared || hasHighBytes(bytes)) return { text: utf8, charset: "utf-8", source: "utf8-valid" };
  }
  if (declared && declared.encoding !== "utf-8") {
    return { text: declared.decode(bytes), charset: declared.encoding, source };
  }
  // Mostly UTF-8 with a few bad bytes (a truncated character, one pasted Latin-1 byte) is UTF-8.
  if (mostlyUtf8(bytes)) {
    return {
      text: new TextDecoder("utf-8").decode(bytes),
      charset: "utf-8",
      source: declared ? source : "utf8-valid",
    };
  }
  const detected = detect(bytes);
  if (detected) return { text: detected.decode(bytes), charset: detected.encoding, source: "detected" };
  const fallback = declared ?? new TextDecoder("windows-1252");
  return { text: fallback.decode(bytes), charset: fallback.encoding, source: declared ? source : "fallback" };
}
