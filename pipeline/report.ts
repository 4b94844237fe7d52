/**
 * The run report: one self-contained HTML file with each stage's state, stats and plots, drawn as
 * inline SVG (no scripts, no network), so it opens anywhere, including as a CI artifact.
 *
 * What gets drawn, by convention (any stage that follows it gets the same treatment):
 * - `metrics.jsonl` in a stage's artifact (one JSON object a line, with `step` or `iteration`): one
 *   line chart per numeric field (loss, val_loss, lr, reward, kl…);
 * - a `funnel` stat, `[{ name, documents }]` in order: a bar chart of what each filter kept, and
 *   beside it, from a `filters` stat (`{ <filter>: { documentsIn, droppedDocuments, reasons } }`),
 *   each filter's drop reasons with a few of the documents it dropped (short excerpts, read from the
 *   artifact's `excluded/<filter>/` shards, boundedly), as datatrove's stats and examples give;
 * - a `dropped` stat (`{ <reason>: { documents, characters } }`, dedupe's exact vs near duplicates)
 *   and a `clusters` stat (`{ count, largest, sizes }`): what was removed and how duplicates cluster,
 *   with examples from `excluded/dedupe/`;
 * - other object stats (MinHash settings, a mixture's proportions…) as flattened tables.
 *
 * Each pipeline writes its own file, {@linkcode reportFileName}, so pipelines sharing a workdir do
 * not overwrite one another's report.
 * @module
 */
import type { Artifact } from "./artifact.ts";
import type { StageStatus } from "./run_types.ts";

/** The report's file name in the workdir for a pipeline (`report-<pipeline>.html`). */
export function reportFileName(pipeline: string): string {
  return `report-${pipeline}.html`;
}

const escape = (s: string) =>
  s.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]!);

function formatNumber(v: number): string {
  if (Number.isInteger(v)) return v.toLocaleString("en-US");
  return Math.abs(v) >= 1e-3 && Math.abs(v) < 1e6 ? v.toPrecision(4) : v.toExponential(3);
}

/** An SVG line chart of `ys` against `xs`, with its range written on the axes. */
export function lineChart(title: string, xs: number[], ys: number[], width = 560, height = 180): string {
  const pad = { left: 56, right: 12, top: 22, bottom: 24 };
  const points = xs.map((x, i) => [x, ys[i]]).filter(([x, y]) => isFinite(x) && isFinite(y));
  if (points.length === 0) return "";
  const [x0, x1] = [Math.min(...points.map((p) => p[0])), Math.max(...points.map((p) => p[0]))];
  const [y0, y1] = [Math.min(...points.map((p) => p[1])), Math.max(...points.map((p) => p[1]))];
  const sx = (x: number) =>
    pad.left + (x1 === x0 ? 0.5 : (x - x0) / (x1 - x0)) * (width - pad.left - pad.right);
  const sy = (y: number) =>
    pad.top + (y1 === y0 ? 0.5 : 1 - (y - y0) / (y1 - y0)) * (height - pad.top - pad.bottom);
  const path = points.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" ");
  const bottom = height - pad.bottom;
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="${
    escape(title)
  }">
<text x="${pad.left}" y="14" font-size="12" font-weight="bold">${escape(title)}</text>
<line x1="${pad.left}" y1="${pad.top}" x2="${pad.left}" y2="${bottom}" stroke="#999"/>
<line x1="${pad.left}" y1="${bottom}" x2="${width - pad.right}" y2="${bottom}" stroke="#999"/>
<text x="${pad.left - 4}" y="${pad.top + 8}" font-size="10" text-anchor="end">${formatNumber(y1)}</text>
<text x="${pad.left - 4}" y="${bottom}" font-size="10" text-anchor="end">${formatNumber(y0)}</text>
<text x="${pad.left}" y="${height - 8}" font-size="10">${formatNumber(x0)}</text>
<text x="${width - pad.right}" y="${height - 8}" font-size="10" text-anchor="end">${formatNumber(x1)}</text>
<polyline fill="none" stroke="#c2410c" stroke-width="1.5" points="${path}"/>
</svg>`;
}

/** An SVG horizontal bar chart (a filter funnel: documents left after each step). */
export function barChart(title: string, bars: { name: string; value: number }[], width = 560): string {
  if (bars.length === 0) return "";
  const row = 20, labelWidth = 170, top = 22;
  const max = Math.max(...bars.map((b) => b.value), 1);
  const height = top + bars.length * row + 6;
  const rows = bars.map((b, i) => {
    const y = top + i * row;
    const w = (b.value / max) * (width - labelWidth - 80);
    return `<text x="${labelWidth - 6}" y="${y + 13}" font-size="11" text-anchor="end">${
      escape(b.name)
    }</text>
