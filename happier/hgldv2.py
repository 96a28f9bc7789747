"""Build H-GLDv2's hierarchy: every GLDv2 landmark gets a super-category by CLIP zero-shot classification.

    python -m happier.hgldv2 build [--root data/gldv2] [--split train|index] [--out <root>/hgldv2]
        [--supercategories configs/happier/hgldv2_supercategories.yaml] [--images-per-landmark 0]
        [--model ViT-B-16 --pretrained openai --weights-dir weights] [--threshold T] [--device cuda]

GLDv2 has no hierarchy; each landmark is a Wikimedia Commons category. The seminar's H-GLDv2 maps the categories to
super-categories (church building, cathedral, castle, bridge, waterfall, ...) for a two-level tree
(landmark -> super-category). This builder does the mapping with CLIP (Radford et al. 2021), zero-shot:

* super-category k: its phrases (the YAML's list) in every template, through the text encoder; the class embedding
  ``c_k`` is the normalised mean of the normalised prompt embeddings (CLIP's prompt ensembling);
* landmark i: its category name, cleaned from the URL (``category_name``) and put in ``landmark_template``, through
  the text encoder: ``u_i``; optionally (``--images-per-landmark n``) its first n images (in the order of
  ``train_clean.csv`` / ``index_image_to_landmark.csv``) through the image encoder, normalised mean ``v_i``;
* probabilities ``p_text = softmax_k(s * <u_i, c_k>)``, ``p_image = softmax_k(s * <v_i, c_k>)`` with ``s`` the
  checkpoint's logit scale, mixed as ``p = (1 - w) p_text + w p_image`` (``w = --image-weight``, only for landmarks
  with at least one readable image; ``p = p_text`` otherwise);
* label ``argmax_k p``, or ``other`` when ``max_k p < threshold``.

Outputs in ``--out`` (``<split>`` = train or index):

* ``<split>_hierarchy.csv``: ``landmark_id, category, name, hierarchical_label, confidence, top_choice``
  (``top_choice`` the best super-category even below the threshold), what
  :class:`common.data.datasets.gldv2.GLDv2Train` / ``GLDv2Retrieval`` read with ``hierarchy_columns=
  [hierarchical_label]``;
* ``<split>_summary.csv``: landmarks and images per super-category (printed too);
* ``<split>_samples.png``: a row per super-category with random landmarks of it (first image, name, confidence), for
  a person to check the assignment and tune the threshold;
* ``<split>_build.json``: the settings and counts; ``cache/``: the embeddings, in chunks written as they are
  computed, so an interrupted build resumes and a re-run with another threshold or YAML costs only the text
  encoding of the super-categories.

Runs offline from an open_clip checkpoint under ``--weights-dir`` (``make weights-clip``); nothing is downloaded.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from common.data.datasets.gldv2 import (
    DATASET,
    LAYOUT,
    MAKE_TARGET,
    category_name,
    image_path,
    read_csv_columns,
    read_label_to_category,
    read_train_clean,
)
from common.data.errors import require_path

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SUPERCATEGORIES = ROOT / "configs" / "happier" / "hgldv2_supercategories.yaml"
HIERARCHY_COLUMNS = ("landmark_id", "category", "name", "hierarchical_label", "confidence", "top_choice")
SPLITS = {
    # split: (label -> category file, landmark -> images file, image folder)
    "train": ("train_label_to_category.csv", "train_clean.csv", "train"),
    "index": ("index_label_to_category.csv", "index_image_to_landmark.csv", "index"),
}
_CHUNK = 4096  # landmarks per cache file


# --------------------------------------------------------------------------------------------------------------
# super-categories


@dataclass(frozen=True)
class SuperCategories:
    """The YAML of super-categories: names, their phrases and the prompt settings."""

    names: list[str]
    phrases: list[list[str]]
    templates: list[str]
    landmark_template: str = "a photo of {}."
    threshold: float = 0.25
    other: str = "other"
    scale: float | None = None

    def prompts(self, k: int) -> list[str]:
        """Every template filled with every phrase of super-category ``k``."""
        return [t.format(p) for p in self.phrases[k] for t in self.templates]


def load_supercategories(path: str | Path) -> SuperCategories:
    """Read and check the super-category YAML (see configs/happier/hgldv2_supercategories.yaml)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"super-category list '{path}' not found; the default is {DEFAULT_SUPERCATEGORIES}")
    cfg = yaml.safe_load(path.read_text()) or {}
    known = {"supercategories", "templates", "landmark_template", "threshold", "other", "scale"}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ValueError(f"'{path}': unknown key(s) {unknown}; allowed: {sorted(known)}")
    cats = cfg.get("supercategories") or {}
    if not isinstance(cats, dict) or len(cats) < 2:
        raise ValueError(f"'{path}': `supercategories` must map at least two names to lists of phrases")
    names, phrases = [], []
    for name, ph in cats.items():
        ph = [ph] if isinstance(ph, str) else list(ph or [name])
        if not ph or not all(isinstance(p, str) and p.strip() for p in ph):
            raise ValueError(f"'{path}': super-category {name!r} needs a list of non-empty phrases")
        names.append(str(name))
        phrases.append([p.strip() for p in ph])
    templates = list(cfg.get("templates") or ["a photo of a {}."])
    for t in [*templates, cfg.get("landmark_template", "a photo of {}.")]:
        if t.count("{}") != 1:
            raise ValueError(f"'{path}': template {t!r} must hold exactly one '{{}}'")
    sc = SuperCategories(
        names=names,
        phrases=phrases,
        templates=templates,
        landmark_template=cfg.get("landmark_template", "a photo of {}."),
        threshold=float(cfg.get("threshold", 0.25)),
        other=str(cfg.get("other", "other")),
        scale=None if cfg.get("scale") is None else float(cfg["scale"]),
    )
    if sc.other in names:
        raise ValueError(f"'{path}': the bucket name {sc.other!r} is also a super-category; rename one")
    if not 0.0 <= sc.threshold <= 1.0:
        raise ValueError(f"'{path}': threshold must be a probability in [0, 1], got {sc.threshold}")
    return sc


