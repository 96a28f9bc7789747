# Retrieval / OOD metrics (common/metrics). Owner: metrics layer.
BENCH_METRICS_ARGS ?=

.PHONY: bench-metrics bench-metrics-small bench-metrics-gpu test-metrics

bench-metrics: ## time our retrieval metrics vs PML AccuracyCalculator on an SOP-like set (N=2k, 5k, 20k, 60,502, d=512); prints ratio_vs_pml
	"$(PY)" benchmarks/bench_retrieval_metrics.py $(BENCH_METRICS_ARGS)

bench-metrics-small: ## the same benchmark on 2,000 and 5,000 items (a quick check)
	"$(PY)" benchmarks/bench_retrieval_metrics.py --n 2000 5000 --skip-full

bench-metrics-gpu: ## GPU: metric tests marked gpu, ours vs PML on the GPU, then one training step per method at paper shapes (benchmarks/gpu_check.sh)
	PY="$(PY)" bash benchmarks/gpu_check.sh

test-metrics: ## run the metrics tests (retrieval, candidate pass, OOD, relevance, kNN)
	"$(PY)" -m pytest -q tests/common/test_metrics_retrieval.py tests/common/test_metrics_candidates.py tests/common/test_metrics_ood.py tests/common/test_relevance.py tests/common/test_knn.py
