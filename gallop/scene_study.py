"""GalLoP offline: few-shot adaptation of the repo's small CLIP to cluttered Fashion-MNIST scenes, from configs.

The runs are launcher rows, ``configs/experiment/gallop/demo_scenes_{zeroshot,coop,gallop}.yaml`` (the setting, the
budget and the learning rates are in ``demo_scenes_base.yaml``); ``python -m gallop.demo`` (``make demo-gallop``,
part of ``make demo``) runs them over the few-shot seeds 1, 2, 3 and summarises them with this module. This module
holds what the rows and the summary need:

- :func:`load_clip` and :func:`caption_templates`: the committed small CLIP (``gallop/assets/tiny_clip_fmnist``,
  trained by ``make weights-tiny-clip`` on single Fashion-MNIST items of the 8 ID classes; see ``gallop.tiny_clip``)
  and its caption templates, for the rows' ``_target_``;
- :class:`SceneDiagnostics` (callback): the local-only top-1 of zero-shot CLIP and GalLoP, and the share of the
  top-5 patches of the predicted class's local map that lie on the labelled item (:func:`local_diagnostics`);
- :class:`SceneHeatmaps` (callback): GalLoP's local heatmaps of fixed ID and OOD test scenes;
- the summary: :func:`table_rows` (mean ± std over seeds), :func:`verdicts` (paired per-seed differences: a claim
  holds when the mean difference favours it and every seed agrees) and :func:`markdown`.

Task (``common.data.datasets.fmnist_scenes``): 64 px scenes whose labelled item is the largest garment among 2-4
smaller distractors of other classes and pixel noise; the small CLIP never saw a scene. Two OOD sets of held-out
classes (Bag, Ankle boot): ``held_out`` (a held-out item among held-out distractors: the scene holds no ID item, as
OOD benchmarks are built) and ``held_out_in_id_clutter`` (a held-out item among ID distractors: ID and OOD scenes
differ only in the largest item; a local score can be fooled by the ID distractors). OOD scores: MCM (global) and
GL-MCM (global + local), with FPR95 (``fpr95_closest``, GalLoP's convention) and AUROC from
``common.metrics.ood.ood_metrics``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch

from common.backbones.clip import build_clip
from common.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES
from common.data.datasets.fmnist_scenes import HELD_OUT_CLASSES, ID_CLASSES, FashionMNISTScenes, SceneConfig
from gallop.global_local_loss import topk_reduce
from gallop.tiny_clip import ASSET_DIR, TEMPLATES, WEIGHTS_NAME, class_names, sha256

ROOT = Path(__file__).resolve().parents[1]
METHODS = ("zero-shot CLIP", "CoOp", "GalLoP")
OOD_SETS = {"held_out": HELD_OUT_CLASSES, "held_out_in_id_clutter": ID_CLASSES}  # name -> distractor classes


def load_clip(folder: str | Path = ASSET_DIR) -> torch.nn.Module:
    """The small CLIP (or any open_clip ``local-dir`` folder), in eval mode. It is built with the global RNG forked:
    the seeded initialisation of the prompts that follows is the same as without it."""
    with torch.random.fork_rng(devices=[]):
        clip, _ = build_clip(f"local-dir:{Path(folder)}")
    return clip.eval()


def caption_templates() -> list[str]:
    """The small CLIP's caption templates (those it was trained with), for zero-shot CLIP."""
    return list(TEMPLATES)


