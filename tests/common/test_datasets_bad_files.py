"""Data readers refuse bad files in the official formats with an error naming the file and the line or field.

Each case writes a file as the official release does, with one thing wrong (a label out of range, a broken header),
and checks that the reader raises DataFileError naming the file, the place and the offending value, instead of loading
a wrong class silently or failing later with an IndexError / numpy error and no file name.
"""

from __future__ import annotations

import json
import pickle
import re
import struct

import numpy as np
import pytest
from scipy.io import savemat

from common.data.datasets import fashion_mnist as fm
from common.data.datasets.cifar import load_cifar
from common.data.datasets.coop import CoOpDataset, read_split_zhou
from common.data.datasets.dyml import read_dyml_csv
from common.data.datasets.imagenet_dg import ImageNetDG, read_classnames
from common.data.datasets.inat import INaturalist2018, load_inat_taxonomy
from common.data.datasets.inshop import read_inshop_partition
from common.data.datasets.ood_folders import DTD, Places365, TinyImageNet
from common.data.datasets.sop import read_sop_split
from common.data.datasets.svhn import load_svhn
from common.data.errors import DataFileError
from tests.conftest import make_tiny_fashion_mnist, write_idx


def _raises(path, *patterns):
    """pytest.raises(DataFileError) whose message names ``path`` and matches every pattern."""
    return pytest.raises(DataFileError, match="(?s)" + re.escape(f"'{path}'") + "".join(f".*{p}" for p in patterns))


# ---------------------------------------------------------------- Fashion-MNIST (IDX)
@pytest.fixture
def fmnist(tmp_path):
    root = make_tiny_fashion_mnist(tmp_path / "fashion-mnist", per_class=2)
    return root


def _labels_with(root, value, at=3):
    labels = np.repeat(np.arange(10), 2).astype(np.uint8)
    labels[at] = value
    return write_idx(root / "train-labels-idx1-ubyte", labels)


@pytest.mark.parametrize("levels", [1, 2])
def test_fashion_mnist_label_outside_0_9(fmnist, levels):
    """Before: levels=1 loaded an 11th class silently, levels=2 raised an IndexError with no file name."""
    path = _labels_with(fmnist, 10)
    with _raises(path, r"labels \(0\.\.9\), item 3", "label 10 is outside 0..9", "make data-fashion-mnist"):
        fm.FashionMNIST(fmnist, "train", levels=levels)


def test_fashion_mnist_header_with_255_dimensions(fmnist):
    """Before: numpy's 'buffer is smaller than requested size', no file name."""
    path = fmnist / "train-labels-idx1-ubyte.gz"
    write_idx(fmnist / "train-labels-idx1-ubyte", np.zeros(20, np.uint8))
    import gzip

    raw = bytearray(gzip.decompress(path.read_bytes()))
    raw[3] = 255
    path.write_bytes(gzip.compress(bytes(raw)))
    with _raises(path, "header byte 3", "255, expected 1"):
        fm.load_fashion_mnist(fmnist, "train")
    with _raises(path, "says 255 dimensions", "the file has 28 bytes"):
        fm.read_idx(path)  # no expectation given: the header is still checked against the file length


def test_fashion_mnist_wrong_dtype_code_and_ndim(fmnist):
    path = fmnist / "train-labels-idx1-ubyte"
    (fmnist / "train-labels-idx1-ubyte.gz").unlink()
    path.write_bytes(bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 20) + np.zeros(20, ">f4").tobytes())
    with _raises(path, "dtype code", "0x0D, expected 0x08"):
        fm.load_fashion_mnist(fmnist, "train")
    img = write_idx(fmnist / "train-images-idx3-ubyte", np.zeros((20, 784), np.uint8))
    with _raises(img, "number of dimensions", "2, expected 3"):
        fm.load_fashion_mnist(fmnist, "train")
    img = write_idx(fmnist / "train-images-idx3-ubyte", np.zeros((20, 27, 28), np.uint8))
    with _raises(img, r"images of \(27, 28\), expected 28 x 28"):
        fm.load_fashion_mnist(fmnist, "train")


def test_fashion_mnist_images_and_labels_count_differ(fmnist):
    write_idx(fmnist / "train-labels-idx1-ubyte", np.zeros(19, np.uint8))
    lbl = fmnist / "train-labels-idx1-ubyte.gz"
    with _raises(lbl, "19 labels but", "train-images-idx3-ubyte.gz' holds 20 images"):
        fm.load_fashion_mnist(fmnist, "train")


