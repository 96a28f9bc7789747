"""Tiny synthetic datasets in every official layout, in the real file formats (for `make rehearse` and the tests).

:func:`write_all` fills a folder (a ``DATA_DIR``) with a few tiny images per class for each dataset that a paper
table reads, laid out exactly as the ``make data-*`` targets leave the real ones (docs/data.md):

==========================  ========================================================================================
writer                      files
==========================  ========================================================================================
:func:`write_fashion_mnist` ``fashion-mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`` (IDX)
:func:`write_sop`           ``Stanford_Online_Products/Ebay_{train,test}.txt`` + ``<super>_final/*.JPG``
:func:`write_cub`           ``CUB_200_2011/images/<nnn.Name>/*.jpg`` (200 class folders)
:func:`write_inat`          ``inaturalist/Inat_dataset_splits/Inaturalist_{train,test}_set1.txt``,
                            ``train_val2018/<supercategory>/<id>/*.jpg``, ``train2018.json`` (categories)
:func:`write_dyml`          ``dyml_{vehicle,animal}/train/label.csv`` + ``bmk_{fine,middle,coarse}/{query,gallery}.csv``;
                            ``dyml_product/mini-bmk_all_in_one/label.csv`` (the CSV quirks of the release)
:func:`write_cifar`         ``cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}``,
                            ``cifar-100-python/{train,test,meta}`` (pickled dicts)
:func:`write_svhn`          ``svhn/test_32x32.mat`` (MATLAB v5, ``X`` [32, 32, 3, N], ``y`` in 1..10)
:func:`write_ood_folders`   ``dtd/images`` + ``dtd/labels/*.txt``, ``places365/places365_val.txt`` + ``val_256/``,
                            ``LSUN/<category>/``, ``tiny-imagenet-200/{wnids.txt,test/images,val/...}``
:func:`write_imagenet`      ``imagenet/{train,val}/<wnid>/*.JPEG``, ``ood_data/{iNaturalist,SUN,Places}/images``,
                            ``ood_data/dtd -> ../dtd``
:func:`write_coop`          ``coop/<dataset>/<images>/`` + ``split_zhou_<Name>.json`` (9 datasets), FGVC-Aircraft's
                            lists, ``coop/imagenet/images/{train,val}`` + ``classnames.txt``, ImageNet-V2/-Sketch/-A/-R
:func:`write_gldv2`         ``gldv2/``: ``train_clean.csv``, ``{train,index}_label_to_{category,hierarchical}.csv``,
                            ``index.csv``, ``index_image_to_landmark.csv``, ``test.csv``,
                            ``retrieval_solution_v2.1.csv``, ``{train,index,test}/<a>/<b>/<c>/<id>.jpg`` and the
                            builder's ``hgldv2/{train,index}_hierarchy.csv`` (H-GLDv2)
:func:`write_coco`          ``coco/annotations/instances_{train,val}2017.json`` + ``coco/{train,val}2017/*.jpg``
==========================  ========================================================================================

Images are 8x8 JPEGs whose colour depends on the class. Nothing here is downloaded; the contents are random.
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
from PIL import Image

from common.data.datasets.coop import COOP_DATASETS
from common.data.datasets.inat import SUPERCATEGORIES

SIZE = 8  # pixels per side of every written image


def write_image(path: Path, label: int, k: int = 0) -> None:
    """An 8x8 RGB JPEG (or PNG by suffix) with a class-dependent colour and a little per-image noise."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1000 * label + k)
    base = np.array([(37 * label) % 256, (91 * label) % 256, (53 * label + 100) % 256], dtype=np.int64)
    pix = np.clip(base + rng.integers(-20, 20, size=(SIZE, SIZE, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pix).save(path)


def write_idx(path: Path, array: np.ndarray, compress: bool = True) -> Path:
    """Write ``array`` (uint8) as an IDX file, the format of the original (Fashion-)MNIST files."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(">" + "I" * array.ndim, *array.shape)
    data = header + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    if compress:
        path = path.with_name(path.name + ".gz")
        with gzip.open(path, "wb") as f:
            f.write(data)
    else:
        path.write_bytes(data)
    return path


def write_fashion_mnist(root: Path, per_class: int = 6, seed: int = 0) -> Path:
    """Four IDX files with ``per_class`` images of each of the 10 classes (class-dependent patterns) in ``root``."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", per_class), ("t10k", max(per_class // 2, 2))):
        labels = np.repeat(np.arange(10), n).astype(np.uint8)
        base = rng.integers(0, 255, size=(10, 28, 28))
        images = np.clip(base[labels] + rng.integers(-20, 20, size=(len(labels), 28, 28)), 0, 255).astype(np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte", images)
        write_idx(root / f"{split}-labels-idx1-ubyte", labels)
    return root


def write_sop(root: Path, per_class: int = 4) -> None:
    """SOP: ``Ebay_{train,test}.txt`` (``image_id class_id super_class_id path``); 2 super-classes x 4 products each
    side (train products 1-8, test products 11319-11326, as the release numbers them)."""
    base = root / "Stanford_Online_Products"
    supers = ["bicycle", "chair", "cabinet", "toaster"]
    image_id = 1
    for split, first_class, super_ids in (("train", 1, (1, 2)), ("test", 11319, (3, 4))):
        lines = ["image_id class_id super_class_id path"]
        for s_i, s in enumerate(super_ids):
            for p in range(4):
                cid = first_class + 4 * s_i + p
                for k in range(per_class):
                    rel = f"{supers[s - 1]}_final/{cid}_{k}.JPG"
                    write_image(base / rel, cid, k)
                    lines.append(f"{image_id} {cid} {s} {rel}")
                    image_id += 1
        (base / f"Ebay_{split}.txt").write_text("\n".join(lines) + "\n")


def write_cub(root: Path, per_class: int = 4) -> None:
    """CUB-200-2011: ``images/<nnn.Name>/*.jpg`` for the 200 classes (the readers split 100/100 by folder order)."""
    for c in range(200):
        for k in range(per_class):
            write_image(root / "CUB_200_2011" / "images" / f"{c + 1:03d}.Bird_{c + 1}" / f"Bird_{c + 1}_{k}.jpg", c, k)


def write_inat(root: Path, per_class: int = 4) -> None:
    """iNaturalist-2018 with the Smooth-AP split: 12 species in 3 supercategories (train 8, test 4), the category
    records of ``train2018.json`` with the seven taxonomy ranks."""
    base = root / "inaturalist"
    supers = [SUPERCATEGORIES[i] for i in (4, 8, 11)]  # Aves, Insecta, Plantae
    cats, lines = [], {"train": [], "test": []}
    for i in range(12):
        cid, sup = 100 + i, supers[i % 3]
        cats.append(
            {
                "id": cid,
                "name": f"species {cid}",
                "supercategory": sup,
                "kingdom": "Plantae" if sup == "Plantae" else "Animalia",
                "phylum": f"P{i % 3}",
                "class": f"C{i % 3}",
                "order": f"O{i % 6}",
                "family": f"F{i % 6}",
                "genus": f"G{i}",
            }
        )
        for k in range(per_class):
            rel = f"train_val2018/{sup}/{cid}/{cid}_{k}.jpg"
            write_image(base / rel, cid, k)
            lines["train" if i < 8 else "test"].append(rel)
    (base / "train2018.json").write_text(json.dumps({"images": [], "annotations": [], "categories": cats}))
    splits = base / "Inat_dataset_splits"
    splits.mkdir(parents=True, exist_ok=True)
    for split, ls in lines.items():
        (splits / f"Inaturalist_{split}_set1.txt").write_text("\n".join(ls) + "\n")


DYML_TRAIN_HEADER = "fname, fine_id0.jpg, middle_id, coarse_id"  # sic: the release's header


def _dyml_rows(n_fine: int, per_class: int, offset: int) -> list[tuple[str, int, int, int]]:
    return [(f"{offset + f}_{k}.jpg", offset + f, f // 2, f // 4) for f in range(n_fine) for k in range(per_class)]


def _write_dyml_csv(folder: Path, rows: list[tuple[str, int, int, int]], img_dir: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = DYML_TRAIN_HEADER + "\n" + "\n".join(f"{f}, {a}, {b}, {c}" for f, a, b, c in rows) + "\n"
    (folder / "label.csv").write_text(text)
    for f, a, _, _ in rows:
        write_image(folder / img_dir / f, a)


def write_dyml(root: Path, per_class: int = 4) -> None:
    """DyML-Vehicle/-Animal (train + three benchmarks of query/gallery CSVs) and DyML-Product (all-in-one test)."""
    for kind in ("vehicle", "animal", "product"):
        base = root / f"dyml_{kind}"
        _write_dyml_csv(base / "train", _dyml_rows(8, per_class, 0), "imgs")
        if kind == "product":
            _write_dyml_csv(base / "mini-bmk_all_in_one", _dyml_rows(8, per_class, 100), "imgs")
            continue
        for level, bmk in enumerate(("fine", "middle", "coarse")):
            d = base / f"bmk_{bmk}"
            d.mkdir(parents=True, exist_ok=True)
            rows = _dyml_rows(8, per_class, 100)
            query = [(f, lab[level]) for f, *lab in rows if f.endswith("_0.jpg")]
            gallery = [(f, lab[level]) for f, *lab in rows]  # the release lists each query in the gallery too
            for name, items in (("query", query), ("gallery", gallery)):
                (d / f"{name}.csv").write_text("fname, labels0.jpg\n" + "".join(f"{f}, {y}\n" for f, y in items))
                for f, y in items:
                    write_image(d / name / f, y)


def _cifar_batch(n: int, labels: np.ndarray, rng: np.random.Generator, fine_key: str, coarse: bool) -> dict:
    data = rng.integers(0, 255, size=(n, 3072), dtype=np.uint8)
    out = {b"batch_label": b"synthetic", b"data": data, b"filenames": [b"img_%d.png" % i for i in range(n)]}
    out[fine_key.encode()] = [int(v) for v in labels]
    if coarse:
        out[b"coarse_labels"] = [int(v) // 5 for v in labels]
    return out


def write_cifar(root: Path, per_class: int = 4, seed: int = 0) -> None:
    """CIFAR-10 (5 train batches, test batch) and CIFAR-100 (train, test) "python version" pickles, protocol 2."""
    rng = np.random.default_rng(seed)

    def dump(path: Path, obj) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(pickle.dumps(obj, protocol=2))

    c10 = root / "cifar-10-batches-py"
    for b in range(1, 6):
        y = np.arange(10).repeat(max(per_class // 2, 1))
        dump(c10 / f"data_batch_{b}", _cifar_batch(len(y), y, rng, "labels", False))
    y = np.arange(10).repeat(per_class)
    dump(c10 / "test_batch", _cifar_batch(len(y), y, rng, "labels", False))
    dump(c10 / "batches.meta", {b"label_names": [b"class%d" % i for i in range(10)], b"num_vis": 3072})
    c100 = root / "cifar-100-python"
    for split, n in (("train", per_class), ("test", 1)):
        y = np.arange(100).repeat(n)
        dump(c100 / split, _cifar_batch(len(y), y, rng, "fine_labels", True))
    dump(c100 / "meta", {b"fine_label_names": [b"f%d" % i for i in range(100)], b"coarse_label_names": []})


def write_svhn(root: Path, n: int = 20, seed: int = 0) -> None:
    """SVHN format 2: ``svhn/test_32x32.mat`` with ``X`` uint8 [32, 32, 3, N] and ``y`` [N, 1] in 1..10."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    (root / "svhn").mkdir(parents=True, exist_ok=True)
    x = rng.integers(0, 255, size=(32, 32, 3, n), dtype=np.uint8)
    savemat(root / "svhn" / "test_32x32.mat", {"X": x, "y": (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)})


LSUN_CATEGORIES = (
    "bedroom",
    "bridge",
    "church_outdoor",
    "classroom",
    "conference_room",
    "dining_room",
    "kitchen",
    "living_room",
    "restaurant",
    "tower",
)


def write_ood_folders(root: Path, per_class: int = 2) -> None:
    """DTD (images + the 10 partitions' lists), Places365 small val, the 10 LSUN val categories, Tiny ImageNet."""
    classes = ["banded", "braided", "cracked"]
    rels = [f"{c}/{c}_{k:04d}.jpg" for c in classes for k in range(per_class)]
    for i, rel in enumerate(rels):
        write_image(root / "dtd" / "images" / rel, i // per_class, i)
    labels = root / "dtd" / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for split in ("train", "val", "test"):
        for p in range(1, 11):
            (labels / f"{split}{p}.txt").write_text("\n".join(rels) + "\n")
    names = [f"Places365_val_{i + 1:08d}.jpg" for i in range(6)]
    for i, name in enumerate(names):
        write_image(root / "places365" / "val_256" / name, i)
    (root / "places365" / "places365_val.txt").write_text("".join(f"{n} {i * 7}\n" for i, n in enumerate(names)))
    for c, cat in enumerate(LSUN_CATEGORIES):
        write_image(root / "LSUN" / cat / f"{cat}_0.webp", c)
    tin = root / "tiny-imagenet-200"
    wnids = ["n01443537", "n01629819"]
    tin.mkdir(parents=True, exist_ok=True)
    (tin / "wnids.txt").write_text("\n".join(wnids) + "\n")
    ann = []
    for i, w in enumerate(wnids):
        for k in range(per_class):
            write_image(tin / "train" / w / "images" / f"{w}_{k}.JPEG", i, k)
            write_image(tin / "val" / "images" / f"val_{i * per_class + k}.JPEG", i, k)
            ann.append(f"val_{i * per_class + k}.JPEG\t{w}\t0\t0\t8\t8")
    (tin / "val" / "val_annotations.txt").write_text("\n".join(ann) + "\n")
    for k in range(6):
        write_image(tin / "test" / "images" / f"test_{k}.JPEG", k)


SPLITS = ("train", "val", "test")
WNIDS = ("n01440764", "n01443537", "n01484850")
CLASS_NAMES = ("tench", "goldfish", "great white shark")


def write_imagenet(root: Path, per_class: int = 4) -> None:
    """ImageNet-1k class folders (HEAT's layout) and MOS's ImageNet OOD sets (Textures: a link to DTD)."""
    for split, n in (("train", per_class), ("val", 2)):
        for c, w in enumerate(WNIDS):
            for k in range(n):
                write_image(root / "imagenet" / split / w / f"{w}_{k}.JPEG", c, k)
    for i, name in enumerate(("iNaturalist", "SUN", "Places")):
        for k in range(4):
            write_image(root / "ood_data" / name / "images" / f"{name}_{k}.jpg", 50 + i, k)
    link = root / "ood_data" / "dtd"
    if not link.exists():
        os.symlink(os.path.join("..", "dtd"), link)


def write_coop(root: Path, per_class: int = 4, n_classes: int = 3) -> None:
    """CoOp's 11 few-shot datasets (split JSONs, FGVC-Aircraft's lists, ImageNet with ``classnames.txt``) and the
    four domain-shifted ImageNets, under ``coop/``."""
    coop = root / "coop"
    for name, lay in COOP_DATASETS.items():
        base = coop / lay.folder
        img_dir = base / lay.image_dir if lay.image_dir else base
        if lay.split_file is None:  # FGVC-Aircraft: variants.txt + images_variant_<split>.txt
            variants = [f"7{c}7-300" for c in range(n_classes)]
            (base).mkdir(parents=True, exist_ok=True)
            (base / "variants.txt").write_text("\n".join(variants) + "\n")
            for split in ("train", "val", "trainval", "test"):
                ids = [(f"{split[:2]}{c}{k:03d}", v) for c, v in enumerate(variants) for k in range(per_class)]
                (base / f"images_variant_{split}.txt").write_text("".join(f"{i} {v}\n" for i, v in ids))
                for i, v in ids:
                    write_image(base / "images" / f"{i}.jpg", variants.index(v))
            continue
        # Stanford Cars' split rows start with cars_train/ or cars_test/ (its image_dir is the dataset folder)
        prefix = {s: (f"cars_{'test' if s == 'test' else 'train'}/" if name == "stanford_cars" else "") for s in SPLITS}
        rows = {
            s: [
                [f"{prefix[s]}class_{c}/{s}_{k}.jpg", c, f"class {c}"]
                for c in range(n_classes)
                for k in range(per_class)
            ]
            for s in SPLITS
        }
        for split_rows in rows.values():
            for rel, c, _ in split_rows:
                write_image(img_dir / rel, c, hash(rel) % 100)
        (base / lay.split_file).write_text(json.dumps(rows))
    inet = coop / "imagenet"
    inet.mkdir(parents=True, exist_ok=True)
    (inet / "classnames.txt").write_text("".join(f"{w} {n}\n" for w, n in zip(WNIDS, CLASS_NAMES, strict=True)))
    for split in ("train", "val"):
        for c, w in enumerate(WNIDS):
            for k in range(per_class):
                write_image(inet / "images" / split / w / f"{w}_{k}.JPEG", c, k)
    for c, w in enumerate(WNIDS):
        write_image(coop / "imagenetv2" / "imagenetv2-matched-frequency-format-val" / str(c) / "0.jpeg", c)
        write_image(coop / "imagenet-sketch" / "images" / w / "sketch_0.JPEG", c)
        write_image(coop / "imagenet-adversarial" / "imagenet-a" / w / "a_0.jpg", c)
        write_image(coop / "imagenet-rendition" / "imagenet-r" / w / "r_0.jpg", c)


def _write_csv(path: Path, header: list[str], rows: list) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _gldv2_id(prefix: str, n: int) -> str:
    """A 16-character hex image id, as GLDv2's (its first three characters give the image's folders)."""
    return f"{prefix}{n:015x}"


def write_gldv2(root: Path, per_landmark: int = 4) -> None:
    """GLDv2 v2.1 (official CSVs, JPEGs by id prefix) with H-GLDv2 labels: 8 train landmarks in 2 super-categories,
    4 index landmarks (3 images each) and 6 test images, 4 of them matching one index landmark (2 ``None``). The
    builder's ``hgldv2/{train,index}_hierarchy.csv`` are written as ``python -m happier.hgldv2 build`` writes them
    (the default hierarchy of ``configs/data/hgldv2.yaml``) and the published ``*_label_to_hierarchical.csv`` too."""
    base = root / "gldv2"
    supers = ("castle", "church building")
    url = "http://commons.wikimedia.org/wiki/Category:{}"
    train = {100 + i: (url.format(f"Landmark_{100 + i}"), supers[i % 2]) for i in range(8)}
    clean = []
    for k, lid in enumerate(train):
        ids = [_gldv2_id("a", per_landmark * k + j) for j in range(per_landmark)]
        clean.append((lid, " ".join(ids)))
        for j, iid in enumerate(ids):
            write_image(base / "train" / iid[0] / iid[1] / iid[2] / f"{iid}.jpg", lid, j)
    _write_csv(base / "train_clean.csv", ["landmark_id", "images"], clean)
    index_lm = {500 + i: (url.format(f"Index_Landmark_{500 + i}"), supers[i % 2]) for i in range(4)}
    index_ids, image_lm = [], []
    for k, lid in enumerate(index_lm):
        for j in range(3):
            iid = _gldv2_id("b", 3 * k + j)
            index_ids.append(iid)
            image_lm.append((iid, lid))
            write_image(base / "index" / iid[0] / iid[1] / iid[2] / f"{iid}.jpg", lid, j)
    test_ids, solution = [], []
    for k in range(6):
        tid = _gldv2_id("c", k)
        test_ids.append(tid)
        write_image(base / "test" / tid[0] / tid[1] / tid[2] / f"{tid}.jpg", 500 + k % 4, 10 + k)
        match = " ".join(i for i, lid in image_lm if lid == 500 + k) if k < 4 else "None"
        solution.append((tid, match, "Public" if k % 2 == 0 else "Private"))
    _write_csv(base / "index.csv", ["id"], [(i,) for i in index_ids])
    _write_csv(base / "test.csv", ["id"], [(i,) for i in test_ids])
    _write_csv(base / "retrieval_solution_v2.1.csv", ["id", "images", "Usage"], solution)
    _write_csv(base / "index_image_to_landmark.csv", ["id", "landmark_id"], image_lm)
    pub = ["landmark_id", "category", "supercategory", "hierarchical_label", "natural_or_human_made"]
    built = ["landmark_id", "category", "name", "hierarchical_label", "confidence", "top_choice"]
    for split, table in (("train", train), ("index", index_lm)):
        _write_csv(
            base / f"{split}_label_to_category.csv",
            ["landmark_id", "category"],
            [(k, c) for k, (c, _) in table.items()],
        )
        _write_csv(
            base / f"{split}_label_to_hierarchical.csv",
            pub,
            [(k, c, s, s, "human-made") for k, (c, s) in table.items()],
        )
        rows = [(k, c, c.rsplit(":", 1)[1].replace("_", " "), s, "0.9", s) for k, (c, s) in table.items()]
        _write_csv(base / "hgldv2" / f"{split}_hierarchy.csv", built, rows)


# MS-COCO's 80 category ids: 1..90 without these
COCO_MISSING_IDS = (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)


def write_coco(root: Path, n_train: int = 48, n_val: int = 16) -> None:
    """MS-COCO 2017 instances files (80 categories, ids 1..90 with the release's gaps) and 8x8 JPEGs: each image has
    one to three objects among the first eight categories (image k has category k mod 8, so every label has items;
    images share 0..3 labels), plus one image without annotation per part (left out by the reader)."""
    base = root / "coco"
    cat_ids = [c for c in range(1, 91) if c not in COCO_MISSING_IDS]
    categories = [{"supercategory": "thing", "id": c, "name": f"object {c}"} for c in cat_ids]
    rng = np.random.default_rng(0)
    image_id = 1
    for part, n in (("train2017", n_train), ("val2017", n_val)):
        images, anns = [], []
        for k in range(n + 1):
            name = f"{image_id:012d}.jpg"
            images.append({"id": image_id, "file_name": name, "width": SIZE, "height": SIZE})
            extra = rng.choice(cat_ids[:8], size=int(rng.integers(0, 3)), replace=False).tolist()
            objs = [] if k == n else sorted({cat_ids[k % 8], *extra})
            for c in objs:
                ann = {"id": len(anns) + 1, "image_id": image_id, "category_id": int(c), "iscrowd": 0}
                anns.append({**ann, "bbox": [0, 0, 4, 4], "area": 16.0})
            write_image(base / part / name, sum(objs), k)
            image_id += 1
        doc = {"info": {}, "licenses": [], "images": images, "annotations": anns, "categories": categories}
        (base / "annotations").mkdir(parents=True, exist_ok=True)
        (base / "annotations" / f"instances_{part}.json").write_text(json.dumps(doc))


WRITERS = {
    "fashion-mnist": lambda root: write_fashion_mnist(root / "fashion-mnist"),
    "sop": write_sop,
    "cub": write_cub,
    "inat": write_inat,
    "dyml": write_dyml,
    "cifar": write_cifar,
    "svhn": write_svhn,
    "ood-folders": write_ood_folders,
    "imagenet": write_imagenet,
    "coop": write_coop,
    "gldv2": write_gldv2,
    "coco": write_coco,
}


def write_all(root: str | Path) -> Path:
    """Write every layout of :data:`WRITERS` under ``root`` (a ``DATA_DIR``); returns ``root``."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    for write in WRITERS.values():
        write(root)
    return root
