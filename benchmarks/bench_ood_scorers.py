"""Throughput of the HEAT-package OOD scorers at CIFAR scale, and the HEAT training step time.

    python benchmarks/bench_ood_scorers.py [--scale 1.0] [--threads 1]     (make bench-heat)

Synthetic post-ReLU features shaped like CIFAR-10 ResNet-34 ones: 50,000 x 512 train (10 classes), 10,000 test, times
``--scale``. For each scorer: fit time and fit throughput (train features / s), score throughput (test features / s).
Then one HEAT optimisation step (proposals, K SGLD steps on the hybrid energy, CD loss, Adam) at batch 1024 for the
CIFAR-10 HEAT-GMM (K = 40) and HEAT-EL (K = 50) rows, built from configs/experiment/heat/cifar10_{gmm,el}.yaml (tied
1024x4 MLP). A peer comparison: the KNN scorer (through common.metrics.knn, faiss inner product) against a plain faiss
IndexFlatL2 search (HEAT's implementation), with the ratio printed.
"""

from __future__ import annotations

import argparse
import time

import hydra
import numpy as np
import torch
from hydra import compose, initialize_config_dir

from common.utils.config_check import CONFIG_DIR
from heat.features import Features
from heat.module import HEATModule
from heat.scorers.dice import DICE
from heat.scorers.gaussian import GMM, GMMStd, Mahalanobis, SSDPlus
from heat.scorers.knn import KNN
from heat.scorers.logits import MSP, Energy, EnergyLogits, MaxLogit
from heat.scorers.react import ReAct
from heat.scorers.vim import ViM


def synthetic(n: int, d: int = 512, c: int = 10, seed: int = 0, w=None) -> Features:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, c, (n,), generator=g)
    centers = torch.randn(c, d, generator=torch.Generator().manual_seed(99))
    avg = torch.relu(centers[y] + 0.5 * torch.randn(n, d, generator=g))
    std = torch.relu(0.5 * centers[y] + 0.5 * torch.randn(n, d, generator=g)) + 0.01
    w = torch.randn(c, d, generator=torch.Generator().manual_seed(7)) / d**0.5 if w is None else w
    b = torch.zeros(c)
    return Features(avg=avg, std=std, max=avg, logits=avg @ w.T + b, labels=y, fc_weight=w, fc_bias=b)


def timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def heat_row(experiment: str, train: Features) -> tuple[HEATModule, int]:
    """The HEATModule of a paper row (``configs/experiment/<experiment>.yaml``: its prior fitted on ``train``, its
    MLP, SGLD and CD settings) and its number of SGLD steps K."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        model = compose(config_name="train", overrides=[f"experiment={experiment}"]).model
    module = hydra.utils.instantiate(model)
    module.prior.fit(train)
    return module, int(model.sgld_steps)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--heat-steps", type=int, default=2, help="timed HEAT steps (best of)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    n_train, n_test = int(50_000 * args.scale), int(10_000 * args.scale)
    train = synthetic(n_train)
    test = synthetic(n_test, seed=1, w=train.fc_weight)
    print(f"features: train {n_train} x 512, test {n_test} x 512, torch threads {args.threads}")
    scorers = {
        "MSP": MSP(),
        "MaxLogit": MaxLogit(),
        "Energy": Energy(),
        "EL (prior)": EnergyLogits(),
        "GMM (prior)": GMM(),
        "GMM-std (prior)": GMMStd(),
        "Mahalanobis": Mahalanobis(),
        "SSD+": SSDPlus(),
        "KNN k=50": KNN(k=50),
        "ViM D=256": ViM(dim=256),
        "DICE p=90": DICE(p=90),
        "ReAct p=95": ReAct(percentile=95),
    }
    print(f"{'scorer':<18}{'fit s':>9}{'fit feat/s':>14}{'score s':>9}{'score feat/s':>15}")
    for name, s in scorers.items():
        t_fit = timed(lambda s=s: s.fit(train))
        t_score = timed(lambda s=s: s.score(test), repeat=2)
        fit_tp = f"{n_train / t_fit:,.0f}" if t_fit > 1e-4 else "(no fit)"
        print(f"{name:<18}{t_fit:>9.3f}{fit_tp:>14}{t_score:>9.3f}{n_test / t_score:>15,.0f}")

    import faiss

    bank = KNN(k=50).fit(train).bank.numpy()
    q = torch.nn.functional.normalize(test.avg, dim=1).numpy()

    def faiss_l2():
        index = faiss.IndexFlatL2(bank.shape[1])
        index.add(bank)
        index.search(q, 50)

    knn = KNN(k=50).fit(train)
    t_ours, t_peer = timed(lambda: knn.score(test), repeat=2), timed(faiss_l2, repeat=2)
    print(
        f"KNN score: ours (common.metrics.knn) {t_ours:.3f} s vs faiss IndexFlatL2 {t_peer:.3f} s, "
        f"ratio ours/peer {t_ours / t_peer:.2f}"
    )

    for name, row in (("HEAT-GMM (C10)", "heat/cifar10_gmm"), ("HEAT-EL (C10)", "heat/cifar10_el")):
        module, k = heat_row(row, train)
        opt = module.configure_optimizers()["optimizer"]
        batch = {"z": train.avg[:1024], "y": train.labels[:1024]}

        def step(module=module, opt=opt, batch=batch):
            opt.zero_grad()
            module.training_step(batch, 0).backward()
            opt.step()

        module.log = lambda *a, **k: None  # outside a Trainer
        t = timed(step, repeat=args.heat_steps)
        print(
            f"{name}: one training step at batch 1024 with K={k} SGLD steps: {t:.2f} s ({t / (k + 1) * 1000:.0f} ms "
            f"per energy gradient)"
        )
    print(f"numpy {np.__version__}, torch {torch.__version__}")


if __name__ == "__main__":
    main()