def test_hierarchical_labels_reject_unknown_class():
    with pytest.raises(ValueError, match="class ids are 0..9"):
        fm.hierarchical_labels(np.array([0, 10]))


# ---------------------------------------------------------------- CIFAR (pickle batches)
def _cifar(root, name, fields):
    base = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    base.mkdir(parents=True, exist_ok=True)
    d = {b"data": np.zeros((3, 3072), np.uint8)}
    if name == "cifar10":
        d[b"labels"] = [0, 1, 2]
    else:
        d[b"fine_labels"], d[b"coarse_labels"] = [0, 1, 99], [0, 1, 19]
    d.update(fields)
    path = base / ("test_batch" if name == "cifar10" else "test")
    path.write_bytes(pickle.dumps({k: v for k, v in d.items() if v is not None}, protocol=2))
    return path


@pytest.mark.parametrize(
    "name,fields,patterns",
    [
        ("cifar10", {b"labels": [0, 10, 2]}, [r"field b'labels', item 1", "label 10 is outside 0..9"]),
        ("cifar100", {b"fine_labels": [0, 100, 2]}, [r"field b'fine_labels', item 1", "outside 0..99"]),
        ("cifar100", {b"coarse_labels": [-1, 0, 2]}, [r"field b'coarse_labels', item 0", "outside 0..19"]),
        ("cifar10", {b"labels": [0, 1]}, [r"field b'labels'", "expected 3 ints"]),
        ("cifar10", {b"labels": None}, [r"field b'labels'", "missing"]),
        ("cifar10", {b"data": np.zeros((3, 1024), np.uint8)}, [r"field b'data'", r"expected uint8 \[N, 3072\]"]),
        ("cifar10", {b"data": np.zeros((3, 3072), np.int64)}, [r"field b'data'", "int64"]),
    ],
)
def test_cifar_bad_batches(tmp_path, name, fields, patterns):
    path = _cifar(tmp_path, name, fields)
    with _raises(path, *patterns, f"make data-{name}"):
        load_cifar(tmp_path, name, "test", levels=2 if name == "cifar100" else 1)


def test_cifar_batch_that_is_not_a_dict(tmp_path):
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.parent.mkdir(parents=True)
    path.write_bytes(pickle.dumps([1, 2, 3]))
    with _raises(path, "top level", "a list, expected the batch dict"):
        load_cifar(tmp_path, "cifar10", "test")


# ---------------------------------------------------------------- SVHN (.mat)
@pytest.mark.parametrize("bad,where", [(11, "item 2"), (0, "item 2")])
def test_svhn_label_outside_1_10(tmp_path, bad, where):
    """Before: 11 became digit 1 and 0 stayed 0 (``y % 10``), silently."""
    x = np.zeros((32, 32, 3, 4), np.uint8)
    savemat(tmp_path / "test_32x32.mat", {"X": x, "y": np.array([[10], [1], [bad], [3]], dtype=np.uint8)})
    with _raises(tmp_path / "test_32x32.mat", rf"field 'y' \(1\.\.10\), {where}", f"label {bad} is outside 1..10"):
        load_svhn(tmp_path, "test")


def test_svhn_bad_arrays(tmp_path):
    path = tmp_path / "test_32x32.mat"
    savemat(path, {"X": np.zeros((32, 32, 3, 4), np.float32), "y": np.ones((4, 1))})
    with _raises(path, "field 'X'", "float32"):
        load_svhn(tmp_path, "test")
    savemat(path, {"X": np.zeros((32, 32, 3, 4), np.uint8), "y": np.ones((3, 1))})
    with _raises(path, "field 'y'", "expected 4 integer labels"):
        load_svhn(tmp_path, "test")
    path.write_bytes(b"garbage")
    with _raises(path, "not a readable .mat file"):
        load_svhn(tmp_path, "test")


# ---------------------------------------------------------------- list files: SOP, In-Shop, DyML, iNat
SOP_HEADER = "image_id class_id super_class_id path"