@torch.no_grad()
def local_diagnostics(
    net: torch.nn.Module, dataset: FashionMNISTScenes, topk: Sequence[int], k: int = 5, batch_size: int = 200
) -> dict[str, float]:
    """Local-only top-1 and where the local map of the predicted class peaks, on ``dataset`` (in %).

    - ``diag/acc_local``: top-1 of ``argmax_c mean_m topk_reduce(l)[:, c, m]`` (GalLoP's local-only prediction;
      for zero-shot CLIP the same rule on its frozen local features, its one class embedding used at every scale);
    - ``diag/box_hit``: share of the top-``k`` patches of the map ``mean_m l[:, p, pred, m]`` (as ``gallop.heatmaps``,
      ``pred`` the method's own prediction) whose centre lies in the labelled item's box; ``diag/box_chance``: the mean
      share of patches in that box.
    """
    from gallop.heatmaps import local_heatmaps

    net.eval()
    correct, hits, chance = [], [], []
    for start in range(0, len(dataset), batch_size):
        idx = list(range(start, min(start + batch_size, len(dataset))))
        batch = [dataset[i] for i in idx]
        images = torch.stack([b["image"] for b in batch])
        labels = torch.stack([b["label"] for b in batch])
        _, loc = net(images)  # [B, P, K, M]
        if loc.shape[-1] == 1 and len(topk) > 1:  # zero-shot CLIP: one class embedding serves every top-k scale
            loc = loc.expand(-1, -1, -1, len(topk))
        correct.append((topk_reduce(loc, topk).mean(-1).argmax(-1) == labels).float())
        maps, _ = local_heatmaps(net, images, None, topk)  # [B, h, w]
        side = maps.shape[-1]
        centres = (torch.arange(side) + 0.5) * dataset.config.canvas / side  # px
        for j, i in enumerate(idx):
            main = dataset.layout(i).items[0]
            in_y = (centres >= main.y) & (centres < main.y + main.size)
            in_x = (centres >= main.x) & (centres < main.x + main.size)
            inside = (in_y[:, None] & in_x[None, :]).flatten()
            hits.append(inside[maps[j].flatten().topk(k).indices].float().mean().item())
            chance.append(inside.float().mean().item())
    return {
        "diag/acc_local": 100.0 * torch.cat(correct).mean().item(),
        "diag/box_hit": 100.0 * float(np.mean(hits)),
        "diag/box_chance": 100.0 * float(np.mean(chance)),
    }


class SceneDiagnostics(L.Callback):
    """At the end of ``test``, :func:`local_diagnostics` of the module's network on the ID test scenes, logged as
    ``test/diag/*`` (so they reach the metrics, the result record and the loggers)."""

    def on_test_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dataset = trainer.datamodule.test_dataset
        for key, value in local_diagnostics(pl_module.net, dataset, pl_module.topk).items():
            pl_module.log(f"test/{key}", value)


class SceneHeatmaps(L.Callback):
    """At the end of ``test``, GalLoP's local heatmaps of fixed ID and OOD test scenes into ``path``
    (:func:`plot_scene_heatmaps`); ``mean``/``std``: the normalisation to undo for the pictures."""

    def __init__(self, path: str, mean: Sequence[float], std: Sequence[float]) -> None:
        self.path, self.mean, self.std = path, list(mean), list(std)

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        dm = trainer.datamodule
        plot_scene_heatmaps(pl_module.net, dm.test_dataset, dm.ood_datasets["held_out"], pl_module.topk, self)


# ---------------------------------------------------------------------------------------------- summaries
def _stats(values: Sequence[float]) -> tuple[float, float]:
    """Mean and population std (as CoOp's parse_test_res.py)."""
    a = np.asarray(values, dtype=np.float64)
    return float(a.mean()), float(a.std())


ACC_ROWS = (  # (method, row label, metric)
    ("zero-shot CLIP", "zero-shot CLIP", "test/acc"),
    ("zero-shot CLIP", "zero-shot CLIP, local features only", "diag/acc_local"),
    ("CoOp", "CoOp", "test/acc"),
    ("GalLoP", "GalLoP global-only", "test/acc_global"),
    ("GalLoP", "GalLoP local-only", "test/acc_local"),
    ("GalLoP", "GalLoP (global + local)", "test/acc"),
)


def table_rows(runs: dict[str, dict[int, dict[str, float]]]) -> list[dict]:
    """Top-1 rows (``ACC_ROWS``), then one OOD row per method: ``(mean, std)`` over seeds, in %.

    OOD keys: ``<set>/<score>_fpr95`` and ``<set>/<score>_auroc`` for each OOD set and score (mcm, gl_mcm).
    """
    rows = []
    for method, label, key in ACC_ROWS:
        per_seed = list(runs.get(method, {}).values())
        if per_seed and key in per_seed[0]:
            rows.append({"kind": "top1", "method": label, "top1": _stats([r[key] for r in per_seed])})
    for method in METHODS:
        per_seed = list(runs.get(method, {}).values())
        if not per_seed:
            continue
        row: dict = {"kind": "ood", "method": method}
        for name in OOD_SETS:
            for score in ("mcm", "gl_mcm"):
                base = f"test/ood/{name}/{score}"
                if f"{base}/auroc" in per_seed[0]:
                    row[f"{name}/{score}_fpr95"] = _stats([100 * r[f"{base}/fpr95_closest"] for r in per_seed])
                    row[f"{name}/{score}_auroc"] = _stats([100 * r[f"{base}/auroc"] for r in per_seed])
        rows.append(row)
    return rows


