/**
 * The run report: one self-contained HTML file with each stage's state, stats and plots, drawn as
 * inline SVG (no scripts, no network), so it opens anywhere, including as a CI artifact.
 *
 * What gets plotted, by convention:
 * - `metrics.jsonl` in a stage's artifact (one JSON object a line, with `step` or `iteration`): one
 *   line chart per numeric field (loss, val_loss, lr, reward, kl…);
 * - a `funnel` stat, `[{ name, documents }]` in order: a bar chart of what each filter kept.
 * @module
 */
import type { Artifact } from "./artifact.ts";
import type { StageStatus } from "./pipeline.ts";

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

async function stagePlots(artifact: Artifact): Promise<string[]> {
  const plots: string[] = [];
  const funnel = artifact.stats.funnel;
  if (Array.isArray(funnel)) {
    plots.push(barChart(
      "documents kept, step by step",
      funnel.map((f: { name: string; documents: number }) => ({ name: f.name, value: f.documents })),
    ));
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
      plots.push(lineChart(field, xs, rows.map((m) => m[field] as number)));
    }
  }
  return plots;
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
    const stats = Object.entries(artifact?.stats ?? {}).filter(([, v]) =>
      typeof v !== "object" || v === null
    );
    const table = stats.length
      ? `<table>${
        stats.map(([k, v]) =>
          `<tr><th>${escape(k)}</th><td>${
            escape(typeof v === "number" ? formatNumber(v) : String(v))
          }</td></tr>`
        )
          .join("")
      }</table>`
      : "";
    const plots = artifact ? await stagePlots(artifact) : [];
    const seconds = artifact ? `, ${(artifact.manifest.durationMs / 1000).toFixed(1)} s` : "";
    sections.push(
      `<section><h2>${escape(s.id)} <small>${escape(s.stage)} → ${
        escape(s.kind)
      } · ${s.state}${seconds}</small></h2>
${s.reasons.length ? `<p class="why">${escape(s.reasons.join("; "))}</p>` : ""}
${table}
${plots.map((p) => `<figure>${p}</figure>`).join("\n")}
</section>`,
    );
  }
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>kiln report: ${escape(name)}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; max-width: 980px; margin: 2em auto; color: #222; }
h2 small { font-weight: normal; color: #666; font-size: 0.75em; }
table { border-collapse: collapse; margin: 0.5em 0; } th, td { padding: 2px 10px; text-align: left; }
th { font-weight: normal; color: #555; } td { font-variant-numeric: tabular-nums; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; } .why { color: #9a3412; }
section { border-top: 1px solid #ddd; padding-top: 0.5em; }
</style></head><body>
<h1>kiln report: ${escape(name)}</h1>
<p>generated ${new Date().toISOString()}</p>
${sections.join("\n")}
</body></html>
`;
}
