# GalLoP (few-shot prompt learning on CLIP): weights, data, demo, tables, benchmark. `make help` lists them.
CLIP_MODEL ?= ViT-B-16
CLIP_TAG ?= openai
GALLOP_RUNS ?= logs/gallop
GALLOP_SEEDS ?= 1 2 3
GALLOP_DATASETS ?= imagenet caltech101 oxford_pets stanford_cars oxford_flowers food101 fgvc_aircraft sun397 dtd eurosat ucf101
GALLOP_ARGS ?=

.PHONY: weights-clip data-coop demo-gallop test-gallop table-gallop table-gallop-shots table-gallop-baselines table-gallop-render bench-gallop

weights-clip: ## download open_clip weights (default ViT-B-16 openai) into $(WEIGHTS_DIR)/open_clip/<model>-<tag>/ (needs internet)
	@echo "Fetching $(CLIP_MODEL) / $(CLIP_TAG) from the Hugging Face Hub (open_clip's mirror of the OpenAI release)."
	@echo "Offline machines: run this on a login node, or copy an open_clip folder (open_clip_config.json + weights)"
	@echo "to $(WEIGHTS_DIR)/open_clip/$(CLIP_MODEL)-$(CLIP_TAG)/ by hand."
	HF_HUB_OFFLINE=0 $(PY) -m common.backbones.clip --model $(CLIP_MODEL) --tag $(CLIP_TAG) --weights-dir $(WEIGHTS_DIR)

data-coop: ## say where to get the 11 CoOp datasets, CoOp's split_zhou files and the ImageNet DG/OOD sets; check $(DATA_DIR)
	@echo "Few-shot datasets go under $(DATA_DIR)/coop/ in CoOp's layout (github.com/KaiyangZhou/CoOp, DATASETS.md):"
	@echo "  imagenet/images/{train,val}, imagenet/classnames.txt   <- image-net.org (ILSVRC-2012); classnames.txt from CoOp's DATASETS.md"
	@echo "  caltech-101/101_ObjectCategories                         <- data.caltech.edu (Caltech101)"
	@echo "  oxford_pets/images                                       <- robots.ox.ac.uk/~vgg/data/pets"
	@echo "  stanford_cars/{cars_train,cars_test}                     <- Stanford Cars (see CoOp DATASETS.md for mirrors)"
	@echo "  oxford_flowers/jpg                                       <- robots.ox.ac.uk/~vgg/data/flowers/102"
	@echo "  food-101/images                                          <- data.vision.ee.ethz.ch/cvl/datasets_extra/food-101"
	@echo "  fgvc_aircraft/{images,variants.txt,images_variant_*.txt} <- robots.ox.ac.uk/~vgg/data/fgvc-aircraft (data/ folder)"
	@echo "  sun397/SUN397                                            <- vision.princeton.edu/projects/2010/SUN"
	@echo "  dtd/images                                               <- robots.ox.ac.uk/~vgg/data/dtd"
	@echo "  eurosat/2750                                             <- github.com/phelber/EuroSAT (RGB)"
	@echo "  ucf101/UCF-101-midframes                                 <- CoOp's Google Drive (UCF-101-midframes.zip)"
	@echo "  split files: split_zhou_<Dataset>.json in each folder    <- the Google Drive links in CoOp's DATASETS.md"
	@echo "  (GalLoP also ships them in MarcLafon/gallop gallop/datasets/files/, except Food101 and SUN397)"
	@echo "Domain generalisation (same root): imagenetv2/imagenetv2-matched-frequency-format-val (github.com/modestyachts/ImageNetV2),"
	@echo "  imagenet-sketch/images (github.com/HaohanWang/ImageNet-Sketch), imagenet-adversarial/imagenet-a and"
	@echo "  imagenet-rendition/imagenet-r (github.com/hendrycks/natural-adv-examples, github.com/hendrycks/imagenet-r)."
	@echo "ImageNet OOD sets under $(DATA_DIR)/ood_data/: iNaturalist, SUN, Places (Huang & Li, MOS, CVPR 2021:"
	@echo "  pages.cs.wisc.edu/~huangrui/imagenet_ood_dataset/) and dtd/images (all of DTD)."
	@echo "Present under $(DATA_DIR):"
	@for d in coop/imagenet coop/caltech-101 coop/oxford_pets coop/stanford_cars coop/oxford_flowers coop/food-101 coop/fgvc_aircraft coop/sun397 coop/dtd coop/eurosat coop/ucf101 coop/imagenetv2 coop/imagenet-sketch coop/imagenet-adversarial coop/imagenet-rendition ood_data/iNaturalist ood_data/SUN ood_data/Places ood_data/dtd; do \
	  if [ -d $(DATA_DIR)/$$d ]; then echo "  [x] $$d"; else echo "  [ ] $$d"; fi; done

