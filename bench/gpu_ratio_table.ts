/**
 * Reads the outputs `bench/gpu_first_minute.sh` saved (one file per step in a directory) and prints
 * kiln's figures beside its peers' and the issue's targets, as ratios measured in the same call.
 *
 *   deno run --allow-read bench/gpu_ratio_table.ts DIR
 *
 * No imports: it runs on an offline GPU machine with nothing cached.
 * @module
 */

const dir = Deno.args[0];
if (!dir) throw new Error("usage: deno run --allow-read bench/gpu_ratio_table.ts DIR");

function read(name: string): string {
  try {
    return Deno.readTextFileSync(`${dir}/${name}.txt`);
  } catch {
    return "";
  }
}

/** The first match's numeric groups of `re` in step `name`'s output, or undefined. */
function find(name: string, re: RegExp): RegExpMatchArray | undefined {
  return read(name).match(re) ?? undefined;
}

const kernels = read("kernels"), model = read("model");
const adapter = kernels.match(/^# kiln kernels on (.*?) \(/m)?.[1] ??
  model.match(/^kiln: webgpu on (.*)$/m)?.[1];

/** TFLOP/s from a "N GFLOP/s" or "N TFLOP/s" figure. */
const tflops = (value: string, unit: string) => Number(value) / (unit === "G" ? 1000 : 1);

const matmul = kernels.match(/^matmul f32\s*\|\s*(\S+)\s*\|\s*[\d.]+\s*\|\s*([\d.]+) (G|T)FLOP\/s/m);
const kilnMatmul = matmul ? tflops(matmul[2], matmul[3]) : undefined;
const jax = find("jax", /matmul fp32 (\d+)\^3: .*?([\d.]+) TFLOP\/s/);
const tfjs = find("tfjs", /matmul fp32 (\d+)\^3: .*?([\d.]+) TFLOP\/s/);
const fma = find("fma", /^f32: ([\d.]+) TFLOP\/s/m);
// Memory-bound kernels: the best achieved bandwidth among the elementwise ones.
const bandwidths = [
  ...kernels.matchAll(
    /^(gelu forward|gelu backward|residual add|copy|scale|adamw)\s*\|.*?\|\s*([\d.]+) GB\/s/gm,
  ),
]
  .map((m) => ({ kernel: m[1], gbs: Number(m[2]) }));
const bestBandwidth = bandwidths.sort((a, b) => b.gbs - a.gbs)[0];

const gpt2 = (precision: string) =>
  model.match(
    new RegExp(
      `^webgpu GPT-2 124M \\((B\\d+×T\\d+)\\) ${precision}: ([\\d.]+) ms/step, (\\d+) tokens/s`,
      "m",
    ),
  );
const tiny = (precision: string) =>
  model.match(
    new RegExp(`^webgpu tiny 2×64 \\(B4×T32\\) ${precision}: ([\\d.]+) ms/step, (\\d+) tokens/s`, "m"),
  );
const torch = (modelName: string, mode: string) =>
  find("torch", new RegExp(`^${modelName}\\s+${mode}\\s+.*?(\\d+) tok/s`, "m"));

interface Row {
  what: string;
  kiln?: number;
  peer?: number;
  peerName: string;
  unit: string;
  target: string;
}
const rows: Row[] = [
  {
    what: `matmul ${matmul?.[1] ?? "?"} fp32`,
    kiln: kilnMatmul,
    peer: jax ? Number(jax[2]) : undefined,
    peerName: `jax-js${jax ? ` ${jax[1]}³` : ""}`,
    unit: "TFLOP/s",
    target: "≥ 25 TFLOP/s at 4096³",
  },
  {
    what: `matmul ${matmul?.[1] ?? "?"} fp32`,
    kiln: kilnMatmul,
    peer: tfjs ? Number(tfjs[2]) : undefined,
    peerName: `tfjs-webgpu${tfjs ? ` ${tfjs[1]}³` : ""}`,
    unit: "TFLOP/s",
    target: "",
  },
  {
    what: `matmul ${matmul?.[1] ?? "?"} fp32`,
    kiln: kilnMatmul,
    peer: fma ? Number(fma[1]) : undefined,
    peerName: "FMA ceiling (f32)",
    unit: "TFLOP/s",
    target: "",
  },
  {
    what: `memory-bound (best: ${bestBandwidth?.kernel ?? "?"})`,
    kiln: bestBandwidth?.gbs,
    peer: 3000,
    peerName: "HBM roofline 3.0 TB/s",
    unit: "GB/s",
    target: "≥ 2000 GB/s",
  },
  ...(["fp32", "mixed"] as const).map((precision) => ({
    what: `GPT-2 124M ${gpt2(precision)?.[1] ?? ""} ${precision}`,
    kiln: gpt2(precision) ? Number(gpt2(precision)![3]) : undefined,
    peer: torch("gpt2-124M", precision === "fp32" ? "fp32" : "bf16")
      ? Number(torch("gpt2-124M", precision === "fp32" ? "fp32" : "bf16")![1])
      : undefined,
    peerName: `PyTorch eager ${precision === "fp32" ? "fp32" : "bf16"}`,
    unit: "tokens/s",
    target: precision === "fp32" ? "≥ 25k tokens/s" : "",
  })),
  ...(["fp32", "mixed"] as const).map((precision) => ({
    what: `tiny 2×64 B4×T32 ${precision}`,
    kiln: tiny(precision) ? Number(tiny(precision)![2]) : undefined,
    peer: undefined,
    peerName: "–",
    unit: "tokens/s",
    target: "",
  })),
];

const fmt = (x: number | undefined) =>
  x === undefined ? "–" : x >= 100 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toPrecision(3);
console.log(`\n## GPU first minute: ${adapter ?? "adapter unknown"} (${new Date().toISOString()})\n`);
console.log("| what | kiln | peer | peer figure | kiln / peer | unit | target |");
console.log("|---|---|---|---|---|---|---|");
for (const r of rows) {
  const ratio = r.kiln !== undefined && r.peer ? (r.kiln / r.peer).toFixed(2) : "–";
  console.log(
    `| ${r.what} | ${fmt(r.kiln)} | ${r.peerName} | ${fmt(r.peer)} | ${ratio} | ${r.unit} | ${r.target} |`,
  );
}
const counts = [...model.matchAll(/^ {2}(fp32|mixed) counts per (step|readMetrics[^:]*): (.*)$/gm)];
if (counts.length > 0) {
  console.log("\nDevice traffic per training step (backend counters):");
  for (const c of counts) console.log(`- ${c[1]} per ${c[2]}: ${c[3]}`);
}
const picks = [...read("autotune").matchAll(/^(.+?) \((\w+)\): (\w+) {2}\[ms: (.*)\]$/gm)];
if (picks.length > 0) {
  console.log("\nMatmul autotuner's picks (ms per product):");
  for (const p of picks) console.log(`- ${p[1]}: ${p[3]} (${p[4]})`);
}
const missing = ["kernels", "model", "autotune", "fma", "jax", "tfjs", "torch"].filter((name) =>
  read(name) === ""
);
if (missing.length > 0) console.log(`\nno output from: ${missing.join(", ")} (see ${dir})`);