def _paired(a: Sequence[float], b: Sequence[float], higher_is_better: bool = True) -> dict:
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if not higher_is_better:
        d = -d
    mean, std = float(d.mean()), float(d.std())
    agree = int((d > 0).sum())
    return {
        "holds": bool(mean > 0 and agree == len(d)),
        "mean_gain": mean,
        "std_gain": std,
        "seeds_agreeing": agree,
        "n_seeds": len(d),
    }


def verdicts(runs: dict[str, dict[int, dict[str, float]]]) -> dict[str, dict]:
    """The three questions of the study, then supporting comparisons, from paired per-seed differences.

    Returns ``{"headline": {question: verdict}, "details": {comparison: verdict}}``; a verdict is :func:`_paired`'s
    dict (gains in points, positive = the claim's way). The headline questions, fixed before any run:

    1. *GalLoP beats CoOp*: top-1 of GalLoP (global + local) vs CoOp;
    2. *local prompts help in clutter*: top-1 of GalLoP (global + local) vs GalLoP's own global-only prediction;
    3. *GL-MCM beats MCM*: GalLoP's AUROC with GL-MCM vs MCM, on **every** OOD set (``parts`` holds each set's
       verdict; the question holds only when each part holds, and its ``seeds_agreeing`` is the smallest count over
       the sets).
    """
    g, c = runs["GalLoP"], runs["CoOp"]
    seeds = sorted(g)

    def get(rs, key, scale=1.0):
        return [scale * rs[s][key] for s in seeds]

    parts = {
        name: _paired(get(g, f"test/ood/{name}/gl_mcm/auroc", 100), get(g, f"test/ood/{name}/mcm/auroc", 100))
        for name in OOD_SETS
    }
    gains = np.array([[p["mean_gain"] for p in parts.values()]])
    headline = {
        "GalLoP beats CoOp (top-1)": _paired(get(g, "test/acc"), get(c, "test/acc")),
        "local prompts help in clutter (GalLoP global + local vs its global-only prediction, top-1)": _paired(
            get(g, "test/acc"), get(g, "test/acc_global")
        ),
        "GL-MCM beats MCM (GalLoP, AUROC, every OOD set)": {
            "holds": all(p["holds"] for p in parts.values()),
            "mean_gain": float(gains.mean()),
            "std_gain": float(np.mean([p["std_gain"] for p in parts.values()])),
            "seeds_agreeing": min(p["seeds_agreeing"] for p in parts.values()),
            "n_seeds": len(seeds),
            "parts": parts,
        },
    }
    details = {
        "GalLoP local-only beats global-only (top-1)": _paired(get(g, "test/acc_local"), get(g, "test/acc_global")),
        "GalLoP global-only beats CoOp (top-1)": _paired(get(g, "test/acc_global"), get(c, "test/acc")),
    }
    if "zero-shot CLIP" in runs:
        z = runs["zero-shot CLIP"][seeds[0]]
        details["CoOp beats zero-shot CLIP (top-1)"] = _paired(get(c, "test/acc"), [z["test/acc"]] * len(seeds))
    for name in OOD_SETS:
        base = f"test/ood/{name}"
        details[f"GL-MCM beats MCM (GalLoP, {name}, FPR95 lower)"] = _paired(
            get(g, f"{base}/gl_mcm/fpr95_closest", 100), get(g, f"{base}/mcm/fpr95_closest", 100), False
        )
        if "zero-shot CLIP" in runs:
            z = runs["zero-shot CLIP"][seeds[0]]
            details[f"GL-MCM beats MCM (zero-shot CLIP, {name}, AUROC; one run)"] = _paired(
                [100 * z[f"{base}/gl_mcm/auroc"]], [100 * z[f"{base}/mcm/auroc"]]
            )
    return {"headline": headline, "details": details}


