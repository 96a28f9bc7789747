# HAPPIER (hierarchical retrieval): demo, paper tables, published numbers. `make help` lists the targets.
.PHONY: demo-happier demo-multilabel test-happier table-happier table-happier-collect table-happier-sop table-happier-inat-base \
	table-happier-inat-full table-happier-dyml-vehicle table-happier-dyml-animal table-happier-dyml-product \
	table-happier-hgldv2 table-happier-coco

demo-happier: data-fashion-mnist ## HAPPIER vs ROADMAP on Fashion-MNIST (2 levels, seeds $(DEMO_SEEDS)): H-AP, ASI, NDCG, R@1 + grid -> $(DEMO_OUT)/happier.*
	"$(PY)" -m happier.demo --out "$(DEMO_OUT)" --seeds $(DEMO_SEEDS) $(ARGS)

demo-multilabel: data-fashion-mnist ## HAPPIER (multi-label) vs ROADMAP (same pair) on two-garment Fashion-MNIST (seeds $(DEMO_SEEDS)) -> $(DEMO_OUT)/multilabel.*
	"$(PY)" -m happier.demo --part multilabel --out "$(DEMO_OUT)" --seeds $(DEMO_SEEDS) $(ARGS)

test-happier: ## run the HAPPIER tests (losses, DyML / iNat / GLDv2 / COCO readers, grid)
	"$(PY)" -m pytest -q tests/happier tests/common/test_datasets_dyml.py tests/common/test_datasets_inat_hierarchy.py \
	  tests/common/test_datasets_gldv2.py tests/common/test_datasets_coco_multilabel.py \
	  tests/common/test_data_configs_hgldv2_coco.py tests/common/test_viz_retrieval_grid.py $(ARGS)

HAPPIER_RUNS ?= logs/happier
HAPPIER_MODELS ?= happier csl roadmap nsm

# one row: train + test (fine benchmark for DyML-Vehicle/Animal)
happier-row-%: ## one HAPPIER table row: train + test experiment=happier/<row> into $(HAPPIER_RUNS)/<row>
	"$(PY)" -m common.launch experiment=happier/$* "hydra.run.dir=$(HAPPIER_RUNS)/$*" $(ROW_ARGS) $(ARGS)

# DyML-Vehicle/Animal: test the row's last checkpoint on the middle and coarse benchmarks as well
happier-dyml-tests-%: happier-row-% ## a DyML-Vehicle/Animal row, then its middle and coarse benchmark tests
	for b in middle coarse; do \
	  "$(PY)" -m common.launch experiment=happier/$* train=false dyml_benchmark=$$b \
	    "ckpt_path=$(HAPPIER_RUNS)/$*/checkpoints/last.ckpt" "hydra.run.dir=$(HAPPIER_RUNS)/$*_$$b" $(ARGS) || exit 1; \
	done

# one table: its rows (HAPPIER_MODELS, or the models given as $(2)) as one multirun into
# $(HAPPIER_RUNS)/<dataset>/<row>; $(3): overrides of every row
happier_table = "$(PY)" -m common.launch -m "hydra.sweep.dir=$(HAPPIER_RUNS)/$(1)" '$(MULTIRUN_JOB_DIR)' \
	  experiment=$(call experiments,happier,$(addprefix $(1)_,$(or $(2),$(HAPPIER_MODELS)))) $(3) $(ARGS)
# DyML-Vehicle/Animal: each row's last checkpoint tested on the middle and coarse benchmarks (one multirun) into
# $(HAPPIER_RUNS)/<dataset>_tests/<row>_<benchmark>
happier_dyml_tests = "$(PY)" -m common.launch -m "hydra.sweep.dir=$(HAPPIER_RUNS)/$(1)_tests" \
	  'hydra.sweep.subdir="$${basename:$${experiment_name}}_$${dyml_benchmark}"' \
	  experiment=$(call experiments,happier,$(addprefix $(1)_,$(HAPPIER_MODELS))) train=false dyml_benchmark=middle,coarse \
	  'ckpt_path="$(HAPPIER_RUNS)/$(1)/$${basename:$${experiment_name}}/checkpoints/last.ckpt"' $(ARGS)

table-happier-sop: ## HAPPIER table, SOP rows (GPU; data-sop, weights-timm)
	$(call happier_table,sop)
	"$(PY)" -m common.results.collect --method happier
table-happier-inat-base: ## HAPPIER table, iNat-base rows (GPU)
	$(call happier_table,inat_base)
	"$(PY)" -m common.results.collect --method happier
table-happier-inat-full: ## HAPPIER table, iNat-full rows (GPU)
	$(call happier_table,inat_full)
	"$(PY)" -m common.results.collect --method happier
table-happier-dyml-vehicle: ## HAPPIER table, DyML-Vehicle (3 benchmarks, averaged)
	$(call happier_table,dyml_vehicle)
	$(call happier_dyml_tests,dyml_vehicle)
	"$(PY)" -m common.results.collect --method happier
table-happier-dyml-animal: ## HAPPIER table, DyML-Animal (3 benchmarks, averaged)
	$(call happier_table,dyml_animal)
	$(call happier_dyml_tests,dyml_animal)
	"$(PY)" -m common.results.collect --method happier
table-happier-dyml-product: ## HAPPIER table, DyML-Product (levels averaged)
	$(call happier_table,dyml_product)
	"$(PY)" -m common.results.collect --method happier

# HAPPIER's two extensions (docs/hgldv2_coco.md): H-GLDv2 (data-gldv2 + data-hgldv2) and multi-label COCO (data-coco)
# HGLDV2_LANDMARKS: the number of training landmarks (proxies) when the hierarchy leaves some out (default 81,313)
HGLDV2_ARGS = $(if $(HGLDV2_LANDMARKS),hgldv2_landmarks=$(HGLDV2_LANDMARKS))
happier-row-hgldv2_%: ROW_ARGS = $(HGLDV2_ARGS)
table-happier-hgldv2: ## H-GLDv2 table: HAPPIER, CSL, ROADMAP, NSM on GLDv2 + builder super-categories, one multirun (GPU)
	$(call happier_table,hgldv2,,$(HGLDV2_ARGS))
	"$(PY)" -m common.results.collect --method happier

# COCO_QUERIES / COCO_TRAIN: the hashing protocol's query and training-set sizes (default: the data config's 5000 / 10000)
COCO_MODELS ?= happier roadmap
COCO_ARGS = $(if $(COCO_QUERIES),data.train_dataset.num_queries=$(COCO_QUERIES)) $(if $(COCO_TRAIN),data.train_dataset.num_train=$(COCO_TRAIN))
happier-row-coco_%: ROW_ARGS = $(COCO_ARGS)
table-happier-coco: ## multi-label COCO table: HAPPIER (multi-label relevance) vs ROADMAP (binary), one multirun (GPU)
	$(call happier_table,coco,$(COCO_MODELS),$(COCO_ARGS))
	"$(PY)" -m common.results.collect --method happier

table-happier: table-happier-sop table-happier-inat-base table-happier-inat-full table-happier-dyml-vehicle table-happier-dyml-animal table-happier-dyml-product ## every HAPPIER paper table row (GPU, full datasets), then the tables (results/tables/happier.md)

table-happier-collect: ## rebuild the HAPPIER tables (results/tables/happier.md) from the records
	"$(PY)" -m common.results.collect --method happier
