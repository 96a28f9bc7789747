"""What the launcher checks before a run starts (types, typos, ``ckpt_path=last``, shell completion) and how it ends a
run whose test metric is undefined."""

from __future__ import annotations

import json

import pytest
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from common.launch import UndefinedMetricError, cli, precheck, run
from common.utils.config_check import ConfigError, check_overrides, check_types, multirun_overrides
from common.utils.runs import read_status
from tests.common.test_runs import _fake_run
from tests.conftest import compose_train


def _cli(monkeypatch, argv: list[str]) -> None:
    GlobalHydra.instance().clear()
    monkeypatch.setattr("sys.argv", ["common/launch.py", *argv])
    cli(argv)


# ------------------------------------------------------------------------------------------------ types
def test_wrong_types_stop_before_anything_with_one_line_each(tmp_path, monkeypatch, capsys):
    logs = tmp_path / "logs"
    with pytest.raises(SystemExit) as e:
        _cli(monkeypatch, ["trainer.max_epochs=abc", "model.optimizer.lr=fast", f"paths.log_dir={logs}"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "config error: model.optimizer.lr='fast': expected float or Tensor (argument of torch.optim.adamw.AdamW)",
        "config error: trainer.max_epochs='abc': expected int or null (argument of "
        "lightning.pytorch.trainer.trainer.Trainer)",
    ]
    assert not logs.exists()  # no run folder left behind


def test_type_check_inside_run_before_any_folder(tmp_path):
    """The same check guards ``run`` (multiruns skip the command-line pre-check)."""
    cfg = compose_train(["trainer.max_epochs=abc", "seed=x", "test_ckpt=first"], tmp_path / "run")
    with pytest.raises(ConfigError) as e:
        run(cfg)
    msg = str(e.value)
    assert "seed='x': expected int or null" in msg and "test_ckpt='first': expected one of 'best', 'last'" in msg
    assert not (tmp_path / "run").exists()


def test_unknown_argument_of_a_target_is_named(tmp_path):
    cfg = compose_train(["+model.optimizer.betas2=0.9"], tmp_path)
    with pytest.raises(ConfigError, match=r"model.optimizer.betas2: torch.optim.adamw.AdamW has no argument 'betas2'"):
        check_types(cfg)


def test_demo_and_method_configs_pass_the_type_check(tmp_path):
    for experiment in (
        "demo/fmnist_contrastive",
        "roadmap/sop_resnet50",
        "happier/sop_happier",
        "heat/cifar10_el",
        "gallop/imagenet_16shot",
    ):
        check_types(compose_train([f"experiment={experiment}"], tmp_path))


# ------------------------------------------------------------------------------------------------ typos
def test_typo_lists_only_the_group_concerned():
    with pytest.raises(ConfigError) as e:
        check_overrides(["trainer.max_epoch=3"])
    msg = str(e.value)
    assert "Did you mean 'max_epochs'" in msg and "trainer: cpu, ddp, ddp_sim, default, gpu" in msg
    assert "data:" not in msg and "experiment" not in msg and len(msg) < 800
    with pytest.raises(ConfigError) as e:
        check_overrides(["experiment=roadmap/sop_resnet5"])
    msg = str(e.value)
    assert "Did you mean 'roadmap/sop_resnet50'" in msg and "Options of experiment/roadmap:" in msg
    assert "gallop" not in msg and "trainer:" not in msg
    with pytest.raises(ConfigError) as e:
        check_overrides(["loger=csv"])
    assert "Did you mean 'logger'?" in str(e.value) and "logger: csv, many, wandb" in str(e.value)


# ------------------------------------------------------------------------------------------------ ckpt_path=last
# ------------------------------------------------------------------------------------------------ multiruns
HEAT_ROWS = "experiment=heat/cifar10_el,heat/cifar10_gmm"


def test_multirun_keys_that_only_the_experiments_have_are_forced_and_the_rest_left_alone():
    given = [HEAT_ROWS, "model.sgld_steps=10,20", "extract.backbone.name=resnet18", "seed=1", "trainer=cpu"]
    given += ["data.batch_size=32", "hydra.sweep.dir=x", "++data.num_workers=0", "~tags"]
    out = multirun_overrides(given)
    # model.sgld_steps and extract.* exist in both HEAT rows but not in the root config (Fashion-MNIST, no experiment)
    assert out == [given[0], "++model.sgld_steps=10,20", "++extract.backbone.name=resnet18", *given[3:]]
    assert multirun_overrides(["experiment=heat/cifar10_el", "model.sgld_steps=3"]) == [
        "experiment=heat/cifar10_el",
        "model.sgld_steps=3",
    ]  # no sweep over experiments: Hydra applies the override after the experiment


def test_multirun_key_missing_from_some_experiments_is_named_with_a_close_match():
    with pytest.raises(ConfigError, match=r"no key 'extract.batch_size' .* experiment\(s\) roadmap/sop_resnet50 "):
        multirun_overrides(["experiment=heat/cifar10_el,roadmap/sop_resnet50", "extract.batch_size=64"])
    with pytest.raises(ConfigError, match="Did you mean 'sgld_steps'") as e:
        multirun_overrides([HEAT_ROWS, "model.sgld_step=64"])
    assert "Keys of model there:" in str(e.value)


def test_multirun_typo_stops_the_launcher_with_exit_2(monkeypatch, capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        _cli(monkeypatch, ["-m", HEAT_ROWS, "model.sgld_step=64", f"hydra.sweep.dir={tmp_path / 'sweep'}"])
    assert e.value.code == 2 and "Did you mean 'sgld_steps'" in capsys.readouterr().err
    assert not (tmp_path / "sweep").exists()


def test_ckpt_path_last_without_runs_is_rejected_before_a_folder_exists(tmp_path):
    with pytest.raises(ConfigError, match="ckpt_path=last: no run of experiment 'demo/fmnist_contrastive'"):
        precheck(["experiment=demo/fmnist_contrastive", "ckpt_path=last", f"paths.log_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="no such file"):
        precheck(["ckpt_path=/no/such.ckpt"])


def test_ckpt_path_last_continues_the_newest_run_in_its_folder(tmp_path):
    runs = tmp_path / "demo" / "runs"
    _fake_run(runs / "a", "completed", "demo/fmnist_contrastive", "2025-01-01T00:00:01+00:00", ckpt=True)
    newest = _fake_run(runs / "b", "interrupted", "demo/fmnist_contrastive", "2025-01-01T00:00:02+00:00", ckpt=True)
    _fake_run(runs / "c", "interrupted", "demo/other", "2025-01-01T00:00:03+00:00", ckpt=True)  # another experiment
    out = precheck(["experiment=demo/fmnist_contrastive", "ckpt_path=last", f"paths.log_dir={tmp_path}"])
    assert out[-3:] == [
        f"ckpt_path={(newest / 'checkpoints' / 'last.ckpt').resolve()}",
        f"hydra.run.dir={newest.resolve()}",
        "hydra.output_subdir=.hydra/resume_1",
    ]
    # evaluating (train=false) the same checkpoint does not write into the run it comes from
    out = precheck(["experiment=demo/fmnist_contrastive", "ckpt_path=last", "train=false", f"paths.log_dir={tmp_path}"])
    assert not any(o.startswith("hydra.run.dir=") for o in out)


# ------------------------------------------------------------------------------------------------ shell completion
@pytest.mark.parametrize("flag", ["-sc", "--shell-completion"])
def test_shell_completion_as_hydra_prints_it(flag, monkeypatch, capsys):
    _cli(monkeypatch, [flag, "install=bash"])
    out = capsys.readouterr().out
    assert "hydra_bash_completion" in out and "complete -o nospace" in out


# ------------------------------------------------------------------------------------------------ undefined metrics
def _one_per_class(tmp_path, extra=()):
    """The test set has one image per class: no query has a relevant item, every retrieval metric is undefined."""
    cfg = compose_train(["data=synthetic", "logger=csv", "trainer.max_epochs=1", *extra], tmp_path)
    with open_dict(cfg):
        cfg.model.net.backbone.in_chans = 3
        cfg.model.net.embed_dim = 16
        cfg.data.test_dataset.per_class = 1
        cfg.trainer.limit_train_batches = 1
        del cfg.callbacks.rich_progress_bar
    return cfg


def test_undefined_test_metric_fails_the_run_and_metrics_json_stays_strict(tmp_path, caplog):
    with pytest.raises(UndefinedMetricError, match=r"test/map@r is undefined.*allow_undefined_metrics=true"):
        run(_one_per_class(tmp_path))
    assert "no relevant item in the gallery" in caplog.text and "8 of 8 queries" in caplog.text
    text = (tmp_path / "metrics.json").read_text()
    assert "NaN" not in text and json.loads(text)["test/map@r"] is None
    status = read_status(tmp_path)
    assert status["status"] == "failed" and "UndefinedMetricError" in status["error"]
    assert "test/map@r" in status["undefined_metrics"] and len(status["undefined_metrics"]) >= 4


def test_undefined_test_metric_accepted_when_asked(tmp_path):
    metrics, _ = run(_one_per_class(tmp_path, ["allow_undefined_metrics=true"]))
    status = read_status(tmp_path)
    assert status["status"] == "completed" and "test/map@r" in status["undefined_metrics"]
    assert json.loads((tmp_path / "metrics.json").read_text())["test/map@r"] is None