@pytest.mark.parametrize(
    "row,patterns",
    [
        ("3 2 13 chair_final/b.JPG", [r"column 'super_class_id', line 3", "label 13 is outside 1..12"]),
        ("3 0 1 chair_final/b.JPG", [r"column 'class_id', line 3", "label 0 is outside"]),
        ("3 two 1 chair_final/b.JPG", [r"line 3, column 'class_id'", "'two' is not an integer"]),
        ("3 2 1", [r"line 3", "3 fields, expected 4"]),
    ],
)
def test_sop_bad_rows(tmp_path, row, patterns):
    path = tmp_path / "Ebay_train.txt"
    path.write_text(f"{SOP_HEADER}\n1 1 1 bicycle_final/a.JPG\n{row}\n")
    with _raises(path, *patterns, "make data-sop"):
        read_sop_split(path)


@pytest.mark.parametrize(
    "lines,patterns",
    [
        (["2", "image_name item_id evaluation_status", "img/a.jpg id_1 train", "img/b.jpg item7 query"],
         [r"line 4, field 'item_id'", "'item7' is not id_<number>"]),
        (["2", "image_name item_id evaluation_status", "img/a.jpg id_1 train", "img/b.jpg id_2 test"],
         [r"line 4", "expected"]),
        (["two", "image_name item_id evaluation_status", "img/a.jpg id_1 train"], [r"line 1 \(count\)", "'two'"]),
        (["3", "image_name item_id evaluation_status", "img/a.jpg id_1 train"], [r"line 1 \(count\)", "says 3 rows"]),
        (["1", "name id status", "img/a.jpg id_1 train"], [r"lines 1-2"]),
    ],
)  # fmt: skip
def test_inshop_bad_rows(tmp_path, lines, patterns):
    path = tmp_path / "list_eval_partition.txt"
    path.write_text("\n".join(lines) + "\n")
    with _raises(path, *patterns, "make data-inshop"):
        read_inshop_partition(path)


@pytest.mark.parametrize(
    "row,patterns",
    [
        ("c.jpg, -4, 7, 3", [r"column 'fine_id0.jpg', line 3", "label -4 is outside"]),
        ("c.jpg, x, 7, 3", [r"line 3", "cannot read integer labels"]),
        (", 4, 7, 3", [r"line 3", "no file name"]),
        ("c.jpg, 4", [r"line 3", "too few fields"]),
    ],
)
def test_dyml_bad_rows(tmp_path, row, patterns):
    path = tmp_path / "label.csv"
    path.write_text(f"fname, fine_id0.jpg, middle_id, coarse_id\na.jpg, 1, 7, 3\n{row}\n")
    with _raises(path, *patterns):
        read_dyml_csv(path, (("fine_id0.jpg", "fine_id"), ("middle_id",), ("coarse_id",)))


def test_inat_category_id_out_of_range_names_file_and_line(tmp_path):
    split = tmp_path / "Inat_dataset_splits" / "Inaturalist_train_set1.txt"
    split.parent.mkdir(parents=True)
    split.write_text("train_val2018/Aves/3000/a.jpg\n\ntrain_val2018/Aves/9000/b.jpg\n")
    with _raises(split, "line 3", "category id 9000", r"outside iNat-2018's 0\.\.8141", "make data-inat"):
        INaturalist2018(tmp_path, "train")
    split.write_text("train_val2018/Aves/3000/a.jpg\nAves/b.jpg\n")
    with _raises(split, "line 2", "cat_id"):
        INaturalist2018(tmp_path, "train")


def test_inat_taxonomy_json_errors(tmp_path):
    path = tmp_path / "train2018.json"
    path.write_text("{ not json")
    with _raises(path, "not valid JSON"):
        load_inat_taxonomy(path)
    cat = {r: "x" for r in ("genus", "family", "order", "class", "phylum", "kingdom")}
    path.write_text(json.dumps({"categories": [{"id": 1, **cat}, {"id": "one", **cat}]}))
    with _raises(path, r"categories\[1\]\.id", "'one' is not an integer"):
        load_inat_taxonomy(path)
    path.write_text(json.dumps({"categories": [{"id": 1, **cat}, {"id": 1, **cat}]}))
    with _raises(path, r"categories\[1\]\.id", "appears twice"):
        load_inat_taxonomy(path)


