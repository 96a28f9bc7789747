"""Errors raised by the data layer, each naming the problem and its fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


class DatasetNotFoundError(FileNotFoundError):
    """A dataset folder or file is missing. The message names the layout and the ``make data-*`` target."""


def require_path(path: str | Path, *, dataset: str, layout: str, make_target: str) -> Path:
    """Return ``Path(path)`` if it exists, else raise :class:`DatasetNotFoundError`.

    Args:
        path: the file or folder that must exist.
        dataset: a human name ("Stanford Online Products").
        layout: the expected layout, as an indented tree or a one-line description.
        make_target: the target that fetches or prepares the data (``data-sop``).
    """
    p = Path(path).expanduser()
    if not p.exists():
        raise DatasetNotFoundError(
            f"{dataset} not found: '{p}' does not exist.\n"
            f"Expected layout:\n{layout}\n"
            f"Fetch or prepare it with `make {make_target}`, or point `paths.data_dir` (env DATA_DIR, or "
            f"configs/local/default.yaml) at the folder that holds it."
        )
    return p


class DataFileError(ValueError):
    """A data file does not hold what its official format says. The message names the file, the place in it (line,
    field or item) and the fix."""


def data_file_error(path: str | Path, where: str, problem: str, make_target: str | None = None) -> DataFileError:
    """A :class:`DataFileError` for ``problem`` found at ``where`` ("line 12", "field 'y'", "header") of ``path``."""
    fix = f"fetch it again with `make {make_target}`" if make_target else "fetch it again from the official source"
    return DataFileError(f"'{path}', {where}: {problem}. The file is corrupt or not in the official format; {fix}.")


def int_field(text: str, *, path: str | Path, where: str, make_target: str | None = None) -> int:
    """``int(text)``, or a :class:`DataFileError` naming ``path`` and ``where`` ("line 7, column 'class_id'")."""
    try:
        return int(text)
    except (TypeError, ValueError):
        raise data_file_error(path, where, f"{text!r} is not an integer", make_target) from None


def check_label_range(
    labels: np.ndarray | Sequence[int],
    low: int,
    high: int,
    *,
    path: str | Path,
    field: str,
    lines: Sequence[int] | None = None,
    make_target: str | None = None,
) -> np.ndarray:
    """1-D ``labels`` as an array if every value lies in ``low..high`` (inclusive), else a :class:`DataFileError`.

    The error names ``path``, the ``field`` that holds the labels, the first offending item (its line number when
    ``lines`` maps items to lines) and value, and how many values are out of range.
    """
    arr = np.asarray(labels)
    bad = np.flatnonzero((arr < low) | (arr > high)) if arr.size else np.zeros(0, dtype=np.int64)
    if bad.size:
        i = int(bad[0])
        where = f"line {lines[i]}" if lines is not None else f"item {i}"
        raise data_file_error(
            path,
            f"{field}, {where}",
            f"label {arr.reshape(-1)[i]} is outside {low}..{high} ({bad.size} of {arr.size} labels are)",
            make_target,
        )
    return arr


def check_labels(labels, *, name: str = "labels", allow_hierarchical: bool = True, allow_multilabel: bool = False):
    """Validate a label tensor against the house label conventions.

    Flat labels are int64 ``[N]``; hierarchical labels are int64 ``[N, L]`` with column 0 the finest level;
    multi-label relevance uses a boolean ``[N, C]`` matrix, accepted only with ``allow_multilabel`` (then it is
    returned as bool). Returns the labels as a tensor; raises ``ValueError`` naming the shape and the fix otherwise.
    """
    import torch

    t = torch.as_tensor(labels)
    if allow_multilabel and t.dtype == torch.bool:
        if t.ndim != 2:
            raise ValueError(f"{name}: multi-label labels must be a boolean [N, C] matrix, got shape {tuple(t.shape)}")
        return t
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        multi = " (or a boolean [N, C] multi-label matrix)" if allow_multilabel else ""
        raise ValueError(
            f"{name} must be an integer tensor (int64 [N] or [N, L]){multi}; got dtype {t.dtype}. "
            f"Cast class ids with `.long()`."
        )
    if t.ndim == 1 or (t.ndim == 2 and allow_hierarchical):
        return t.long()
    expected = "[N] or [N, L] (column 0 = finest level)" if allow_hierarchical else "[N]"
    raise ValueError(f"{name} has shape {tuple(t.shape)}; expected {expected}.")