# --------------------------------------------------------------------------------------------------------------
# zero-shot assignment (pure functions, tested on constructed embeddings)


def class_embeddings(prompt_embeddings: Sequence[Tensor]) -> Tensor:
    """``[K, D]``: for each class, the normalised mean of its normalised prompt embeddings ``[P_k, D]``."""
    return F.normalize(torch.stack([F.normalize(e.float(), dim=-1).mean(0) for e in prompt_embeddings]), dim=-1)


def zero_shot_probs(x: Tensor, classes: Tensor, scale: float) -> Tensor:
    """``[N, K]`` softmax over classes of ``scale * cos(x_i, c_k)`` (``x [N, D]``, ``classes [K, D]``)."""
    return torch.softmax(scale * F.normalize(x.float(), dim=-1) @ F.normalize(classes.float(), dim=-1).T, dim=-1)


def mix_probs(p_text: Tensor, p_image: Tensor | None, has_image: Tensor | None, image_weight: float) -> Tensor:
    """``(1 - w) p_text + w p_image`` for the rows with an image (``has_image [N]``), ``p_text`` elsewhere."""
    if p_image is None or image_weight == 0.0:
        return p_text
    if not 0.0 <= image_weight <= 1.0:
        raise ValueError(f"image_weight must be in [0, 1], got {image_weight}")
    mixed = (1.0 - image_weight) * p_text + image_weight * p_image
    return torch.where(has_image[:, None], mixed, p_text)


def assign(probs: Tensor, names: Sequence[str], threshold: float, other: str) -> tuple[list[str], Tensor, list[str]]:
    """``(label, confidence [N], top choice)``: the argmax class, or ``other`` when its probability < threshold."""
    conf, top = probs.max(dim=1)
    tops = [names[k] for k in top.tolist()]
    labels = [t if c >= threshold else other for t, c in zip(tops, conf.tolist())]
    return labels, conf, tops


# --------------------------------------------------------------------------------------------------------------
# encoders and the embedding cache


class _ImageFiles(Dataset):
    def __init__(self, paths: Sequence[Path], transform: Callable) -> None:
        self.paths, self.transform = list(paths), transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        try:
            with Image.open(self.paths[i]) as im:
                return self.transform(im.convert("RGB")), True
        except (OSError, UnidentifiedImageError, SyntaxError):
            return torch.zeros(3, 1, 1), False


