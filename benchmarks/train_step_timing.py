"""One training step of each method at the paper's shapes: time, throughput, peak memory, and how much of the step
runs our code (losses, scorers, prompts) rather than the backbone. Run through ``bench_gpu.py --part train-step``.

Each row builds the LightningModule of a paper config (``configs/experiment/<method>/<row>.yaml``, composed by Hydra
as ``common.launch`` does) with random-init weights (no downloads), feeds it a random batch of the config's batch size
on the config's input shape, and times two variants of the same optimisation step, interleaved ``reps`` times after a
warm-up:

* **plain**: ``training_step`` under the row's autocast, ``GradScaler.scale(loss).backward()``, ``scaler.step``,
  ``zero_grad``: what Lightning's automatic optimisation runs, with ``torch.cuda.synchronize()`` only at the ends.
  Its median is ``total_ms``; ``items_per_s`` and ``peak_mb`` (``torch.cuda.max_memory_allocated``) come from it.
* **split**: the same computation cut at the boundary between the network and our code, each phase between two
  synchronisations. The backbone's output is detached into a leaf, our code runs forward and backward on that leaf, and
  the leaf's gradient is then pushed through the backbone (``z.backward(leaf.grad)``), so the phases add up to one
  step and give the same gradients (``--tiny`` checks this on every row). ``split_ms`` is their sum,
  ``ours_ms`` the sum of the phases that run our code, ``share = ours_ms / split_ms``.

What counts as ours, per method:

* ROADMAP and HAPPIER (``RetrievalModule``): ``compute_loss`` forward and backward (the input checks, the shared
  cosine matrix and every term of ``model.losses``: SupAP + calibration; Sup-H-AP on ``[B, L]`` labels + the
  clustering proxies). The backbone is ``embed`` (timm network, pooling, projection head) forward and backward.
  HAPPIER's first epochs freeze the backbone; the step timed here is a later one, with the whole network trained.
* HEAT: everything in the step is ours, since it trains on cached features: the proposals and the K SGLD steps on
  the hybrid energy (prior scorer + EBM), then the contrastive-divergence loss forward and backward. There is no
  backbone phase; the rest of the step is the optimiser.
* GalLoP: the cosines and the loss (``gallop_loss``) forward and backward, the local features (the value path of the
  last block and ``local_proj``, forward and backward) and the prompt assembly (``PromptLearner.embed``). The local
  features' forward time is the image phase minus the plain CLIP image tower on the same images, and the prompt
  assembly is timed on its own, both measured in the same round (reference phases ``ref_*``, not part of the step).
  The backbone is CLIP's frozen image tower forward and its text tower forward and backward over all K x M prompts.

The optimiser step (``optim_ms``) counts as neither. With ``tiny=True`` each row gets small shapes (test networks of
timm, the tiny CLIP, small MLPs), float32, and 1 rep: a real run of every code path that a CPU does in seconds.
"""

from __future__ import annotations

import math
import statistics
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import torch
from bench_ood_scorers import synthetic
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

from gallop.global_local_loss import gallop_loss
from heat.contrastive_divergence import contrastive_divergence_loss

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = ROOT / "configs"
PRECISIONS = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16, "32-true": None, "32": None}

_TINY_RETRIEVAL = ("model.net.backbone.name=test_resnet", "model.net.embed_dim=32")
_TINY_HEAT = ("model.mlp.in_dim=32", "model.mlp.hidden=128", "model.sgld_steps=2")
_TINY_GALLOP = ("model.net.clip.model_name=tiny_clip", "model.net.clip.quick_gelu=null", "model.topk=[2,4,6,8]")
_GALLOP = dict(kind="gallop", precision="16-mixed", tiny=_TINY_GALLOP, tiny_batch=4)


