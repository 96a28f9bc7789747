# GalLoP (few-shot prompt learning on CLIP): demo, tables, benchmark (weights: mk/weights.mk, data: mk/data.mk). `make help` lists them.
GALLOP_RUNS ?= logs/gallop
GALLOP_SEEDS ?= 1 2 3
GALLOP_DATASETS ?= imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101
GALLOP_ARGS ?=

.PHONY: demo-gallop test-gallop table-gallop table-gallop-parity table-gallop-shots table-gallop-baselines table-gallop-render bench-gallop

demo-gallop: ## GalLoP vs CoOp vs zero-shot CLIP on cluttered few-shot Fashion-MNIST scenes with the repo's small CLIP (+ GL-MCM OOD, heatmaps), seeds 1-3 -> $(DEMO_OUT)/gallop.*
	"$(PY)" -m gallop.demo --out "$(DEMO_OUT)" $(ARGS)

test-gallop: ## the GalLoP and CLIP-backbone tests
	"$(PY)" -m pytest -q tests/gallop tests/common/test_clip_backbone.py

# Each table target runs its rows as Hydra multiruns (one process per multirun; with hydra/launcher=slurm one job per
# row), one sweep folder per multirun under $(GALLOP_RUNS), each run in <sweep>/<experiment>/shots<K>/seed<S>. A key
# of GALLOP_ARGS that only the experiments have (model.net.clip.pretrained=...) is checked in each of them and passed
# on with `++` by the launcher (docs/runs.md#checks-before-a-run-starts).
GALLOP_JOB_DIR := hydra.sweep.subdir="$${basename:$${experiment_name}}/shots$${data.shots}/seed$${seed}"
gallop_multirun = "$(PY)" -m common.launch -m "hydra.sweep.dir=$(GALLOP_RUNS)/$(1)" '$(GALLOP_JOB_DIR)' seed=$(or $(2),$(call commas,$(GALLOP_SEEDS)))

table-gallop: ## 16-shot GalLoP on the 11 datasets x seeds $(GALLOP_SEEDS) (one multirun), then the tables (results/tables/gallop.md, mean ± std)
	$(call gallop_multirun,shots16) experiment=$(call experiments,gallop,$(addsuffix _16shot,$(GALLOP_DATASETS))) $(GALLOP_ARGS)
	$(MAKE) table-gallop-render

# The original's few-shot subsets: its proportional split with its class ids (data.sampling=gallop_parity), seed 1
# as the original; rows <dataset>_16shot_gallop_parity.
table-gallop-parity: ## 16-shot GalLoP on the 11 datasets with the original's few-shot subsets (gallop_parity, seed 1), then the tables
	$(call gallop_multirun,parity,1) ++data.sampling=gallop_parity \
	  experiment=$(call experiments,gallop,$(addsuffix _16shot,$(GALLOP_DATASETS))) $(GALLOP_ARGS)
	$(MAKE) table-gallop-render

# Lower shots: GalLoP only published 16-shot settings. Our choice: CoOp's epochs per shot (1 -> 50, 2/4 -> 100,
# 8 -> 200; ImageNet 50 for every shot), with each dataset's 16-shot batch size, keeping the last partial batch
# (dropping it, as the 16-shot rows do, would skip 5 of Pets' 37 images per 1-shot epoch, and all of a set smaller
# than one batch). One multirun per shot count (all datasets but ImageNet), and one for ImageNet over the four counts.
GALLOP_LOW_SHOT_DATASETS = $(filter-out imagenet,$(GALLOP_DATASETS))
table-gallop-shots: ## 1/2/4/8-shot GalLoP (CoOp's epochs per shot, our choice) x seeds, then the tables
	@set -e; if [ -n "$(strip $(GALLOP_LOW_SHOT_DATASETS))" ]; then for k in 1 2 4 8; do \
	  case $$k in 1) ep=50;; 2|4) ep=100;; 8) ep=200;; esac; \
	  $(call gallop_multirun,shots$$k) ++data.shots=$$k ++data.drop_last=false trainer.max_epochs=$$ep \
	    experiment=$(call experiments,gallop,$(addsuffix _16shot,$(GALLOP_LOW_SHOT_DATASETS))) $(GALLOP_ARGS); \
	done; fi
	$(if $(filter imagenet,$(GALLOP_DATASETS)),$(call gallop_multirun,shots1-8_imagenet) data.shots=1$(comma)2$(comma)4$(comma)8 \
	  ++data.drop_last=false trainer.max_epochs=50 experiment=gallop/imagenet_16shot $(GALLOP_ARGS))
	$(MAKE) table-gallop-render

table-gallop-baselines: ## CoOp (16 shots) and zero-shot CLIP on ImageNet with DG and OOD sets (rows of the DG/OOD tables)
	$(call gallop_multirun,coop) experiment=gallop/imagenet_coop $(GALLOP_ARGS)
	"$(PY)" -m common.launch experiment=gallop/imagenet_zeroshot "hydra.run.dir=$(GALLOP_RUNS)/imagenet_zeroshot/shots0/seed1" $(GALLOP_ARGS)
	$(MAKE) table-gallop-render

table-gallop-render: ## rebuild the GalLoP tables (results/tables/gallop.md, mean ± std over seeds) from the records
	"$(PY)" -m common.results.collect --method gallop

bench-gallop: ## time a GalLoP step: value path in the last block (ours) vs every block (original), ViT-B/16 on CPU
	"$(PY)" benchmarks/bench_gallop_step.py --batch 32 --classes 100 --threads 2