def _collate(items):
    ok = torch.tensor([o for _, o in items], dtype=torch.bool)
    shapes = {x.shape for x, o in items if o}
    shape = next(iter(shapes)) if shapes else (3, 1, 1)
    return torch.stack([x if o else torch.zeros(shape) for x, o in items]), ok


class ClipEncoder:
    """Normalised CLIP text and image embeddings, batched, under ``torch.no_grad``.

    Args:
        model: an open_clip ``CLIP`` (``encode_text``, ``encode_image``, ``logit_scale``).
        tokenizer: ``list[str] -> LongTensor [n, context]``.
        transform: PIL image -> tensor, the checkpoint's preprocessing.
        identity: names the weights, for the embedding cache.
    """

    def __init__(self, model, tokenizer: Callable, transform: Callable, identity: str, device="cpu", batch_size=256):
        self.model = model.eval().to(device)
        self.tokenizer, self.transform, self.identity = tokenizer, transform, identity
        self.device, self.batch_size = torch.device(device), batch_size
        self.logit_scale = float(model.logit_scale.detach().exp()) if hasattr(model, "logit_scale") else 100.0

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str]) -> Tensor:
        out = []
        for s in range(0, len(texts), self.batch_size):
            tokens = self.tokenizer(list(texts[s : s + self.batch_size])).to(self.device)
            out.append(F.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu())
        return torch.cat(out) if out else torch.zeros(0, 0)

    @torch.no_grad()
    def encode_images(self, paths: Sequence[Path], num_workers: int = 0) -> tuple[Tensor, Tensor]:
        """``(embeddings [n, D], readable [n])``; unreadable or missing files give zero rows."""
        loader = DataLoader(
            _ImageFiles(paths, self.transform), batch_size=self.batch_size, num_workers=num_workers, collate_fn=_collate
        )
        embs, oks = [], []
        for x, ok in loader:
            e = torch.zeros(len(ok), 0)
            if ok.any():
                z = F.normalize(self.model.encode_image(x[ok].to(self.device)).float(), dim=-1).cpu()
                e = torch.zeros(len(ok), z.shape[1])
                e[ok] = z
            embs.append(e)
            oks.append(ok)
        dim = max((e.shape[1] for e in embs), default=0)
        embs = [e if e.shape[1] == dim else torch.zeros(len(e), dim) for e in embs]
        return (torch.cat(embs), torch.cat(oks)) if embs else (torch.zeros(0, 0), torch.zeros(0, dtype=torch.bool))


def load_clip_encoder(
    model_name: str, pretrained: str | None, weights_dir: str | Path | None, device: str = "cpu", batch_size: int = 256
) -> ClipEncoder:
    """A :class:`ClipEncoder` from :func:`common.backbones.clip.build_clip` (offline; a missing checkpoint raises
    ``ClipWeightsNotFoundError`` naming ``make weights-clip``)."""
    import open_clip

    from common.backbones.clip import build_clip, resolve_source
    from common.data.transforms import paper_transforms

    model, pre = build_clip(model_name, pretrained, weights_dir, device=device, seed=0 if pretrained is None else None)
    tokenizer = open_clip.get_tokenizer(resolve_source(model_name, pretrained, weights_dir)[0])
    transform = paper_transforms(False, size=pre.image_size, resize=pre.image_size, mean=pre.mean, std=pre.std)
    return ClipEncoder(model, tokenizer, transform, f"{model_name}|{pretrained}", device, batch_size)


