"""Errors raised by the data layer, each naming the problem and its fix."""

from __future__ import annotations

from pathlib import Path


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
