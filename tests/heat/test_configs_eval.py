import hydra
import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

import common.config.resolvers  # noqa: F401
from common.metrics.ood import ood_metrics
from heat.evaluate import evaluate_scorers
from heat.mlp import num_parameters
from heat.scorers.logits import MSP, Energy
from tests.heat.helpers import make_features

CONFIG_DIR = str((__import__("pathlib").Path(__file__).parents[2] / "configs").resolve())

ROWS = {
    "cifar10_gmm": ("GMM", 1_575_937, 40, 1e3),
    "cifar10_gmm_std": ("GMMStd", 1_575_937, 1, 1e3),
    "cifar10_el": ("EnergyLogits", 1_575_937, 50, 1.0),
    "cifar100_gmm": ("GMM", 1_575_937, 20, 1e3),
    "cifar100_gmm_std": ("GMMStd", 1_575_937, 20, 1e3),
    "cifar100_el": ("EnergyLogits", 1_575_937, 200, 1.0),
    "imagenet_gmm": ("GMM", 5_597_633, 10, 5e3),
    "imagenet_gmm_std": ("GMMStd", 5_597_633, 0, 5e3),
    "imagenet_el": ("EnergyLogits", 5_584_641, 40, 5e2),
}


def _compose(name):
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("train.yaml", overrides=[f"experiment=heat/{name}"])


@pytest.mark.parametrize("row", sorted(ROWS))
def test_experiment_rows_instantiate_with_spec_values(row, tmp_path):
    prior, params, k, t_prior = ROWS[row]
    cfg = _compose(row)
    model = hydra.utils.instantiate(cfg.model)
    assert type(model.prior).__name__ == prior
    assert num_parameters(model.mlp) == params
    assert model.hparams.sgld_steps == k and model.hparams.temperature_prior == t_prior
    assert tuple(model.hparams.betas) == (0.0, 0.999)
    if row.startswith("imagenet") and prior != "EnergyLogits":
        assert model.prior.max_fit_samples == 256_000 and model.hparams.simplified_mahalanobis
        assert model.proposal.kind == "base_dist_temp" and model.proposal.from_batch_labels
    assert cfg.data.pooling == ("std" if prior == "GMMStd" else "avg")
    # the cache key hashes the weights file: without it the datamodule names the weights step; with it but without
    # cached features, the extraction step (hydra wraps both errors)
    cfg.data.cache_dir = str(tmp_path)
    with pytest.raises(Exception, match="make weights-heat"):
        hydra.utils.instantiate(cfg.data)
    (tmp_path / "w.ckpt").write_bytes(b"weights")
    cfg.extract.backbone.checkpoint = str(tmp_path / "w.ckpt")
    with pytest.raises(Exception, match="make features-heat-"):
        hydra.utils.instantiate(cfg.data)


@pytest.mark.parametrize("ds", ["cifar10", "cifar100", "imagenet"])
def test_eval_configs_build_every_baseline(ds):
    cfg = _compose(f"{ds}_eval")
    train = make_features(n=150, d=80, c=3)
    for name, c in cfg.heat_eval.baselines.items():
        c = OmegaConf.to_container(c)
        if name == "knn":
            c["k"] = 5
        if name == "vim":
            c["dim"] = 20
        s = hydra.utils.instantiate(c)
        if name in ("mahalanobis", "ssd_plus", "ssd_std"):
            s.reg = 1e-3
        assert s.fit(train).score(train.subset(slice(0, 5))).shape == (5,)
    assert set(cfg.heat_eval.heat_rows) == {"HEAT-EL", "HEAT-GMM", "HEAT-GMM-std"}


def test_evaluate_scorers_groups():
    train, test = make_features(n=100, seed=1), make_features(n=50, seed=2)
    ood = {"a": make_features(n=40, seed=3, shift=2.0), "b": make_features(n=30, seed=4, shift=-1.0)}
    res = evaluate_scorers({"MSP": MSP(), "Energy": Energy()}, test, ood, {"near": ["a"], "far": ["a", "b"]})
    direct = ood_metrics(Energy().score(test).double(), Energy().score(ood["b"]).double())
    assert res["Energy"]["b"]["fpr95_ood_positive"] == pytest.approx(direct["fpr95_ood_positive"])
    assert res["MSP"]["far"]["auroc"] == pytest.approx((res["MSP"]["a"]["auroc"] + res["MSP"]["b"]["auroc"]) / 2)
    assert torch.isfinite(MSP().score(train)).all()


@pytest.mark.parametrize("row", sorted(ROWS))
def test_extraction_covers_every_cached_set_the_datamodule_reads(row):
    """Each feature set the datamodule reads (train, ID test, every OOD set) is one that the row's extraction
    config writes, under the same dataset name and with a reader for that dataset (a typo such as `cifar1000` in
    the CIFAR-100 rows used to leave the CIFAR-10 OOD set unextractable)."""
    cfg = _compose(row)
    data = OmegaConf.to_container(cfg.data, resolve=False)
    wanted = {(s["dataset"], s["split"]) for s in [data["train"], data["val_id"], *data["val_ood"]]}
    extracted = {(name, split) for name, splits in cfg.extract.datasets.items() for split in splits}
    assert wanted <= extracted, f"not extracted: {sorted(wanted - extracted)}"
    for name, splits in cfg.extract.datasets.items():
        for spec in splits.values():
            if spec._target_.endswith("cifar.CIFAR"):
                assert spec.name == name
