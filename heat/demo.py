"""HEAT on Fashion-MNIST in a few minutes on 2 CPU cores: ``python -m heat.demo [--out outputs/demo] [--seeds 0,1,2]
[<hydra overrides>]`` (``make demo-heat``).

Protocol (configs/experiment/heat/demo_fmnist*.yaml; all seeds fixed):

- **ID**: Fashion-MNIST classes 0-7 (T-shirt ... Sneaker). A small CNN (:class:`heat.classifier.SmallCNN`, 64-d last
  stage on a 7x7 map) is trained on a per-class subset of the training set for a few epochs, never seeing classes 8
  and 9.
- **near-OOD**: the held-out Fashion-MNIST test images of Bag (8) and Ankle boot (9).
- **far-OOD**: scikit-learn's bundled 8x8 digits, upscaled to 20x20 and padded to 28x28 (MNIST-like framing);
  Gaussian noise (pixel mean/std of Fashion-MNIST, clipped); uniform noise on [0, 255].
- Features (avg/std/max-pooled last stage, logits) are extracted once per seed and cached (:class:`DemoFeatures`).
- Priors EL, GMM, GMM-std; baselines MSP, Energy, Mahalanobis, KNN; a residual EBM per prior trained briefly with
  HEAT's recipe (SGLD on the hybrid energy, CD loss, Adam betas (0, 0.999)); the composition (beta = 0, z-scores).
- Metrics: ``common.metrics.ood.ood_metrics`` (FPR95 with ID positive as HEAT, and AUROC), on near-OOD and on the
  union of the far-OOD sets.

Every step runs from a config, each a Hydra multirun over the seeds (:func:`common.demo.launch`), into
``<out>/runs/heat``: the launcher trains the classifier (``heat/demo_fmnist_classifier``) and the three EBMs
(``heat/demo_fmnist_{el,gmm,gmm_std}``), then ``python -m heat.evaluate`` scores every scorer
(``heat/demo_fmnist_eval``) and writes one result record per (scorer, seed) (table ``demo``, ``<out>/records``). Every
run logs to wandb (offline unless WANDB_MODE=online), group ``heat/demo``. This script then reads the records back:
``<out>/heat.json`` holds the mean ± std over seeds and the verdict (the composition must beat every single scorer on
the seeds' mean, by more than the std of the paired difference), ``<out>/heat.md`` the table; the loss curves of the
EBMs and the score arrays of the composition and MSP (first seed) go to ``<out>/artifacts`` for the report.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import DataLoader, TensorDataset

from common.data.datasets.fashion_mnist import load_fashion_mnist
from common.demo import DEFAULT_OUT, SEEDS, demo_records, launch, parse_seeds
from common.report.artifacts import export_loss_curve
from common.results.record import ResultRecord
from common.results.seeds import MIN_SEEDS, Stat, paired, stat, verdict
from heat.cache import extract_features
from heat.classifier import ImageClassifier
from heat.datamodule import FeatureDataModule
from heat.features import Features

ID_CLASSES = tuple(range(8))
HELD_OUT = (8, 9)
MEAN, STD = 0.2860, 0.3530  # Fashion-MNIST pixel statistics (of [0, 1] images)
FAR_SETS = ("far_digits", "far_gaussian", "far_uniform")
#: the OOD sets of the evaluation: near = the held-out classes, far = the union of the far sets
OOD_SETS = ("heldout", "digits_noise")
TRAINING = ("heat/demo_fmnist_classifier", "heat/demo_fmnist_el", "heat/demo_fmnist_gmm", "heat/demo_fmnist_gmm_std")
EVALUATION = "heat/demo_fmnist_eval"
#: record row -> label, in table order
ROWS = {
    "msp": "MSP",
    "energy": "Energy",
    "mahalanobis": "Mahalanobis",
    "knn_k50": "KNN (k=50)",
    "el": "EL",
    "gmm": "GMM",
    "gmm_std": "GMM-std",
    "heat_el": "HEAT-EL",
    "heat_gmm": "HEAT-GMM",
    "heat_gmm_std": "HEAT-GMM-std",
    "heat": "HEAT (sum of z-scored HEAT-EL/GMM/GMM-std)",
    "priors_composed_no_ebm": "priors composed (no EBM)",
}
COMPOSED = ("heat", "priors_composed_no_ebm")
#: EBM row -> the prior's name in the artifacts (``heat_curve_<name>.csv``)
CURVES = {"heat_el": "EL", "heat_gmm": "GMM", "heat_gmm_std": "GMM-std"}
KEYS = ("fpr95", "fpr95_ood_positive", "auroc")


def digits_28x28() -> np.ndarray:
    """scikit-learn's 1,797 8x8 digits (0..16) as uint8 28x28 images, 20x20 digit centred (MNIST framing)."""
    from sklearn.datasets import load_digits

    out = np.zeros((1797, 28, 28), dtype=np.uint8)
    for i, im in enumerate(load_digits().images):
        small = Image.fromarray((im * (255.0 / 16.0)).astype(np.uint8))
        out[i, 4:24, 4:24] = np.asarray(small.resize((20, 20), Image.BILINEAR))
    return out


