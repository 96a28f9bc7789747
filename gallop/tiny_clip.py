"""A small CLIP that the repo trains itself: Fashion-MNIST items of the 8 ID classes with templated captions, on CPU.

``python -m gallop.tiny_clip train --out DIR --seed 0`` (``make weights-tiny-clip``) builds an open_clip ``CLIP``
from ``open_clip_config.json`` (open_clip's own ``local-dir`` format: ``model_cfg`` + ``preprocess_cfg``; a ViT image
tower with 8 px patches on 64 px images, i.e. 64 patches, and a small text tower with open_clip's tokenizer and
77-token context), trains it from scratch and writes a folder that :func:`common.backbones.clip.build_clip` loads
exactly like downloaded weights, ``build_clip("local-dir:DIR")``:

- ``open_clip_config.json``, ``open_clip_model.safetensors`` (fp16);
- ``training.json`` (command, seed, versions, threads, wall time, weights sha256, zero-shot accuracies,
  hyper-parameters), ``curve.csv`` (training loss per step, monitoring accuracy every ``--eval-every`` steps) and a
  short ``README.md``.

The committed copy lives in ``gallop/assets/tiny_clip_fmnist/`` (:data:`ASSET_DIR`).

**Data.** Only the Fashion-MNIST *train* images of the ID classes 0-7 (T-shirt/top ... Sneaker); Bag and Ankle boot
are never read. The last ``val_items`` of them are held out for the monitoring curve. Each training image is one
item on a black ``64 x 64`` canvas, pasted the way :mod:`common.data.datasets.fmnist_scenes` pastes the items of its
scenes (antialiased bilinear resize, max-merge), so items look alike in both. The item's side is drawn
log-uniformly in ``[min_size, max_size]`` = 24-80 px: the sizes of the labelled scene items (30-40 px) and of the
zoomed-in random crops that few-shot training takes of scenes (up to 80 px, partly off the canvas); the scenes'
distractors (12-22 px) are smaller than anything seen here. The item is placed uniformly with up to a quarter of it
off the canvas, flipped with probability 1/2 and scaled in intensity by U(0.7, 1). **Never a cluttered scene**: one
item per image, no distractors, no added noise (clutter and noise are the shift that the few-shot task adapts to).

**Captions.** ``template.format(name)`` with a template from :data:`TEMPLATES` and a name from
:data:`CLASS_SYNONYMS` (the Fashion-MNIST name and 2-3 synonyms), tokenised by ``open_clip.tokenizer.tokenize``.
Rows of the token embedding of tokens that no caption uses are set to zero at init; they get no gradient and stay
zero (unknown words then carry no learned meaning, rather than a random vector).

**Loss.** Symmetric image-text contrastive loss with class-aware targets (UniCL, Yang et al., CVPR 2022, Eq. 2-3):
with ``s`` the learned logit scale (clamped to 100) and ``S = s * I T^T`` over the ``B`` images and their ``B``
captions, every pair of the same class is a positive,

    L = 1/2 [ mean_i  CE(S[i, :], P[i, :]) + mean_j CE(S[:, j], P[:, j]) ],   P[i, j] = [y_i = y_j] / sum_j' [y_i = y_j'],

which for distinct classes is CLIP's InfoNCE (Radford et al. 2021). AdamW, linear warm-up then cosine decay, no
weight decay on gains, biases, embeddings and the logit scale.

**Zero-shot classifier** (:func:`zero_shot_accuracy`): open_clip's ``build_zero_shot_classifier`` over
:data:`TEMPLATES` with the Fashion-MNIST class names (what ``gallop.model.ZeroShotCLIP(clip, templates=TEMPLATES)``
does). "Clean" test images: each Fashion-MNIST *test* image resized to the whole 64 px canvas.

**Reproducibility.** Same seed, same thread count (``--threads``, default 2) and same machine: the same weights
(``make weights-tiny-clip`` checks the sha256 against the committed sidecar). Other thread counts or CPUs may change
the float reductions, hence the weights, slightly.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import platform
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from common.data.datasets.fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist
from common.data.datasets.fmnist_scenes import ID_CLASSES, place

ASSET_DIR = Path(__file__).resolve().parent / "assets" / "tiny_clip_fmnist"
CONFIG_NAME = "open_clip_config.json"
WEIGHTS_NAME = "open_clip_model.safetensors"

# Class id -> (Fashion-MNIST name, synonyms...). The Fashion-MNIST name comes first.
CLASS_SYNONYMS: dict[int, tuple[str, ...]] = {
    0: ("T-shirt/top", "t-shirt", "tee", "top"),
    1: ("Trouser", "trousers", "pants", "jeans"),
    2: ("Pullover", "sweater", "jumper"),
    3: ("Dress", "gown", "frock"),
    4: ("Coat", "jacket", "overcoat"),
    5: ("Sandal", "sandals", "flip-flop"),
    6: ("Shirt", "button-up shirt", "blouse"),
    7: ("Sneaker", "trainer", "running shoe"),
}
TEMPLATES: tuple[str, ...] = (
    "a photo of a {}",
    "a photo of a {}.",
    "a photo of the {}.",
    "a picture of a {}.",
    "an image of a {}.",
    "a {}.",
    "{}",
    "a small {}.",
    "a large {}.",
    "a grayscale photo of a {}.",
    "a close-up photo of a {}.",
    "a product photo of a {}.",
)


def captions(classes: Sequence[int] = ID_CLASSES) -> tuple[list[str], torch.Tensor]:
    """Every (template, name) caption of ``classes`` and its class id ``[C]``."""
    texts, labels = [], []
    for c in classes:
        for name in CLASS_SYNONYMS[c]:
            for t in TEMPLATES:
                texts.append(t.format(name))
                labels.append(c)
    return texts, torch.tensor(labels, dtype=torch.long)


def class_names(classes: Sequence[int] = ID_CLASSES) -> list[str]:
    return [FASHION_MNIST_CLASSES[c] for c in classes]


def read_config(folder: str | Path = ASSET_DIR) -> dict:
    path = Path(folder) / CONFIG_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no open_clip config '{path}': a local-dir folder holds {CONFIG_NAME} + weights")
    return json.loads(path.read_text())


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------- data
def render_items(
    images: torch.Tensor,
    gen: torch.Generator,
    canvas: int = 64,
    min_size: int = 24,
    max_size: int = 80,
) -> torch.Tensor:
    """One item per canvas: ``images`` uint8 ``[B, 28, 28]`` -> float ``[B, canvas, canvas]`` in [0, 1].

    Side log-uniform in ``[min_size, max_size]``, top-left corner uniform with at most a quarter of the side off the
    canvas (or, for items larger than the canvas, anywhere that keeps the canvas covered up to that margin), flip with
    probability 1/2, intensity factor U(0.7, 1). All draws come from ``gen``.
    """
    b = images.shape[0]
    u = torch.rand(b, 5, generator=gen)
    sizes = torch.exp(math.log(min_size) + u[:, 0] * (math.log(max_size) - math.log(min_size))).round().long()
    out = torch.zeros(b, canvas, canvas)
    items = images.float()[:, None] / 255.0
    for s in torch.unique(sizes).tolist():  # one batched resize per side length (the same op as paste_item)
        group = torch.nonzero(sizes == s)[:, 0]
        resized = F.interpolate(items[group], size=(s, s), mode="bilinear", antialias=True)[:, 0]
        m = s // 4
        lo, hi = min(0, canvas - s) - m, max(0, canvas - s) + m
        for j, i in enumerate(group.tolist()):
            x = lo + int(u[i, 1] * (hi - lo + 1))
            y = lo + int(u[i, 2] * (hi - lo + 1))
            patch = resized[j].flip(-1) if u[i, 3] < 0.5 else resized[j]
            place(out[i], (patch * (0.7 + 0.3 * float(u[i, 4]))).clamp_(0.0, 1.0), x, y)
    return out


def clean_canvas(images: torch.Tensor, canvas: int = 64) -> torch.Tensor:
    """Clean test view: each uint8 ``[B, 28, 28]`` item resized to the whole canvas -> ``[B, canvas, canvas]``."""
    x = images.float()[:, None] / 255.0
    return F.interpolate(x, size=(canvas, canvas), mode="bilinear", antialias=True)[:, 0].clamp(0, 1)


def to_model_input(gray: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``[B, H, W]`` in [0, 1] -> normalised RGB ``[B, 3, H, W]`` (what ``gallop.transforms.clip_transform`` gives)."""
    x = gray[:, None].expand(-1, 3, -1, -1)
    m = torch.as_tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