class EmbeddingCache:
    """Embeddings of an ordered list of inputs, stored in chunks of :data:`_CHUNK` rows under ``folder/<key>/``.

    The key hashes the encoder identity, a tag and the whole input list, so a change of model, template or landmark
    list starts a new cache; chunks already on disk are loaded, missing ones computed and written at once (an
    interrupted run resumes at the first missing chunk).
    """

    def __init__(self, folder: str | Path, identity: str, tag: str, items: Sequence[str]) -> None:
        digest = hashlib.sha1("\n".join([identity, tag, *items]).encode()).hexdigest()[:16]
        self.folder = Path(folder) / f"{tag}-{digest}"
        self.items = list(items)

    def get(self, encode: Callable[[list[str]], Tensor], desc: str) -> Tensor:
        from tqdm import tqdm

        self.folder.mkdir(parents=True, exist_ok=True)
        n_chunks = max(1, math.ceil(len(self.items) / _CHUNK))
        parts = []
        for c in tqdm(range(n_chunks), desc=desc, unit="chunk", disable=not sys.stderr.isatty()):
            f = self.folder / f"part_{c:05d}.pt"
            if f.is_file():
                parts.append(torch.load(f, map_location="cpu"))
                continue
            emb = encode(self.items[c * _CHUNK : (c + 1) * _CHUNK]).float()
            tmp = f.with_suffix(".tmp")
            torch.save(emb, tmp)
            os.replace(tmp, f)
            parts.append(emb)
        return torch.cat(parts)


def _mean_image_embeddings(encoder, groups: list[list[Path]], dim: int, num_workers: int) -> Tensor:
    """``[n, dim]``: per landmark, the normalised mean of its readable images' embeddings (zeros if none)."""
    emb, ok = encoder.encode_images([p for g in groups for p in g], num_workers=num_workers)
    out = torch.zeros(len(groups), dim)
    s = 0
    for i, g in enumerate(groups):
        sel = ok[s : s + len(g)]
        if sel.any():
            out[i] = F.normalize(emb[s : s + len(g)][sel].mean(0), dim=-1)
        s += len(g)
    return out


# --------------------------------------------------------------------------------------------------------------
# the build


@dataclass
class BuildResult:
    """What :func:`build` wrote and counted."""

    hierarchy_csv: Path
    summary_csv: Path
    samples_png: Path | None
    num_landmarks: int
    num_other: int
    num_with_images: int
    num_missing_images: int
    labels: list[str]


def landmark_images(root: Path, split: str) -> dict[int, list[str]]:
    """``{landmark_id: image ids}`` of a split (``train_clean.csv`` or ``index_image_to_landmark.csv``)."""
    _, images_file, _ = SPLITS[split]
    path = require_path(root / images_file, dataset=DATASET, layout=LAYOUT, make_target=MAKE_TARGET)
    if split == "train":
        ids, images = read_train_clean(path)
        return dict(zip(ids.tolist(), images))
    cols = read_csv_columns(path, ("id", "landmark_id"))
    out: dict[int, list[str]] = {}
    for iid, lid in zip(cols["id"], cols["landmark_id"]):
        out.setdefault(int(lid), []).append(iid)
    return out