def build_sets(data_dir: Path, per_class: int, seed: int) -> dict[str, tuple[np.ndarray, np.ndarray | None]]:
    """uint8 image arrays [N, 28, 28] (and labels) of every split used by the demo; ``seed`` draws the training subset
    and the noise images."""
    rng = np.random.default_rng(seed)
    xtr, ytr = load_fashion_mnist(data_dir, "train")
    xte, yte = load_fashion_mnist(data_dir, "test")
    keep = np.concatenate([rng.permutation(np.flatnonzero(ytr == c))[:per_class] for c in ID_CLASSES])
    keep.sort()
    id_test = np.isin(yte, ID_CLASSES)
    n_noise = 1000
    gauss = np.clip(rng.normal(MEAN * 255, STD * 255, size=(n_noise, 28, 28)), 0, 255).astype(np.uint8)
    unif = rng.integers(0, 256, size=(n_noise, 28, 28), dtype=np.uint8)
    return {
        "id_train": (xtr[keep], ytr[keep]),
        "id_test": (xte[id_test], yte[id_test]),
        "near_heldout": (xte[~id_test], None),
        "far_digits": (digits_28x28(), None),
        "far_gaussian": (gauss, None),
        "far_uniform": (unif, None),
    }


def to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 images ``[N, 28, 28]`` -> normalised float ``[N, 1, 28, 28]``."""
    return (torch.from_numpy(x).float().div_(255.0).sub_(MEAN).div_(STD)).unsqueeze(1)


def _tensors(x: np.ndarray, y: np.ndarray | None) -> TensorDataset:
    return TensorDataset(to_tensor(x)) if y is None else TensorDataset(to_tensor(x), torch.from_numpy(y))


class DemoImages(L.LightningDataModule):
    """The classifier's data: the seed's ``per_class`` training images of each ID class (shuffled by the seed) and
    the ID test images."""

    def __init__(self, data_dir: str, per_class: int = 1500, seed: int = 0, batch_size: int = 128) -> None:
        super().__init__()
        sets = build_sets(Path(data_dir), per_class, seed)
        self.train_set, self.test_set = _tensors(*sets["id_train"]), _tensors(*sets["id_test"])
        self.seed, self.batch_size = seed, batch_size

    def train_dataloader(self) -> DataLoader:
        g = torch.Generator().manual_seed(self.seed)
        return DataLoader(self.train_set, batch_size=self.batch_size, shuffle=True, generator=g)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.test_set, batch_size=512)


class DemoFeatures(FeatureDataModule):
    """The features of every demo set under the seed's trained classifier (``checkpoint`` of an
    :class:`heat.classifier.ImageClassifier` around ``backbone``), cached in ``cache_dir`` (the key holds the weights'
    hash): ID train and test, and the OOD sets :data:`OOD_SETS` (the held-out classes; digits + noise as one set).

    ``backbone`` is a config. The classifier is built and the features extracted (or read from the cache) with the
    global RNG forked: the seeded initialisation of the model that follows (the EBM) is the same whether or not the
    features were cached.
    """

    def __init__(
        self,
        data_dir: str,
        backbone: dict,
        checkpoint: str,
        cache_dir: str,
        per_class: int = 1500,
        seed: int = 0,
        pooling: str = "avg",
        batch_size: int = 256,
    ) -> None:
        if not Path(checkpoint).is_file():
            raise FileNotFoundError(
                f"no classifier checkpoint {checkpoint}: train it first with "
                f"`python -m common.launch experiment=heat/demo_fmnist_classifier seed={seed}` (same heat_demo.runs)"
            )
        with torch.random.fork_rng(devices=[]):  # loading and extracting (DataLoader iterators) draw from it
            feats = _extract(data_dir, backbone, checkpoint, cache_dir, per_class, seed)
        far = Features.concat([feats[k] for k in FAR_SETS])
        super().__init__(
            train=feats["id_train"],
            pooling=pooling,
            val_id=feats["id_test"],
            val_ood=[feats["near_heldout"], far],
            ood_names=list(OOD_SETS),
            batch_size=batch_size,
            seed=seed,
        )


def _extract(
    data_dir: str, backbone: dict, checkpoint: str, cache_dir: str, per_class: int, seed: int
) -> dict[str, Features]:
    """``{set: features}`` of every set of :func:`build_sets` under the trained classifier, through the cache."""
    net = ImageClassifier.load_from_checkpoint(checkpoint, backbone=instantiate(backbone), map_location="cpu")
    net = net.backbone.eval()
    feats = {}
    for name, (x, y) in build_sets(Path(data_dir), per_class, seed).items():
        feats[name] = extract_features(
            net,
            DataLoader(_tensors(x, y), batch_size=512),
            cache_dir=cache_dir,
            backbone="SmallCNN-w16",
            checkpoint=net,  # the trained weights enter the cache key by their state-dict hash
            dataset="fashion-mnist-demo",
            split=name,
            transform=f"normalize({MEAN},{STD})",
            num_samples=len(x),
        ).to(dtype=torch.float32)
    return feats


# ---------------------------------------------------------------------------------------------- the summary
def claim(records: list[ResultRecord]) -> dict:
    """Does the composition beat every single scorer? Per split and metric: the paired difference to the best
    single scorer (best on the seeds' mean) must be beyond its seed std (common.results.seeds.verdict)."""
    singles = [r for r in ROWS if r not in COMPOSED]
    beats, detail = {}, []
    for split in ("near", "far"):
        for m in ("auroc", "fpr95"):
            key, higher = f"{split}/{m}", not m.startswith("fpr")
            best = (max if higher else min)(singles, key=lambda r: stat(records, "heat", r, key).mean)
            d = paired(records, "heat", "heat", best, key)
            word = verdict(d, higher_is_better=higher)
            beats[f"{split}_{m}"] = word == "ahead"
            detail.append(f"{split} {m.upper()}: vs {best} {d.text(100, 1, signed=True)} ({word})")
    n = stat(records, "heat", "heat", "near/auroc").n
    caveat = "" if n >= MIN_SEEDS else f" This rests on {n} seed(s) only."
    return {
        "text": "HEAT's paper: composing the HEAT-corrected energies beats every single scorer.",
        "holds": all(beats.values()),
        "n_seeds": n,
        "beats": beats,
        "detail": "HEAT composition - best single scorer (x100), paired by seed: " + "; ".join(detail) + "." + caveat,
    }


def table(records: list[ResultRecord]) -> str:
    """Markdown table, x100, mean ± std over seeds: FPR95 (ID positive, HEAT), FPR95 (OOD positive), AUROC."""
    lines = [
        "| scorer | near FPR95 | near FPR95 (OOD+) | near AUROC | far FPR95 | far FPR95 (OOD+) | far AUROC |",
        "|---|---|---|---|---|---|---|",
    ]
    for row, label in ROWS.items():
        cells = []
        for split in ("near", "far"):
            for k in KEYS:
                s = stat(records, "heat", row, f"{split}/{k}")
                cells.append(f"{100 * s.mean:.1f} ± {100 * s.std:.1f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def headline(records: list[ResultRecord], c: dict) -> dict:
    """The row of ``make demo``'s headline table: HEAT's near/far FPR95 vs the best single scorer, and the verdict."""
    heat_near, heat_far = (stat(records, "heat", "heat", f"{s}/fpr95") for s in ("near", "far"))
    singles = [r for r in ROWS if r not in COMPOSED]
    best = {s: min(singles, key=lambda r: stat(records, "heat", r, f"{s}/fpr95").mean) for s in ("near", "far")}
    base = "; ".join(
        f"{s}: {ROWS[best[s]]} {100 * stat(records, 'heat', best[s], f'{s}/fpr95').mean:.1f}" for s in ("near", "far")
    )
    yes = [k.replace("_", " ").replace("fpr95", "FPR95").replace("auroc", "AUROC") for k, v in c["beats"].items() if v]
    where = "on " + ", ".join(yes) + " only" if 0 < len(yes) < len(c["beats"]) else ("everywhere" if yes else "nowhere")
    state = "claim holds" if c["holds"] else "claim does NOT hold"
    return {
        "task": "OOD (near / far)",
        "metric": "FPR95 (lower is better)",
        "ours": f"HEAT {100 * heat_near.mean:.1f} ± {100 * heat_near.std:.1f} / "
        f"{100 * heat_far.mean:.1f} ± {100 * heat_far.std:.1f}",
        "baselines": f"best single scorer {base}",
        "verdict": f"{state} over {c['n_seeds']} seeds: the composition beats every single scorer {where}",
    }


def export_artifacts(runs: Path, seed: int, artifacts: Path) -> None:
    """The report's pictures from the first seed's runs: each EBM's contrastive-divergence loss per step
    (``heat_curve_<prior>.csv``) and the score arrays of the composition and MSP (``heat_ood_<name>.npz``)."""
    for row, prior in CURVES.items():
        export_loss_curve(
            runs / f"heat_demo_fmnist_{row.removeprefix('heat_')}" / f"seed{seed}", artifacts, "heat", prior
        )
    labels = {"heldout": "near (held-out classes)", "digits_noise": "far (digits+noise)"}
    for scorer, name in (("heat", "composition"), ("msp", "msp")):
        data = np.load(runs / "heat_demo_fmnist_eval" / f"seed{seed}" / f"scores_{scorer}.npz")
        arrays = {"id": data["id"], **{f"ood/{labels[k]}": data[f"ood/{k}"] for k in OOD_SETS}}
        np.savez_compressed(artifacts / f"heat_ood_{name}.npz", **arrays)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="where heat.json/.md, records and runs go")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated seeds")
    args, overrides = parser.parse_known_args(argv)
    out, seeds = Path(args.out), parse_seeds(args.seeds)
    runs = out.resolve() / "runs" / "heat"
    overrides = [f"heat_demo.runs={runs}", *overrides]
    start = time.perf_counter()
    _, trained = launch(list(TRAINING), seeds, out, "heat", overrides)
    _, evaluated = launch([EVALUATION], seeds, out, "heat", overrides, entry="heat.evaluate")
    wall = time.perf_counter() - start
    records = [r for r in demo_records(out, "heat") if r.seed in seeds]
    missing = [(row, s) for row in ROWS for s in seeds if not any(r.row == row and r.seed == s for r in records)]
    if missing:
        raise RuntimeError(f"no result record for {missing} under {out / 'records'}")
    export_artifacts(runs, seeds[0], out / "artifacts")
    accuracy = {
        s: json.loads((runs / "heat_demo_fmnist_classifier" / f"seed{s}" / "metrics.json").read_text())["test/acc"]
        for s in seeds
    }
    sizes = json.loads((runs / "heat_demo_fmnist_eval" / f"seed{seeds[0]}" / "fashion-mnist-demo.json").read_text())
    n = sizes["sizes"]
    acc = Stat.of(accuracy.values())
    c = claim(records)
    command = f"{trained}; {evaluated}"
    payload = {
        "command": command,
        "seeds": seeds,
        "id_classes": list(ID_CLASSES),
        "sizes": n,
        "classifier_test_accuracy": {str(s): a for s, a in accuracy.items()},
        "rows": {
            row: {f"{s}/{k}": vars(stat(records, "heat", row, f"{s}/{k}")) for s in ("near", "far") for k in KEYS}
            for row in ROWS
        },
        "claim": c,
        "composition_beats_every_single_scorer": c["beats"],
        "headline": headline(records, c),
        "wall_seconds": wall,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "heat.json").write_text(json.dumps(payload, indent=2))
    md = (
        f"## HEAT demo (Fashion-MNIST)\n\nCommand: `make demo-heat` (= `{command}`), seeds {seeds}, {wall:.0f} s. "
        f"Mean ± std over seeds (population std), x100.\n\nID: Fashion-MNIST classes 0-7 ({n['train']} train "
        f"images); classifier test accuracy {100 * acc.mean:.1f} ± {100 * acc.std:.1f}%. Near-OOD: held-out classes "
        f"8, 9 ({n['heldout']}). Far-OOD: sklearn digits, Gaussian and uniform noise ({n['digits_noise']}). FPR95 = "
        "FPR on OOD at 95% TPR on ID (HEAT's convention); FPR95 (OOD+) = FPR on ID at 95% TPR on OOD (OpenOOD v1.5)."
        f"\n\n{table(records)}\n\n{c['detail']}\n"
    )
    (out / "heat.md").write_text(md)
    print(md)
    return payload


if __name__ == "__main__":
    main()
