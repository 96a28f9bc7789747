"""GalLoPModule through a Lightning Trainer: training moves only trainable tensors; test metrics match a manual pass."""

from __future__ import annotations

from functools import partial

import lightning as L
import pytest
import torch

from common.backbones.clip import create_clip
from common.metrics.ood import ood_metrics
from gallop.fewshot import FewShotDataModule
from gallop.model import CoOp, GalLoP, ZeroShotCLIP
from gallop.module import GalLoPModule
from gallop.scores import gl_mcm_score, predict_proba
from tests.gallop.helpers import TensorImages

TOPK = [2, 3, 4, 5]


class SubsetDomain(TensorImages):
    """Test images of classes {0, 2} only, labelled in the full class space, scored on those classes."""

    def __init__(self):
        super().__init__(4, 3, seed=5)
        keep = (self.labels == 0) | (self.labels == 2)
        self.images, self.labels = self.images[keep], self.labels[keep]
        self.class_subset = [0, 2]


def _trainer(epochs=1, **kw):
    return L.Trainer(
        max_epochs=epochs,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        **kw,
    )


def _dm():
    return FewShotDataModule(
        TensorImages(6, 3),
        TensorImages(4, 3, seed=1),
        shots=4,
        batch_size=4,
        eval_batch_size=5,
        ood_datasets={"far": TensorImages(3, 2, seed=2, offset=3.0)},
        domain_datasets={"sub": SubsetDomain()},
    )


@pytest.fixture(scope="module")
def clip():
    return create_clip("tiny_clip", seed=0)


def test_fit_changes_only_trainable_tensors_and_test_metrics_match_manual(clip):
    net = GalLoP(clip, n_global=4, n_local=4)
    frozen = {n: p.detach().clone() for n, p in net.named_parameters() if not p.requires_grad}
    trainable = {n: p.detach().clone() for n, p in net.named_parameters() if p.requires_grad}
    module = GalLoPModule(net, optimizer=partial(torch.optim.SGD, lr=0.05, momentum=0.9), topk=TOPK, heatmap_images=0)
    dm = _dm()
    trainer = _trainer(epochs=1)
    trainer.fit(module, dm)
    for n, p in net.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n
        else:
            assert not torch.equal(p, trainable[n]), n
    trainer.test(module, dm, verbose=False)
    m = module.last_test_metrics

    net.eval()
    with torch.no_grad():
        text = net.text_features()
        test = dm.test_dataset
        g, loc = net(test.images, text)
        acc = (predict_proba(g, loc, net.logit_scale, TOPK).argmax(-1) == test.labels).float().mean() * 100
        go, lo = net(dm.ood_datasets["far"].images, text)
        ref_ood = ood_metrics(gl_mcm_score(g, loc), gl_mcm_score(go, lo))
        dom = dm.domain_datasets["sub"]
        gd, ld = net(dom.images, text)
        pd = predict_proba(gd[:, [0, 2]], ld[:, :, [0, 2]], net.logit_scale, TOPK).argmax(-1)
        dom_acc = (pd == (dom.labels == 2).long()).float().mean() * 100
    assert m["test/acc"] == pytest.approx(acc.item(), abs=1e-4)
    for k, v in ref_ood.items():
        assert m[f"test/ood/far/gl_mcm/{k}"] == pytest.approx(v, abs=1e-6)
        assert m[f"test/ood/avg/gl_mcm/{k}"] == pytest.approx(v, abs=1e-6)
    assert {"test/acc_global", "test/acc_local", "test/ood/far/mcm/auroc", "test/ood/far/l_mcm/fpr95"} <= set(m)
    assert m["test/dg/sub/acc"] == pytest.approx(dom_acc.item(), abs=1e-4)
    assert m["test/dg/avg_acc"] == m["test/dg/sub/acc"]


def test_checkpoint_holds_only_trainable_tensors_and_restores(clip, tmp_path):
    net = GalLoP(clip, n_global=2, n_local=2)
    module = GalLoPModule(net, optimizer=partial(torch.optim.SGD, lr=0.05), topk=[2, 3], heatmap_images=0)
    trainer = _trainer(epochs=1)
    trainer.fit(module, _dm())
    path = tmp_path / "gallop.ckpt"
    trainer.save_checkpoint(path)
    sd = torch.load(path, weights_only=False)["state_dict"]
    assert set(sd) == {"net.visual.local_proj.weight", "net.global_text.learner.ctx", "net.local_text.learner.ctx"}
    fresh = GalLoPModule(GalLoP(clip, n_global=2, n_local=2), topk=[2, 3])
    fresh.load_state_dict(sd, strict=False)
    torch.testing.assert_close(fresh.net.global_text.learner.ctx, net.global_text.learner.ctx)


