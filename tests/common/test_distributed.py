"""DDP correctness on CPU (gloo): the gathered loss and its gradients equal one process on the global batch, and
distributed evaluation equals single-process evaluation."""

from __future__ import annotations

import os
import socket

import lightning as L
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

    if name == "roadmap":  # SupAP + calibration, the ROADMAP rows' NeurIPS weights 1:1
        return lambda z, y: losses.SupAP()(z, y) + losses.CalibrationLoss()(z, y)
    return {"supap": losses.SupAP, "smoothap": losses.SmoothAP}[name]()


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
    ddp, _ = run(cfg(tmp_path / "ddp", ["trainer=ddp_sim", "~logger", "train=false", f"ckpt_path={ckpt}"]))
    for key in ("test/map@r", "test/recall@1", "test/precision@1"):
        assert ddp[key] == pytest.approx(single[key], abs=1e-6)
    # and training itself runs under ddp_sim with the global-batch gather (ROADMAP loss); the CSV logger keeps the
    # fit's columns and rows when the test stage (new spawned workers) adds its own (common.utils.csv_logger)
    fit_cfg = cfg(tmp_path / "ddp_fit", ["trainer=ddp_sim"])
    with open_dict(fit_cfg):
        fit_cfg.model.losses = {
            "supap": {"_target_": "roadmap.losses.SupAP"},
            "calibration": {"_target_": "roadmap.losses.CalibrationLoss"},
        }
    fit, _ = run(fit_cfg)
    assert 0.0 <= fit["test/map@r"] <= 1.0
    import csv

    with open(tmp_path / "ddp_fit" / "csv" / "version_0" / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert any(r["lr-AdamW/head"] for r in rows)  # a fit row (LearningRateMonitor)
    assert float(next(r for r in rows if r["test/map@r"])["test/map@r"]) == pytest.approx(fit["test/map@r"], abs=1e-6)


# ----------------------------------------------------------------------------------------------------------------------
# Cross-batch memory (XBM) under DDP: the RetrievalModule through Lightning, 2 gloo processes (trainer=ddp_sim) against
# one process fed the same global batches (trainer=cpu).

XBM_STEPS, XBM_GLOBAL_BATCH = 4, 8


class _XBMData(torch.utils.data.Dataset):
    """32 items of 8 classes; every global batch of 8 holds 2 items of each of 4 classes (so every rank has pairs)."""

    def __init__(self) -> None:
        g = torch.Generator().manual_seed(1)
        self.labels = torch.arange(8).repeat_interleave(4)
        self.x = torch.randn(8, 6, generator=g)[self.labels] + 0.7 * torch.randn(32, 6, generator=g)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        return {"image": self.x[i], "label": self.labels[i], "index": i}

    @staticmethod
    def global_batches() -> list[list[int]]:
        """Step s: classes 4 (s % 2) .. +3, two items each; rank r of w takes the r-th of w equal slices."""
        out = []
        for s in range(XBM_STEPS):
            first = 4 * (s % 2)
            pair = 2 * (s // 2)  # items 0-1 or 2-3 of each class
            out.append([4 * c + pair + k for k in (0, 1) for c in range(first, first + 4)])
        return out


class _XBMDataModule(L.LightningDataModule):
    def train_dataloader(self):
        rank, world = self.trainer.global_rank, self.trainer.world_size
        b = XBM_GLOBAL_BATCH // world
        batches = [batch[rank * b : (rank + 1) * b] for batch in _XBMData.global_batches()]
        return torch.utils.data.DataLoader(_XBMData(), batch_sampler=batches)


class _TinyNet(torch.nn.Module):
    embed_dim = 8

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = torch.nn.Linear(6, 8)

    def forward(self, x):
        return torch.nn.functional.normalize(self.fc(x), dim=1)


class _Recorder(L.Callback):
    """Per step and rank: pre-step weights, loss, synchronised gradient, memory after the step; saved at train end."""

    def __init__(self, out_dir) -> None:
        self.out_dir, self.steps = str(out_dir), []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.steps.append(
            {"weight": module.net.fc.weight.detach().clone(), "bias": module.net.fc.bias.detach().clone()}
        )

    def on_after_backward(self, trainer, module):
        self.steps[-1]["grad"] = module.net.fc.weight.grad.detach().clone()  # after DDP's all-reduce

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        m = module.memory
        self.steps[-1].update(
            loss=outputs["loss"].detach().clone(),
            memory=m.embeddings.clone(),
            labels=m.labels[:, 0].clone(),
            filled=m.filled.clone(),
            ptr=int(m.ptr),
        )

    def on_train_end(self, trainer, module):
        torch.save(self.steps, f"{self.out_dir}/rank{trainer.global_rank}.pt")


def _xbm_fit(out_dir, trainer_cfg: str, unique: bool, gather: bool):
    import functools

    from common.models.retrieval_module import RetrievalModule
    from roadmap.losses import CalibrationLoss, SupAP
    from roadmap.memory import XBM
    from tests.conftest import quiet_trainer

    out_dir.mkdir(parents=True)
    memory = XBM(size=32 if unique else 12, embedding_dim=8, weight=0.5, unique=unique)  # FIFO of 12 wraps
    module = RetrievalModule(
        net=_TinyNet(),
        losses={"supap": SupAP(), "calibration": CalibrationLoss()},
        optimizer=functools.partial(torch.optim.SGD, lr=0.5),
        memory=memory,
        gather_global_batch=gather,
    )
    trainer = quiet_trainer(trainer_cfg, out_dir, callbacks=[_Recorder(out_dir)])
    trainer.fit(module, datamodule=_XBMDataModule())
    n = 2 if trainer_cfg == "ddp_sim" else 1
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(n)]


def _expected_memory(steps: list[dict], unique: bool, size: int) -> list[torch.Tensor]:
    """The memory after each step, rebuilt from the pre-step weights: the global batch of the step, in rank order."""
    data, batches = _XBMData(), _XBMData.global_batches()
    mem, ptr, out = torch.zeros(size, 8), 0, []
    for s, rec in enumerate(steps):
        idx = torch.tensor(batches[s])
        z = torch.nn.functional.normalize(data.x[idx] @ rec["weight"].T + rec["bias"], dim=1)
        if unique:
            mem[idx] = z
        else:
            pos = (ptr + torch.arange(len(idx))) % size
            mem[pos], ptr = z, (ptr + len(idx)) % size
        out.append(mem.clone())
    return out


@pytest.mark.slow
@pytest.mark.parametrize("unique", [False, True], ids=["fifo", "unique"])
def test_xbm_memory_loss_and_gradients_under_ddp_match_single_process(tmp_path, unique):
    """gather_global_batch=True: both ranks enqueue the global batch in rank order, so the memories are identical on
    both ranks and equal to one process fed the global batches; the loss (batch + memory terms) and the all-reduced
    gradient equal the single-process ones at every step (the FIFO of 12 wraps around and checks the order)."""
    single = _xbm_fit(tmp_path / "single", "cpu", unique, gather=True)[0]
    ddp = _xbm_fit(tmp_path / "ddp", "ddp_sim", unique, gather=True)
    assert len(single) == XBM_STEPS and all(len(r) == XBM_STEPS for r in ddp)
    size = 32 if unique else 12
    expected = _expected_memory(single, unique, size)
    for s in range(XBM_STEPS):
        ref = single[s]
        torch.testing.assert_close(ref["memory"], expected[s], rtol=0, atol=1e-6)  # the reference itself is right
        assert ref["loss"] > 0 and ref["grad"].abs().sum() > 0
        for rank, rec in enumerate(ddp):
            where = f"step {s}, rank {rank}"
            torch.testing.assert_close(rec[s]["memory"], ref["memory"], rtol=1e-5, atol=1e-6, msg=where)
            assert torch.equal(rec[s]["labels"], ref["labels"]) and torch.equal(rec[s]["filled"], ref["filled"])
            assert rec[s]["ptr"] == ref["ptr"], where
            torch.testing.assert_close(rec[s]["loss"], ref["loss"], rtol=1e-5, atol=1e-5, msg=where)
            torch.testing.assert_close(rec[s]["grad"], ref["grad"], rtol=1e-5, atol=1e-5, msg=where)
        assert torch.equal(ddp[0][s]["memory"], ddp[1][s]["memory"])  # bit-identical across ranks
        assert int(ref["filled"].sum()) == min(XBM_GLOBAL_BATCH * (s + 1), size)  # every step brings 8 new items


@pytest.mark.slow
def test_xbm_memory_holds_the_global_batch_without_the_loss_gather(tmp_path):
    """gather_global_batch=False: each rank's losses see its local half batch, yet the memory enqueues the global
    batch (a detached gather), so the memories stay identical across ranks although DDP does not broadcast them."""
    ddp = _xbm_fit(tmp_path / "ddp", "ddp_sim", unique=False, gather=False)
    expected = _expected_memory(ddp[0], unique=False, size=12)
    for s in range(XBM_STEPS):
        for rank, rec in enumerate(ddp):
            torch.testing.assert_close(rec[s]["memory"], expected[s], rtol=1e-5, atol=1e-6, msg=f"step {s} {rank}")
        assert torch.equal(ddp[0][s]["labels"], ddp[1][s]["labels"])
    # the two ranks' losses differ (each sees its own half batch): the gather above is the memory's alone
    assert abs(float(ddp[0][0]["loss"]) - float(ddp[1][0]["loss"])) > 1e-4


def test_retrieval_module_keeps_memory_buffers_out_of_ddp_broadcast():
    import functools

    from common.models.retrieval_module import RetrievalModule
    from roadmap.losses import CalibrationLoss, SupAP
    from roadmap.memory import XBM

    module = RetrievalModule(
        net=_TinyNet(),
        losses={"supap": SupAP(), "calibration": CalibrationLoss()},
        optimizer=functools.partial(torch.optim.SGD, lr=0.1),
        memory=XBM(size=4, embedding_dim=8),
    )
    ignored = set(module._ddp_params_and_buffers_to_ignore)
    assert ignored == {"memory.embeddings", "memory.labels", "memory.filled", "memory.ptr"}
    assert ignored <= {name for name, _ in module.named_buffers()}  # the names DDP matches against
