#!/usr/bin/env bash
# The first minutes on a GPU: kiln's kernel bench (bench:gpu), the GPT-2 124M training bench in fp32
# and mixed precision (with the device counters per step), the matmul autotuner's picks, and the peers of ../shared/tools/gpu-peers
# (FMA ceiling, jax-js and tfjs matmul, PyTorch GPT-2), all in one call, then a table of ratios.
#
#   bash ../shared/tools/gpu-prep.sh bench/kernels_bench.ts bench/model_bench.ts bench/autotune_bench.ts \
#     bench/gpu_ratio_table.ts
#   (and the peers' cache, see ../shared/tools/gpu-peers/README.md) on the CPU machine; then, on the GPU
#   machine (offline):
#   bash bench/gpu_first_minute.sh            # real shapes: 4096³ matmul, GPT-2 124M at B8×T1024
#   bash bench/gpu_first_minute.sh --tiny     # the same steps at toy sizes (checks the script on llvmpipe)
#
# Every step has a time limit (the whole stays under ~9 minutes); outputs are kept in $OUT (the device
# tool's folder) or .kiln/gpu-first-minute/, one file per step, and the table is printed at the end.
# Entry points import no npm package, so nothing needs fetching.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
tiny=0
[ "${1:-}" = "--tiny" ] && tiny=1
[ -f .device/env.sh ] && source .device/env.sh
out=${OUT:-$root/.kiln}/gpu-first-minute
mkdir -p "$out"
cached=()
[ -n "${DENO_DIR:-}" ] && [ -d "${DENO_DIR}" ] && cached=(--cached-only)
peers=""
for dir in "$root/shared/tools/gpu-peers" "$root/../shared/tools/gpu-peers"; do
  [ -d "$dir" ] && peers=$dir && break
done

# step NAME SECONDS COMMAND...: runs it with a limit, output to $out/NAME.txt, shows its tail.
step() {
  local name=$1 limit=$2
  shift 2
  echo "== $name: $*"
  local start=$SECONDS
  timeout "$limit" "$@" >"$out/$name.txt" 2>&1
  local rc=$?
  tail -n 25 "$out/$name.txt"
  echo "== $name: exit $rc after $((SECONDS - start)) s"
}

export KILN_BACKEND=webgpu
deno --version | head -1
if [ "$tiny" = 1 ]; then
  size=128 groups=16
  step kernels 300 deno run -A ${cached[@]+"${cached[@]}"} bench/kernels_bench.ts
  step model 300 deno run -A ${cached[@]+"${cached[@]}"} bench/model_bench.ts
  step autotune 120 deno run -A ${cached[@]+"${cached[@]}"} bench/autotune_bench.ts --small --quick
else
  size=4096 groups=16384
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || true
  step kernels 150 deno run -A ${cached[@]+"${cached[@]}"} bench/kernels_bench.ts
  step model 200 deno run -A ${cached[@]+"${cached[@]}"} bench/model_bench.ts --gpt2 --batch 8 --seq 1024 --steps 10
  step autotune 90 deno run -A ${cached[@]+"${cached[@]}"} bench/autotune_bench.ts
fi

if [ -n "$peers" ]; then
  step fma 60 deno run -A ${cached[@]+"${cached[@]}"} "$peers/fma.ts" "$groups"
  if [ -f .device/peers.tar.xz ] || [ -d /tmp/peers ]; then
    [ -d /tmp/peers ] || tar xJf .device/peers.tar.xz -C /tmp
    step jax 90 env DENO_DIR=/tmp/peers deno run -A --cached-only "$peers/jax_mm.ts" "$size"
    step tfjs 90 env DENO_DIR=/tmp/peers deno run -A --cached-only "$peers/tfjs_mm.ts" "$size"
  else
    echo "== jax, tfjs: skipped (no .device/peers.tar.xz; see $peers/README.md)"
  fi
  if [ "$tiny" = 0 ] && python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
    step torch 150 python3 "$peers/torch_gpt.py"
  else
    echo "== torch: skipped (--tiny, or no PyTorch with CUDA here)"
  fi
else
  echo "== peers: skipped (no shared/tools/gpu-peers next to the checkout)"
fi

deno run --allow-read ${cached[@]+"${cached[@]}"} bench/gpu_ratio_table.ts "$out" | tee "$out/table.md"
