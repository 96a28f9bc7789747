"""HEAT as a LightningModule on cached features (Lafon et al., ICML 2023, Sec. 3; docs/methods/heat.md#formulas).

One module trains the residual energy ``E_theta`` of one prior (EL, GMM or GMM-std). A training step:

1. real features ``x`` (L2-normalised when the prior is);
2. proposals ``z0`` (N(0, I) or the fitted GMM), projected (ReLU, L2);
3. ``K`` SGLD steps on the hybrid energy ``E_prior / T_prior + E_theta / T`` (frozen parameters) -> ``z_K``; the
   prior's gradient is taken in R^D at the sample, as released (``sgld_prior_gradient``);
4. negatives ``[z_K; z0]`` (2B rows, the released code's choice);
5. the CD loss with the L2 energy penalty on ``E_theta / T`` only; Adam with betas (0, 0.999), MultiStepLR.

The fitted prior is a submodule (its statistics are buffers, so checkpoints hold it). If it is not fitted when training
starts, :meth:`setup` fits it on ``trainer.datamodule.train_features``. :meth:`score` gives the OOD score of Features:
the full hybrid energy. Validation and test log ``{val,test}/{auroc,fpr95,fpr95_ood_positive}`` (mean over OOD sets)
and the same per OOD set, from ``common.metrics.ood.ood_metrics``; the datamodule's ``test_splits`` /
``val_splits`` (:class:`common.data.splits.EvalSplit`) say which loader is the ID test set and name the OOD sets.

Single device only: :meth:`setup` refuses a distributed trainer (``trainer.world_size > 1``, e.g. ``trainer=ddp`` or
``trainer=ddp_sim``) with :class:`DistributedNotSupportedError`. HEAT trains a small MLP on cached features in minutes
on one device, and data parallelism would be wrong in three places without further work:

* training batches: :class:`heat.datamodule.FeatureDataModule` does not shard its loader and the trainer configs set
  ``use_distributed_sampler: false``, so every rank would draw the same batches (the same seeded shuffle);
* SGLD and data noise: proposals, Langevin noise and ``eps_data`` come from the global torch RNG, whose state is
  the same on every rank (``ddp_spawn`` copies the parent's RNG state into each worker; under ``ddp`` each process
  runs ``seed_everything(cfg.seed)``), so every rank would repeat the same negatives: with the unsharded batches
  above, DDP would average identical gradients (N times the compute of one device, nothing gained);
* evaluation: scores are kept per rank and the metrics computed from them without a gather, so a sharded evaluation
  would log rank 0's partial metrics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import hydra
import lightning as L
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from common.data.splits import EvalSplit, splits_of_kind
from common.models.checkpoint_identity import CheckpointIdentityMixin
from common.models.nonfinite import check_nan_policy, loss_is_finite
from heat.contrastive_divergence import contrastive_divergence_loss
from heat.features import Features
from heat.scorers.base import chunked, l2_normalize
from heat.sgld import HybridEnergy, Proposal, project, sgld


def plain_config(x: Any) -> Any:
    """A config (OmegaConf or mapping) as plain resolved Python containers; anything else unchanged."""
    if isinstance(x, DictConfig):
        return OmegaConf.to_container(x, resolve=True)
    return dict(x) if isinstance(x, Mapping) else x


def build(x: nn.Module | Mapping) -> nn.Module:
    """``x`` itself, or the module its ``_target_`` config describes."""
    if isinstance(x, nn.Module):
        return x
    if "_target_" not in x:
        raise ValueError(f"expected an nn.Module or a config with `_target_`, got {dict(x)}")
    return hydra.utils.instantiate(x)


class DistributedNotSupportedError(RuntimeError):
    """HEAT was asked to run with more than one process (see the module docstring for why it refuses)."""


class HEATModule(CheckpointIdentityMixin, L.LightningModule):
    """Train a residual EBM on top of a prior scorer.

    Args:
        prior: a prior scorer with ``energy(z, y=None)``, ``pooling`` and ``normalize`` (``EnergyLogits``, ``GMM``,
            ``GMMStd``), fitted or not; or its config (a mapping with ``_target_``).
        mlp: the residual network (``heat.mlp.EnergyMLP``), or its config.
        temperature_prior, temperature: ``T_prior`` and ``T`` of the hybrid energy; the CD loss uses ``E_theta / T``
            as the released code does.
        proposal: "random_normal", "base_dist" or "base_dist_temp"; ``proposal_from_batch_labels`` draws GMM
            components from the batch labels (``sample_from_batch_statistics``).
        sgld_steps, sgld_step_size, sgld_noise: ``K``, ``eta_0`` and ``eps_0`` (schedules end at a tenth of each).
        sgld_relu: project samples with ReLU (features are post-ReLU).
        sgld_prior_gradient: "euclidean" (the released code: the prior's gradient in R^D at the sample) or "tangent"
            (the prior re-normalises the sample, so its gradient is projected on the sphere's tangent); see
            :class:`heat.sgld.HybridEnergy`. Only changes SGLD for a normalising prior (GMM, GMM-std).
        simplified_mahalanobis: negatives use the class-conditional prior energy of their sampled component (ImageNet).
        l2: the energy penalty ``lambda``; eps_data: std of the data noise.
        lr, betas, milestones, gamma: Adam and MultiStepLR (per epoch).
        nan_policy: a NaN/Inf loss (e.g. a learning rate far too high) stops training with the step and batch
            indices ("raise", :class:`~common.models.nonfinite.NonFiniteLossError`), or skips that batch's update
            and counts it in ``train/skipped_batches`` ("skip"); the same guard as the retrieval module's.

    Given as configs (what ``configs/model/heat.yaml`` does, with ``_recursive_: false``), ``prior`` and ``mlp`` are
    saved in the hyperparameters, so ``HEATModule.load_from_checkpoint(path)`` rebuilds the whole module (the prior's
    fit and the MLP's weights come from the state dict). Given as objects, they are not saved, and loading needs them
    again: ``load_from_checkpoint(path, prior=..., mlp=...)``.
    """

    def __init__(
        self,
        prior: nn.Module | Mapping | None = None,
        mlp: nn.Module | Mapping | None = None,
        temperature_prior: float = 1.0,
        temperature: float = 1.0,
        proposal: str = "random_normal",
        proposal_from_batch_labels: bool = False,
        sgld_steps: int = 20,
        sgld_step_size: float = 1e-4,
        sgld_noise: float = 5e-3,
        sgld_relu: bool = True,
        sgld_prior_gradient: str = "euclidean",
        simplified_mahalanobis: bool = False,
        l2: float = 10.0,
        eps_data: float = 1e-4,
        lr: float = 1e-5,
        betas: Sequence[float] = (0.0, 0.999),
        milestones: Sequence[int] = (10,),
        gamma: float = 0.1,
        nan_policy: str = "raise",
    ) -> None:
        super().__init__()
        check_nan_policy(nan_policy)
        if prior is None or mlp is None:
            raise TypeError(
                "HEATModule needs `prior` and `mlp`: modules, or their configs (`_target_`). A checkpoint saved from a "
                "module built with objects does not hold them: load it with load_from_checkpoint(path, prior=..., "
                "mlp=...)."
            )
        # plain Python containers (not OmegaConf ListConfig) so that checkpoints load with torch.load(weights_only=True)
        betas, milestones = tuple(float(b) for b in betas), [int(m) for m in milestones]
        prior, mlp = plain_config(prior), plain_config(mlp)
        self.save_hyperparameters(ignore=[n for n, v in (("prior", prior), ("mlp", mlp)) if isinstance(v, nn.Module)])
        prior, mlp = build(prior), build(mlp)
        self.prior, self.mlp = prior, mlp
        # not registered as a child: prior and mlp are already submodules (no duplicated checkpoint entries)
        self.__dict__["hybrid"] = HybridEnergy(prior, mlp, temperature_prior, temperature, sgld_prior_gradient)
        self.proposal = Proposal(proposal, from_batch_labels=proposal_from_batch_labels)
        self._scores: dict[str, dict[int, list[Tensor]]] = {}
        for p in self.prior.parameters():
            p.requires_grad_(False)
        self.skipped_batches = 0

    # ---------------------------------------------------------------- features
    @property
    def pooling(self) -> str:
        return self.prior.pooling

    @property
    def normalize(self) -> bool:
        return bool(self.prior.normalize)

    def prepare(self, z: Tensor) -> Tensor:
        z = z.float()
        return l2_normalize(z) if self.normalize else z

    def setup(self, stage: str) -> None:
        world = self.trainer.world_size if self._trainer is not None else 1
        if world > 1:
            raise DistributedNotSupportedError(
                f"HEATModule runs on one device only, got trainer.world_size={world} "
                f"({type(self.trainer.strategy).__name__}): its feature batches are not sharded across ranks, every "
                f"rank would draw the same SGLD negatives from identically seeded RNGs, and the evaluation does not "
                f"gather scores. HEAT trains on cached features in minutes on one device: run with trainer=gpu or "
                f"trainer=cpu (devices=1)."
            )
        if getattr(self.prior, "is_fitted", True):
            return
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        train = getattr(dm, "train_features", None)
        if train is None:
            raise RuntimeError("the prior is not fitted and the datamodule has no `train_features` to fit it on")
        self.prior.fit(train)
        self.prior.to(self.device)

    # ---------------------------------------------------------------- energies
    def energy_parts(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(E_prior / T_prior, E_theta / T)`` of raw pooled features ``z`` ``[N, D]``."""
        return self.hybrid.parts(self.prepare(z))

    @torch.no_grad()
    def score(self, x: Features, chunk: int = 8192) -> Tensor:
        """HEAT score (higher = more OOD): the hybrid energy of ``x.pooled(prior.pooling)``, ``[N]``."""
        was_training = self.training
        self.eval()
        z_all = x.pooled(self.pooling)
        out = [sum(self.energy_parts(z_all[sl].to(self.device))).cpu() for sl in chunked(len(z_all), chunk)]
        self.train(was_training)
        return torch.cat(out)

    def forward(self, z: Tensor) -> Tensor:
        return sum(self.energy_parts(z))

    # ---------------------------------------------------------------- training
    def negatives(self, real: Tensor, labels: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(negatives [2B, D] = [z_K; z0], z0 [B, D])`` for a batch of prepared real features."""
        hp = self.hparams
        b, d = real.shape
        z0, comp = self.proposal(self.prior, b, d, labels=labels)
        z0 = project(z0.to(real), relu=hp.sgld_relu, normalize=self.normalize)
        y = comp if (hp.simplified_mahalanobis and comp is not None) else None
        zk = (
            sgld(
                self.hybrid,
                z0,
                hp.sgld_steps,
                hp.sgld_step_size,
                hp.sgld_noise,
                y=y,
                relu=hp.sgld_relu,
                normalize=self.normalize,
            )
            if hp.sgld_steps > 0
            else z0
        )
        return torch.cat([zk, z0]), z0

    def training_step(self, batch: dict, batch_idx: int) -> Tensor | None:
        real = self.prepare(batch["z"])
        neg, _ = self.negatives(real, batch.get("y"))
        hp = self.hparams
        loss, logs = contrastive_divergence_loss(self.mlp, real, neg, hp.l2, hp.eps_data, temperature=hp.temperature)
        if not loss_is_finite(self, loss, logs, batch_idx, self.hparams.nan_policy):
            return None
        self.log("train/loss", loss, prog_bar=True, batch_size=len(real))
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=len(real))
        return loss

    def _eval_step(self, stage: str, batch: dict, dataloader_idx: int) -> None:
        with torch.no_grad():
            s = sum(self.energy_parts(batch["z"]))
        self._scores.setdefault(stage, {}).setdefault(dataloader_idx, []).append(s.detach().cpu())

    def validation_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("val", batch, dataloader_idx)

    def test_step(self, batch: dict, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._eval_step("test", batch, dataloader_idx)

    def _eval_splits(self, stage: str, n_loaders: int) -> list[EvalSplit]:
        """The datamodule's ``{stage}_splits``, or ID test then ``ood1``, ``ood2``, ... without one."""
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        splits = getattr(dm, f"{stage}_splits", None)
        if splits:
            return list(splits)
        return [EvalSplit("test", "id"), *(EvalSplit(f"ood{i}", "ood") for i in range(1, n_loaders))]

    def _eval_epoch_end(self, stage: str) -> None:
        """The ID split's loader against each OOD split's; logs per-set and mean FPR95 (both conventions), AUROC."""
        from common.metrics.ood import ood_metrics

        scores = {i: torch.cat(v) for i, v in self._scores.pop(stage, {}).items()}
        splits = self._eval_splits(stage, len(scores))
        id_idx = next((i for i, s in splits_of_kind(splits, "id")), 0)
        if id_idx not in scores or len(scores) < 2:
            return
        per_set = {}
        for i, split in splits_of_kind(splits, "ood"):
            if i in scores:
                per_set[split.name] = ood_metrics(scores[id_idx].double(), scores[i].double())
        for key in ("fpr95", "fpr95_ood_positive", "auroc"):
            for name, m in per_set.items():
                self.log(f"{stage}/{name}/{key}", float(m[key]), add_dataloader_idx=False)
            mean = sum(float(m[key]) for m in per_set.values()) / len(per_set)
            self.log(f"{stage}/{key}", mean, prog_bar=key == "auroc", add_dataloader_idx=False)

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.Adam(self.mlp.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=list(hp.milestones), gamma=hp.gamma)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "epoch"}}