@dataclass(frozen=True)
class Row:
    """One paper config to time. ``precision``: None takes the config's ``trainer.precision``."""

    name: str
    method: str
    experiment: str  # configs/experiment/<experiment>.yaml
    kind: str  # "retrieval", "heat" or "gallop"
    precision: str | None = None
    levels: int = 1  # retrieval label columns ([B] for 1, [B, L] hierarchical otherwise)
    classes: int = 0  # GalLoP: classes whose prompts are encoded every step; HEAT: classes of the prior
    image_size: int = 224  # retrieval rows (GalLoP takes the CLIP tower's own size)
    tiny: tuple[str, ...] = ()  # Hydra overrides of the tiny mode
    tiny_batch: int = 16
    tiny_classes: int = 5


ROWS: tuple[Row, ...] = (
    # ROADMAP SOP rows: B = 128 (4 images per class), 224 px crops, 16-mixed as the configs say
    Row("roadmap_resnet50", "roadmap", "roadmap/sop_resnet50", "retrieval", tiny=_TINY_RETRIEVAL),
    Row(
        "roadmap_deit",
        "roadmap",
        "roadmap/sop_deit",
        "retrieval",
        tiny=("model.net.backbone.name=test_vit", "+model.net.backbone.img_size=32"),
    ),
    # HAPPIER SOP: B = 256, [product, category] labels, Sup-H-AP + clustering on 11,318 proxies
    Row("happier_sop", "happier", "happier/sop_happier", "retrieval", levels=2, tiny=_TINY_RETRIEVAL),
    # HEAT ImageNet rows: B = 256 ResNet-50 features (2,048-d), 1,000 classes; fp32 as the configs (and HEAT) train
    Row("heat_imagenet_gmm", "heat", "heat/imagenet_gmm", "heat", classes=1000, tiny=_TINY_HEAT, tiny_batch=32),
    Row("heat_imagenet_el", "heat", "heat/imagenet_el", "heat", classes=1000, tiny=_TINY_HEAT, tiny_batch=32),
    # GalLoP ViT-B/16: the 100-class rows run B = 32, ImageNet B = 128 over 1,000 classes (text checkpointing);
    # GalLoP trained under fp16 AMP (our configs default to fp32: trainer.precision=16-mixed selects it)
    Row("gallop_caltech101", "gallop", "gallop/caltech101_16shot", classes=100, **_GALLOP),
    Row("gallop_imagenet", "gallop", "gallop/imagenet_16shot", classes=1000, **_GALLOP),
)
METHODS = tuple(dict.fromkeys(r.method for r in ROWS))


def select_rows(names: Sequence[str] | None) -> list[Row]:
    """Rows whose method or row name is in ``names`` (all rows for None); an unknown name is an error."""
    if not names:
        return list(ROWS)
    known = {*METHODS, *(r.name for r in ROWS)}
    unknown = sorted(set(names) - known)
    if unknown:
        raise SystemExit(f"unknown method or row {unknown}: choose from {sorted(known)}")
    return [r for r in ROWS if r.method in names or r.name in names]


# ------------------------------------------------------------------ timing
class Phases:
    """Synchronised wall-clock milliseconds of named phases (``with phases("loss"): ...``)."""

    def __init__(self, device: torch.device) -> None:
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        self.ms: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.sync()
        t0 = time.perf_counter()
        yield
        self.sync()
        self.ms[name] = self.ms.get(name, 0.0) + (time.perf_counter() - t0) * 1e3


class Precision:
    """Lightning's ``trainer.precision`` by hand: autocast in the forward, a GradScaler for ``16-mixed``."""

    def __init__(self, name: str, device: torch.device) -> None:
        if name not in PRECISIONS:
            raise SystemExit(f"unknown precision {name!r}: choose from {sorted(PRECISIONS)}")
        self.name, self.device, self.dtype = name, device, PRECISIONS[name]
        self.scaler = torch.amp.GradScaler(device.type, enabled=name == "16-mixed")

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype is not None else nullcontext()


