#!/usr/bin/env bash
# GPU check of the metrics layer and of each method's training step, for one short session on a CUDA machine. Every
# part runs under `timeout`; the limits add up to 340 s (the training-step limits are estimates: not yet run on a GPU):
#   1. the metric tests marked `gpu` (CUDA engines and every candidate-pass precision against float64 CPU values,
#      the precision probe, faiss-gpu / torch kNN against the CPU search, PML on the GPU);
#   2. benchmarks/bench_gpu.py --part metrics: ours vs PML's AccuracyCalculator on the GPU at N = 2k, 5k, 20k, 60,502
#      (d = 512), plus the graded metrics at 60,502; prints gpu_ratio_vs_pml[N=...] lines;
#   3. benchmarks/bench_gpu.py --part train-step, one process per method (heat, roadmap, happier, gallop): one training
#      step at the paper's shapes and precision, random-init weights; prints
#      train_step[method=...,config=...] total_ms=... ours_ms=... share=... and train_step_parts[...] lines.
# Needs: torch with CUDA, numpy, pytest, timm, open_clip, hydra, lightning; optional: pytorch-metric-learning + faiss
# (faiss-gpu for the GPU kNN path). Tests needing an absent optional package are skipped, not failed.
# Usage (repository root):  bash benchmarks/gpu_check.sh        (PY=/path/to/python to choose the interpreter)
# Limits (seconds) can be raised: T_PYTEST, T_METRICS, T_HEAT, T_ROADMAP, T_HAPPIER, T_GALLOP.
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'PY'
import importlib.util
import torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""))
for name in ("numpy", "pytest", "pytorch_metric_learning", "faiss", "omegaconf", "hydra", "timm", "open_clip",
             "lightning"):
    print(f"  {name}: {'yes' if importlib.util.find_spec(name) else 'MISSING'}")
if importlib.util.find_spec("faiss"):
    import faiss
    print(f"  faiss GPUs: {faiss.get_num_gpus() if hasattr(faiss, 'get_num_gpus') else 0}")
PY

status=0
# part NAME LIMIT COMMAND...: run COMMAND under `timeout LIMIT`, report its exit status and wall time
part() {
  local name=$1 limit=$2 rc=0 start
  shift 2
  start=$(date +%s)
  echo "== $name (limit ${limit} s)"
  timeout "$limit" "$@" || rc=$?
  if [ "$rc" -eq 124 ]; then echo "$name: TIMED OUT after ${limit} s"; fi
  echo "$name: exit $rc, $(( $(date +%s) - start )) s"
  if [ "$rc" -ne 0 ]; then status=$rc; fi
}

part "pytest -m gpu (metrics)" "${T_PYTEST:-80}" "$PY" -m pytest -m gpu -q -rs tests/common/test_metrics_gpu.py
part "bench_gpu metrics" "${T_METRICS:-110}" \
  "$PY" benchmarks/bench_gpu.py --part metrics --n 2000 5000 20000 60502 --reps 3 --graded
part "train step heat" "${T_HEAT:-30}" "$PY" benchmarks/bench_gpu.py --part train-step --methods heat --step-reps 3
part "train step roadmap" "${T_ROADMAP:-40}" \
  "$PY" benchmarks/bench_gpu.py --part train-step --methods roadmap --step-reps 3
part "train step happier" "${T_HAPPIER:-30}" \
  "$PY" benchmarks/bench_gpu.py --part train-step --methods happier --step-reps 3
part "train step gallop" "${T_GALLOP:-50}" "$PY" benchmarks/bench_gpu.py --part train-step --methods gallop --step-reps 3
exit $status
