#!/usr/bin/env bash
# GPU check, ready for a CUDA machine: installs what it needs, then bf16 / fp16-with-scaler / fp32 fine-tuning
# and one throughput table (benchmarks/gpu_check.py), within five minutes. Results: $OUT or benchmarks/results.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
export VENV=${VENV:-$HOME/.cache/transferkit/venv}
bash "$here/.ci/setup"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
timeout 300 "$VENV/bin/python" "$here/benchmarks/gpu_check.py" ${OUT:+--results-dir "$OUT"} "$@"