# ---------------------------------------------------------------------------------------------- model
def new_model(config_dir: str | Path = ASSET_DIR) -> nn.Module:
    """A random-init open_clip ``CLIP`` from ``config_dir/open_clip_config.json`` (weights there are not loaded)."""
    return open_clip.create_model(f"local-dir:{Path(config_dir)}", load_weights=False, pretrained_text=False)


def zero_unused_tokens(model: nn.Module, texts: Sequence[str]) -> int:
    """Zero the token-embedding rows of tokens absent from ``texts``; returns how many rows are kept."""
    used = torch.unique(open_clip.tokenizer.tokenize(list(texts)))
    keep = torch.zeros(model.token_embedding.weight.shape[0], dtype=torch.bool)
    keep[used] = True
    with torch.no_grad():
        model.token_embedding.weight[~keep] = 0.0
    return int(keep.sum())


def contrastive_loss(
    image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor
) -> torch.Tensor:
    """Class-aware symmetric contrastive loss (module docstring; UniCL Eq. 2-3). Features L2-normalised ``[B, D]``."""
    logits = scale * image_features @ text_features.T  # [B, B]
    pos = (labels[:, None] == labels[None, :]).float()
    target = pos / pos.sum(dim=1, keepdim=True)
    loss_i = -(target * logits.log_softmax(dim=1)).sum(dim=1).mean()
    loss_t = -(target * logits.log_softmax(dim=0)).sum(dim=0).mean()  # pos is symmetric: column sums = row sums
    return (loss_i + loss_t) / 2


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or "token_embedding" in name or "positional_embedding" in name or "logit_scale" in name
        (no_decay if skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


@torch.no_grad()
def zero_shot_classifier(model: nn.Module, classes: Sequence[int] = ID_CLASSES) -> torch.Tensor:
    """``[K, D]`` class embeddings: mean over :data:`TEMPLATES` of the normalised text features, re-normalised."""
    w = open_clip.build_zero_shot_classifier(
        model, open_clip.tokenizer.tokenize, class_names(classes), TEMPLATES, num_classes_per_batch=4, device="cpu"
    )
    return F.normalize(w.T, dim=-1)


@torch.no_grad()
def zero_shot_accuracy(
    model: nn.Module,
    gray: torch.Tensor,
    labels: torch.Tensor,
    mean: Sequence[float],
    std: Sequence[float],
    classes: Sequence[int] = ID_CLASSES,
    batch_size: int = 500,
) -> float:
    """Top-1 (%) of zero-shot CLIP on ``gray [N, H, W]`` in [0, 1] with Fashion-MNIST ``labels [N]``."""
    was_training = model.training
    model.eval()
    cls = zero_shot_classifier(model, classes)
    lut = torch.full((10,), -1, dtype=torch.long)
    lut[torch.as_tensor(list(classes))] = torch.arange(len(classes))
    correct = 0
    for i in range(0, len(gray), batch_size):
        f = F.normalize(model.encode_image(to_model_input(gray[i : i + batch_size], mean, std)), dim=-1)
        correct += int(((f @ cls.T).argmax(-1) == lut[labels[i : i + batch_size]]).sum())
    model.train(was_training)
    return 100.0 * correct / len(gray)


# ---------------------------------------------------------------------------------------------- train
def train(
    out: str | Path,
    data_root: str | Path,
    seed: int = 0,
    steps: int = 1000,
    batch_size: int = 128,
    lr: float = 3e-3,
    weight_decay: float = 0.05,
    warmup: int = 50,
    min_size: int = 24,
    max_size: int = 80,
    val_items: int = 1000,
    eval_every: int = 100,
    threads: int = 2,
    config_dir: str | Path = ASSET_DIR,
    max_train_items: int | None = None,
    command: str | None = None,
    log=print,
) -> dict:
    """Train the tiny CLIP and write the ``local-dir`` folder ``out`` (see the module docstring). Returns the sidecar."""
    from safetensors.torch import save_file

    from common.backbones.clip import build_clip

    out = Path(out)
    cfg = read_config(config_dir)
    pre = cfg["preprocess_cfg"]
    canvas = int(pre["size"])
    mean, std = pre["mean"], pre["std"]
    torch.set_num_threads(threads)
    start = time.perf_counter()

    images, labels = load_fashion_mnist(data_root, "train")
    keep = np.isin(labels, ID_CLASSES)  # Bag and Ankle boot are never read past this line
    images, labels = torch.from_numpy(images[keep]), torch.from_numpy(labels[keep])
    if val_items >= len(labels):
        raise ValueError(f"val_items={val_items} leaves no training image ({len(labels)} ID images)")
    val_x, val_y = images[-val_items:], labels[-val_items:]
    images, labels = images[:-val_items], labels[:-val_items]
    if max_train_items is not None:
        images, labels = images[:max_train_items], labels[:max_train_items]
    gen = torch.Generator().manual_seed(seed)
    val_gray = render_items(val_x, torch.Generator().manual_seed(seed + 1), canvas, min_size, max_size)

    texts, text_labels = captions()
    tokens = open_clip.tokenizer.tokenize(texts)  # [C, 77]
    torch.manual_seed(seed)
    model = new_model(config_dir)
    kept_tokens = zero_unused_tokens(model, texts)
    model.train()
    opt = torch.optim.AdamW(_param_groups(model, weight_decay), lr=lr, betas=(0.9, 0.98), eps=1e-6)

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        return 0.5 * lr * (1 + math.cos(math.pi * (step - warmup) / max(steps - warmup, 1)))

    rows = []
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        idx = torch.randint(0, len(labels), (batch_size,), generator=gen)
        y = labels[idx]
        x = to_model_input(render_items(images[idx], gen, canvas, min_size, max_size), mean, std)
        # one caption of its class per image; each distinct caption is encoded once
        cap = torch.empty(batch_size, dtype=torch.long)
        for c in ID_CLASSES:
            pool = torch.nonzero(text_labels == c)[:, 0]
            sel = y == c
            cap[sel] = pool[torch.randint(0, len(pool), (int(sel.sum()),), generator=gen)]
        uniq, inv = torch.unique(cap, return_inverse=True)
        f_img = F.normalize(model.encode_image(x), dim=-1)
        f_txt = F.normalize(model.encode_text(tokens[uniq]), dim=-1)[inv]
        loss = contrastive_loss(f_img, f_txt, y, model.logit_scale.exp().clamp(max=100.0))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite tiny-CLIP loss {loss.item()} at step {step}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100.0))
        row = {
            "step": step + 1,
            "loss": float(loss.detach()),
            "lr": lr_at(step),
            "logit_scale": float(model.logit_scale.detach().exp()),
        }
        if (step + 1) % eval_every == 0 or step + 1 == steps:
            row["val_acc"] = zero_shot_accuracy(model, val_gray, val_y, mean, std)
            log(
                f"[tiny_clip] step {step + 1}/{steps} loss {row['loss']:.4f} scale {row['logit_scale']:.1f} "
                f"val zero-shot {row['val_acc']:.1f}% ({time.perf_counter() - start:.0f}s)"
            )
        rows.append(row)
    train_seconds = time.perf_counter() - start

    # ---- write the local-dir folder (fp16 weights), reload it as users do, and measure zero-shot accuracy
    out.mkdir(parents=True, exist_ok=True)
    if (Path(config_dir) / CONFIG_NAME).resolve() != (out / CONFIG_NAME).resolve():
        shutil.copyfile(Path(config_dir) / CONFIG_NAME, out / CONFIG_NAME)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt"})
    loaded, _ = build_clip(f"local-dir:{out}")
    test_x, test_y = load_fashion_mnist(data_root, "test")
    tk = np.isin(test_y, ID_CLASSES)
    test_x, test_y = torch.from_numpy(test_x[tk]), torch.from_numpy(test_y[tk])
    acc_clean = zero_shot_accuracy(loaded, clean_canvas(test_x, canvas), test_y, mean, std)
    acc_placed = zero_shot_accuracy(
        loaded,
        render_items(test_x, torch.Generator().manual_seed(seed + 2), canvas, min_size, max_size),
        test_y,
        mean,
        std,
    )
    n_params = sum(p.numel() for p in loaded.parameters())
    sidecar = {
        "command": command or f"python -m gallop.tiny_clip train --out {out} --seed {seed}",
        "seed": seed,
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "threads": threads,
        "wall_seconds_train": round(train_seconds, 1),
        "wall_seconds_total": round(time.perf_counter() - start, 1),
        "weights_file": WEIGHTS_NAME,
        "weights_sha256": sha256(out / WEIGHTS_NAME),
        "weights_bytes": (out / WEIGHTS_NAME).stat().st_size,
        "parameters": n_params,
        "token_rows_trained": kept_tokens,
        "zero_shot_top1": {
            "clean_test": round(acc_clean, 2),
            "placed_test": round(acc_placed, 2),
            "chance": round(100.0 / len(ID_CLASSES), 2),
            "n_test_images": len(test_y),
            "classes": class_names(),
            "templates": list(TEMPLATES),
        },
        "hyperparameters": {
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "weight_decay": weight_decay,
            "warmup": warmup,
            "item_size_px": [min_size, max_size],
            "val_items": val_items,
            "train_items": len(labels),
        },
        "data": "Fashion-MNIST train split, classes 0-7 only, one item per 64 px canvas (no scenes, no noise)",
        "curve": "curve.csv",
    }
    (out / "training.json").write_text(json.dumps(sidecar, indent=2) + "\n")
    keys = ["step", "loss", "lr", "logit_scale", "val_acc"]
    lines = [",".join(keys)]
    for r in rows:
        lines.append(",".join("" if k not in r else f"{r[k]:.6g}" for k in keys))
    (out / "curve.csv").write_text("\n".join(lines) + "\n")
    (out / "README.md").write_text(_readme(sidecar))
    log(
        f"[tiny_clip] wrote {out}: zero-shot top-1 {acc_clean:.1f}% clean / {acc_placed:.1f}% placed "
        f"(chance 12.5%), sha256 {sidecar['weights_sha256'][:16]}..., {sidecar['wall_seconds_total']:.0f}s"
    )
    return sidecar


