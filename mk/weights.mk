# Pretrained weights, fetched on a machine with internet (a login node) into exactly the file names the configs
# read under $(WEIGHTS_DIR); compute nodes then run offline (HF_HUB_OFFLINE=1). common/backbones/weights.py does it.
# HEAT's backbones: `make weights-heat` (mk/heat.mk).
CLIP_MODEL ?=
CLIP_TAG ?= openai
WEIGHTS_CLI = HF_HUB_OFFLINE=0 "$(PY)" -m common.backbones.weights --weights-dir "$(WEIGHTS_DIR)"

.PHONY: weights weights-timm weights-clip

weights: weights-timm weights-clip ## every timm and open_clip weight file that the configs read

weights-timm: install ## timm weights to $(WEIGHTS_DIR)/timm/<model>.<tag>.safetensors: NAME=resnet50.tv_in1k; no NAME = all the configs read
	$(WEIGHTS_CLI) timm $(NAME)

weights-clip: install ## open_clip weights to $(WEIGHTS_DIR)/open_clip/<model>-<tag>/: NAME=ViT-B-16-openai (or CLIP_MODEL=, CLIP_TAG=); none = the configs'
	$(WEIGHTS_CLI) clip $(or $(NAME),$(if $(CLIP_MODEL),$(CLIP_MODEL)-$(CLIP_TAG)))
