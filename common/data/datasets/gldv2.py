"""Google Landmarks Dataset v2 (GLDv2; Weyand et al., CVPR 2020) from its official files, and H-GLDv2 labels.

Layout under ``root`` (the files of github.com/cvdfoundation/google-landmark, version 2.1)::

    root/train_clean.csv                  landmark_id,images      images: space-separated train image ids
    root/train_label_to_category.csv      landmark_id,category    a Wikimedia Commons category URL
    root/train/<a>/<b>/<c>/<id>.jpg       a, b, c: the first three characters of the 16-character image id
    root/index.csv                        id                      the 761,757 index (database) images
    root/index/<a>/<b>/<c>/<id>.jpg
    root/test.csv                         id                      the 117,577 test images
    root/test/<a>/<b>/<c>/<id>.jpg
    root/retrieval_solution_v2.1.csv      id,images,Usage         images: space-separated index ids, or None
    root/index_image_to_landmark.csv      id,landmark_id          (hierarchical evaluation only)

**Training set** (:class:`GLDv2Train`): the clean training set (``train_clean.csv``: 81,313 landmarks, 1,580,470
images). Without a hierarchy, labels are ``[N]`` landmark ids. With a hierarchy CSV (a row per landmark:
``landmark_id`` plus one column per coarser level, e.g. ``hierarchical_label``), labels are ``[N, 1 + k]`` =
``[landmark, super-category, ...]``; that is H-GLDv2. Two sources of such a CSV work the same way: the published
H-GLDv2 labels (``train_label_to_hierarchical.csv``, columns ``landmark_id, category, supercategory,
hierarchical_label, natural_or_human_made``) and the file written by ``python -m happier.hgldv2 build`` (columns
``landmark_id, category, name, hierarchical_label, confidence, top_choice``). Landmarks without a row, or with an
empty value in a chosen column, are kept out; their counts are in :attr:`GLDv2Train.num_dropped_landmarks` /
``num_dropped_images`` and logged. Every column is renumbered to ``0..n-1`` in sorted order of its original values
(landmark ids, super-category names), which :attr:`class_ids` keeps.

**Retrieval split** (:class:`GLDv2Retrieval`): the test images are the queries and the index images the gallery.
Relevance is not given by labels but by ``retrieval_solution_v2.1.csv``: each test image lists the index images that
show its landmark, or ``None`` (no landmark of the index, the image is ignored by the official metric). The queries
are the test images with a non-empty list; the others are kept out and counted in
:attr:`GLDv2Retrieval.num_unmatched_queries`. ``usage`` selects the ``Public``/``Private`` half or both.

:func:`solution_labels` turns the solution into labels that the house metrics understand
(``evaluate_retrieval(emb, labels, query_idx=..., gallery_idx=..., exclude_self=False)``): group the queries by
their set of relevant index images; when these sets are pairwise disjoint (each index image is relevant to one set
at most) every set is a class (flat int64 labels, index images relevant to no query in a class of their own); when
they overlap, each set gets a column of a boolean multi-label matrix (query: its set's column; index image: the
columns of every set that holds it), so "shares at least one label" is exactly "is in the query's relevant set".
With ``hierarchy`` (an index-side hierarchy CSV, e.g. ``index_label_to_hierarchical.csv``; index landmark ids differ
from train ones), labels are ``[N, 1 + k]``: column 0 the relevant-set class, the coarser columns the
super-categories of the index images' landmarks (``index_image_to_landmark.csv``); a query takes the super-category
of its relevant images (see :func:`hierarchical_solution_labels`).

The official GLDv2 retrieval metric is mAP@100; the house metrics compute mAP over the full ranking, mAP@R and R@k
on the same ground truth.
"""

from __future__ import annotations

import csv
import functools
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import numpy as np

from common.data.datasets.base import ImageListDataset, relabel_columns, remap_labels
from common.data.errors import data_file_error, require_path

log = logging.getLogger(__name__)