def _readme(s: dict) -> str:
    z = s["zero_shot_top1"]
    return "\n".join(
        [
            "# tiny_clip_fmnist: a small CLIP trained by this repo (Fashion-MNIST, 8 ID classes)",
            "",
            "Load it like downloaded open_clip weights: "
            "`common.backbones.clip.build_clip('local-dir:gallop/assets/tiny_clip_fmnist')`.",
            "How it is trained: the docstring of `gallop/tiny_clip.py`. Bag and Ankle boot were never seen.",
            "",
            f"- command: `{s['command']}` (`make weights-tiny-clip`), seed {s['seed']}, {s['threads']} threads",
            f"- torch {s['torch']}, open_clip {s['open_clip']}, python {s['python']} ({s['machine']})",
            f"- wall time: {s['wall_seconds_train']:.0f} s training, {s['wall_seconds_total']:.0f} s in all",
            f"- weights: `{s['weights_file']}` (fp16, {s['weights_bytes'] / 1e6:.1f} MB, {s['parameters']:,} "
            f"parameters), sha256 `{s['weights_sha256']}`",
            f"- zero-shot top-1 on the {z['n_test_images']} Fashion-MNIST test images of the 8 ID classes: "
            f"**{z['clean_test']:.1f}%** clean (item fills the 64 px canvas), {z['placed_test']:.1f}% placed at random "
            f"size and position (chance {z['chance']:.1f}%)",
            "- training curve: `curve.csv` (loss per step; zero-shot top-1 on held-out train items every few steps)",
            "- all numbers: `training.json`",
            "",
        ]
    )


