/**
 * A stage's configuration as a Markdown table, generated from its zod schema (field, type, default,
 * limits), so the reference in `docs/stages.md` is never out of step with what the stage accepts.
 * @module
 */
import { z } from "npm:zod@^4.6.7";

type JsonSchema = {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  anyOf?: JsonSchema[];
  enum?: unknown[];
  const?: unknown;
  default?: unknown;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minItems?: number;
  format?: string;
  description?: string;
};

const SAFE_LIMIT = Number.MAX_SAFE_INTEGER;

function typeOf(s: JsonSchema): string {
  if (s.const !== undefined) return JSON.stringify(s.const);
  if (s.enum) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  if (s.anyOf) return s.anyOf.map(typeOf).join(" | ");
  if (s.type === "array") return `${s.items ? typeOf(s.items) : "any"}[]`;
  if (s.type === "object") return "object";
  return Array.isArray(s.type) ? s.type.join(" | ") : s.type ?? "any";
}

function limits(s: JsonSchema): string {
  const parts: string[] = [];
  if (s.minimum !== undefined && Math.abs(s.minimum) < SAFE_LIMIT) parts.push(`≥ ${s.minimum}`);
  if (s.exclusiveMinimum !== undefined) parts.push(`> ${s.exclusiveMinimum}`);
  if (s.maximum !== undefined && Math.abs(s.maximum) < SAFE_LIMIT) parts.push(`≤ ${s.maximum}`);
  if (s.exclusiveMaximum !== undefined) parts.push(`< ${s.exclusiveMaximum}`);
  if (s.minItems) parts.push(`at least ${s.minItems}`);
  if (s.format) parts.push(s.format);
  return parts.join(", ");
}

function rows(s: JsonSchema, path: string, required: boolean, out: string[]) {
  const objectBranch = s.properties ? s : s.anyOf?.find((o) => o.properties);
  const shown = s.default === undefined ? (required ? "required" : "—") : `\`${JSON.stringify(s.default)}\``;
  if (path) {
    const notes = [limits(s), s.description ?? ""].filter(Boolean).join("; ");
    const cell = (text: string) => text.replaceAll("|", "\\|");
    out.push(`| \`${path}\` | ${cell(typeOf(s))} | ${cell(shown)} | ${cell(notes)} |`);
  }
  if (objectBranch?.properties) {
    for (const [key, field] of Object.entries(objectBranch.properties)) {
      rows(field, path ? `${path}.${key}` : key, objectBranch.required?.includes(key) ?? false, out);
    }
  }
}

/** The Markdown table of a stage config's fields (nested fields dotted). */
export function configTable(schema: z.ZodType): string {
  const json = z.toJSONSchema(schema, { io: "input", unrepresentable: "any" }) as JsonSchema;
  const out = ["| field | type | default | limits |", "| --- | --- | --- | --- |"];
  rows(json, "", false, out);
  return out.length > 2 ? out.join("\n") : "(no settings)";
}
