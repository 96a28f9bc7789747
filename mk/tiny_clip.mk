# GalLoP without downloaded weights: the small CLIP that the repo trains itself, and the few-shot study on cluttered
# Fashion-MNIST scenes that uses it. `make help` lists them.
TINY_CLIP_OUT ?= $(WEIGHTS_DIR)/open_clip/tiny_clip_fmnist
TINY_CLIP_SEED ?= 0
TINY_CLIP_REF ?= gallop/assets/tiny_clip_fmnist
SCENES_OUT ?= results/gallop/scenes

.PHONY: weights-tiny-clip study-gallop-scenes

weights-tiny-clip: install data-fashion-mnist ## train the tiny CLIP on Fashion-MNIST's 8 ID classes (CPU, ~5 min) into $(TINY_CLIP_OUT); compare with the committed one
	$(PY) -m gallop.tiny_clip train --out "$(TINY_CLIP_OUT)" --data-root "$(DATA_DIR)/fashion-mnist" --seed $(TINY_CLIP_SEED)
	$(PY) -m gallop.tiny_clip check "$(TINY_CLIP_OUT)" --reference "$(TINY_CLIP_REF)"

study-gallop-scenes: install data-fashion-mnist ## zero-shot / CoOp / GalLoP on cluttered scenes with the committed tiny CLIP, 3 seeds -> $(SCENES_OUT)
	$(PY) -m gallop.scene_study --out "$(SCENES_OUT)" --data-root "$(DATA_DIR)/fashion-mnist" --clip-dir "$(TINY_CLIP_REF)"
