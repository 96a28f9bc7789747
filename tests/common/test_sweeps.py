"""Optuna searches (configs/hparams_search/*_optuna.yaml): each composes with the Optuna sweeper, its search space
parses into Optuna distributions, the searched keys exist in the experiment, and a real two-trial search runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from tests.conftest import CONFIG_DIR, ROOT

SEARCHES = sorted(p.stem for p in (CONFIG_DIR / "hparams_search").glob("*_optuna.yaml"))


def _compose(name: str, overrides: list[str] = ()):
    import common  # noqa: F401  (resolvers)

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=[f"hparams_search={name}", *overrides], return_hydra_config=True)


def test_one_search_per_method():
    assert {s.split("_")[0] for s in SEARCHES} == {"roadmap", "happier", "heat", "gallop"}


@pytest.mark.parametrize("name", SEARCHES)
def test_search_composes_and_parses(name):
    from hydra_plugins.hydra_optuna_sweeper._impl import create_params_from_overrides
    from optuna.distributions import BaseDistribution

    cfg = _compose(name)
    sweeper = cfg.hydra.sweeper
    assert "optuna" in sweeper._target_.lower() and sweeper.direction == "maximize"
    assert sweeper.sampler.seed is not None  # a search is repeatable
    params = [f"{k}={v}" for k, v in sweeper.params.items()]
    dists, fixed = create_params_from_overrides(params)
    assert dists and not fixed and all(isinstance(d, BaseDistribution) for d in dists.values())
    for key in sweeper.params:  # every searched key exists in the composed config
        assert OmegaConf.select(cfg, key, throw_on_missing=False) is not None, key
    assert cfg.optimized_metric.startswith("test/")


@pytest.mark.parametrize(
    ("name", "terms"), [("roadmap_optuna", ("supap", "calibration")), ("happier_optuna", ("sup_hap", "cluster"))]
)
def test_lambda_sets_both_loss_weights(name, terms):
    cfg = _compose(name, ["lam=0.3"])
    weights = OmegaConf.to_container(cfg.model.loss_weights, resolve=True)
    assert weights[terms[0]] == pytest.approx(0.7) and weights[terms[1]] == pytest.approx(0.3)


@pytest.mark.slow
def test_two_trial_roadmap_search_runs(tmp_path: Path, tiny_fmnist: Path):
    """A real Optuna multirun through the launcher: two trials on tiny Fashion-MNIST files, each a finished run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": "1"}
    cmd = [
        sys.executable, "-m", "common.launch", "-m", "hparams_search=roadmap_optuna",
        "hydra.sweeper.n_trials=2", f"paths.data_dir={tiny_fmnist}", f"paths.log_dir={tmp_path}/logs",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=1", "data.train_dataset.subset=null",
        "data.test_dataset.subset=null", "data.batch_size=20", "data.sampler.m=2", "extras.print_config=false",
    ]  # fmt: skip
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    best = list((tmp_path / "logs").rglob("optimization_results.yaml"))
    assert best, "the Optuna sweeper wrote no optimization_results.yaml"
    result = OmegaConf.load(best[0])
    assert "lam" in result.best_params and 0.0 <= result.best_params.lam <= 1.0
    assert 0.0 <= result.best_value <= 1.0


def _job(root: Path, num: int, overrides: list[str], metrics: dict | None) -> None:
    job = root / str(num)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
    if metrics is not None:
        (job / "metrics.json").write_text(__import__("json").dumps(metrics))


def test_sweep_summary_aggregates_seeds_per_configuration(tmp_path: Path, capsys):
    from common.results.sweep_summary import main, summarise

    mr = tmp_path / "multiruns" / "2026-12-01_00-00-00"
    _job(mr, 0, ["lam=0.1", "seed=1"], {"test/map@r": 0.30, "train/loss": 1.0})
    _job(mr, 1, ["lam=0.1", "seed=2"], {"test/map@r": 0.40})
    _job(mr, 2, ["seed=3", "lam=0.1"], {"test/map@r": 0.35})
    _job(mr, 3, ["lam=0.5", "seed=1"], {"test/map@r": 0.50})
    _job(mr, 4, ["lam=0.5", "seed=2"], None)  # crashed: listed, not averaged
    s = summarise(mr)
    by = {tuple(c["overrides"]): c for c in s["configurations"]}
    low = by[("lam=0.1",)]["metrics"]["test/map@r"]
    # by hand: mean 0.35, population std sqrt(((-.05)^2 + .05^2 + 0) / 3) = 0.040825
    assert low["n"] == 3 and low["mean"] == pytest.approx(0.35) and low["std"] == pytest.approx(0.0408248, abs=1e-6)
    assert "train/loss" not in by[("lam=0.1",)]["metrics"]
    assert by[("lam=0.5",)]["metrics"]["test/map@r"] == {"mean": 0.5, "std": 0.0, "n": 1}
    assert s["unfinished"] == [str(mr / "4")]
    assert main([str(mr)]) == 0 and (mr / "sweep_summary.json").is_file()
    assert "0.3500 ± 0.0408  (n=3)" in capsys.readouterr().out
    assert main([str(tmp_path / "empty")]) == 2