# ---------------------------------------------------------------- CoOp split JSONs, FGVC lists, ImageNet names
@pytest.mark.parametrize(
    "entry,where",
    [(["a.jpg", -1, "cat"], r"test\[0\]"), (["a.jpg", True, "cat"], r"test\[0\]"), (["a.jpg", 0], r"test\[0\]")],
)
def test_coop_split_json_bad_entries(tmp_path, entry, where):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [["b.jpg", 0, "cat"]], "val": [], "test": [entry]}))
    with _raises(path, where, r"expected \[relative_path, label \(int >= 0\), class_name\]", "make data-coop"):
        read_split_zhou(path)


def test_coop_split_json_not_json_and_gap_in_labels(tmp_path):
    base = tmp_path / "oxford_pets"
    base.mkdir()
    path = base / "split_zhou_OxfordPets.json"
    path.write_text("[1, 2")
    with _raises(path, "not valid JSON"):
        read_split_zhou(path)
    with _raises(path, "not valid JSON", r"`make data-coop-oxford-pets`"):  # the reader names its dataset's target
        CoOpDataset(tmp_path, "oxford_pets", "train")
    path.write_text(json.dumps({"train": [["a.jpg", 0, "cat"], ["b.jpg", 2, "dog"]], "val": [], "test": []}))
    with pytest.raises(ValueError, match=re.escape(f"'{path}'") + r".*labels \[1\] never appear"):
        CoOpDataset(tmp_path, "oxford_pets", "train")


def test_fgvc_unknown_variant_names_line(tmp_path):
    base = tmp_path / "fgvc_aircraft"
    base.mkdir()
    (base / "variants.txt").write_text("707-320\nA320\n")
    lst = base / "images_variant_test.txt"
    lst.write_text("0001 A320\n0002 A380\n")
    with _raises(lst, "line 2", "variant 'A380' is not in", r"`make data-coop-fgvc-aircraft`"):
        CoOpDataset(tmp_path, "fgvc_aircraft", "test")


def test_imagenet_classnames_line_without_name(tmp_path):
    f = tmp_path / "imagenet" / "classnames.txt"
    f.parent.mkdir()
    f.write_text("n01440764 tench\nn01443537\n")
    with _raises(f, "line 2", "expected '<wnid> <class name>'"):
        read_classnames(tmp_path)
    f.write_text("n01440764 tench\nn01440764 goldfish\n")
    with _raises(f, "line 2", "listed twice", r"`make data-coop-imagenet`"):
        read_classnames(tmp_path)
    with _raises(f, "line 2", "listed twice", r"`make data-imagenet-sketch`"):  # each set's target fetches the file
        ImageNetDG(tmp_path, "imagenet_sketch")


# ---------------------------------------------------------------- OOD folder lists: Places365, DTD, TinyImageNet
def test_places365_label_out_of_range_and_not_int(tmp_path):
    base = tmp_path / "places365"
    base.mkdir()
    lst = base / "places365_val.txt"
    lst.write_text("Places365_val_00000001.jpg 165\nPlaces365_val_00000002.jpg 365\n")
    with _raises(lst, "label, line 2", "label 365 is outside 0..364", "make data-places365"):
        Places365(tmp_path)
    lst.write_text("Places365_val_00000001.jpg x\n")
    with _raises(lst, "line 1, label", "'x' is not an integer"):
        Places365(tmp_path)


def test_dtd_list_with_unknown_class(tmp_path):
    (tmp_path / "dtd" / "images" / "banded").mkdir(parents=True)
    lst = tmp_path / "dtd" / "labels" / "test1.txt"
    lst.parent.mkdir()
    lst.write_text("banded/banded_0001.jpg\nstriped/striped_0002.jpg\n")
    with _raises(lst, "line 2", "'striped/striped_0002.jpg' is not '<class>/<image>'"):
        DTD(tmp_path, "test", 1)


def test_tinyimagenet_val_annotation_with_unknown_wnid(tmp_path):
    base = tmp_path / "tiny-imagenet-200"
    (base / "val").mkdir(parents=True)
    (base / "wnids.txt").write_text("n01443537\n")
    ann = base / "val" / "val_annotations.txt"
    ann.write_text("val_0.JPEG\tn01443537\t0\t0\t62\t62\nval_1.JPEG\tn99999999\t0\t0\t62\t62\n")
    with _raises(ann, "line 2", "wnids.txt"):
        TinyImageNet(tmp_path, "val")
