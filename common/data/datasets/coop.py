"""The CoOp few-shot benchmark datasets: CoOp's ``split_zhou_<Dataset>.json`` files and folder layouts.

Split-file format (CoOp ``datasets/oxford_pets.py::read_split``): ``{"train"|"val"|"test": [[relative_path,
int_label, class_name], ...]}``, paths relative to the dataset's image folder. Labels are kept as in the JSON (CoOp);
GalLoP re-labels classes by first appearance, which permutes ids but keeps the same class set, so accuracies match.

Layout under ``root`` (``${paths.data_dir}/coop``; CoOp's DATASETS.md). Each dataset has its own target, named in
:attr:`CoOpLayout.make_target` and in the reader's errors (``make data-coop-caltech101``, ...); ``make data-coop``
fetches all of them with GalLoP's other data::

    caltech-101/      101_ObjectCategories/   split_zhou_Caltech101.json
    oxford_pets/      images/                 split_zhou_OxfordPets.json
    stanford_cars/    cars_train/ cars_test/  split_zhou_StanfordCars.json
    oxford_flowers/   jpg/                    split_zhou_OxfordFlowers.json
    food-101/         images/                 split_zhou_Food101.json
    sun397/           SUN397/                 split_zhou_SUN397.json
    dtd/              images/                 split_zhou_DescribableTextures.json
    eurosat/          2750/                   split_zhou_EuroSAT.json
    ucf101/           UCF-101-midframes/      split_zhou_UCF101.json
    fgvc_aircraft/    images/  variants.txt  images_variant_{train,val,trainval,test}.txt

FGVC-Aircraft has no JSON: ``images_variant_<split>.txt`` lines are ``<image id> <variant name>``, classes are the
lines of ``variants.txt`` in order. GalLoP samples shots from ``trainval`` (6,667 images), CoOp from ``train``.
ImageNet and its shifted versions are in :mod:`common.data.datasets.imagenet_dg`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from common.data.datasets.base import ImageListDataset
from common.data.errors import data_file_error, require_path

MAKE_TARGET = "data-coop"  # every CoOp dataset; a file read without knowing its dataset names this one


@dataclass(frozen=True)
class CoOpLayout:
    folder: str
    image_dir: str
    split_file: str | None
    make_target: str  # the `make` target that fetches this dataset alone


COOP_DATASETS: dict[str, CoOpLayout] = {
    "caltech101": CoOpLayout(
        "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json", "data-coop-caltech101"
    ),
    "oxford_pets": CoOpLayout("oxford_pets", "images", "split_zhou_OxfordPets.json", "data-coop-oxford-pets"),
    "stanford_cars": CoOpLayout("stanford_cars", "", "split_zhou_StanfordCars.json", "data-coop-stanford-cars"),
    "oxford_flowers": CoOpLayout("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json", "data-coop-oxford-flowers"),
    "food101": CoOpLayout("food-101", "images", "split_zhou_Food101.json", "data-coop-food101"),
    "sun397": CoOpLayout("sun397", "SUN397", "split_zhou_SUN397.json", "data-coop-sun397"),
    "dtd": CoOpLayout("dtd", "images", "split_zhou_DescribableTextures.json", "data-coop-dtd"),
    "eurosat": CoOpLayout("eurosat", "2750", "split_zhou_EuroSAT.json", "data-coop-eurosat"),
    "ucf101": CoOpLayout("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json", "data-coop-ucf101"),
    "fgvc_aircraft": CoOpLayout("fgvc_aircraft", "images", None, "data-coop-fgvc-aircraft"),
}
SPLITS = ("train", "val", "test")


def read_split_zhou(path: str | Path, make_target: str = MAKE_TARGET) -> dict[str, list[tuple[str, int, str]]]:
    """Parse a ``split_zhou_*.json``; returns ``{split: [(relative_path, label, class_name), ...]}``.

    Raises :class:`~common.data.errors.DataFileError` naming the file, the entry (``train[12]``) and ``make_target``
    when the file is not JSON, a split list is missing, or an entry is not ``[str, int >= 0, str]``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except ValueError as e:
        raise data_file_error(path, "reading", f"not valid JSON ({e})", make_target) from e
    if not isinstance(data, dict):
        raise data_file_error(path, "top level", f"a {type(data).__name__}, expected a dict of splits", make_target)
    out: dict[str, list[tuple[str, int, str]]] = {}
    for split in SPLITS:
        if not isinstance(data.get(split), list):
            raise data_file_error(
                path,
                f"'{split}'",
                f"no '{split}' list (keys: {sorted(data)}); is this a CoOp split_zhou file?",
                make_target,
            )
        rows = []
        for i, row in enumerate(data[split]):
            ok = isinstance(row, list) and len(row) == 3 and isinstance(row[0], str)
            if not (ok and type(row[1]) is int and row[1] >= 0):
                raise data_file_error(
                    path,
                    f"{split}[{i}]",
                    f"{row!r}; expected [relative_path, label (int >= 0), class_name]",
                    make_target,
                )
            rows.append((row[0], row[1], str(row[2])))
        out[split] = rows
    return out