def test_checkpoint_reads_back_with_a_weights_only_load(clip, tmp_path):
    """`trainer.test(ckpt_path=...)` loads weights-only: no partial (the optimizer factory) and no ListConfig (a list
    from Hydra) may sit in the saved hyper-parameters."""
    from omegaconf import OmegaConf

    topk = OmegaConf.create([2, 3])
    module = GalLoPModule(
        GalLoP(clip, n_global=2, n_local=2), optimizer=partial(torch.optim.SGD, lr=0.05), topk=topk, heatmap_images=0
    )
    trainer = _trainer(epochs=1)
    trainer.fit(module, _dm())
    path = tmp_path / "gallop.ckpt"
    trainer.save_checkpoint(path)
    hp = torch.load(path, weights_only=True)["hyper_parameters"]
    assert hp["heatmap_images"] == 0 and not {"optimizer", "scheduler", "topk", "class_names"} & set(hp)
    trainer.test(module, _dm(), ckpt_path=str(path), verbose=False)


def test_zero_shot_runs_test_only_and_coop_trains(clip):
    dm = _dm()
    zs = GalLoPModule(ZeroShotCLIP(clip, templates=["a photo of a {}."]), heatmap_images=0)
    _trainer().test(zs, dm, verbose=False)
    assert "test/acc" in zs.last_test_metrics and "test/acc_local" not in zs.last_test_metrics
    assert "test/ood/far/gl_mcm/auroc" in zs.last_test_metrics
    assert zs.configure_optimizers() is None
    coop = GalLoPModule(CoOp(clip), optimizer=partial(torch.optim.SGD, lr=0.05), heatmap_images=0)
    _trainer().fit(coop, dm)
    _trainer().test(coop, dm, verbose=False)
    assert "test/ood/far/mcm/auroc" in coop.last_test_metrics
    assert "test/acc_local" not in coop.last_test_metrics  # CoOp predicts from the global prompt only


def _gl_mcm_by_hand(global_feat, local_feat, text):
    """GL-MCM from its definition, one image at a time: ``-max_k softmax_k(<g, t_k>) - max_p max_k softmax_k(<f_p,
    t_k>)`` with T = 1 on raw cosines; features ``[D]`` / ``[P, D]``, text ``[K, D]``."""
    out = []
    for g, f in zip(global_feat, local_feat, strict=True):
        mcm = max(torch.softmax(torch.stack([g @ t for t in text]), 0).tolist())
        l_mcm = max(max(torch.softmax(torch.stack([fp @ t for t in text]), 0).tolist()) for fp in f)
        out.append(-mcm - l_mcm)
    return torch.tensor(out)


def test_coop_logs_gl_mcm_with_its_learned_prompt_on_the_local_features(clip):
    """CoOp's GL-MCM (GalLoP's OOD table, row "CoOp GL-MCM"): the MCM of the learned global prompt plus the L-MCM of
    the CLIP patch features (value path, no local_proj) against the same learned text features."""
    dm = _dm()
    coop = GalLoPModule(CoOp(clip), optimizer=partial(torch.optim.SGD, lr=0.05), heatmap_images=0)
    _trainer().fit(coop, dm)
    coop.net.train()
    assert coop.net(dm.test_dataset.images[:2])[1] is None  # training: global cosines only
    _trainer().test(coop, dm, verbose=False)
    m = coop.last_test_metrics
    net = coop.net.eval()
    assert net.visual.local_proj is None
    with torch.no_grad():
        text = net.global_text()[:, 0]  # [K, D], the learned prompt
        scores = []
        for ds in (dm.test_dataset, dm.ood_datasets["far"]):
            g, f = net.visual(ds.images)
            scores.append(_gl_mcm_by_hand(g, f, text))
        ref = ood_metrics(*scores)
    for k, v in ref.items():
        assert m[f"test/ood/far/gl_mcm/{k}"] == pytest.approx(v, abs=1e-6)
    assert {"test/ood/far/l_mcm/auroc", "test/ood/avg/gl_mcm/fpr95_closest"} <= set(m)


def test_missing_class_names_is_a_clear_error(clip):
    module = GalLoPModule(GalLoP(clip, n_global=1, n_local=1), topk=[2])
    with pytest.raises(ValueError, match="class names"):
        module.setup("fit")


def test_heatmaps_are_logged_to_an_offline_wandb_run(clip, tmp_path, monkeypatch):
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    logger = WandbLogger(save_dir=str(tmp_path), offline=True, project="gallop-test")
    module = GalLoPModule(GalLoP(clip, n_global=2, n_local=2), topk=[2, 3], heatmap_images=3)
    _trainer_logged = L.Trainer(accelerator="cpu", logger=logger, enable_progress_bar=False, enable_model_summary=False)
    _trainer_logged.test(module, _dm(), verbose=False)
    import wandb

    wandb.finish()
    pngs = list(tmp_path.rglob("media/images/test/heatmaps*.png"))
    assert len(pngs) == 1


def test_heatmap_png_from_the_plot_helper(clip, tmp_path):
    from gallop.heatmaps import local_heatmaps, plot_heatmaps

    net = GalLoP(clip, n_global=1, n_local=2)
    net.set_class_names(["a", "b", "c"])
    images = TensorImages(1, 3).images
    maps, pred = local_heatmaps(net, images, None, [2, 3])
    assert maps.shape == (3, 4, 4) and pred.shape == (3,)
    g, loc = net(images)
    torch.testing.assert_close(maps[0].flatten(), loc.mean(-1)[0, :, pred[0]])
    plot_heatmaps(images.sigmoid(), maps, ["x", "y", "z"], tmp_path / "h.png")
    assert (tmp_path / "h.png").stat().st_size > 1000
