"""How every datamodule names its test loaders: one :class:`EvalSplit` per loader, in loader order.

A datamodule exposes ``test_splits: list[EvalSplit]``; ``test_splits[i]`` describes ``test_dataloader()[i]`` (and the
validation loader of the same position, where a datamodule validates on the same sets). ``kind`` says what the set is
to the model:

- ``"id"``: in-distribution data in the training label space (a retrieval test set, query or gallery; the ID test set
  of an OOD benchmark);
- ``"ood"``: an out-of-distribution set, scored against the ID set (its labels are ignored);
- ``"domain"``: a domain-shifted set labelled in the training label space (domain generalisation), scored on its own.

Today: ``RetrievalDataModule`` gives ``[test]`` or ``[query, gallery]`` (all ``id``), ``gallop.fewshot``'s
datamodule ``[test, ood..., domain...]``, ``heat.datamodule.FeatureDataModule`` ``[test, ood...]``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

EvalKind = Literal["id", "ood", "domain"]
EVAL_KINDS: tuple[str, ...] = ("id", "ood", "domain")


@dataclass(frozen=True)
class EvalSplit:
    """One evaluation loader: ``name`` (the dataset's name, used in metric keys) and ``kind`` (see the module doc)."""

    name: str
    kind: EvalKind = "id"

    def __post_init__(self) -> None:
        if self.kind not in EVAL_KINDS:
            raise ValueError(f"EvalSplit {self.name!r}: kind must be one of {EVAL_KINDS}, got {self.kind!r}")
        if not self.name:
            raise ValueError("EvalSplit needs a non-empty name")


def splits_of_kind(splits: list[EvalSplit], kind: EvalKind) -> list[tuple[int, EvalSplit]]:
    """``(loader index, split)`` of every split of ``kind``, in loader order."""
    return [(i, s) for i, s in enumerate(splits) if s.kind == kind]
