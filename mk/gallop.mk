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

table-gallop: ## 16-shot GalLoP on the 11 datasets x seeds $(GALLOP_SEEDS), then the tables (results/tables/gallop.md, mean ± std)
	@set -e; for d in $(GALLOP_DATASETS); do for s in $(GALLOP_SEEDS); do \
	  "$(PY)" -m common.launch experiment=gallop/$${d}_16shot seed=$$s "hydra.run.dir=$(GALLOP_RUNS)/$${d}_16shot/shots16/seed$$s" $(GALLOP_ARGS); \
	done; done
	$(MAKE) table-gallop-render

# The original's few-shot subsets: its proportional split with its class ids (data.sampling=gallop_parity), seed 1
# as the original; rows <dataset>_16shot_gallop_parity.
table-gallop-parity: ## 16-shot GalLoP on the 11 datasets with the original's few-shot subsets (gallop_parity, seed 1), then the tables
	@set -e; for d in $(GALLOP_DATASETS); do \
	  "$(PY)" -m common.launch experiment=gallop/$${d}_16shot data.sampling=gallop_parity seed=1 "hydra.run.dir=$(GALLOP_RUNS)/$${d}_16shot_gallop_parity/shots16/seed1" $(GALLOP_ARGS); \
	done
	$(MAKE) table-gallop-render

# Lower shots: GalLoP only published 16-shot settings. Our choice: CoOp's epochs per shot (1 -> 50, 2/4 -> 100,
# 8 -> 200; ImageNet 50 for every shot), with each dataset's 16-shot batch size, keeping the last partial batch
# (dropping it, as the 16-shot rows do, would skip 5 of Pets' 37 images per 1-shot epoch, and all of a set smaller
# than one batch).
table-gallop-shots: ## 1/2/4/8-shot GalLoP (CoOp's epochs per shot, our choice) x seeds, then the tables
	@set -e; for k in 1 2 4 8; do case $$k in 1) ep=50;; 2|4) ep=100;; 8) ep=200;; esac; \
	  for d in $(GALLOP_DATASETS); do e=$$ep; if [ $$d = imagenet ]; then e=50; fi; for s in $(GALLOP_SEEDS); do \
	    "$(PY)" -m common.launch experiment=gallop/$${d}_16shot data.shots=$$k data.drop_last=false trainer.max_epochs=$$e seed=$$s \
	      "hydra.run.dir=$(GALLOP_RUNS)/$${d}_16shot/shots$$k/seed$$s" $(GALLOP_ARGS); \
	  done; done; done
	$(MAKE) table-gallop-render

table-gallop-baselines: ## CoOp (16 shots) and zero-shot CLIP on ImageNet with DG and OOD sets (rows of the DG/OOD tables)
	@set -e; for s in $(GALLOP_SEEDS); do \
	  "$(PY)" -m common.launch experiment=gallop/imagenet_coop seed=$$s "hydra.run.dir=$(GALLOP_RUNS)/imagenet_coop/shots16/seed$$s" $(GALLOP_ARGS); \
	done
	"$(PY)" -m common.launch experiment=gallop/imagenet_zeroshot "hydra.run.dir=$(GALLOP_RUNS)/imagenet_zeroshot/shots0/seed1" $(GALLOP_ARGS)
	$(MAKE) table-gallop-render

table-gallop-render: ## rebuild the GalLoP tables (results/tables/gallop.md, mean ± std over seeds) from the records
	"$(PY)" -m common.results.collect --method gallop

bench-gallop: ## time a GalLoP step: value path in the last block (ours) vs every block (original), ViT-B/16 on CPU
	"$(PY)" benchmarks/bench_gallop_step.py --batch 32 --classes 100 --threads 2