DATASET = "Google Landmarks v2"
MAKE_TARGET = "data-gldv2"
LAYOUT = """  <root>/train_clean.csv              (landmark_id,images)  + <root>/train/<a>/<b>/<c>/<id>.jpg
  <root>/train_label_to_category.csv  (landmark_id,category)
  <root>/index.csv (id)               + <root>/index/<a>/<b>/<c>/<id>.jpg
  <root>/test.csv (id)                + <root>/test/<a>/<b>/<c>/<id>.jpg
  <root>/retrieval_solution_v2.1.csv  (id,images,Usage)
  <root>/index_image_to_landmark.csv  (id,landmark_id; hierarchical evaluation only)
  (github.com/cvdfoundation/google-landmark; <a><b><c> = the first three characters of the image id)"""
SOLUTION_FILE = "retrieval_solution_v2.1.csv"
USAGES = ("all", "public", "private")
DEFAULT_HIERARCHY_COLUMNS = ("hierarchical_label",)
_EMPTY = ("", "nan", "none", "null")


def image_path(folder: str | Path, image_id: str) -> Path:
    """``folder/<a>/<b>/<c>/<id>.jpg``, the official place of an image (a, b, c: the id's first characters)."""
    if len(image_id) < 3:
        raise ValueError(f"GLDv2 image id {image_id!r} is too short; ids are 16-character hex strings")
    return Path(folder) / image_id[0] / image_id[1] / image_id[2] / f"{image_id}.jpg"


def _require(root: Path, name: str | Path) -> Path:
    path = Path(name) if Path(name).is_absolute() else root / name
    return require_path(path, dataset=DATASET, layout=LAYOUT, make_target=MAKE_TARGET)


