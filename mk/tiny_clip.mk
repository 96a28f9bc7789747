# GalLoP without downloaded weights: the small CLIP that the repo trains itself, and the few-shot study on cluttered
# Fashion-MNIST scenes that uses it (the rows configs/experiment/gallop/demo_scenes_*, run by gallop.demo and `make demo`). `make help` lists them.
TINY_CLIP_OUT ?= $(WEIGHTS_DIR)/open_clip/tiny_clip_fmnist
TINY_CLIP_SEED ?= 0
TINY_CLIP_REF ?= gallop/assets/tiny_clip_fmnist
SCENES_OUT ?= outputs/gallop_scenes
SCENES_ARGS ?=

.PHONY: weights-tiny-clip demo-gallop-scenes

weights-tiny-clip: install data-fashion-mnist ## train the small CLIP on Fashion-MNIST's 8 ID classes (CPU, ~5 min) into $(TINY_CLIP_OUT); compare its sha256 with the committed one
	"$(PY)" -m gallop.tiny_clip train --out "$(TINY_CLIP_OUT)" --data-root "$(DATA_DIR)/fashion-mnist" --seed $(TINY_CLIP_SEED)
	"$(PY)" -m gallop.tiny_clip check "$(TINY_CLIP_OUT)" --reference "$(TINY_CLIP_REF)"

demo-gallop-scenes: install data-fashion-mnist ## zero-shot / CoOp / GalLoP on cluttered scenes with the committed small CLIP, seeds 1-3 -> $(SCENES_OUT)/gallop.* (as make demo-gallop)
	"$(PY)" -m gallop.demo --out "$(SCENES_OUT)" "scenes.clip_dir=$(TINY_CLIP_REF)" $(SCENES_ARGS)
