#!/usr/bin/env bash
# GPU check of the metrics layer, meant for one short session on a CUDA machine (about 4 minutes on an H200):
#   1. the metric tests marked `gpu` (CUDA engines and every candidate-pass precision against float64 CPU values,
#      the precision probe, faiss-gpu / torch kNN against the CPU search, PML on the GPU);
#   2. benchmarks/bench_gpu.py: ours vs PML's AccuracyCalculator on the GPU at N = 2k, 5k, 20k, 60,502 (d = 512),
#      plus the graded metrics at 60,502; prints gpu_ratio_vs_pml[N=...] lines.
# Needs: torch with CUDA, numpy, pytest; optional: pytorch-metric-learning + faiss (faiss-gpu for the GPU kNN path).
# Tests needing an absent optional package are skipped, not failed.
# Usage (repository root):  bash benchmarks/gpu_check.sh        (PY=/path/to/python to choose the interpreter)
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'PY'
import importlib.util
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
for name in ("numpy", "pytest", "pytorch_metric_learning", "faiss", "omegaconf"):
    print(f"  {name}: {'yes' if importlib.util.find_spec(name) else 'MISSING'}")
if importlib.util.find_spec("faiss"):
    import faiss
    print(f"  faiss GPUs: {faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0}")
PY

status=0
start=$(date +%s)
echo "== pytest -m gpu (metrics)"
timeout 150 "$PY" -m pytest -m gpu -q -rs tests/common/test_metrics_gpu.py || status=$?
echo "pytest: exit $status, $(( $(date +%s) - start )) s"

start=$(date +%s)
echo "== bench_gpu.py"
timeout 240 "$PY" benchmarks/bench_gpu.py --n 2000 5000 20000 60502 --reps 3 --graded || status=$?
echo "bench_gpu: $(( $(date +%s) - start )) s"
exit $status