# ---------------------------------------------------------------------------------------------- CLI
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train the tiny CLIP and write a local-dir folder")
    t.add_argument("--out", required=True)
    t.add_argument("--data-root", default="data/fashion-mnist")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--steps", type=int, default=1000)
    t.add_argument("--batch-size", type=int, default=128)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--min-size", type=int, default=24)
    t.add_argument("--max-size", type=int, default=80)
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--eval-every", type=int, default=100)
    t.add_argument("--config-dir", default=str(ASSET_DIR))
    c = sub.add_parser("check", help="compare the sha256 of a trained folder with the committed sidecar")
    c.add_argument("folder")
    c.add_argument("--reference", default=str(ASSET_DIR))
    c.add_argument("--strict", action="store_true", help="exit 1 when the checkpoints differ")
    a = p.parse_args(argv)
    if a.cmd == "train":
        cmd = "python -m gallop.tiny_clip " + " ".join(sys.argv[1:] if argv is None else argv)
        train(
            a.out,
            a.data_root,
            seed=a.seed,
            steps=a.steps,
            batch_size=a.batch_size,
            lr=a.lr,
            threads=a.threads,
            min_size=a.min_size,
            max_size=a.max_size,
            eval_every=a.eval_every,
            config_dir=a.config_dir,
            command=cmd,
        )
        return 0
    ref = json.loads((Path(a.reference) / "training.json").read_text())
    got = sha256(Path(a.folder) / WEIGHTS_NAME)
    if got == ref["weights_sha256"]:
        print(f"[tiny_clip] {a.folder}: sha256 {got} equals the committed checkpoint's (bitwise reproduction)")
        return 0
    print(
        f"[tiny_clip] {a.folder}: sha256 {got} differs from the reference {ref['weights_sha256']} (another CPU, "
        f"thread count or library version changes float reductions); compare the zero-shot accuracies in "
        f"{Path(a.folder) / 'training.json'} with {Path(a.reference) / 'training.json'}"
    )
    return 1 if a.strict else 0


if __name__ == "__main__":
    sys.exit(main())
