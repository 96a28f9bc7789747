"""GalLoP vs CoOp vs zero-shot CLIP on few-shot Fashion-MNIST, with GL-MCM OOD scores and local heatmaps.

``python -m gallop.demo [--out outputs/demo]`` (``make demo-gallop``).

Protocol: 8 in-distribution classes (T-shirt/top ... Sneaker, ids 0-7), ``--shots`` training images per class
(``coop_exact_k``, seed ``--seed``); the ID test set is ``--test-per-class`` test images per ID class; the two held-out
classes (Bag, Ankle boot) are the OOD set. All three methods run through :class:`gallop.module.GalLoPModule` and
:class:`gallop.fewshot.FewShotDataModule` on a Lightning ``Trainer``.

Backbone: with OpenAI CLIP ViT-B/16 weights under ``--weights-dir`` (``make weights-clip``) it is a real few-shot run
on Fashion-MNIST (224 px; slow on CPU). Without them (the default offline case) it runs
:mod:`gallop.scene_study` instead: the same three methods, 16 shots and seeds ``--seeds`` (1 2 3), on cluttered
Fashion-MNIST scenes with the small CLIP that the repo trains itself (``--clip-dir``, the committed
``gallop/assets/tiny_clip_fmnist``; ``make weights-tiny-clip`` rebuilds it), with its three verdicts.

Writes ``{out}/gallop.json`` (all numbers), ``{out}/gallop.md`` (the table and this command),
``{out}/gallop_heatmaps.png`` (local-prompt heatmaps of fixed test images) and
``{out}/artifacts/gallop_curve_{coop,gallop}.csv`` (training loss per step).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch

from common.backbones.clip import ClipWeightsNotFoundError, build_clip
from common.callbacks.loss_curve import LossCurve
from common.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES, FashionMNIST
from common.results.record import write_demo_record
from gallop import scene_study
from gallop.fewshot import FewShotDataModule
from gallop.heatmaps import local_heatmaps, plot_heatmaps, unnormalize
from gallop.model import CoOp, GalLoP, ZeroShotCLIP, count_trainable
from gallop.module import GalLoPModule
from gallop.tiny_clip import ASSET_DIR
from gallop.transforms import clip_transform

ROOT = Path(__file__).resolve().parents[1]
SCENES_NOTE = (
    "no real CLIP weights: running the cluttered-scene study (zero-shot CLIP, CoOp, GalLoP; 16 shots, 3 seeds) "
    "on the small CLIP that the repo trains itself"
)
ID_CLASSES = list(range(8))
OOD_CLASSES = [8, 9]


def _scene_study(a: argparse.Namespace, cmd: str) -> int:
    """No real CLIP weights: the cluttered-scene study on the repo's small CLIP, written as ``gallop.*``."""
    threads = a.threads or 1
    torch.set_num_threads(threads)
    cfg = scene_study._apply_overrides(scene_study.StudyConfig(), a.set)
    seeds = [int(s) for s in str(a.seeds).replace(" ", ",").split(",") if s]
    res = scene_study.run_study(_data_root(a.data_root), seeds, cfg, a.clip_dir)
    payload = scene_study.write_outputs(a.out, res, cfg, seeds, cmd, a.clip_dir, threads, stem="gallop")
    payload["real_weights"] = False
    payload["headline"] = _headline(payload)
    _write_records(payload, Path(a.out) / "records", cmd)
    (Path(a.out) / "gallop.json").write_text(json.dumps(payload, indent=2) + "\n")
    print((Path(a.out) / "gallop.md").read_text())
    return 0


RECORD_ROWS = {"zero-shot CLIP": "zeroshot_clip", "CoOp": "coop", "GalLoP": "gallop"}


def _write_records(payload: dict, records_dir: Path, cmd: str) -> None:
    """One result record (table ``demo``) per method and few-shot seed of the scene study, metric keys without the
    ``test/`` prefix, like every other demo's records."""
    for method, per_seed in payload["runs"].items():
        for seed, metrics in per_seed.items():
            write_demo_record(
                "gallop",
                RECORD_ROWS.get(method, method),
                int(seed),
                {k.removeprefix("test/"): v for k, v in metrics.items()},
                records_dir=records_dir,
                dataset="fashion-mnist-scenes",
                backbone=f"tiny_clip ({payload['clip']['sha256'][:12]})"
                if isinstance(payload.get("clip"), dict)
                else "tiny_clip",
                command=cmd,
            )


