/**
 * PII masking: replaces e-mail and IP (v4 and v6) addresses in kept documents; drops nothing. Runs
 * last, so the other filters see the text as it was.
 * @module
 */
import { z } from "npm:zod@^4.6.7";
import { filterModule, toggle } from "./filter.ts";

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

/** `pii: true` or `{ emails, ips, emailReplacement, ipReplacement }`; off by default. */
export const piiModule = filterModule({
  name: "pii",
  schema: toggle({
    emails: z.boolean(),
    ips: z.boolean(),
    emailReplacement: z.string(),
    ipReplacement: z.string(),
  }, false),
  defaults: PII_DEFAULTS,
  build: (o: PiiOptions) => ({
    name: "pii",
    apply: (doc) => {
      const r = maskPii(doc.text, o);
      if (!r.emails && !r.ips) return { doc };
      return { doc: { ...doc, text: r.text }, changes: { emails_masked: r.emails, ips_masked: r.ips } };
    },
  }),
});
