"""DDP correctness on CPU (gloo): the gathered loss and its gradients equal one process on the global batch, and
distributed evaluation equals single-process evaluation."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _make_problem():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(16, 6, generator=g, dtype=torch.float64)
    y = torch.arange(4).repeat_interleave(4)
    w = torch.randn(6, 5, generator=g, dtype=torch.float64)
    return x, y, w


def _loss_fn(name: str = "multi_similarity"):
    """A pair loss (through the PML adapter) and the rank losses whose batch-level coupling DDP must not break."""
    if name == "multi_similarity":
        from pytorch_metric_learning.distances import CosineSimilarity
        from pytorch_metric_learning.losses import MultiSimilarityLoss

        from common.losses.pml_adapter import PMLLoss

        return PMLLoss(MultiSimilarityLoss(distance=CosineSimilarity()))
    from roadmap import losses

    return {"supap": losses.SupAP, "roadmap": losses.ROADMAPLoss, "smoothap": losses.SmoothAP}[name]()


LOSSES = ["multi_similarity", "supap", "roadmap", "smoothap"]


def _worker(rank: int, world: int, port: int, out: dict, names: list[str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    from common.models.distributed import all_gather_no_grad, all_gather_with_grad

    for name in names:
        x, y, w = _make_problem()
        w = w.clone().requires_grad_(True)
        b = len(x) // world
        z_local = torch.nn.functional.normalize(x[rank * b : (rank + 1) * b] @ w, dim=1)
        z = all_gather_with_grad(z_local)
        labels = all_gather_no_grad(y[rank * b : (rank + 1) * b])
        loss = _loss_fn(name)(z, labels)
        loss.backward()
        grad = w.grad.clone()
        dist.all_reduce(grad)  # what DDP does ...
        grad /= world  # ... an average over ranks
        out[(rank, name)] = (loss.item(), grad)
    dist.destroy_process_group()


@pytest.mark.slow
def test_gathered_loss_and_gradients_match_single_process():
    manager = mp.Manager()
    out = manager.dict()
    mp.spawn(_worker, args=(2, _free_port(), out, LOSSES), nprocs=2, join=True)
    for name in LOSSES:
        x, y, w = _make_problem()
        w1 = w.clone().requires_grad_(True)
        loss = _loss_fn(name)(torch.nn.functional.normalize(x @ w1, dim=1), y)
        loss.backward()
        assert loss.item() > 0 and w1.grad.abs().sum() > 0
        for rank in (0, 1):
            l_r, g_r = out[(rank, name)]
            assert l_r == pytest.approx(loss.item(), abs=1e-10), name
            torch.testing.assert_close(g_r, w1.grad, rtol=1e-5, atol=1e-8, msg=name)


def test_local_batch_loss_differs_from_global():
    """Control: without the gather, a rank's loss on its half batch is not the global-batch loss."""
    x, y, w = _make_problem()
    z = torch.nn.functional.normalize(x @ w, dim=1)
    loss = _loss_fn("supap")
    assert abs(loss(z[:8], y[:8]).item() - loss(z, y).item()) > 1e-4


def test_without_ddp_gather_is_identity():
    from common.models.distributed import all_gather_no_grad, all_gather_with_grad

    x = torch.randn(3, 2)
    assert all_gather_with_grad(x) is x and all_gather_no_grad(x) is x


@pytest.mark.slow
def test_ddp_sim_evaluation_matches_single_process(tmp_path):
    from omegaconf import open_dict

    from common.launch import run
    from tests.conftest import compose_train

    def cfg(out, extra=()):
        c = compose_train(["data=synthetic", "logger=csv", "trainer.max_epochs=1", *extra], out)
        with open_dict(c):
            c.model.net.backbone.in_chans = 3
            c.model.net.embed_dim = 16
            c.data.test_dataset.per_class = 5  # 40 items: not a multiple of 3 ranks' padding either
            del c.callbacks.rich_progress_bar
            if not c.get("logger"):
                del c.callbacks.lr_monitor
        return c

    single, _ = run(cfg(tmp_path / "single"))
    ckpt = tmp_path / "single" / "checkpoints" / "last.ckpt"
    # (no CSV logger under ddp_spawn: Lightning's CSVLogger loses its header between the fit and test spawns)
    ddp, _ = run(cfg(tmp_path / "ddp", ["trainer=ddp_sim", "~logger", "train=false", f"ckpt_path={ckpt}"]))
    for key in ("test/map@r", "test/recall@1", "test/precision@1"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6)
    # and training itself runs under ddp_sim with the global-batch gather (ROADMAP loss)
    fit_cfg = cfg(tmp_path / "ddp_fit", ["trainer=ddp_sim", "~logger"])
    with open_dict(fit_cfg):
        fit_cfg.model.losses = {"main": {"_target_": "roadmap.losses.ROADMAPLoss"}}
    fit, _ = run(fit_cfg)
    assert 0.0 <= fit["test/map@r"] <= 1.0
