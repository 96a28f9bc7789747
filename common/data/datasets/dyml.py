"""DyML benchmarks (Sun et al. 2021, "Dynamic Metric Learning"): Vehicle, Animal and Product, official layouts.

Layout of DyML-Vehicle and DyML-Animal under ``root``::

    root/train/label.csv            header: fname, fine_id0.jpg, middle_id, coarse_id   (sic: leading spaces)
    root/train/imgs/<fname>
    root/bmk_{fine,middle,coarse}/{query,gallery}.csv   header: fname, labels0.jpg
    root/bmk_{fine,middle,coarse}/{query,gallery}/<fname>

DyML-Product::

    root/train/label.csv, root/train/imgs/              (as above)
    root/mini-bmk_all_in_one/label.csv                  header as train: three label columns
    root/mini-bmk_all_in_one/imgs/<fname>

CSV quirks: the official headers carry a leading space and the fine column is literally named ``" fine_id0.jpg"``
(the test column ``" labels0.jpg"``). Columns are matched after stripping spaces, and the clean names ``fine_id`` /
``labels`` are accepted too.

Training labels are ``[N, 3]`` = [fine, middle, coarse], each column relabelled to ``0..n-1``. Vehicle and Animal are
tested on three single-level benchmarks (query vs gallery, labels ``[N]``); Product on one set with three levels.
HAPPIER's "Average-mAP" is the mAP averaged across the three benchmarks (inter-set, Vehicle/Animal) or across the
three levels of the one set (intra-set, Product): :func:`dyml_overall`.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from common.data.datasets.base import ImageListDataset, relabel_columns
from common.data.errors import check_label_range, data_file_error, require_path

DYML_BENCHMARKS: tuple[str, ...] = ("fine", "middle", "coarse")
TRAIN_COLUMNS: tuple[tuple[str, ...], ...] = (("fine_id0.jpg", "fine_id"), ("middle_id",), ("coarse_id",))
TEST_COLUMN: tuple[str, ...] = ("labels0.jpg", "labels")
DYML_LAYOUT = """  <root>/train/label.csv  (fname, fine_id0.jpg, middle_id, coarse_id) and <root>/train/imgs/
  Vehicle/Animal: <root>/bmk_{fine,middle,coarse}/{query,gallery}.csv (fname, labels0.jpg) + {query,gallery}/
  Product: <root>/mini-bmk_all_in_one/label.csv + imgs/"""


def _make_target(root: Path) -> str:
    name = root.name.lower()
    for kind in ("vehicle", "animal", "product"):
        if kind in name:
            return f"data-dyml-{kind}"
    return "data-dyml"


def read_dyml_csv(path: str | Path, columns: Sequence[Sequence[str]]) -> tuple[list[str], np.ndarray]:
    """``(fnames, int64 labels [N, len(columns)])`` from a DyML CSV.

    ``columns``: for each label column, the accepted header names (compared after stripping spaces).
    Raises :class:`~common.data.errors.DataFileError` naming the file and the line for a row without a file name, a
    label that is not an integer or is negative.
    """
    path = Path(path)
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise ValueError(f"'{path}' is empty; re-extract the DyML archive.")
    header = [h.strip() for h in rows[0]]
    if "fname" not in header:
        raise ValueError(f"'{path}' has no 'fname' column (header {rows[0]}); is this a DyML label.csv?")
    idx = []
    for names in columns:
        found = [header.index(n) for n in names if n in header]
        if not found:
            raise ValueError(f"'{path}' lacks a column named any of {list(names)} (header {rows[0]}).")
        idx.append(found[0])
    fcol = header.index("fname")
    fnames, labels, lines = [], [], []
    for line_no, row in enumerate(rows[1:], start=2):
        if not row or all(not c.strip() for c in row):
            continue
        if len(row) <= max(*idx, fcol) or not row[fcol].strip():
            raise data_file_error(path, f"line {line_no}", f"{row} has no file name or too few fields", None)
        try:
            labels.append([int(row[i].strip()) for i in idx])
        except ValueError:
            raise data_file_error(path, f"line {line_no}", f"cannot read integer labels from {row}", None) from None
        fnames.append(row[fcol].strip())
        lines.append(line_no)
    out = np.asarray(labels, dtype=np.int64).reshape(len(fnames), len(columns))
    for c, names in enumerate(columns):
        check_label_range(out[:, c], 0, np.iinfo(np.int64).max, path=path, field=f"column '{names[0]}'", lines=lines)
    return fnames, out


class DyMLDataset(ImageListDataset):
    """One DyML split.

    Args:
        root: dataset folder (e.g. ``${paths.data_dir}/dyml_vehicle``).
        split: ``"train"`` (labels ``[N, 3]``); for Vehicle/Animal ``"query"`` or ``"gallery"`` of ``benchmark``
            (labels ``[N]``); for Product ``"test"`` (the all-in-one set, labels ``[N, 3]``).
        benchmark: "fine", "middle" or "coarse" (Vehicle/Animal test splits only).
        relabel: map each column to ``0..n-1`` (default: train only; test ids are only compared for equality).
        drop_queries: for ``split="gallery"``, leave out the gallery rows whose file name is in the benchmark's
            ``query.csv``. The original evaluation drops each query's first hit, assuming it is the query's own copy
            in the gallery; removing the copies gives that result without the assumption (and no query can retrieve
            itself when evaluated query vs gallery).
        transform, on_error: see :class:`~common.data.datasets.base.ImageListDataset`.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        benchmark: str | None = None,
        relabel: bool | None = None,
        drop_queries: bool = True,
        transform: Callable | None = None,
        on_error: str = "raise",
    ) -> None:
        root = Path(root)
        target = _make_target(root)
        require_path(root, dataset="DyML", layout=DYML_LAYOUT, make_target=target)
        if split == "train":
            folder, csv_name, img_dir, columns = root / "train", "label.csv", "imgs", TRAIN_COLUMNS
        elif split in ("query", "gallery"):
            if benchmark not in DYML_BENCHMARKS:
                raise ValueError(f"DyML {split} split needs benchmark in {DYML_BENCHMARKS}, got {benchmark!r}")
            folder, csv_name, img_dir, columns = root / f"bmk_{benchmark}", f"{split}.csv", split, (TEST_COLUMN,)
        elif split == "test":
            folder, csv_name, img_dir, columns = root / "mini-bmk_all_in_one", "label.csv", "imgs", TRAIN_COLUMNS
        else:
            raise ValueError(f"split must be 'train', 'query', 'gallery' or 'test', got {split!r}")
        csv_path = require_path(folder / csv_name, dataset="DyML", layout=DYML_LAYOUT, make_target=target)
        fnames, labels = read_dyml_csv(csv_path, columns)
        self.num_dropped_queries = 0
        if split == "gallery" and drop_queries:
            q_csv = require_path(folder / "query.csv", dataset="DyML", layout=DYML_LAYOUT, make_target=target)
            queries = set(read_dyml_csv(q_csv, columns)[0])
            keep = [i for i, f in enumerate(fnames) if f not in queries]
            self.num_dropped_queries = len(fnames) - len(keep)
            fnames, labels = [fnames[i] for i in keep], labels[keep]
        if relabel if relabel is not None else split == "train":
            labels = relabel_columns(labels)
        if labels.shape[1] == 1:
            labels = labels[:, 0]
        self.root, self.split, self.benchmark, self.fnames = root, split, benchmark, fnames
        super().__init__([folder / img_dir / f for f in fnames], labels, transform=transform, on_error=on_error)


