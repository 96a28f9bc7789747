# HEAT (post-hoc OOD detection with hybrid energies): features, training, tables, demo, benchmark. `make help` lists them.
HEAT_RUNS ?= logs/heat
HEAT_DATASETS ?= cifar10 cifar100 imagenet
HEAT_ROWS ?= el gmm gmm_std
HEAT_ARGS ?=

.PHONY: demo-heat test-heat weights-heat features-heat-cifar10 features-heat-cifar100 features-heat-imagenet \
	train-heat table-heat table-heat-eval bench-heat

demo-heat: install data-fashion-mnist ## HEAT on Fashion-MNIST (CPU, seeds $(DEMO_SEEDS), configs/experiment/heat/demo_fmnist*) -> $(DEMO_OUT)/heat.{json,md}
	"$(PY)" -m heat.demo --out "$(DEMO_OUT)" --seeds $(DEMO_SEEDS) $(ARGS)

test-heat: install ## run the HEAT tests (tests/heat)
	"$(PY)" -m pytest -q tests/heat $(ARGS)

weights-heat: ## say where the HEAT backbones come from and where they go under $(WEIGHTS_DIR)/heat
	@echo "CIFAR ResNet-34 (authors' CE checkpoints, key model_state): the Dropbox zip linked in MarcLafon/heatood's README,"
	@echo "  unpacked to $(WEIGHTS_DIR)/heat/{cifar10,cifar100}/resnet34/<ds>-resnet34-multisteplr_randomresizedcrop_epoch_199.ckpt"
	@echo "ImageNet ResNet-50: torchvision IMAGENET1K_V1 (download.pytorch.org/models/resnet50-0676ba61.pth)"
	@echo "  saved as $(WEIGHTS_DIR)/heat/imagenet/resnet50-0676ba61.pth"
	@for f in cifar10/resnet34/cifar10-resnet34-multisteplr_randomresizedcrop_epoch_199.ckpt \
	  cifar100/resnet34/cifar100-resnet34-multisteplr_randomresizedcrop_epoch_199.ckpt imagenet/resnet50-0676ba61.pth; do \
	  if [ -f $(WEIGHTS_DIR)/heat/$$f ]; then echo "  [x] $$f"; else echo "  [ ] $$f"; fi; done

features-heat-cifar10: install ## extract + cache ResNet-34 features of CIFAR-10 and its 6 OOD sets (backbone run once)
	"$(PY)" -m heat.extract experiment=heat/cifar10_gmm $(HEAT_ARGS)

features-heat-cifar100: install ## extract + cache ResNet-34 features of CIFAR-100 and its 6 OOD sets
	"$(PY)" -m heat.extract experiment=heat/cifar100_gmm $(HEAT_ARGS)

features-heat-imagenet: install ## extract + cache ResNet-50 features of ImageNet (train streamed to memmaps) and the 4 MOS OOD sets
	"$(PY)" -m heat.extract experiment=heat/imagenet_gmm $(HEAT_ARGS)

# every row (HEAT_DATASETS x HEAT_ROWS) in one multirun (with hydra/launcher=slurm, one job per row), each into
# $(HEAT_RUNS)/<dataset>_<row>, where table-heat-eval reads its checkpoint
HEAT_TRAIN_ROWS = $(foreach d,$(HEAT_DATASETS),$(addprefix $(d)_,$(HEAT_ROWS)))
train-heat: install ## train every HEAT row (HEAT_DATASETS x HEAT_ROWS) on cached features, one multirun; checkpoints in $(HEAT_RUNS)/<row>
	"$(PY)" -m common.launch -m "hydra.sweep.dir=$(HEAT_RUNS)" '$(MULTIRUN_JOB_DIR)' \
	  experiment=$(call experiments,heat,$(HEAT_TRAIN_ROWS)) $(HEAT_ARGS)

table-heat: train-heat table-heat-eval ## train the HEAT rows, then evaluate them (one record per scorer) and make the tables (results/tables/heat.md)

table-heat-eval: install ## evaluate every scorer on cached features + the trained rows in $(HEAT_RUNS) (records), then the tables
	@set -e; for d in $(HEAT_DATASETS); do \
	  "$(PY)" -m heat.evaluate experiment=heat/$${d}_eval \
	    "heat_eval.heat_checkpoints.HEAT-EL=$(HEAT_RUNS)/$${d}_el/checkpoints/last.ckpt" \
	    "heat_eval.heat_checkpoints.HEAT-GMM=$(HEAT_RUNS)/$${d}_gmm/checkpoints/last.ckpt" \
	    "heat_eval.heat_checkpoints.HEAT-GMM-std=$(HEAT_RUNS)/$${d}_gmm_std/checkpoints/last.ckpt" $(HEAT_ARGS); \
	done
	"$(PY)" -m common.results.collect --method heat

bench-heat: install ## scorer fit/score throughput at CIFAR scale and the HEAT step time at batch 1024 (SCALE=1.0)
	"$(PY)" benchmarks/bench_ood_scorers.py --scale $(or $(SCALE),1.0)