def _headline(d: dict) -> dict:
    """The row of ``make demo``'s headline table (``common.demo.HEADLINE_COLUMNS``) from the scene study's payload."""
    top1 = {r["method"]: r["top1"] for r in d["table"] if r["kind"] == "top1"}
    ours = "GalLoP {:.1f} ± {:.1f}".format(*top1["GalLoP (global + local)"])
    names = ("zero-shot CLIP", "CoOp", "GalLoP global-only")
    base = ", ".join("{} {:.1f} ± {:.1f}".format(n, *top1[n]) for n in names)
    short = ("GalLoP > CoOp", "local prompts help", "GL-MCM > MCM (AUROC)")
    said = [
        f"{s}: {'holds' if v['holds'] else 'does NOT hold'}" for s, v in zip(short, d["verdicts"]["headline"].values())
    ]
    verdict = "; ".join(said) + f" ({len(d['seeds'])} seeds, cluttered scenes, the repo's small CLIP)"
    return {"task": "Prompts", "metric": "top-1 %", "ours": ours, "baselines": base, "verdict": verdict}


def _data_root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    cands = [
        Path(os.environ.get("DATA_DIR", ROOT / "data")) / "fashion-mnist",
        Path("/usr/share/datasets/fashion-mnist"),
    ]
    return next((c for c in cands if c.exists()), cands[0])


def _datamodule(root: Path, pre, shots: int, seed: int, test_per_class: int, batch_size: int) -> FewShotDataModule:
    tf_train = clip_transform(True, pre.image_size, pre.mean, pre.std, pre.interpolation)
    tf_test = clip_transform(False, pre.image_size, pre.mean, pre.std, pre.interpolation)
    names = [FASHION_MNIST_CLASSES[c] for c in ID_CLASSES]
    return FewShotDataModule(
        train_dataset=FashionMNIST(root, "train", transform=tf_train),
        test_dataset=FashionMNIST(root, "test", transform=tf_test, classes=ID_CLASSES, subset=test_per_class),
        ood_datasets={
            "held_out": FashionMNIST(root, "test", transform=tf_test, classes=OOD_CLASSES, subset=test_per_class)
        },
        class_names=names,
        class_ids=ID_CLASSES,
        shots=shots,
        seed=seed,
        sampling="coop_exact_k",
        split_dir=None,
        batch_size=batch_size,
        eval_batch_size=100,
    )


def _run(
    name: str, net, dm, epochs: int, lr: float, topk, seed: int, curve: LossCurve | None = None
) -> tuple[dict, GalLoPModule, float]:
    L.seed_everything(seed, workers=True)
    start = time.perf_counter()
    metrics, module = scene_study.fit_and_test(net, dm, epochs, lr, topk, curve=curve, progress=True)
    elapsed = time.perf_counter() - start
    print(f"[gallop demo] {name}: {elapsed:.0f}s, trainable params {count_trainable(net):,}", flush=True)
    return metrics, module, elapsed


def _fmt(m: dict, key: str) -> str:
    return f"{m[key]:.1f}" if key in m else "-"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "results" / "demo"))
    p.add_argument("--data-root", default=None, help="Fashion-MNIST IDX folder (default: $DATA_DIR/fashion-mnist)")
    p.add_argument("--weights-dir", default=os.environ.get("WEIGHTS_DIR", str(ROOT / "weights")))
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--tag", default="openai")
    p.add_argument("--shots", type=int, default=None, help="real-CLIP run: shots per class (default 4 on CPU)")
    p.add_argument("--epochs", type=int, default=None, help="real-CLIP run: epochs (default 2 on CPU)")
    p.add_argument("--test-per-class", type=int, default=None, help="real-CLIP run: test images per class (default 25)")
    p.add_argument("--seed", type=int, default=1, help="few-shot seed of the real-CLIP run")
    p.add_argument("--threads", type=int, default=None, help="torch threads; default 2 (real CLIP), 1 (scene study)")
    p.add_argument("--clip-dir", default=str(ASSET_DIR), help="small CLIP for the scene study (no real weights)")
    p.add_argument("--seeds", default="1,2,3", help="few-shot seeds of the scene study, comma-separated")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=JSON", help="scene-study StudyConfig overrides")
    a = p.parse_args(argv)
    with scene_study.quiet():  # log levels and warning filters come back as they were on the way out
        return _run(a, argv)