def verdict_line(name: str, v: dict) -> str:
    """``name: **holds** (+1.2 ± 0.3 points, 3/3 seeds)``, with the per-set parts of a combined question."""
    line = (
        f"{name}: **{'holds' if v['holds'] else 'does not hold'}** "
        f"({v['mean_gain']:+.1f} ± {v['std_gain']:.1f} points, {v['seeds_agreeing']}/{v['n_seeds']} seeds)"
    )
    if "parts" in v:
        line += "; " + ", ".join(
            f"{k}: {p['mean_gain']:+.1f} ± {p['std_gain']:.1f}, {p['seeds_agreeing']}/{p['n_seeds']}"
            for k, p in v["parts"].items()
        )
    return line


def _pm(x: tuple[float, float] | None) -> str:
    return "-" if x is None else f"{x[0]:.1f} ± {x[1]:.1f}"


def markdown(
    runs: dict[str, dict[int, dict[str, float]]],
    setting: dict,
    seeds: Sequence[int],
    command: str,
    clip: dict,
    heatmaps: str | None = None,
    wall_seconds: float | None = None,
) -> str:
    """The study's tables, verdicts and diagnostics as Markdown. ``runs``: ``{method: {seed: metrics}}``;
    ``setting``: the rows' resolved settings (:func:`setting_of`); ``clip``: :func:`clip_info`; ``heatmaps``: the
    PNG's file name."""
    rows = table_rows(runs)
    acc = ["| method | top-1 (8 ID classes) |", "|---|---|"]
    acc += [f"| {r['method']} | {_pm(r['top1'])} |" for r in rows if r["kind"] == "top1"]
    names = list(OOD_SETS)
    ood = [
        "| method | " + " | ".join(f"{n}: MCM FPR95 ↓ / AUROC ↑ | {n}: GL-MCM FPR95 ↓ / AUROC ↑" for n in names) + " |",
        "|---|" + "---|---|" * len(names),
    ]
    for r in (r for r in rows if r["kind"] == "ood"):
        cells = []
        for n in names:
            for score in ("mcm", "gl_mcm"):
                f, a = r.get(f"{n}/{score}_fpr95"), r.get(f"{n}/{score}_auroc")
                cells.append("-" if f is None else f"{_pm(f)} / {_pm(a)}")
        ood.append(f"| {r['method']} | " + " | ".join(cells) + " |")
    v = verdicts(runs)
    ver = [f"{i}. {verdict_line(name, x)}" for i, (name, x) in enumerate(v["headline"].items(), 1)]
    ver += ["", "Supporting comparisons:", ""] + [f"- {verdict_line(name, x)}" for name, x in v["details"].items()]
    hits = []
    for m in ("zero-shot CLIP", "GalLoP"):
        per_seed = list(runs.get(m, {}).values())
        if per_seed and "diag/box_hit" in per_seed[0]:
            hits.append(
                f"- {m}: {_pm(_stats([r['diag/box_hit'] for r in per_seed]))}% of the top-5 patches of the predicted "
                f"class's local map lie on the labelled item (chance: {per_seed[0]['diag/box_chance']:.1f}%)"
            )
    s = setting["scenes"]
    return "\n".join(
        [
            "## GalLoP on cluttered Fashion-MNIST scenes (a tiny CLIP trained by the repo)",
            "",
            f"Command: `{command}`. Backbone: `{clip['folder']}` (sha256 `{clip['sha256'][:16]}…`; zero-shot "
            f"top-1 {clip['zero_shot_clean']:.1f}% on clean Fashion-MNIST test items of the 8 ID classes).",
            "",
            f"Task: {s['canvas']} px scenes; the labelled item is the largest ({s['main_size'][0]}-{s['main_size'][1]} "
            f"px), among {s['n_distractors'][0]}-{s['n_distractors'][1]} distractors of other classes "
            f"({s['distractor_size'][0]}-{s['distractor_size'][1]} px, partly off the canvas at times) and Gaussian "
            f"noise (σ ≤ {s['noise_std'][1]:.2f}). {setting['shots']} shots x 8 ID classes, seeds "
            f"{', '.join(map(str, seeds))}; {setting['epochs']} epochs of SGD (lr CoOp {setting['lr']['CoOp']}, GalLoP "
            f"{setting['lr']['GalLoP']}, each chosen on validation scenes: the search is in "
            f"`results/reference/gallop_tuning/`), crops of area ≥ {setting['min_crop_scale']}, top-k "
            f"{list(setting['topk'])}. Test: {setting['test_per_class']} ID scenes per class; OOD: "
            f"{setting['ood_per_class']} scenes per held-out class (Bag, Ankle boot), `held_out` with held-out "
            "distractors only, `held_out_in_id_clutter` with ID distractors. Mean ± std over seeds (zero-shot CLIP: "
            "one deterministic run). FPR95: ID positive, at the ID recall closest to 95% (GalLoP's convention). All "
            "in %. Configs: `configs/experiment/gallop/demo_scenes_*.yaml`.",
            "",
            *acc,
            "",
            *ood,
            "",
            "Verdicts (paired per-seed differences; a claim holds when the mean gain is positive and every seed agrees):",
            "",
            *ver,
            "",
            "Where the local features look (ID test scenes):",
            "",
            *hits,
            *(
                [
                    "",
                    f"Heatmaps: `{heatmaps}` in this folder: for 6 ID and 2 OOD test scenes, the scene beside GalLoP's "
                    "local similarity to its predicted class (last seed; mean over the local prompts, colour bar in "
                    "cosine units); the labelled item is boxed in green.",
                ]
                if heatmaps
                else []
            ),
            "",
            *([f"Wall time: {wall_seconds:.0f} s (all rows and seeds)."] if wall_seconds is not None else []),
        ]
    )


