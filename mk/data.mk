# Datasets: `make data-<name>` fetches, checks (published md5/sha256) and lays out one dataset under $(DATA_DIR) in the
# layout its reader expects, or says what to fetch by hand and checks it. One module does the work
# (common/data/download.py, driven by the table in common/data/catalogue.py); docs/data.md lists every dataset.
# A second run does nothing; DATA_ARGS="--keep-archives" keeps the downloaded archives in $(DATA_DIR)/.downloads.
DATA_ARGS ?=
DATA_CLI = "$(PY)" -m common.data.download --data-dir "$(DATA_DIR)" $(DATA_ARGS)

.PHONY: data-list data-fashion-mnist data-sop data-cub data-inat data-inshop data-dyml-vehicle data-dyml-animal \
	data-dyml-product data-gldv2-metadata data-gldv2 data-coco data-hgldv2 data-cifar10 data-cifar100 data-svhn data-dtd data-places365 data-lsun data-tinyimagenet \
	data-imagenet data-imagenet-ood data-coop-imagenet data-coop-caltech101 data-coop-oxford-pets \
	data-coop-stanford-cars data-coop-oxford-flowers data-coop-food101 data-coop-fgvc-aircraft data-coop-sun397 \
	data-coop-dtd data-coop-eurosat data-coop-ucf101 data-imagenet-v2 data-imagenet-sketch data-imagenet-a \
	data-imagenet-r data-dyml data-coop data-heat data-all-public

data-list: install ## print every dataset of docs/data.md and whether it is ready under $(DATA_DIR)
	$(DATA_CLI) --list

data-fashion-mnist: install ## copy (Debian package) or download: Fashion-MNIST
	$(DATA_CLI) fashion-mnist

data-sop: install ## download, check and lay out: Stanford Online Products
	$(DATA_CLI) sop

data-cub: install ## download, check and lay out: CUB-200-2011
	$(DATA_CLI) cub

data-inat: install ## download, check and lay out: iNaturalist-2018 with the Smooth-AP retrieval split
	$(DATA_CLI) inat

data-inshop: install ## say what to fetch by hand, then check: In-Shop Clothes Retrieval
	$(DATA_CLI) inshop

data-dyml-vehicle: install ## say what to fetch by hand, then check: DyML-Vehicle
	$(DATA_CLI) dyml-vehicle

data-dyml-animal: install ## say what to fetch by hand, then check: DyML-Animal
	$(DATA_CLI) dyml-animal

data-dyml-product: install ## say what to fetch by hand, then check: DyML-Product
	$(DATA_CLI) dyml-product

data-gldv2-metadata: install ## download and check: Google Landmarks v2.1's CSV files only (labels, lists, ground truth, H-GLDv2 labels)
	$(DATA_CLI) gldv2-metadata

data-gldv2: install ## download (md5 per TAR), check and lay out: Google Landmarks v2.1 with its images (~600 GB)
	$(DATA_CLI) gldv2

data-coco: install ## download, check and lay out: MS-COCO 2017 train/val images and instance annotations
	$(DATA_CLI) coco

# H-GLDv2 super-categories by CLIP zero-shot (happier/hgldv2.py, docs/hgldv2_coco.md) for the train and the index
# landmarks, written to $(DATA_DIR)/gldv2/hgldv2/ where configs/data/hgldv2.yaml reads them. The default build reads
# the category names only (data-gldv2-metadata); HGLDV2_ARGS="--images-per-landmark 4" also reads images (data-gldv2).
HGLDV2_MODEL ?= ViT-B-16
HGLDV2_TAG ?= openai
HGLDV2_ARGS ?=
data-hgldv2: data-gldv2-metadata ## H-GLDv2 hierarchy CSVs from the CLIP weights of `make weights-clip` (fetched if absent); HGLDV2_ARGS= for the builder
	test -f "$(WEIGHTS_DIR)/open_clip/$(HGLDV2_MODEL)-$(HGLDV2_TAG)/open_clip_config.json" || \
	  $(WEIGHTS_CLI) clip $(HGLDV2_MODEL)-$(HGLDV2_TAG)
	for split in train index; do \
	  "$(PY)" -m happier.hgldv2 build --split $$split --root "$(DATA_DIR)/gldv2" --model $(HGLDV2_MODEL) \
	    --pretrained $(HGLDV2_TAG) --weights-dir "$(WEIGHTS_DIR)" $(HGLDV2_ARGS) || exit 1; \
	done

