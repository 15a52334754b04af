#!/usr/bin/env bash
# The GPU check as one prepared script, for a session that has a CUDA machine lent (issue 27):
#   bash tools/gpu_check.sh [more `ghostbox bench gpu` flags]
# runs `ghostbox bench gpu --out docs/benchmarks/gpu.md` (pipeline/bench/gpu_check.py): the PyTorch and
# ONNX Runtime CUDA backends, fp32 and fp16, against the CPU's logits, features and boxes, then `ghostbox run`
# frames/s and GPU memory for 1, 4 and 16 streams of 640 px. Estimated at 3-5 minutes on one H100 (not yet
# timed there: nine short runs, mostly process start-up); progress lines as it goes, then one table. Without CUDA it prints "no CUDA device: nothing measured" and exits 0 (CI).
#   GPU_CHECK_OUT  where the page goes (default docs/benchmarks/gpu.md; .json for the figures alone)
# Exits 1 when a check failed or a run did not finish (the page is still written, showing which).
set -euo pipefail
cd "$(dirname "$0")/.."

out="${GPU_CHECK_OUT:-docs/benchmarks/gpu.md}"
stamp="$(mktemp)"
trap 'rm -f "$stamp"' EXIT

status=0
.venv/bin/ghostbox bench gpu --out "$out" "$@" || status=$?
if [ -f "$out" ] && [ "$out" -nt "$stamp" ]; then
  echo "gpu_check: the page is $out; link it from docs/benchmarks/README.md if it is new"
fi
exit "$status"
