"""The data catalogue agrees with the readers: for every ``make data-<name>`` entry, a tiny copy of the official
layout (written by the readers' own test fixtures where they exist) passes the entry's layout check and every reader
of the entry loads it; removing any one layout path is caught by the readers too (so the check asks for nothing the
readers do not need). Plus the catalogue's own consistency: checksums, install targets, make targets, docs table."""

from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from common.data import download
from common.data.catalogue import (
    BY_NAME,
    DATASETS,
    GLDV2,
    GLDV2_TARS,
    GROUPS,
    LSUN_CATEGORIES,
    NO_CHECKSUM,
    ReaderCheck,
    Source,
    resolve,
)
from tests.common.test_datasets_cub import make_cub
from tests.common.test_datasets_dyml import TRAIN_HEADER, _write_train, _write_vehicle
from tests.common.test_datasets_inat import make_inat
from tests.common.test_datasets_inshop import make_inshop
from tests.common.test_datasets_sop import make_sop
from tests.conftest import ROOT, make_tiny_fashion_mnist
from tests.gallop.test_data import ROWS as COOP_ROWS
from tests.gallop.test_data import _write_coop, _write_imagenet
from tests.heat.test_readers import _cifar_batch
from tests.helpers.coco_files import make_coco
from tests.helpers.gldv2_files import make_gldv2


def _img(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (6, 5), (10, 20, 30)).save(path, format="JPEG" if path.suffix != ".png" else "PNG")


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def _dtd(base: Path) -> None:
    for c in ("banded", "zigzagged"):
        _img(base / "images" / c / f"{c}_0.jpg")
    _mkdir(base / "labels")
    (base / "labels" / "test1.txt").write_text("zigzagged/zigzagged_0.jpg\nbanded/banded_0.jpg\n")


def _dyml_product(root: Path) -> None:
    _write_train(root)
    d = _mkdir(root / "mini-bmk_all_in_one")
    (d / "label.csv").write_text(TRAIN_HEADER + "\nx.jpg, 1, 2, 3\n")
    _img(d / "imgs" / "x.jpg")


def _imagenet_dg(coop: Path, with_train: bool = False) -> None:
    """GalLoP's ImageNet fixture; without ImageNet itself for the shifted sets (their readers then rely on
    classnames.txt, which their layout asks for)."""
    _write_imagenet(coop)
    if not with_train:
        shutil.rmtree(coop / "imagenet" / "images")


def _aircraft(base: Path) -> None:
    _mkdir(base)
    (base / "variants.txt").write_text("707-320\nA300B4\n")
    for split in ("train", "val", "trainval", "test"):
        (base / f"images_variant_{split}.txt").write_text("0001 A300B4\n0002 707-320\n")
    for i in ("0001", "0002"):
        _img(base / "images" / f"{i}.jpg")


def _tin(base: Path) -> None:
    _mkdir(base)
    (base / "wnids.txt").write_text("n01\nn02\n")
    for w in ("n01", "n02"):
        _img(base / "train" / w / "images" / f"{w}_0.JPEG")
    _img(base / "val" / "images" / "val_0.JPEG")
    (base / "val" / "val_annotations.txt").write_text("val_0.JPEG\tn02\t0\t0\t8\t8\n")
    _img(base / "test" / "images" / "test_0.JPEG")


def _coop(name: str):
    return lambda d: _write_coop(d / "coop", name, COOP_ROWS)


