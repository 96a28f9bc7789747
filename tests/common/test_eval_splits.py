"""EvalSplit: the one way datamodules name their evaluation loaders."""

from __future__ import annotations

import pytest

from common.data.datamodule import RetrievalDataModule
from common.data.datasets.synthetic import SyntheticImages
from common.data.splits import EvalSplit, splits_of_kind


def test_kind_is_checked_and_splits_are_found_by_kind():
    with pytest.raises(ValueError, match="kind must be one of"):
        EvalSplit("x", "near")
    with pytest.raises(ValueError, match="non-empty name"):
        EvalSplit("", "id")
    splits = [EvalSplit("test"), EvalSplit("svhn", "ood"), EvalSplit("sketch", "domain"), EvalSplit("lsun", "ood")]
    assert splits_of_kind(splits, "ood") == [(1, EvalSplit("svhn", "ood")), (3, EvalSplit("lsun", "ood"))]
    assert len({EvalSplit("a", "ood"), EvalSplit("a", "ood")}) == 1  # hashable: a store key


def test_retrieval_datamodule_names_one_split_per_test_loader():
    train, test = SyntheticImages(per_class=2), SyntheticImages(per_class=1, seed=1)
    single = RetrievalDataModule(train, test_dataset=test, batch_size=4)
    qg = RetrievalDataModule(train, query_dataset=test, gallery_dataset=train, batch_size=4)
    for dm in (single, qg):
        loaders = dm.test_dataloader()
        assert len(loaders if isinstance(loaders, list) else [loaders]) == len(dm.test_splits)
        assert all(s.kind == "id" for s in dm.test_splits)
    assert [s.name for s in qg.test_splits] == ["query", "gallery"]