@dataclass
class Case:
    """A built module, its batch and optimiser, and the method's split of one forward + backward.

    ``split(phases, precision) -> loss`` runs the forward and backward phase by phase; ``ours(ms) -> {part: ms}``
    says which of the measured milliseconds are our code.
    """

    module: nn.Module
    batch: dict
    optimizer: torch.optim.Optimizer
    split: Callable[[Phases, Precision], torch.Tensor]
    ours: Callable[[dict[str, float]], dict[str, float]]
    batch_size: int
    notes: dict[str, str] = field(default_factory=dict)


def _optimizer(module) -> torch.optim.Optimizer:
    opt = module.configure_optimizers()
    if isinstance(opt, dict):
        opt = opt["optimizer"]
    return opt


def _quiet(module) -> None:
    module.log = lambda *a, **k: None  # training_step logs; outside a Trainer there is nowhere to log to


def plain_forward_backward(case: Case, prec: Precision) -> torch.Tensor:
    with prec.autocast():
        loss = case.module.training_step(case.batch, 0)
    prec.scaler.scale(loss).backward()
    return loss.detach()


def optimizer_step(case: Case, prec: Precision) -> None:
    prec.scaler.step(case.optimizer)
    prec.scaler.update()
    case.optimizer.zero_grad(set_to_none=True)


def _backward_through(outputs: Sequence[torch.Tensor | None], leaves: Sequence[torch.Tensor | None]) -> None:
    """Push the gradients that our code left on ``leaves`` back through the graph that made ``outputs``."""
    pairs = [(o, leaf.grad) for o, leaf in zip(outputs, leaves) if leaf is not None and leaf.grad is not None]
    if pairs:
        torch.autograd.backward([o for o, _ in pairs], [g for _, g in pairs])


