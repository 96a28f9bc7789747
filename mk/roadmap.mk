# ROADMAP / SupRank targets (roadmap/README.md maps each paper row to its experiment).
ROADMAP_ROWS ?= sop_resnet50 sop_deit cub_resnet50 cub_deit inat_resnet50 inat_deit
ROADMAP_LOSS_ROWS ?= $(foreach d,sop cub inat,$(foreach l,supap smoothap fastap blackboxap softbinap,$(d)_resnet50_$(l)))
XBM_ARGS ?=
ROADMAP_XBM_ROWS ?= sop_resnet50_xbm cub_resnet50_xbm inat_resnet50_xbm
ROADMAP_TPAMI_ROWS ?= $(foreach d,sop cub,$(foreach l,roadmap suprecall supndcg triplet multisimilarity nsm,tpami_$(d)_resnet50_$(l))) tpami_inat_resnet50_roadmap

.PHONY: table-roadmap table-roadmap-losses table-roadmap-xbm table-roadmap-tpami report-roadmap bench-roadmap demo-roadmap test-roadmap

table-roadmap: ## ROADMAP NeurIPS main rows (SOP/CUB/iNat x R50/DeiT-S) as one multirun; ARGS="hydra/launcher=slurm ..."
	"$(PY)" -m common.launch -m '$(MULTIRUN_JOB_DIR)' experiment=$(call experiments,roadmap,$(ROADMAP_ROWS)) $(ARGS)
	"$(PY)" -m common.results.collect --method roadmap

table-roadmap-losses: ## ROADMAP NeurIPS loss comparison rows (SupAP, Smooth-AP, FastAP, BlackBox-AP, SoftBin-AP)
	"$(PY)" -m common.launch -m '$(MULTIRUN_JOB_DIR)' experiment=$(call experiments,roadmap,$(ROADMAP_LOSS_ROWS)) $(ARGS)
	"$(PY)" -m common.results.collect --method roadmap

# The memory's loss weight and start epoch are not published: the rows leave model.memory.weight mandatory (???).
table-roadmap-xbm: ## ROADMAP NeurIPS XBM rows (SOP/CUB/iNat, R50); XBM_ARGS="model.memory.weight=W model.memory.activate_after=E" (unpublished)
	"$(PY)" -m common.launch -m '$(MULTIRUN_JOB_DIR)' experiment=$(call experiments,roadmap,$(ROADMAP_XBM_ROWS)) $(XBM_ARGS) $(ARGS)
	"$(PY)" -m common.results.collect --method roadmap

table-roadmap-tpami: ## SupRank (TPAMI) rows: ROADMAP 0.9/0.1, SupRecall, SupNDCG, triplet, MS, NSM
	"$(PY)" -m common.launch -m '$(MULTIRUN_JOB_DIR)' experiment=$(call experiments,roadmap,$(ROADMAP_TPAMI_ROWS)) $(ARGS)
	"$(PY)" -m common.results.collect --method roadmap

report-roadmap: ## the ROADMAP / SupRank tables from the records beside results/roadmap/published.yaml (results/tables/roadmap.md)
	"$(PY)" -m common.results.collect --method roadmap

bench-roadmap: ## time + peak memory of our O(B^2) rank losses vs the B^3 formulation (B=128,256,384, d=512)
	"$(PY)" benchmarks/bench_rank_losses.py $(ARGS)

demo-roadmap: data-fashion-mnist ## ROADMAP vs Smooth-AP vs triplet on Fashion-MNIST (CPU, seeds $(DEMO_SEEDS)) -> $(DEMO_OUT)/roadmap.*
	"$(PY)" -m roadmap.demo --out "$(DEMO_OUT)" --seeds $(DEMO_SEEDS) $(ARGS)

test-roadmap: ## run the roadmap tests (losses, memory, ranking, readers, samplers, configs)
	"$(PY)" -m pytest -q tests/roadmap tests/common/test_ranking.py tests/common/test_sampler_sliding_window.py \
		tests/common/test_sampler_hierarchical.py tests/common/test_datasets_sop.py tests/common/test_datasets_cub.py \
		tests/common/test_datasets_inat.py tests/common/test_datasets_inshop.py