<rect x="${labelWidth}" y="${y + 2}" width="${w.toFixed(1)}" height="${row - 6}" fill="#c2410c"/>
<text x="${labelWidth + w + 4}" y="${y + 13}" font-size="10">${formatNumber(b.value)}</text>`;
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" role="img" aria-label="${
    escape(title)
  }">
<text x="0" y="14" font-size="12" font-weight="bold">${escape(title)}</text>
${rows.join("\n")}
</svg>`;
}

/** Reads `metrics.jsonl` from an artifact, if it has one. */
async function readMetrics(artifact: Artifact): Promise<Record<string, unknown>[]> {
  if (!artifact.files("metrics.jsonl").length) return [];
  const text = await artifact.readText(artifact.files("metrics.jsonl")[0]);
  return text.split("\n").filter(Boolean).map((line) => JSON.parse(line));
}

/** An excluded document, as the report shows it (stages record them in their `examples` stat). */
export interface Example {
  id: string;
  url?: string;
  /** The first characters of its text. */
  excerpt: string;
  /** Characters of text in all. */
  characters: number;
  /** For a duplicate: the id of the document kept instead. */
  duplicateOf?: string;
}

const percent = (part: number, whole: number) => whole ? `${(100 * part / whole).toFixed(1)} %` : "";

/** A link for http(s) URLs only (crawled data may hold `javascript:` ones); other URLs as text. */
function link(url: string | undefined): string {
  if (!url) return "";
  return /^https?:\/\//i.test(url) ? ` <a href="${escape(url)}">${escape(url)}</a>` : ` ${escape(url)}`;
}

function examplesHtml(examples: Example[] | undefined): string {
  if (!examples?.length) return "";
  const items = examples.map((e) =>
    `<li><code>${escape(e.id)}</code>${link(e.url)}${
      e.duplicateOf ? ` <span class="dim">duplicate of <code>${escape(e.duplicateOf)}</code></span>` : ""
    } <span class="dim">(${formatNumber(e.characters)} chars)</span><blockquote>${
      escape(e.excerpt)
    }</blockquote></li>`
  );
  return `<details><summary>${examples.length} example${examples.length > 1 ? "s" : ""}</summary><ul>${
    items.join("")
  }</ul></details>`;
}

type FilterStats = Record<
  string,
  {
    documentsIn: number;
    droppedDocuments: number;
    droppedCharacters: number;
    reasons: Record<string, number>;
  }
>;

/** Each filter's drops by reason, with examples: the table beside the funnel. */
function filtersTable(filters: FilterStats, examples: Record<string, Record<string, Example[]>>): string {
  const rows: string[] = [];
  for (const [name, f] of Object.entries(filters)) {
    rows.push(
      `<tr class="filter"><th>${escape(name)}</th><td>${formatNumber(f.documentsIn)} in</td><td>${
        formatNumber(f.droppedDocuments)
      } dropped</td><td>${percent(f.droppedDocuments, f.documentsIn)}</td><td></td></tr>`,
    );
    const reasons = Object.entries(f.reasons ?? {}).sort((a, b) => b[1] - a[1]);
    for (const [reason, n] of reasons) {
      rows.push(
        `<tr><td class="reason">${escape(reason)}</td><td></td><td>${formatNumber(n)}</td><td>${
          percent(n, f.documentsIn)
        }</td><td>${examplesHtml(examples[name]?.[reason])}</td></tr>`,
      );
    }
  }
  return `<table class="filters"><caption>Why documents were dropped</caption>${rows.join("\n")}</table>`;
}

type DroppedStats = Record<string, { documents: number; characters: number }>;
type ClusterStats = {
  count?: number;
  documents?: number;
  largest?: number[];
  sizes?: Record<string, number>;
};

/** Dedupe: documents removed as exact, near or reference duplicates, and how clusters are sized. */
function dedupeHtml(
  dropped: DroppedStats,
  clusters: ClusterStats | undefined,
  documentsIn: number | undefined,
  examples: Record<string, Example[]> | undefined,
): string {
  const rows = Object.entries(dropped).map(([reason, d]) =>
    `<tr><td class="reason">${escape(reason)}</td><td>${formatNumber(d.documents)}</td><td>${
      documentsIn ? percent(d.documents, documentsIn) : ""
    }</td><td>${formatNumber(d.characters)} chars</td><td>${examplesHtml(examples?.[reason])}</td></tr>`
  );
  const parts = [
    `<table class="filters"><caption>Duplicates removed</caption>${rows.join("\n")}</table>`,
  ];
  if (clusters?.sizes && Object.keys(clusters.sizes).length) {
    parts.push(
      `<figure>${
        barChart(
          "duplicate clusters by size (documents)",
          Object.entries(clusters.sizes).map(([name, value]) => ({ name, value })),
        )
      }</figure>`,
    );
  }
  if (clusters?.count !== undefined) {
    parts.push(
      `<p>${formatNumber(clusters.count)} clusters of duplicates holding ${
        formatNumber(clusters.documents ?? 0)
      } documents${
        clusters.largest?.length ? `; largest: ${clusters.largest.map(formatNumber).join(", ")}` : ""
      }.</p>`,
    );
  }
  return parts.join("\n");
}