def _leaf(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach().requires_grad_(t.requires_grad)


# ------------------------------------------------------------------ ROADMAP and HAPPIER (RetrievalModule)
def hierarchical_labels(batch: int, levels: int, per_class: int = 4) -> torch.Tensor:
    """``per_class`` images per fine class; with 2 levels the batch's two halves fall in two super-classes (the
    hierarchical sampler's batches). ``[B]`` for one level, ``[B, L]`` (column 0 the finest) otherwise."""
    fine = torch.arange(batch) // per_class  # level l >= 1 has 2^(L - l) nested groups
    if levels == 1:
        return fine
    cols = [fine] + [torch.arange(batch) * 2 ** (levels - lvl) // batch for lvl in range(1, levels)]
    return torch.stack(cols, dim=1)


def retrieval_case(cfg, row: Row, batch: int, image_size: int, dev: torch.device) -> Case:
    module = instantiate(cfg.model)
    _quiet(module)
    module.to(dev).train()
    images = torch.randn(batch, 3, image_size, image_size, device=dev)
    data = {"image": images, "label": hierarchical_labels(batch, row.levels).to(dev)}

    def split(ph: Phases, prec: Precision) -> torch.Tensor:
        with ph("backbone_fwd"), prec.autocast():
            z = module.embed(data["image"])  # [B, D]
        leaf = z.detach().requires_grad_(True)
        with ph("loss"):
            with prec.autocast():
                total, _ = module.compute_loss(leaf, data["label"])
            prec.scaler.scale(total).backward()
        with ph("backbone_bwd"):
            _backward_through([z], [leaf])
        return total.detach()

    terms = "+".join(f"{w:g}*{n}" for n, w in module.loss_weights.items())
    return Case(
        module,
        data,
        _optimizer(module),
        split,
        lambda ms: {"loss": ms["loss"]},
        batch,
        {"loss": terms, "labels": "x".join(map(str, data["label"].shape))},
    )


# ------------------------------------------------------------------ HEAT
def heat_case(cfg, batch: int, classes: int, dev: torch.device) -> Case:
    module = instantiate(cfg.model)
    _quiet(module)
    d = int(cfg.model.mlp.in_dim)
    feats = synthetic(max(4 * d, 8 * classes, batch), d=d, c=classes, seed=0)
    module.prior.fit(feats)
    module.to(dev).train()
    data = {"z": feats.avg[:batch].to(dev), "y": feats.labels[:batch].to(dev)}
    hp = module.hparams

    def split(ph: Phases, prec: Precision) -> torch.Tensor:  # HEATModule.training_step, phase by phase
        with ph("sgld"), prec.autocast():
            real = module.prepare(data["z"])
            neg, _ = module.negatives(real, data["y"])
        with ph("cd_loss"):
            with prec.autocast():
                loss, _ = contrastive_divergence_loss(
                    module.mlp, real, neg, hp.l2, hp.eps_data, temperature=hp.temperature
                )
            prec.scaler.scale(loss).backward()
        return loss.detach()

    notes = {"prior": type(module.prior).__name__, "sgld_steps": str(hp.sgld_steps), "dim": str(d)}
    return Case(
        module, data, _optimizer(module), split, lambda ms: {"sgld": ms["sgld"], "cd_loss": ms["cd_loss"]}, batch, notes
    )


# ------------------------------------------------------------------ GalLoP
class _Returns(nn.Module):
    """Stands in for ``GalLoP.visual`` so that ``GalLoP.forward`` runs only the cosines on given features."""

    def __init__(self, *outputs: torch.Tensor | None) -> None:
        super().__init__()
        self.outputs = outputs

    def forward(self, images: torch.Tensor):  # noqa: ARG002
        return self.outputs


@contextmanager
def _visual_replaced(net: nn.Module, stand_in: nn.Module) -> Iterator[None]:
    visual = net.visual
    net.visual = stand_in
    try:
        yield
    finally:
        net.visual = visual


def gallop_case(cfg, batch: int, classes: int, dev: torch.device) -> Case:
    module = instantiate(cfg.model)
    _quiet(module)
    net = module.net
    net.set_class_names([f"class {i}" for i in range(classes)])
    module.to(dev).train()
    size = net.visual.visual.image_size
    h, w = (size, size) if isinstance(size, int) else size
    g = torch.Generator().manual_seed(0)
    data = {
        "image": torch.randn(batch, 3, h, w, generator=g).to(dev),
        "label": torch.randint(0, classes, (batch,), generator=g).to(dev),
    }
    texts = [t for t in (net.global_text, net.local_text) if t is not None]

    def split(ph: Phases, prec: Precision) -> torch.Tensor:  # GalLoPModule.training_step, phase by phase
        with ph("text_fwd"), prec.autocast():
            tg, tl = net.text_features()  # [K, M_g, D], [K, M_l, D]
        with ph("image_fwd"), prec.autocast():
            g_img, l_img = net.visual(data["image"])  # [B, D], [B, P, D]
        leaves = [_leaf(t) for t in (tg, tl, g_img, l_img)]
        with ph("head"):
            with prec.autocast(), _visual_replaced(net, _Returns(leaves[2], leaves[3])):
                cos_g, cos_l = net(data["image"], text=(leaves[0], leaves[1]))
                out = gallop_loss(cos_g, cos_l, data["label"], module.logit_scale, module.topk, module.dropout)
            prec.scaler.scale(out["loss"]).backward()
        with ph("image_bwd"):  # the frozen tower needs no gradient: this is local_proj's path only
            _backward_through([g_img, l_img], leaves[2:])
        with ph("text_bwd"):
            _backward_through([tg, tl], leaves[:2])
        # references, not part of the step: the plain CLIP image tower, and the prompt assembly on its own
        with ph("ref_image_tower_fwd"), torch.no_grad(), prec.autocast():
            net.visual.visual(data["image"])
        with ph("ref_prompts"):
            with prec.autocast():
                embs = [t.learner.embed(t.encoder.token_embedding, t.token_ids) for t in texts]  # [M, K, L, W]
            torch.autograd.grad(embs, [t.learner.ctx for t in texts], [torch.ones_like(e) for e in embs])
        return out["loss"].detach()

    def ours(ms: dict[str, float]) -> dict[str, float]:
        return {
            "head": ms["head"],
            "local_features": max(0.0, ms["image_fwd"] - ms["ref_image_tower_fwd"]) + ms["image_bwd"],
            "prompts": ms["ref_prompts"],
        }

    n_prompts = sum(t.learner.n_prompts for t in texts)
    notes = {
        "classes": str(classes),
        "prompts": f"{classes}x{n_prompts}",
        "image": f"{h}x{w}",
        "text_ckpt": str(net.global_text.encoder.grad_checkpointing).lower(),
    }
    return Case(module, data, _optimizer(module), split, ours, batch, notes)


# ------------------------------------------------------------------ building and measuring
def compose_row(row: Row, tiny: bool, extra: Sequence[str] = ()):
    """The row's config as ``python -m common.launch experiment=<row>`` composes it, with random-init weights."""
    overrides = [f"experiment={row.experiment}", *_random_init(row), *(row.tiny if tiny else ()), *extra]
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose("train", overrides=overrides)


def _random_init(row: Row) -> tuple[str, ...]:
    if row.kind == "retrieval":
        return ("model.net.backbone.weights=null",)
    if row.kind == "gallop":
        return ("model.net.clip.pretrained=null", "model.net.clip.seed=0")
    return ()


def build_case(row: Row, tiny: bool, dev: torch.device) -> tuple[Case, str]:
    """The row's case and its precision (the row's, the config's, or float32 in the tiny mode)."""
    cfg = compose_row(row, tiny)
    batch = row.tiny_batch if tiny else int(cfg.data.batch_size)
    classes = row.tiny_classes if tiny else row.classes
    precision = "32-true" if tiny else (row.precision or str(cfg.trainer.precision))
    torch.manual_seed(0)
    if row.kind == "retrieval":
        case = retrieval_case(cfg, row, batch, 32 if tiny else row.image_size, dev)
    elif row.kind == "heat":
        case = heat_case(cfg, batch, classes, dev)
    else:
        case = gallop_case(cfg, batch, classes, dev)
    case.notes["config_precision"] = str(cfg.trainer.precision)
    return case, precision


def _grads(module: nn.Module) -> list[torch.Tensor | None]:
    return [None if p.grad is None else p.grad.detach().clone() for p in module.parameters() if p.requires_grad]


def check_split(case: Case, prec: Precision, dev: torch.device) -> tuple[float, float]:
    """Run the plain and the split forward + backward from the same weights and seed; return (|loss difference|,
    max relative gradient difference). They must agree: the split only adds synchronisation points."""
    case.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    plain_loss = plain_forward_backward(case, prec)
    plain = _grads(case.module)
    case.optimizer.zero_grad(set_to_none=True)
    torch.manual_seed(1)
    split_loss = case.split(Phases(dev), prec)
    split = _grads(case.module)
    case.optimizer.zero_grad(set_to_none=True)
    worst = 0.0
    for a, b in zip(plain, split):
        if (a is None) != (b is None):
            return float(abs(plain_loss - split_loss)), math.inf
        if a is not None:
            worst = max(worst, float((a - b).abs().max() / a.abs().max().clamp_min(1e-12)))
    return float(abs(plain_loss - split_loss)), worst


def measure(case: Case, prec: Precision, reps: int, warmup: int, dev: torch.device) -> dict[str, float]:
    """Medians over ``reps`` interleaved rounds (plain step, then split step) after ``warmup`` rounds."""
    cuda = dev.type == "cuda"
    totals: list[float] = []
    splits: list[dict[str, float]] = []
    peak = math.nan
    for r in range(warmup + reps):
        if cuda and r == warmup:
            torch.cuda.reset_peak_memory_stats()
        ph = Phases(dev)
        with ph("step"):
            plain_forward_backward(case, prec)
            optimizer_step(case, prec)
        if r == warmup and cuda:
            peak = torch.cuda.max_memory_allocated() / 2**20
        ph_split = Phases(dev)
        case.split(ph_split, prec)
        with ph_split("optim"):
            optimizer_step(case, prec)
        if r >= warmup:
            totals.append(ph.ms["step"])
            splits.append(ph_split.ms)
    med = {k: statistics.median(s[k] for s in splits) for k in splits[0]}
    out = {"total_ms": statistics.median(totals), "peak_mb": peak}
    out.update({f"{k}_ms": v for k, v in med.items()})
    parts = case.ours(med)
    out.update({f"ours_{k}_ms": v for k, v in parts.items()})
    split_ms = sum(v for k, v in med.items() if not k.startswith("ref_"))
    ours_ms = sum(parts.values())
    out.update(split_ms=split_ms, ours_ms=ours_ms, share=ours_ms / split_ms)
    out["backbone_ms"] = max(0.0, split_ms - ours_ms - med["optim"])
    out["items_per_s"] = case.batch_size / out["total_ms"] * 1e3
    return out


def _fmt(v: float) -> str:
    return "nan" if math.isnan(v) else (f"{v:.4f}" if abs(v) < 1 else f"{v:.2f}")


def run_row(row: Row, tiny: bool, dev: torch.device, reps: int, warmup: int, precision: str | None) -> bool:
    """Build, check (tiny), measure and print one row; False (and a ``train_step_error`` line) when it fails."""
    tag = f"method={row.method},config={row.experiment}"
    try:
        t0 = time.perf_counter()
        case, prec_name = build_case(row, tiny, dev)
        prec = Precision(precision or prec_name, dev)
        build_s = time.perf_counter() - t0
        ok = True
        if tiny:
            dloss, dgrad = check_split(case, prec, dev)
            ok = dloss <= 1e-5 and dgrad <= 1e-4
            print(
                f"train_step_check[{tag}] loss_diff={dloss:.2e} max_rel_grad_diff={dgrad:.2e} ok={int(ok)}", flush=True
            )
        m = measure(case, prec, reps, warmup, dev)
    except Exception as err:  # one failing row must not hide the others
        traceback.print_exc()
        print(f"train_step_error[{tag}] error={type(err).__name__}", flush=True)
        return False
    head = ("total_ms", "ours_ms", "share", "backbone_ms", "optim_ms", "split_ms", "items_per_s", "peak_mb")
    print(
        f"train_step[{tag}] "
        + " ".join(f"{k}={_fmt(m[k])}" for k in head)
        + f" batch={case.batch_size} precision={prec.name} device={dev.type} reps={reps} tiny={int(tiny)}",
        flush=True,
    )
    rest = [k for k in m if k not in head and k != "total_ms"]
    notes = " ".join(f"{k}={v}" for k, v in case.notes.items())
    print(
        f"train_step_parts[{tag}] " + " ".join(f"{k}={_fmt(m[k])}" for k in rest) + f" build_s={build_s:.1f} " + notes,
        flush=True,
    )
    del case
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return ok


def run(names: Sequence[str] | None, tiny: bool, dev: torch.device, reps: int | None, precision: str | None) -> int:
    """Time every selected row; returns the number of rows that failed or disagreed with their split."""
    rows = select_rows(names)
    reps = reps if reps is not None else (1 if tiny else 5)
    warmup = 0 if tiny else 2  # tiny: the split check is the warm-up
    print(
        f"training steps on {dev.type}"
        + (f" ({torch.cuda.get_device_name(dev)})" if dev.type == "cuda" else "")
        + f", torch {torch.__version__}, {'tiny shapes' if tiny else 'paper shapes'}; rows: "
        + ", ".join(r.name for r in rows),
        flush=True,
    )
    return sum(not run_row(r, tiny, dev, reps, warmup, precision) for r in rows)