def build(
    root: str | Path,
    out: str | Path,
    encoder,
    supercategories: SuperCategories,
    split: str = "train",
    threshold: float | None = None,
    images_per_landmark: int = 0,
    image_weight: float = 0.5,
    all_landmarks: bool = False,
    sample_cols: int = 6,
    seed: int = 0,
    num_workers: int = 0,
) -> BuildResult:
    """Assign every landmark of ``split`` to a super-category and write the outputs (module docstring).

    ``encoder`` has ``encode_text(list[str]) -> [n, D]``, ``encode_images(paths, num_workers) -> ([n, D],
    readable [n])``, ``logit_scale`` and ``identity`` (:class:`ClipEncoder`; tests pass a constructed one).
    ``all_landmarks``: also classify the landmarks of the category file without images in the split's image list
    (by default only landmarks with images are written, e.g. the 81,313 of ``train_clean.csv``).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {sorted(SPLITS)}, got {split!r}")
    root, out = Path(root), Path(out)
    sc = supercategories
    thr = sc.threshold if threshold is None else float(threshold)
    cat_file, _, folder = SPLITS[split]
    categories = read_label_to_category(
        require_path(root / cat_file, dataset=DATASET, layout=LAYOUT, make_target=MAKE_TARGET)
    )
    images = landmark_images(root, split)
    unknown = sorted(set(images) - set(categories))
    if unknown:
        raise ValueError(
            f"{len(unknown)} landmark(s) with images have no row in {cat_file}, e.g. {unknown[0]}; the metadata "
            f"files must come from the same GLDv2 release"
        )
    ids = sorted(categories) if all_landmarks else sorted(images)
    names = [category_name(categories[i]) for i in ids]
    out.mkdir(parents=True, exist_ok=True)
    cache = out / "cache"
    texts = [sc.landmark_template.format(n) for n in names]
    u = EmbeddingCache(cache, encoder.identity, f"{split}-text", texts).get(encoder.encode_text, "landmark names")
    classes = class_embeddings([encoder.encode_text(sc.prompts(k)) for k in range(len(sc.names))])
    scale = sc.scale if sc.scale is not None else encoder.logit_scale
    p = zero_shot_probs(u, classes, scale)
    n_with_images = n_missing = 0
    if images_per_landmark > 0:
        groups = {i: [image_path(root / folder, x) for x in images.get(i, [])[:images_per_landmark]] for i in ids}
        keys = [f"{i}:" + "|".join(str(x) for x in groups[i]) for i in ids]

        def encode_groups(chunk: list[str]) -> Tensor:
            members = [groups[int(k.split(":", 1)[0])] for k in chunk]
            return _mean_image_embeddings(encoder, members, classes.shape[1], num_workers)

        v = EmbeddingCache(cache, encoder.identity, f"{split}-images{images_per_landmark}", keys).get(
            encode_groups, "landmark images"
        )
        has = v.norm(dim=1) > 0
        n_with_images, n_missing = int(has.sum()), int((~has).sum())
        p = mix_probs(p, zero_shot_probs(v, classes, scale), has, image_weight)
        if n_missing:
            log.warning("%d landmarks have no readable image; they are classified by name only", n_missing)
    labels, conf, tops = assign(p, sc.names, thr, sc.other)

    hierarchy_csv = out / f"{split}_hierarchy.csv"
    with open(hierarchy_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(HIERARCHY_COLUMNS)
        for i, name, lab, c, t in zip(ids, names, labels, conf.tolist(), tops):
            w.writerow([i, categories[i], name, lab, f"{c:.4f}", t])
    summary = summarize(ids, labels, images, [*sc.names, sc.other])
    summary_csv = out / f"{split}_summary.csv"
    with open(summary_csv, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["hierarchical_label", "landmarks", "images"])
        w.writerows(summary)
    samples = out / f"{split}_samples.png"
    drawn = draw_sample_sheet(
        samples, ids, names, labels, conf, [*sc.names, sc.other], images, root / folder, sample_cols, seed
    )
    result = BuildResult(
        hierarchy_csv,
        summary_csv,
        samples if drawn else None,
        len(ids),
        labels.count(sc.other),
        n_with_images,
        n_missing,
        labels,
    )
    info = {
        "split": split,
        "encoder": encoder.identity,
        "supercategories": asdict(sc),
        "threshold": thr,
        "scale": scale,
        "images_per_landmark": images_per_landmark,
        "image_weight": image_weight,
        "all_landmarks": all_landmarks,
        "num_landmarks": len(ids),
        "num_other": result.num_other,
        "num_with_images": n_with_images,
        "num_without_readable_image": n_missing,
    }
    (out / f"{split}_build.json").write_text(json.dumps(info, indent=2))
    return result


def summarize(
    ids: Sequence[int], labels: Sequence[str], images: dict[int, list[str]], order: Sequence[str]
) -> list[tuple[str, int, int]]:
    """``(super-category, landmarks, images)`` rows in ``order`` (empty super-categories included)."""
    n_lm = dict.fromkeys(order, 0)
    n_im = dict.fromkeys(order, 0)
    for i, lab in zip(ids, labels):
        n_lm[lab] += 1
        n_im[lab] += len(images.get(i, []))
    return [(k, n_lm[k], n_im[k]) for k in order]


def draw_sample_sheet(
    path: Path,
    ids: Sequence[int],
    names: Sequence[str],
    labels: Sequence[str],
    conf: Tensor,
    order: Sequence[str],
    images: dict[int, list[str]],
    image_folder: Path,
    cols: int = 6,
    seed: int = 0,
) -> bool:
    """A PNG grid: a row per non-empty super-category, ``cols`` random landmarks of it (first image, or a grey tile
    when it is missing; name and confidence below). Returns False when there is nothing to draw."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rng = np.random.RandomState(seed)
    rows = []
    for lab in order:
        members = [k for k, x in enumerate(labels) if x == lab]
        if members:
            pick = rng.choice(members, size=min(cols, len(members)), replace=False)
            rows.append((lab, len(members), sorted(pick.tolist())))
    if not rows or cols < 1:
        return False
    fig, axes = plt.subplots(len(rows), cols, figsize=(1.9 * cols, 2.0 * len(rows)), squeeze=False)
    for r, (lab, count, pick) in enumerate(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(f"{lab}\n({count})", fontsize=9)
            if c >= len(pick):
                if c > 0:
                    ax.axis("off")
                continue
            k = pick[c]
            tile = np.full((64, 64, 3), 200, dtype=np.uint8)
            first = images.get(ids[k], [])[:1]
            if first:
                try:
                    with Image.open(image_path(image_folder, first[0])) as im:
                        tile = np.asarray(im.convert("RGB").resize((128, 128)))
                except (OSError, UnidentifiedImageError, SyntaxError):
                    pass
            ax.imshow(tile)
            name = names[k] if len(names[k]) <= 24 else names[k][:23] + "…"
            ax.set_xlabel(f"{name}\n{float(conf[k]):.2f}", fontsize=7)
    fig.suptitle("H-GLDv2 super-categories: random landmarks per label (name, confidence)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return True


# --------------------------------------------------------------------------------------------------------------
# command line


def _print_summary(summary_csv: Path) -> None:
    with open(summary_csv, newline="") as f:
        rows = list(csv.reader(f))
    width = max(len(r[0]) for r in rows)
    for r in rows:
        print(f"  {r[0]:<{width}}  {r[1]:>9}  {r[2]:>10}")


def main(argv: list[str] | None = None) -> BuildResult:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="assign every landmark to a super-category and write the hierarchy CSV")
    data_dir = Path(os.environ.get("DATA_DIR", "data"))
    b.add_argument("--root", type=Path, default=data_dir / "gldv2", help="the GLDv2 folder (default: $DATA_DIR/gldv2)")
    b.add_argument("--split", choices=sorted(SPLITS), default="train", help="landmarks of train or of the index")
    b.add_argument("--out", type=Path, default=None, help="output folder (default: <root>/hgldv2)")
    b.add_argument("--supercategories", type=Path, default=DEFAULT_SUPERCATEGORIES)
    b.add_argument("--threshold", type=float, default=None, help="override the YAML's threshold")
    b.add_argument("--images-per-landmark", type=int, default=0, help="images through the image encoder (0: names)")
    b.add_argument("--image-weight", type=float, default=0.5, help="weight of the image probabilities")
    b.add_argument("--all-landmarks", action="store_true", help="also landmarks without images in the split")
    b.add_argument("--model", default="ViT-B-16", help="open_clip model name")
    b.add_argument("--pretrained", default="openai", help="tag under --weights-dir, or a weights file")
    b.add_argument("--weights-dir", type=Path, default=Path(os.environ.get("WEIGHTS_DIR", "weights")))
    b.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--num-workers", type=int, default=4)
    b.add_argument("--sample-cols", type=int, default=6)
    b.add_argument("--seed", type=int, default=0)
    a = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    pretrained = None if a.pretrained in ("", "none", "None") else a.pretrained
    if pretrained is None:
        log.warning("random-init CLIP (--pretrained none): the assignment means nothing; use it to test the pipeline")
    sc = load_supercategories(a.supercategories)
    encoder = load_clip_encoder(a.model, pretrained, a.weights_dir, a.device, a.batch_size)
    out = a.out or a.root / "hgldv2"
    res = build(
        a.root,
        out,
        encoder,
        sc,
        split=a.split,
        threshold=a.threshold,
        images_per_landmark=a.images_per_landmark,
        image_weight=a.image_weight,
        all_landmarks=a.all_landmarks,
        sample_cols=a.sample_cols,
        seed=a.seed,
        num_workers=a.num_workers,
    )
    print(f"{res.num_landmarks} landmarks -> {res.hierarchy_csv} ({res.num_other} in '{sc.other}')")
    _print_summary(res.summary_csv)
    if res.samples_png is not None:
        print(f"sample sheet: {res.samples_png}")
    return res


if __name__ == "__main__":
    main()