/** Object stats shown as `a.b.c = value` rows (arrays of scalars inline, long ones cut). */
function flatten(value: unknown, prefix: string, out: [string, string][]) {
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v !== "object" || v === null)) {
      const shown = value.slice(0, 12).map((v) => typeof v === "number" ? formatNumber(v) : String(v));
      out.push([prefix, shown.join(", ") + (value.length > 12 ? `, … (${value.length})` : "")]);
    } else out.push([prefix, `${value.length} entries`]);
  } else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  } else {
    out.push([prefix, typeof value === "number" ? formatNumber(value) : String(value)]);
  }
}

/** Stats drawn elsewhere in the section, left out of the generic table. */
const DRAWN = new Set(["funnel", "filters", "dropped", "clusters", "badLineList"]);

async function stageBody(artifact: Artifact): Promise<string> {
  const stats = artifact.stats;
  const rows: [string, string][] = [];
  for (const [k, v] of Object.entries(stats)) {
    if (!DRAWN.has(k)) flatten(v, k, rows);
  }
  const parts: string[] = [];
  if (rows.length) {
    parts.push(
      `<table>${
        rows.map(([k, v]) => `<tr><th>${escape(k)}</th><td>${escape(v)}</td></tr>`).join("")
      }</table>`,
    );
  }
  const examples = (stats.examples ?? {}) as Record<string, Record<string, Example[]>>;
  const funnel = stats.funnel;
  if (Array.isArray(funnel)) {
    const chart = barChart(
      "documents kept, step by step",
      funnel.map((f: { name: string; documents: number }) => ({ name: f.name, value: f.documents })),
    );
    const table = stats.filters && typeof stats.filters === "object"
      ? filtersTable(stats.filters as FilterStats, examples)
      : "";
    parts.push(`<div class="funnel"><figure>${chart}</figure>${table}</div>`);
  }
  if (stats.dropped && typeof stats.dropped === "object" && !Array.isArray(stats.dropped)) {
    parts.push(
      dedupeHtml(
        stats.dropped as DroppedStats,
        stats.clusters as ClusterStats | undefined,
        typeof stats.documentsIn === "number" ? stats.documentsIn : undefined,
        examples.dedupe,
      ),
    );
  }
  const metrics = await readMetrics(artifact);
  if (metrics.length) {
    const xKey = "step" in metrics[0] ? "step" : "iteration" in metrics[0] ? "iteration" : undefined;
    const fields = new Set<string>();
    for (const m of metrics) {
      for (const [k, v] of Object.entries(m)) if (typeof v === "number" && k !== xKey) fields.add(k);
    }
    for (const field of fields) {
      const rows = metrics.filter((m) => typeof m[field] === "number");
      const xs = rows.map((m, i) => (xKey ? Number(m[xKey]) : i));
      parts.push(`<figure>${lineChart(field, xs, rows.map((m) => m[field] as number))}</figure>`);
    }
  }
  return parts.join("\n");
}

/** Renders the report of a pipeline's stages (as `status` sees them) and their committed artifacts. */
export async function renderReport(
  name: string,
  statuses: StageStatus[],
  artifacts: Record<string, Artifact>,
): Promise<string> {
  const sections: string[] = [];
  for (const s of statuses) {
    const artifact = artifacts[s.id];
    const body = artifact ? await stageBody(artifact) : "";
    const seconds = artifact ? `, ${(artifact.manifest.durationMs / 1000).toFixed(1)} s` : "";
    sections.push(
      `<section><h2>${escape(s.id)} <small>${escape(s.stage)} → ${
        escape(s.kind)
      } · ${s.state}${seconds}</small></h2>
${s.reasons.length ? `<p class="why">${escape(s.reasons.join("; "))}</p>` : ""}
${body}
</section>`,
    );
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kiln report: ${escape(name)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
h2 small { font-weight: normal; color: #666; font-size: 0.75em; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { padding: 2px 10px; text-align: left; vertical-align: top; }
th { font-weight: normal; color: #555; } td { font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; } .why { color: #9a3412; }
section { border-top: 1px solid #ddd; padding-top: 0.5em; }
.funnel { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 1em; }
caption { text-align: left; font-weight: bold; font-size: 12px; padding-bottom: 4px; }
tr.filter th { font-weight: bold; color: #222; } td.reason { padding-left: 1.5em; }
.dim { color: #777; } blockquote { margin: 2px 0 8px 0; padding-left: 8px; border-left: 3px solid #ddd; color: #444; }
details ul { padding-left: 1em; margin: 4px 0; max-width: 560px; } summary { cursor: pointer; color: #c2410c; }
</style></head><body>
<h1>kiln report: ${escape(name)}</h1>
<p>generated ${new Date().toISOString()}</p>
${sections.join("\n")}
</body></html>
`;
}