demo-gallop: ## GalLoP vs CoOp vs zero-shot CLIP on few-shot Fashion-MNIST (+ GL-MCM OOD, heatmaps) -> results/demo/gallop.*
	"$(PY)" -m gallop.demo --out results/demo

test-gallop: ## the GalLoP and CLIP-backbone tests
	"$(PY)" -m pytest -q tests/gallop tests/common/test_clip_backbone.py

table-gallop: ## 16-shot GalLoP on the 11 datasets x seeds $(GALLOP_SEEDS), then results/gallop/table.md (mean ± std)
	@set -e; for d in $(GALLOP_DATASETS); do for s in $(GALLOP_SEEDS); do \
	  "$(PY)" -m common.launch experiment=gallop/$${d}_16shot seed=$$s "hydra.run.dir=$(GALLOP_RUNS)/$${d}_16shot/shots16/seed$$s" $(GALLOP_ARGS); \
	done; done
	$(MAKE) table-gallop-render

# Lower shots: GalLoP only published 16-shot settings. Our choice: CoOp's epochs per shot (1 -> 50, 2/4 -> 100,
# 8 -> 200; ImageNet 50 for every shot), with each dataset's 16-shot batch size.
table-gallop-shots: ## 1/2/4/8-shot GalLoP (CoOp's epochs per shot, our choice) x seeds, then the tables
	@set -e; for k in 1 2 4 8; do case $$k in 1) ep=50;; 2|4) ep=100;; 8) ep=200;; esac; \
	  for d in $(GALLOP_DATASETS); do e=$$ep; if [ $$d = imagenet ]; then e=50; fi; for s in $(GALLOP_SEEDS); do \
	    "$(PY)" -m common.launch experiment=gallop/$${d}_16shot data.shots=$$k trainer.max_epochs=$$e seed=$$s \
	      "hydra.run.dir=$(GALLOP_RUNS)/$${d}_16shot/shots$$k/seed$$s" $(GALLOP_ARGS); \
	  done; done; done
	$(MAKE) table-gallop-render

table-gallop-baselines: ## CoOp (16 shots) and zero-shot CLIP on ImageNet with DG and OOD sets (rows of the DG/OOD tables)
	@set -e; for s in $(GALLOP_SEEDS); do \
	  "$(PY)" -m common.launch experiment=gallop/imagenet_coop seed=$$s "hydra.run.dir=$(GALLOP_RUNS)/imagenet_coop/shots16/seed$$s" $(GALLOP_ARGS); \
	done
	"$(PY)" -m common.launch experiment=gallop/imagenet_zeroshot "hydra.run.dir=$(GALLOP_RUNS)/imagenet_zeroshot/shots0/seed1" $(GALLOP_ARGS)
	$(MAKE) table-gallop-render

table-gallop-render: ## rebuild results/gallop/table.md from the runs in $(GALLOP_RUNS)
	"$(PY)" -m gallop.tables --runs "$(GALLOP_RUNS)" --out results/gallop/table.md

bench-gallop: ## time a GalLoP step: value path in the last block (ours) vs every block (original), ViT-B/16 on CPU
	"$(PY)" benchmarks/bench_gallop_step.py --batch 32 --classes 100 --threads 2
