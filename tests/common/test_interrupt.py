"""SIGTERM and SIGINT in the middle of an epoch: a checkpoint with the exact-resume state, a non-zero exit, the resume
command, and a resumed run that ends exactly where an uninterrupted one ends, in the same run folder."""

from __future__ import annotations

import json
import signal

import pytest
import torch
from omegaconf import open_dict

from common.callbacks.interrupt import RunInterrupted
from common.launch import run
from common.utils.runs import read_run, read_status
from tests.common.test_resume import _cfg, _params


def _with_signal(cfg, step: int, signum: int, times: int = 1, stage: str = "train", rank: int | None = None):
    with open_dict(cfg):
        cfg.callbacks.signal = {
            "_target_": "tests.common.signals.SignalAt",
            "step": step,
            "signum": int(signum),
            "times": times,
            "stage": stage,
            "rank": rank,
        }
    return cfg


@pytest.mark.parametrize(
    "signum,step,size",
    [
        (signal.SIGTERM, 5, 16),  # fast variant: 16x16 images
        pytest.param(signal.SIGTERM, 5, 32, marks=pytest.mark.slow),
        pytest.param(signal.SIGINT, 2, 32, marks=pytest.mark.slow),
    ],
)
def test_signal_mid_epoch_resumes_to_the_same_metrics(tmp_path, signum, step, size):
    full_metrics, full = run(_cfg(tmp_path / "full", image_size=size))
    cut = tmp_path / "cut"
    # the signal arrives while a batch trains (4 batches per epoch: step 2 is in epoch 0, step 5 in epoch 1)
    with pytest.raises(RunInterrupted) as e:
        run(_with_signal(_cfg(cut, image_size=size), step=step, signum=signum))
    assert e.value.code == 128 + signum and e.value.signum == signum
    last = cut / "checkpoints" / "last.ckpt"
    assert e.value.checkpoint == last and last.exists()
    saved = torch.load(last, weights_only=True)
    assert saved["global_step"] == step + 1  # the batch in flight finished, nothing after it ran
    status = read_status(cut)
    assert status["status"] == "interrupted" and status["signal"] == signal.Signals(signum).name
    assert f"ckpt_path={last.resolve()}" in status["resume_command"]
    assert not (cut / "metrics.json").exists()

    resumed_metrics, resumed = run(_cfg(cut, [f"ckpt_path={last}"], image_size=size))
    assert resumed["trainer"].global_step == full["trainer"].global_step == 8
    torch.testing.assert_close(_params(resumed), _params(full), rtol=0, atol=1e-6)
    for key in ("test/map@r", "test/recall@1"):
        assert resumed_metrics[key] == full_metrics[key]
    status = read_status(cut)
    assert status["status"] == "completed" and [a["status"] for a in status["attempts"]] == ["interrupted", "completed"]
    assert json.loads((cut / "metrics.json").read_text())["test/map@r"] == full_metrics["test/map@r"]


def test_second_ctrl_c_stops_at_once_without_checkpoint(tmp_path):
    cfg = _with_signal(_cfg(tmp_path, ["trainer.max_epochs=1"], image_size=16), step=1, signum=signal.SIGINT, times=2)
    with pytest.raises(RunInterrupted) as e:
        run(cfg)
    assert e.value.code == 130 and e.value.checkpoint is None
    # only ModelCheckpoint's save after step 1 (every_n_train_steps=1): the batch in flight was not saved
    assert torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 1
    assert read_run(tmp_path).status == "interrupted"


def test_signal_outside_training_interrupts_at_once(tmp_path):
    """During test (no training state to save) the run stops at once, marked interrupted, exit code 143; the
    signal handlers are restored afterwards."""
    before = signal.getsignal(signal.SIGTERM)
    cfg = _with_signal(
        _cfg(tmp_path, ["trainer.max_epochs=1", "+trainer.limit_train_batches=1"], image_size=16),
        0,
        signal.SIGTERM,
        1,
        "test",
    )
    with pytest.raises(RunInterrupted) as e:
        run(cfg)
    assert e.value.code == 143
    status = read_status(tmp_path)
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM"
    # the checkpoint of the finished epoch is what a resume starts from
    assert "checkpoints/last.ckpt" in status["resume_command"]
    assert signal.getsignal(signal.SIGTERM) == before


@pytest.mark.slow
def test_sigterm_on_one_ddp_rank_stops_every_rank_with_one_checkpoint_and_resumes_exactly(tmp_path):
    """Two gloo ranks (trainer=ddp_sim); SIGTERM reaches rank 1 only, in the middle of epoch 0. Every rank stops after
    the batch in flight with one checkpoint (Lightning's own SIGTERM notifier, which broadcasts from inside the signal
    handler and used to kill the process group, is kept out), the run is marked interrupted, and the resumed run ends
    with the weights and metrics of an uninterrupted one."""
    ddp = ["trainer=ddp_sim"]
    full_metrics, full = run(_cfg(tmp_path / "full", ddp, image_size=16))
    cut = tmp_path / "cut"
    with pytest.raises(RunInterrupted) as e:
        run(_with_signal(_cfg(cut, ddp, image_size=16), step=2, signum=signal.SIGTERM, rank=1))
    assert e.value.code == 143
    last = cut / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == 3  # the batch in flight finished on both ranks
    status = read_status(cut)
    assert status["status"] == "interrupted" and status["signal"] == "SIGTERM"
    assert f"ckpt_path={last.resolve()}" in status["resume_command"]

    resumed_metrics, resumed = run(_cfg(cut, [*ddp, f"ckpt_path={last}"], image_size=16))
    assert resumed["trainer"].global_step == full["trainer"].global_step
    torch.testing.assert_close(_params(resumed), _params(full), rtol=0, atol=1e-6)
    for key in ("test/map@r", "test/recall@1"):
        assert resumed_metrics[key] == full_metrics[key]
    assert read_status(cut)["status"] == "completed"