def query_gallery_indices(query_fnames: Sequence[str], gallery_fnames: Sequence[str]) -> dict[str, np.ndarray]:
    """Index a DyML benchmark as one set ``gallery + (queries not in the gallery)``.

    The original evaluation drops each query's first hit, assuming the gallery holds the query images. Here a query
    whose file name is in the gallery *is* that gallery item, so ``evaluate_retrieval(..., query_idx, gallery_idx,
    exclude_self=True)`` removes exactly the query itself and nothing else. Returns ``query_idx`` (into the combined
    set), ``gallery_idx`` and ``extra_query`` (positions in the query list appended after the gallery).
    """
    pos = {f: i for i, f in enumerate(gallery_fnames)}
    n = len(gallery_fnames)
    query_idx, extra = [], []
    for k, f in enumerate(query_fnames):
        if f in pos:
            query_idx.append(pos[f])
        else:
            query_idx.append(n + len(extra))
            extra.append(k)
    return {
        "query_idx": np.asarray(query_idx, dtype=np.int64),
        "gallery_idx": np.arange(n, dtype=np.int64),
        "extra_query": np.asarray(extra, dtype=np.int64),
    }


def dyml_overall(
    results: Mapping[str, Mapping[str, float]], weights: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Average the metrics of several DyML sets or levels (HAPPIER's ``overall_accuracy_hook``).

    ``results``: ``{set or level name: {metric: value}}`` - the three benchmarks for Vehicle/Animal (inter-set),
    or the three levels of Product's one set (intra-set). Returns ``{metric: weighted mean}`` over the names that
    report that metric (uniform weights by default); this is the paper's "Average-mAP" for ``metric = "map"``.
    """
    if not results:
        raise ValueError("no results to average")
    weights = dict(weights or {})
    metrics = sorted({m for r in results.values() for m in r})
    out = {}
    for m in metrics:
        names = [n for n in results if m in results[n]]
        w = np.asarray([weights.get(n, 1.0) for n in names], dtype=np.float64)
        v = np.asarray([results[n][m] for n in names], dtype=np.float64)
        out[m] = float((w * v).sum() / w.sum())
    return out