data-cifar10: install ## download, check and lay out: CIFAR-10
	$(DATA_CLI) cifar10

data-cifar100: install ## download, check and lay out: CIFAR-100
	$(DATA_CLI) cifar100

data-svhn: install ## download, check and lay out: SVHN
	$(DATA_CLI) svhn

data-dtd: install ## download, check and lay out: Describable Textures
	$(DATA_CLI) dtd

data-places365: install ## download, check and lay out: Places365-Standard, small validation set
	$(DATA_CLI) places365

data-lsun: install ## download, check and lay out: LSUN scene categories, validation images
	$(DATA_CLI) lsun

data-tinyimagenet: install ## download, check and lay out: Tiny ImageNet
	$(DATA_CLI) tinyimagenet

data-imagenet: install ## say what to fetch by hand, then check: ImageNet-1k
	$(DATA_CLI) imagenet

data-imagenet-ood: install ## download, check and lay out: ImageNet OOD sets of MOS
	$(DATA_CLI) imagenet-ood

data-coop-imagenet: install ## say what to fetch by hand, then check: ImageNet for CoOp/GalLoP (coop/imagenet/images/{train,val} + classnames.txt)
	$(DATA_CLI) coop-imagenet

data-coop-caltech101: install ## download, check and lay out: Caltech-101 (CoOp split)
	$(DATA_CLI) coop-caltech101

data-coop-oxford-pets: install ## download, check and lay out: Oxford-IIIT Pets (CoOp split)
	$(DATA_CLI) coop-oxford-pets

data-coop-stanford-cars: install ## say what to fetch by hand, then check: Stanford Cars (CoOp split)
	$(DATA_CLI) coop-stanford-cars

data-coop-oxford-flowers: install ## download, check and lay out: Oxford Flowers-102 (CoOp split)
	$(DATA_CLI) coop-oxford-flowers

data-coop-food101: install ## download, check and lay out: Food-101 (CoOp split)
	$(DATA_CLI) coop-food101

data-coop-fgvc-aircraft: install ## download, check and lay out: FGVC-Aircraft 2013b (its own train/val/test lists)
	$(DATA_CLI) coop-fgvc-aircraft

data-coop-sun397: install ## download, check and lay out: SUN397 (CoOp split)
	$(DATA_CLI) coop-sun397

data-coop-dtd: install ## download, check and lay out: DTD (CoOp split)
	$(DATA_CLI) coop-dtd

data-coop-eurosat: install ## download, check and lay out: EuroSAT RGB (CoOp split)
	$(DATA_CLI) coop-eurosat

data-coop-ucf101: install ## download, check and lay out: UCF101 middle frames (CoOp split)
	$(DATA_CLI) coop-ucf101

data-imagenet-v2: install ## download, check and lay out: ImageNet-V2 matched-frequency
	$(DATA_CLI) imagenet-v2

data-imagenet-sketch: install ## download, check and lay out: ImageNet-Sketch
	$(DATA_CLI) imagenet-sketch

data-imagenet-a: install ## download, check and lay out: ImageNet-A
	$(DATA_CLI) imagenet-a

data-imagenet-r: install ## download, check and lay out: ImageNet-R
	$(DATA_CLI) imagenet-r

data-dyml: install ## the three DyML sets (by hand, then checked)
	$(DATA_CLI) dyml

data-coop: install ## GalLoP's data: the 11 CoOp datasets + split files, ImageNet-V2/Sketch/A/R, the MOS OOD sets
	$(DATA_CLI) coop

data-heat: install ## HEAT's ID/OOD sets: CIFAR-10/100, SVHN, DTD, Places365, LSUN, TinyImageNet, ImageNet, MOS OOD
	$(DATA_CLI) heat

data-all-public: install ## every dataset that needs no login (close to 1 TB with GLDv2's images: see docs/data.md)
	$(DATA_CLI) all-public