def setting_of(configs: dict[str, dict]) -> dict:
    """The numbers :func:`markdown` states, from the rows' resolved configs (``{method: config}``, any seed)."""
    g = configs["GalLoP"]
    data = g["data"]
    return {
        "scenes": asdict(SceneConfig(**{k: v for k, v in data["test_dataset"]["config"].items() if k != "_target_"})),
        "shots": data["shots"],
        "epochs": g["trainer"]["max_epochs"],
        "lr": {m: c["model"]["optimizer"]["lr"] for m, c in configs.items() if m != "zero-shot CLIP"},
        "min_crop_scale": data["train_dataset"]["transform"]["min_scale"],
        "topk": g["model"]["topk"],
        "test_per_class": data["test_dataset"]["per_class"],
        "ood_per_class": data["ood_datasets"]["held_out"]["per_class"],
    }


def plot_scene_heatmaps(
    net: torch.nn.Module,
    test: FashionMNISTScenes,
    ood: FashionMNISTScenes,
    topk: Sequence[int],
    where: SceneHeatmaps,
    n_id: int = 6,
    n_ood: int = 2,
) -> Path:
    """GalLoP's local-prompt heatmaps on the first test scene of ``n_id`` ID and ``n_ood`` OOD classes, the labelled
    item boxed in green, saved to ``where.path``."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    from gallop.heatmaps import local_heatmaps, plot_heatmaps, unnormalize

    net = net.eval()
    picks = [(test, c * test.per_class) for c in range(n_id)] + [(ood, c * ood.per_class) for c in range(n_ood)]
    images = torch.stack([ds[i]["image"] for ds, i in picks])
    maps, pred = local_heatmaps(net, images, None, topk)
    names = class_names(ID_CLASSES)
    titles = [
        f"{'OOD: ' if ds is ood else ''}{FASHION_MNIST_CLASSES[int(ds.labels[i])]}\npred {names[int(p)]}"
        for (ds, i), p in zip(picks, pred)
    ]
    fig = plot_heatmaps(unnormalize(images, where.mean, where.std), maps, titles, None, colorbar=True)
    for ax, (ds, i) in zip(fig.axes[: len(picks)], picks):  # the first row holds the plain images
        it = ds.layout(i).items[0]
        ax.add_patch(Rectangle((it.x - 0.5, it.y - 0.5), it.size, it.size, fill=False, edgecolor="lime", lw=1.2))
    path = Path(where.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def clip_info(clip_dir: str | Path) -> dict:
    """The small CLIP's folder (relative to the repository when inside it), weights sha256 and its zero-shot top-1 on
    clean Fashion-MNIST test items (from its ``training.json``)."""
    clip_dir = Path(clip_dir)
    side = json.loads((clip_dir / "training.json").read_text())
    folder = clip_dir.resolve()
    return {
        "folder": str(folder.relative_to(ROOT)) if folder.is_relative_to(ROOT) else str(clip_dir),
        "sha256": sha256(clip_dir / WEIGHTS_NAME),
        "zero_shot_clean": side["zero_shot_top1"]["clean_test"],
    }