def class_names_from_rows(rows: list[tuple[str, int, str]], source: str | Path | None = None) -> list[str]:
    """Class names indexed by label; every label ``0..max`` must appear with one name (``source`` names the file)."""
    where = f"'{source}': " if source is not None else ""
    names: dict[int, str] = {}
    for _, label, name in rows:
        if names.setdefault(label, name) != name:
            raise ValueError(f"{where}label {label} has two names: {names[label]!r} and {name!r}")
    if not names:
        raise ValueError(f"{where}no labelled entries; cannot name the classes")
    n = max(names) + 1
    missing = [i for i in range(n) if i not in names]
    if missing:
        raise ValueError(f"{where}labels {missing[:5]} never appear in the split file; cannot name every class")
    return [names[i] for i in range(n)]


def _layout_text(name: str) -> str:
    lay = COOP_DATASETS[name]
    if lay.split_file is None:
        return f"  <root>/{lay.folder}/{{images/, variants.txt, images_variant_<split>.txt}}"
    return f"  <root>/{lay.folder}/{lay.image_dir + '/' if lay.image_dir else ''}  <root>/{lay.folder}/{lay.split_file}"


def _read_aircraft(base: Path, split: str) -> tuple[list[str], list[int], list[str]]:
    target = COOP_DATASETS["fgvc_aircraft"].make_target
    variants = require_path(
        base / "variants.txt", dataset="FGVC-Aircraft", layout=_layout_text("fgvc_aircraft"), make_target=target
    )
    names = [ln.strip() for ln in variants.read_text().splitlines() if ln.strip()]
    lut = {n: i for i, n in enumerate(names)}
    lst = require_path(
        base / f"images_variant_{split}.txt",
        dataset="FGVC-Aircraft",
        layout=_layout_text("fgvc_aircraft"),
        make_target=target,
    )
    paths, labels = [], []
    for n, ln in enumerate(lst.read_text().splitlines(), 1):
        if not ln.strip():
            continue
        image_id, _, variant = ln.strip().partition(" ")
        if variant not in lut:
            raise data_file_error(lst, f"line {n}", f"variant {variant!r} is not in '{variants}'", target)
        paths.append(str(base / "images" / f"{image_id}.jpg"))
        labels.append(lut[variant])
    return paths, labels, names


class CoOpDataset(ImageListDataset):
    """One CoOp benchmark dataset and split; items ``{"image", "label", "index"}``, plus :attr:`class_names`.

    Args:
        root: folder holding the per-dataset folders (``${paths.data_dir}/coop``).
        name: one of :data:`COOP_DATASETS` (``caltech101``, ``oxford_pets``, ..., ``fgvc_aircraft``).
        split: ``train``, ``val`` or ``test`` (FGVC-Aircraft also ``trainval``, GalLoP's few-shot pool).
        split_file: another ``split_zhou`` JSON (default: the one in the dataset folder).
    """

    def __init__(
        self,
        root: str | Path,
        name: str,
        split: str = "train",
        transform: Callable | None = None,
        split_file: str | Path | None = None,
        on_error: str = "raise",
    ) -> None:
        if name not in COOP_DATASETS:
            raise ValueError(f"unknown CoOp dataset {name!r}; choose one of {sorted(COOP_DATASETS)}")
        lay = COOP_DATASETS[name]
        target = lay.make_target
        base = require_path(Path(root) / lay.folder, dataset=name, layout=_layout_text(name), make_target=target)
        if lay.split_file is None:
            if split not in (*SPLITS, "trainval"):
                raise ValueError(f"split must be train, val, trainval or test for FGVC-Aircraft, got {split!r}")
            paths, labels, names = _read_aircraft(base, split)
        else:
            if split not in SPLITS:
                raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
            sf = require_path(
                split_file or base / lay.split_file, dataset=name, layout=_layout_text(name), make_target=target
            )
            splits = read_split_zhou(sf, target)
            names = class_names_from_rows(splits["train"] + splits["val"] + splits["test"], source=sf)
            image_dir = base / lay.image_dir if lay.image_dir else base
            paths = [str(image_dir / p) for p, _, _ in splits[split]]
            labels = [lab for _, lab, _ in splits[split]]
        self.class_names = names
        self.name, self.split = name, split
        super().__init__(paths, labels, transform=transform, on_error=on_error)