def read_csv_columns(path: str | Path, columns: Sequence[str]) -> dict[str, list[str]]:
    """The named columns of a CSV file with a header row, as lists of stripped strings (blank lines skipped)."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader, [])]
        missing = [c for c in columns if c not in header]
        if missing:
            raise data_file_error(path, "header (line 1)", f"no column(s) {missing} in {header}", MAKE_TARGET)
        idx = [header.index(c) for c in columns]
        out: dict[str, list[str]] = {c: [] for c in columns}
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not v.strip() for v in row):
                continue
            if len(row) <= max(idx):
                raise data_file_error(
                    path, f"line {line_no}", f"{len(row)} fields, expected at least {max(idx) + 1}", MAKE_TARGET
                )
            for c, i in zip(columns, idx):
                out[c].append(row[i].strip())
    return out


def _int_ids(values: Sequence[str], path: Path, column: str) -> np.ndarray:
    try:
        return np.array([int(v) for v in values], dtype=np.int64)
    except ValueError:
        k, bad = next((k, v) for k, v in enumerate(values) if not v.lstrip("-").isdigit())
        where = f"data row {k + 1}, column {column!r}"
        raise data_file_error(path, where, f"{bad!r} is not an integer landmark id", MAKE_TARGET) from None


def read_train_clean(path: str | Path) -> tuple[np.ndarray, list[list[str]]]:
    """``(landmark ids [K], image ids per landmark)`` from ``train_clean.csv``."""
    cols = read_csv_columns(path, ("landmark_id", "images"))
    ids = _int_ids(cols["landmark_id"], Path(path), "landmark_id")
    if len(np.unique(ids)) != len(ids):
        raise data_file_error(path, "column 'landmark_id'", "a landmark_id is listed twice", MAKE_TARGET)
    return ids, [s.split() for s in cols["images"]]


def read_id_list(path: str | Path) -> list[str]:
    """The ``id`` column of ``index.csv`` / ``test.csv``."""
    return read_csv_columns(path, ("id",))["id"]


def category_name(url: str) -> str:
    """The readable name of a Wikimedia Commons category URL.

    ``http://commons.wikimedia.org/wiki/Category:St._Oswald%27s_Church,_Dean`` -> ``St. Oswald's Church, Dean``
    (percent-decoded, text after ``Category:``, underscores as spaces).
    """
    text = unquote(url.strip())
    if "Category:" in text:
        text = text.split("Category:", 1)[1]
    else:
        text = text.rstrip("/").rsplit("/", 1)[-1]
    return " ".join(text.replace("_", " ").split())


def read_label_to_category(path: str | Path) -> dict[int, str]:
    """``{landmark_id: category URL}`` from ``{train,index}_label_to_category.csv``."""
    cols = read_csv_columns(path, ("landmark_id", "category"))
    ids = _int_ids(cols["landmark_id"], Path(path), "landmark_id")
    return dict(zip(ids.tolist(), cols["category"]))


def read_hierarchy(path: str | Path, columns: Sequence[str] = DEFAULT_HIERARCHY_COLUMNS) -> dict[int, tuple[str, ...]]:
    """``{landmark_id: (value of each column)}`` from a hierarchy CSV; rows with an empty value are left out.

    ``columns`` go from the finest coarser level to the coarsest (``["hierarchical_label"]`` for two levels,
    ``["hierarchical_label", "natural_or_human_made"]`` for three with the published labels).
    """
    path = Path(path)
    if not columns:
        raise ValueError("hierarchy_columns is empty: name at least one column of the hierarchy CSV")
    cols = read_csv_columns(path, ("landmark_id", *columns))
    ids = _int_ids(cols["landmark_id"], path, "landmark_id")
    out: dict[int, tuple[str, ...]] = {}
    for i, lid in enumerate(ids.tolist()):
        values = tuple(cols[c][i] for c in columns)
        if any(v.lower() in _EMPTY for v in values):
            continue
        if out.get(lid, values) != values:
            raise ValueError(f"'{path}' gives landmark {lid} two different rows: {out[lid]} and {values}")
        out[lid] = values
    return out


def read_retrieval_solution(path: str | Path, usage: str = "all") -> tuple[list[str], list[list[str] | None]]:
    """``(test ids, relevant index ids or None)`` from ``retrieval_solution_v2.1.csv``, for one ``usage``.

    ``usage``: ``"all"``, ``"public"`` or ``"private"`` (the ``Usage`` column, case-insensitive). ``None`` marks a
    test image that the official metric ignores (the file writes ``None``; an empty list is read the same way).
    """
    if usage not in USAGES:
        raise ValueError(f"usage must be one of {USAGES}, got {usage!r}")
    cols = read_csv_columns(path, ("id", "images", "Usage"))
    ids, matches = [], []
    for tid, imgs, use in zip(cols["id"], cols["images"], cols["Usage"]):
        if usage != "all" and use.lower() != usage:
            continue
        ids.append(tid)
        matches.append(None if imgs.lower() in _EMPTY else imgs.split())
    return ids, matches


def _training_labels(
    landmarks: np.ndarray, hierarchy: dict[int, tuple[str, ...]] | None, n_cols: int
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """``(labels, class_ids, keep)`` for the items of ``landmarks [N]`` (original ids)."""
    if hierarchy is None:
        labels, class_ids = remap_labels(landmarks)
        return labels, class_ids, np.ones(len(landmarks), dtype=bool)
    keep = np.array([int(lid) in hierarchy for lid in landmarks], dtype=bool)
    kept = landmarks[keep]
    columns = [remap_labels(kept)]
    for c in range(n_cols):
        columns.append(remap_labels(np.array([hierarchy[int(lid)][c] for lid in kept], dtype=object)))
    labels = np.stack([col[0] for col in columns], axis=1) if len(kept) else np.zeros((0, 1 + n_cols), np.int64)
    return labels, [col[1][0] for col in columns], keep


class GLDv2Train(ImageListDataset):
    """The clean GLDv2 training set, labels ``[N]`` (landmark) or ``[N, 1 + k]`` with a hierarchy (H-GLDv2).

    Args:
        root: the GLDv2 folder (layout in the module docstring).
        hierarchy: a hierarchy CSV (absolute, or relative to ``root``), e.g. ``hgldv2/train_hierarchy.csv`` (the
            builder's output) or ``train_label_to_hierarchical.csv`` (published); None for landmark labels only.
        hierarchy_columns: the CSV columns of the coarser levels, finest first.
        drop_labels: coarse values whose landmarks are left out (e.g. ``["other"]``, the builder's bucket of
            unassigned landmarks), counted with the landmarks missing from the hierarchy.
        transform, on_error: see :class:`~common.data.datasets.base.ImageListDataset`.
        check_files: stat every image (off by default: 1.6 million files).

    Attributes:
        labels: int64 ``[N]`` or ``[N, 1 + k]``, each column renumbered to ``0..n_c-1``.
        class_ids: per column, the sorted original values (landmark ids, then super-category names).
        image_ids: the image id of each item.
        num_dropped_landmarks, num_dropped_images: what the hierarchy left out.
    """

    def __init__(
        self,
        root: str | Path,
        hierarchy: str | Path | None = None,
        hierarchy_columns: Sequence[str] = DEFAULT_HIERARCHY_COLUMNS,
        drop_labels: Sequence[str] = (),
        transform: Callable | None = None,
        on_error: str = "raise",
        check_files: bool = False,
    ) -> None:
        root = require_path(root, dataset=DATASET, layout=LAYOUT, make_target=MAKE_TARGET)
        landmark_ids, images = read_train_clean(_require(root, "train_clean.csv"))
        item_landmark = np.repeat(landmark_ids, [len(x) for x in images])
        image_ids = [i for row in images for i in row]
        table = None
        if hierarchy not in (None, "", "none", "None"):
            table = read_hierarchy(_require(root, hierarchy), hierarchy_columns)
            drop = set(drop_labels)
            table = {lid: v for lid, v in table.items() if not drop.intersection(v)}
        labels, self.class_ids, keep = _training_labels(item_landmark, table, len(hierarchy_columns))
        self.num_dropped_images = int((~keep).sum())
        self.num_dropped_landmarks = len(set(item_landmark[~keep].tolist()))
        if self.num_dropped_images:
            log.info(
                "GLDv2 train: %d landmarks (%d images) have no hierarchy label and are left out",
                self.num_dropped_landmarks,
                self.num_dropped_images,
            )
        self.image_ids = [i for i, k in zip(image_ids, keep) if k]
        paths = [image_path(root / "train", i) for i in self.image_ids]
        if check_files:
            _check_files(paths)
        super().__init__(paths, labels, transform=transform, on_error=on_error)
        self.root, self.hierarchy_columns = root, tuple(hierarchy_columns) if table is not None else ()


def _check_files(paths: Sequence[Path]) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FileNotFoundError(
            f"{len(missing)} of {len(paths)} GLDv2 images are missing, e.g. '{missing[0]}'. Extract every TAR of the "
            f"split into its folder (`make {MAKE_TARGET}`); the layout is <split>/<a>/<b>/<c>/<id>.jpg."
        )


# --------------------------------------------------------------------------------------------------------------
# retrieval ground truth -> labels


def _groups(matches: Sequence[Sequence[int]], num_index: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """``(group of each query [Q], members of each group)``: queries grouped by their set of relevant items."""
    key_to_group: dict[frozenset, int] = {}
    query_group = np.empty(len(matches), dtype=np.int64)
    members: list[np.ndarray] = []
    for q, m in enumerate(matches):
        idx = np.unique(np.asarray(m, dtype=np.int64))
        if idx.size == 0:
            raise ValueError(f"query {q} has no relevant item; leave such queries out before building labels")
        if idx[0] < 0 or idx[-1] >= num_index:
            raise ValueError(f"query {q} lists index position {int(idx[-1])}, outside 0..{num_index - 1}")
        key = frozenset(idx.tolist())
        if key not in key_to_group:
            key_to_group[key] = len(members)
            members.append(idx)
        query_group[q] = key_to_group[key]
    return query_group, members


def _is_partition(members: Sequence[np.ndarray], num_index: int) -> bool:
    counts = np.zeros(num_index, dtype=np.int64)
    for idx in members:
        counts[idx] += 1
    return bool(counts.max(initial=0) <= 1)


def solution_labels(matches: Sequence[Sequence[int]], num_index: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels for queries and index items whose label-based relevance is the given ground truth.

    Args:
        matches: for each query, the positions (in the index, ``0..num_index-1``) of its relevant index items;
            every list non-empty (queries without a match are left out by the caller).
        num_index: the number of index items.

    Returns:
        ``(query_labels, index_labels)``. Let the *groups* be the distinct sets of relevant items. If no index item
        is in two groups: int64 ``[Q]`` and ``[M]``, the group number (``0..G-1``) for queries and their relevant
        items, ``G`` for index items relevant to no query. Otherwise bool ``[Q, G]`` and ``[M, G]``: query q has
        only its group's column, index item j the columns of every group holding it. Either way, for every query
        q and index item j, "same class" (flat) or "at least one shared label" (multi-label) holds exactly when
        ``j in matches[q]``, so binary metrics on these labels are those of the ground truth. (Graded metrics on
        the multi-label form see at most one shared label, i.e. binary relevance too.)

    Cost: the flat form is free; the multi-label one holds ``M x G`` booleans, and the metrics' generic engine turns
    the gallery's matrix into floats for every chunk of queries (about 3 GB for the full index and 1,000 groups).
    """
    query_group, members = _groups(matches, num_index)
    n_groups = len(members)
    if _is_partition(members, num_index):
        index_labels = np.full(num_index, n_groups, dtype=np.int64)
        for g, idx in enumerate(members):
            index_labels[idx] = g
        return query_group, index_labels
    log.info("retrieval ground truth: relevant sets overlap; using a [N, %d] multi-label encoding", n_groups)
    q_lab = np.zeros((len(matches), n_groups), dtype=bool)
    q_lab[np.arange(len(matches)), query_group] = True
    g_lab = np.zeros((num_index, n_groups), dtype=bool)
    for g, idx in enumerate(members):
        g_lab[idx, g] = True
    return q_lab, g_lab


@dataclass(frozen=True)
class HierarchicalSolution:
    """Output of :func:`hierarchical_solution_labels`."""

    query_labels: np.ndarray  # int64 [Q, 1 + k]
    index_labels: np.ndarray  # int64 [M, 1 + k]
    num_groups_without_coarse: int  # groups whose relevant items have no, or several, coarse labels


def hierarchical_solution_labels(
    matches: Sequence[Sequence[int]], index_coarse: Sequence[tuple[str, ...] | None]
) -> HierarchicalSolution:
    """``[N, 1 + k]`` labels: the ground-truth group (:func:`solution_labels`) under the index items' coarse labels.

    Args:
        matches: relevant index positions of each query (non-empty).
        index_coarse: for each index item, its ``k`` coarse labels (super-category, ...) or None when unknown.

    Column 0 is the group for queries and their relevant items. A group's coarse labels are those its relevant items
    agree on; when they disagree or one is unknown, the group gets coarse labels of its own (so its queries find no
    item at the coarse levels; counted in ``num_groups_without_coarse`` and logged). An index item relevant to no
    query is in a fine class per coarse path (so the labels stay a tree) and keeps its coarse labels, or labels of its
    own when they are unknown. Then for a query q and index item j: ``t_qj = 1 + k`` when j is relevant, else the
    number of coarse levels they share (from the coarsest down). Needs disjoint groups (each index item relevant to
    one group at most); raises otherwise.
    """
    num_index = len(index_coarse)
    query_group, members = _groups(matches, num_index)
    if not _is_partition(members, num_index):
        raise ValueError(
            "the relevant sets of different queries overlap, so no label tree reproduces them; evaluate without "
            "a hierarchy (binary relevance from the solution file, multi-label encoding)"
        )
    known = [c for c in index_coarse if c is not None]
    k = len(known[0]) if known else 1
    if any(len(c) != k for c in known):
        raise ValueError("every index item needs the same number of coarse labels")
    n_groups = len(members)
    group_of = np.full(num_index, -1, dtype=np.int64)
    group_coarse: list[tuple[str, ...]] = []
    without = 0
    for g, idx in enumerate(members):
        group_of[idx] = g
        paths = {index_coarse[j] for j in idx.tolist()}
        if len(paths) == 1 and None not in paths:
            group_coarse.append(next(iter(paths)))
        else:
            group_coarse.append(tuple(f"\0group {g}" for _ in range(k)))
            without += 1
    if without:
        log.warning(
            "%d of %d ground-truth groups have relevant images with no, or several, super-categories; their queries "
            "get no coarse-level relevance",
            without,
            n_groups,
        )
    fine_keys: list[str] = []
    coarse_rows: list[tuple[str, ...]] = []
    for j in range(num_index):
        if group_of[j] >= 0:
            fine_keys.append(f"g{group_of[j]:09d}")
            coarse_rows.append(group_coarse[group_of[j]])
        else:
            path = index_coarse[j] if index_coarse[j] is not None else tuple(f"\0index {j}" for _ in range(k))
            fine_keys.append("n" + "\0".join(path))
            coarse_rows.append(path)
    q_fine = [f"g{g:09d}" for g in query_group.tolist()]
    q_coarse = [group_coarse[g] for g in query_group.tolist()]
    keys = np.array([[f, *c] for f, c in zip(q_fine + fine_keys, q_coarse + coarse_rows)], dtype=object).reshape(
        len(q_fine) + num_index, 1 + k
    )
    labels = relabel_columns(keys)
    nq = len(q_fine)
    return HierarchicalSolution(labels[:nq], labels[nq:], without)


# --------------------------------------------------------------------------------------------------------------
# the retrieval split


@dataclass(frozen=True)
class RetrievalSplit:
    """The GLDv2 retrieval split with labels (:func:`load_retrieval_split`)."""

    query_ids: list[str]
    index_ids: list[str]
    query_labels: np.ndarray
    index_labels: np.ndarray
    num_unmatched_queries: int
    num_groups: int
    num_groups_without_coarse: int


def _check_ids(ids: Sequence[str], known: Collection[str], what: str, where: str) -> None:
    unknown = [i for i in ids if i not in known]
    if unknown:
        raise ValueError(
            f"{len(unknown)} {what} id(s) in {where} are not listed, e.g. {unknown[0]!r}; the metadata files must "
            f"come from the same GLDv2 release (v2.1)"
        )


@functools.lru_cache(maxsize=4)
def load_retrieval_split(
    root: str | Path,
    usage: str = "all",
    hierarchy: str | None = None,
    hierarchy_columns: tuple[str, ...] = DEFAULT_HIERARCHY_COLUMNS,
) -> RetrievalSplit:
    """Read the queries (test images with a match), the index and their labels; cached, so the query and index
    datasets of one config parse the files once. See the module docstring and :func:`solution_labels`."""
    root = require_path(root, dataset=DATASET, layout=LAYOUT, make_target=MAKE_TARGET)
    index_ids = read_id_list(_require(root, "index.csv"))
    test_ids = set(read_id_list(_require(root, "test.csv")))
    sol_ids, sol_matches = read_retrieval_solution(_require(root, SOLUTION_FILE), usage)
    _check_ids(sol_ids, test_ids, "test", SOLUTION_FILE)
    position = {iid: j for j, iid in enumerate(index_ids)}
    query_ids, matches = [], []
    for tid, m in zip(sol_ids, sol_matches):
        if m is None:
            continue
        _check_ids(m, position.keys(), "index", f"{SOLUTION_FILE} (row {tid})")
        query_ids.append(tid)
        matches.append([position[i] for i in m])
    num_unmatched = len(sol_ids) - len(query_ids)
    if not query_ids:
        raise ValueError(f"no query of usage={usage!r} in {SOLUTION_FILE} has a relevant index image")
    if hierarchy in (None, "", "none", "None"):
        q_lab, g_lab = solution_labels(matches, len(index_ids))
        without = 0
    else:
        table = read_hierarchy(_require(root, hierarchy), hierarchy_columns)
        lm = read_csv_columns(_require(root, "index_image_to_landmark.csv"), ("id", "landmark_id"))
        landmark_of = dict(
            zip(lm["id"], _int_ids(lm["landmark_id"], root / "index_image_to_landmark.csv", "landmark_id"))
        )
        coarse = [table.get(int(landmark_of[i])) if i in landmark_of else None for i in index_ids]
        sol = hierarchical_solution_labels(matches, coarse)
        q_lab, g_lab, without = sol.query_labels, sol.index_labels, sol.num_groups_without_coarse
    n_groups = len({frozenset(m) for m in matches})
    log.info(
        "GLDv2 retrieval (%s): %d queries with a match (%d without, left out), %d index images, %d ground-truth sets",
        usage,
        len(query_ids),
        num_unmatched,
        len(index_ids),
        n_groups,
    )
    return RetrievalSplit(query_ids, index_ids, q_lab, g_lab, num_unmatched, n_groups, without)


class GLDv2Retrieval(ImageListDataset):
    """One side of the GLDv2 retrieval benchmark: ``split="query"`` (test images with a match) or ``"index"``.

    Use the two in a query/gallery datamodule; their labels are built together (:func:`load_retrieval_split`), so
    label-based metrics reproduce ``retrieval_solution_v2.1.csv``.

    Args:
        root: the GLDv2 folder.
        split: ``"query"`` or ``"index"``.
        usage: ``"all"`` (default), ``"public"`` or ``"private"`` queries.
        hierarchy: an index-side hierarchy CSV (relative to ``root`` or absolute), e.g.
            ``index_label_to_hierarchical.csv`` or ``hgldv2/index_hierarchy.csv``; None for binary relevance.
        hierarchy_columns: its coarse columns, finest first.
        transform, on_error, check_files: as :class:`GLDv2Train`.

    Attributes:
        labels: int64 ``[N]`` (binary), ``[N, 1 + k]`` (hierarchy) or bool ``[N, G]`` (overlapping ground truth).
        image_ids, num_unmatched_queries, num_groups, num_groups_without_coarse.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "query",
        usage: str = "all",
        hierarchy: str | Path | None = None,
        hierarchy_columns: Sequence[str] = DEFAULT_HIERARCHY_COLUMNS,
        transform: Callable | None = None,
        on_error: str = "raise",
        check_files: bool = False,
    ) -> None:
        if split not in ("query", "index"):
            raise ValueError(f"split must be 'query' or 'index', got {split!r}")
        hier = None if hierarchy in (None, "", "none", "None") else str(hierarchy)
        sol = load_retrieval_split(str(Path(root).expanduser()), usage, hier, tuple(hierarchy_columns))
        root = Path(root).expanduser()
        ids, labels, folder = (
            (sol.query_ids, sol.query_labels, "test")
            if split == "query"
            else (sol.index_ids, sol.index_labels, "index")
        )
        paths = [image_path(root / folder, i) for i in ids]
        if check_files:
            _check_files(paths)
        super().__init__(
            paths, labels.copy(), transform=transform, on_error=on_error, multilabel=bool(labels.dtype == np.bool_)
        )
        self.root, self.split, self.usage, self.image_ids = root, split, usage, list(ids)
        self.num_unmatched_queries = sol.num_unmatched_queries
        self.num_groups, self.num_groups_without_coarse = sol.num_groups, sol.num_groups_without_coarse