def _run(a: argparse.Namespace, argv: list[str] | None) -> int:
    cmd = "python -m gallop.demo" + ("" if argv is None else " " + " ".join(argv))

    try:
        clip, pre = build_clip(a.model, pretrained=a.tag, weights_dir=a.weights_dir, quick_gelu=True)
    except ClipWeightsNotFoundError:
        where = f"{a.weights_dir}/open_clip/{a.model}-{a.tag}"
        print(f"[gallop demo] no {a.model} {a.tag} weights in {where} (`make weights-clip` fetches them)", flush=True)
        print(f"[gallop demo] {SCENES_NOTE} ({a.clip_dir})", flush=True)
        return _scene_study(a, cmd)
    torch.set_num_threads(a.threads or 2)
    backbone = f"{a.model} ({a.tag} weights from {a.weights_dir})"
    shots, epochs, per_class, topk, lr = a.shots or 4, a.epochs or 2, a.test_per_class or 25, [5, 10, 15, 20], 2e-3
    clip.eval()
    dm = _datamodule(_data_root(a.data_root), pre, shots, a.seed, per_class, batch_size=32)

    results, timings = {}, {}
    t0 = time.perf_counter()
    results["zero-shot CLIP"], _, timings["zero-shot CLIP"] = _run(
        "zero-shot", ZeroShotCLIP(clip), dm, 0, lr, topk, a.seed
    )
    curves = {"coop": LossCurve(), "gallop": LossCurve()}  # training loss per step, for the report
    results["CoOp"], _, timings["CoOp"] = _run("CoOp", CoOp(clip), dm, epochs, lr, topk, a.seed, curves["coop"])
    gnet = GalLoP(clip, n_global=4, n_local=4)
    results["GalLoP"], gmod, timings["GalLoP"] = _run("GalLoP", gnet, dm, epochs, lr, topk, a.seed, curves["gallop"])
    for name, curve in curves.items():
        curve.write_csv(Path(a.out) / "artifacts" / f"gallop_curve_{name}.csv")

    # heatmaps of 6 fixed ID test images (the first of each of classes 0..5)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    test = dm.test_dataset
    labels = test.labels
    picks = [int((labels == c).nonzero()[0]) for c in range(6)]
    images = torch.stack([test[i]["image"] for i in picks])
    gnet.eval()
    maps, pred = local_heatmaps(gnet, images, None, topk)
    titles = [f"true {dm.class_names[int(labels[i])]}\npred {dm.class_names[int(c)]}" for i, c in zip(picks, pred)]
    fig = plot_heatmaps(unnormalize(images, pre.mean, pre.std), maps, titles, out / "gallop_heatmaps.png")
    import matplotlib.pyplot as plt

    plt.close(fig)

    header = (
        "| method | top-1 (8 ID classes) | global-only | local-only | MCM FPR95 / AUROC | GL-MCM FPR95 / AUROC |\n"
        "|---|---|---|---|---|---|"
    )
    rows = []
    for name, m in results.items():
        ood = "test/ood/held_out"
        rows.append(
            f"| {name} | {_fmt(m, 'test/acc')} | {_fmt(m, 'test/acc_global')} | {_fmt(m, 'test/acc_local')} | "
            f"{100 * m[f'{ood}/mcm/fpr95_closest']:.1f} / {100 * m[f'{ood}/mcm/auroc']:.1f} | "
            + (
                f"{100 * m[f'{ood}/gl_mcm/fpr95_closest']:.1f} / {100 * m[f'{ood}/gl_mcm/auroc']:.1f} |"
                if f"{ood}/gl_mcm/auroc" in m
                else "- |"
            )
        )
    md = "\n".join(
        [
            "## GalLoP demo: few-shot Fashion-MNIST (GalLoP vs CoOp vs zero-shot CLIP)",
            "",
            f"Command: `{cmd}` (`make demo-gallop`). Backbone: {backbone}. {shots} shots x 8 ID classes "
            f"(coop_exact_k, seed {a.seed}), {epochs} epochs, SGD lr {lr}, top-k {topk}; test: {per_class} images per "
            f"ID class; OOD: the held-out classes Bag and Ankle boot ({per_class} each). FPR95 is ID-positive "
            "at the operating point whose ID recall is closest to 95% (GalLoP's `fpr_and_fdr_at_recall` convention, "
            "`fpr95_closest`), in %; accuracies in %.",
            "",
            f"Real few-shot run: {backbone}.",
            "",
            header,
            *rows,
            "",
            "Heatmaps (local-prompt similarity to the predicted class): `gallop_heatmaps.png` in this folder. "
            f"Wall time: {time.perf_counter() - t0:.0f} s on {a.threads} threads "
            f"(CPU time of this process: {time.process_time():.0f} s; wall time grows when other jobs share the cores).",
        ]
    )
    payload = {
        "command": cmd,
        "real_weights": True,
        "backbone": backbone,
        "shots": shots,
        "epochs": epochs,
        "seed": a.seed,
        "topk": topk,
        "lr": lr,
        "test_per_class": per_class,
        "id_classes": [FASHION_MNIST_CLASSES[c] for c in ID_CLASSES],
        "ood_classes": [FASHION_MNIST_CLASSES[c] for c in OOD_CLASSES],
        "trainable_params": {"zero-shot CLIP": 0, "CoOp": count_trainable(CoOp(clip)), "GalLoP": count_trainable(gnet)},
        "seconds": timings,
        "cpu_seconds_total": time.process_time(),
        "metrics": results,
        "heatmaps": "gallop_heatmaps.png",  # next to this file
    }
    (out / "gallop.json").write_text(json.dumps(payload, indent=2))
    (out / "gallop.md").write_text(md + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