BUILDERS = {
    "fashion-mnist": lambda d: make_tiny_fashion_mnist(d / "fashion-mnist"),
    "sop": lambda d: make_sop(_mkdir(d / "Stanford_Online_Products")),
    "cub": lambda d: make_cub(d / "CUB_200_2011", n_classes=102, per_class=1),
    "inat": lambda d: make_inat(d / "inaturalist"),
    "inshop": lambda d: make_inshop(_mkdir(d / "inshop")),
    "dyml-vehicle": lambda d: _write_vehicle(d / "dyml_vehicle"),
    "dyml-animal": lambda d: _write_vehicle(d / "dyml_animal"),
    "dyml-product": lambda d: _dyml_product(d / "dyml_product"),
    "gldv2-metadata": lambda d: make_gldv2(d / "gldv2", images=False),
    "gldv2": lambda d: make_gldv2(d / "gldv2"),
    "coco": lambda d: make_coco(d / "coco"),
    "cifar10": lambda d: [
        _cifar_batch(d / "cifar-10-batches-py" / f, 2, [1, 2])
        for f in [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch"]
    ],
    "cifar100": lambda d: [
        _cifar_batch(d / "cifar-100-python" / f, 2, [1, 2], coarse=[0, 1]) for f in ("train", "test")
    ],
    "svhn": lambda d: savemat(
        _mkdir(d / "svhn") / "test_32x32.mat",
        {"X": np.zeros((32, 32, 3, 2), dtype=np.uint8), "y": np.array([[10], [3]], dtype=np.uint8)},
    ),
    "dtd": lambda d: _dtd(d / "dtd"),
    "places365": lambda d: (
        _img(d / "places365" / "val_256" / "Places365_val_00000001.jpg"),
        (d / "places365" / "places365_val.txt").write_text("Places365_val_00000001.jpg 165\n"),
    ),
    "lsun": lambda d: [_img(d / "LSUN" / c / "0.jpg") for c, _, _ in LSUN_CATEGORIES],
    "tinyimagenet": lambda d: _tin(d / "tiny-imagenet-200"),
    "imagenet": lambda d: [
        _img(d / "imagenet" / s / w / f"{w}_a.JPEG") for s in ("train", "val") for w in ("n01", "n02")
    ],
    "imagenet-ood": lambda d: (
        [_img(d / "ood_data" / s / "images" / "x.jpg") for s in ("iNaturalist", "SUN", "Places")],
        _img(d / "ood_data" / "dtd" / "images" / "banded" / "x.jpg"),
    ),
    "coop-imagenet": lambda d: _imagenet_dg(d / "coop", with_train=True),
    "coop-caltech101": _coop("caltech101"),
    "coop-oxford-pets": _coop("oxford_pets"),
    "coop-stanford-cars": lambda d: _write_coop(
        d / "coop",
        "stanford_cars",
        {k: [(f"cars_{'test' if k == 'test' else 'train'}/{r[0]}", *r[1:]) for r in v] for k, v in COOP_ROWS.items()},
    ),
    "coop-oxford-flowers": _coop("oxford_flowers"),
    "coop-food101": _coop("food101"),
    "coop-fgvc-aircraft": lambda d: _aircraft(d / "coop" / "fgvc_aircraft"),
    "coop-sun397": _coop("sun397"),
    "coop-dtd": _coop("dtd"),
    "coop-eurosat": _coop("eurosat"),
    "coop-ucf101": _coop("ucf101"),
    **{n: (lambda d: _imagenet_dg(d / "coop")) for n in ("imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r")},
}


# layout paths stricter than the readers, on purpose
STRICTER = (
    {("lsun", p): "HEAT reads all ten categories; the reader takes whichever exist" for p in BY_NAME["lsun"].layout}
    | {
        (n, p): "the ImageNet train scan (1.28M files) is left to the runs, not to the check"
        for n, p in (("imagenet", "imagenet/train"), ("coop-imagenet", "coop/imagenet/images/train"))
    }
    | {
        ("gldv2-metadata", f"gldv2/{f}"): why
        for f, why in (
            ("train_label_to_category.csv", "read by the H-GLDv2 builder (happier/hgldv2.py), not by a reader"),
            ("index_label_to_category.csv", "read by the H-GLDv2 builder (happier/hgldv2.py), not by a reader"),
            ("index_image_to_landmark.csv", "read by the hierarchical retrieval test only (see GLDV2_INDEX_SIDE)"),
            ("index_label_to_hierarchical.csv", "read by the hierarchical retrieval test only (see GLDV2_INDEX_SIDE)"),
        )
    }
)
# The index-side hierarchy is not among the checks of `make data-gldv2-metadata`: GLDv2Retrieval with a hierarchy
# refuses ground truth whose relevant sets overlap, a property of the published solution file that no check here can
# vouch for on the full data, and a data target should fail only for missing or unreadable files. It loads here:
GLDV2_INDEX_SIDE = ReaderCheck(
    "common.data.datasets.gldv2.GLDv2Retrieval",
    "gldv2",
    {"split": "index", "hierarchy": "index_label_to_hierarchical.csv"},
)


def _forget_parsed_files() -> None:
    """Readers that cache what they parsed (keyed by path) must read the files again after one is moved away."""
    from common.data.datasets.coco_multilabel import read_instances
    from common.data.datasets.gldv2 import load_retrieval_split

    load_retrieval_split.cache_clear()
    read_instances.cache_clear()


@pytest.mark.parametrize("name", [d.name for d in DATASETS])
def test_layout_check_agrees_with_the_readers(tmp_path, name):
    ds = BY_NAME[name]
    BUILDERS[name](tmp_path)
    assert download.layout_problems(ds, tmp_path) == []
    assert download.reader_problems(ds, tmp_path) == []
    assert ds.readers, f"{name} has no reader to check it with"
    for rel in ds.layout:
        p = tmp_path / rel
        moved = tmp_path.parent / f"{tmp_path.name}-moved"
        shutil.move(p, moved)
        _forget_parsed_files()
        try:
            assert download.layout_problems(ds, tmp_path) == [f"missing {p}"]
            if (name, rel) not in STRICTER:
                assert download.reader_problems(ds, tmp_path), f"no reader of {name} needs {rel}"
        finally:
            shutil.move(moved, p)


def test_gldv2_index_side_hierarchy_loads_and_needs_its_two_files(tmp_path):
    BUILDERS["gldv2-metadata"](tmp_path)
    meta = replace(BY_NAME["gldv2-metadata"], readers=(replace(GLDV2_INDEX_SIDE, files=False),))
    assert download.reader_problems(meta, tmp_path) == []
    for f in ("index_image_to_landmark.csv", "index_label_to_hierarchical.csv"):
        (tmp_path / "gldv2" / f).rename(tmp_path / f)
        _forget_parsed_files()
        assert download.reader_problems(meta, tmp_path), f
        (tmp_path / f).rename(tmp_path / "gldv2" / f)


def test_gldv2_sources_follow_the_published_layout():
    """500 train, 100 index and 20 test TARs at <bucket>/<split>/images_NNN.tar, each with its md5 file at
    <bucket>/md5sum/<split>/md5.images_NNN.txt (the GLDv2 README and download-dataset.sh), merged into gldv2/<split>."""
    tars = BY_NAME["gldv2"].sources
    assert len(tars) == sum(GLDV2_TARS.values()) == 620
    for split, n in GLDV2_TARS.items():
        mine = [s for s in tars if s.install == (("", f"gldv2/{split}"),)]
        assert [s.urls for s in mine] == [(f"{GLDV2}/{split}/images_{i:03d}.tar",) for i in range(n)]
        assert [s.md5_url for s in mine] == [f"{GLDV2}/md5sum/{split}/md5.images_{i:03d}.txt" for i in range(n)]
        assert all(s.merge and s.md5 is None for s in mine)
    assert len({s.filename for s in tars}) == 620  # one name per file in .downloads
    assert BY_NAME["gldv2"].requires == ("gldv2-metadata",)


def test_an_empty_folder_fails_the_layout_check(tmp_path):
    BUILDERS["dtd"](tmp_path)
    shutil.rmtree(tmp_path / "dtd" / "images")
    (tmp_path / "dtd" / "images").mkdir()
    assert download.layout_problems(BY_NAME["dtd"], tmp_path) == [f"empty folder {tmp_path / 'dtd' / 'images'}"]


def test_every_source_is_pinned_to_a_published_checksum_or_says_none():
    hexlen = {"md5": 32, "sha256": 64, "git_sha1": 40}
    for d in DATASETS:
        layout_roots = {p.split("/")[0] for p in d.layout}
        for s in d.sources:
            for kind, n in hexlen.items():
                v = getattr(s, kind)
                assert v is None or re.fullmatch(f"[0-9a-f]{{{n}}}", v), (d.name, s.filename, kind)
            assert s.checksum_from.strip(), (d.name, s.filename)
            assert all(u.startswith(("https://", "http://", "ftp://")) for u in s.urls)
            assert s.md5_url is None or (s.md5_url.startswith("https://") and s.urls), (d.name, s.filename)
            for _, dst in s.install:  # everything installed lands inside the checked layout
                assert dst.split("/")[0] in layout_roots, (d.name, dst)
            if s.convert:
                assert s.convert in {**download.CONVERTERS, **download.EXTRACTORS}
            if not s.urls:
                assert d.manual and "{downloads}" in d.manual, f"{d.name}: where to put {s.filename} by hand"
        assert d.sources or d.manual, f"{d.name}: neither downloads nor manual steps"
        assert all(r in BY_NAME for r in d.requires)
    with pytest.raises(ValueError, match="published checksum"):
        Source("x.zip", ("https://x",), (), NO_CHECKSUM, md5="0" * 32)
    with pytest.raises(ValueError, match="published checksum"):
        Source("x.tar", ("https://x",), (), NO_CHECKSUM, md5_url="https://x.md5")
    with pytest.raises(ValueError, match="merge=True needs"):
        Source("x.tar", ("https://x",), (), NO_CHECKSUM, merge=True)


def test_groups_and_resolve():
    assert set(GROUPS["coop"]) >= {n for n in BY_NAME if n.startswith("coop-")}
    assert "imagenet" not in GROUPS["all-public"] and "coop-imagenet" not in GROUPS["all-public"]
    assert [d.name for d in resolve(["dtd", "heat", "dtd"])][:2] == ["dtd", "cifar10"]
    with pytest.raises(KeyError, match="unknown dataset 'nope'"):
        resolve(["nope"])


# data targets that build on a catalogue entry instead of fetching one (their own tests run them)
DERIVED = {"data-hgldv2": "data-gldv2-metadata"}


def test_mk_data_has_one_target_per_catalogue_entry_and_group():
    text = (ROOT / "mk" / "data.mk").read_text()
    targets = set(re.findall(r"^(data-[a-z0-9-]+): install ##", text, re.M))
    assert targets == {f"data-{n}" for n in [*BY_NAME, *GROUPS, "list"]}
    for n in [*BY_NAME, *GROUPS]:
        assert re.search(rf"^data-{n}: install ##.*\n\t\$\(DATA_CLI\) {n}$", text, re.M), n
    assert 'DATA_CLI = "$(PY)" -m common.data.download --data-dir "$(DATA_DIR)"' in text
    every = set(re.findall(r"^(data-[a-z0-9-]+):", text, re.M))
    assert every == targets | set(DERIVED)
    for target, needs in DERIVED.items():
        assert re.search(rf"^{target}: {needs} ##", text, re.M), target
    phony = re.search(r"^\.PHONY: (.*?)(?<!\\)\n", text, re.M | re.S).group(1).split()
    assert every <= set(phony), sorted(every - set(phony))


def test_docs_table_is_the_catalogue():
    doc = (ROOT / "docs" / "data.md").read_text()
    block = re.search(r"<!-- catalogue:start.*?-->\n(.*?)\n<!-- catalogue:end -->", doc, re.S)
    assert block, "docs/data.md lacks the catalogue block"
    assert block.group(1).strip() == download.markdown_table().strip(), (
        "docs/data.md is out of date: paste `python -m common.data.download --markdown` between the markers"
    )


def _fetches(name: str) -> set[str]:
    """The entries that `make data-<name>` prepares: the entry and what it requires."""
    return {name}.union(*(_fetches(r) for r in BY_NAME[name].requires))


def test_readers_name_the_target_of_their_own_dataset(tmp_path):
    """Every reader of the catalogue, on an empty folder, names `make data-X`, where X is one dataset (not a group:
    `make data-coop` would fetch 16 datasets for one missing folder) whose target prepares that entry."""
    from common.data.errors import DatasetNotFoundError

    for d in DATASETS:
        for r in d.readers:
            with pytest.raises(DatasetNotFoundError) as e:
                download._import(r.target)(root=tmp_path / "empty" / r.root, **r.kwargs)
            target = re.search(r"`make (data-[a-z0-9-]+)`", str(e.value)).group(1)[len("data-") :]
            assert target in BY_NAME and d.name in _fetches(target), (d.name, r.target, r.kwargs, target)
    assert _fetches("gldv2") == {"gldv2", "gldv2-metadata"} and _fetches("cub") == {"cub"}
