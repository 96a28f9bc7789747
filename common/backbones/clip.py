"""open_clip models by name, with pretrained weights from a tag, a file or a ``local-dir:`` folder, never downloaded.

Weight sources (``build_clip(model_name, pretrained=..., weights_dir=...)``):

- ``pretrained=None``: random init (tests, the no-weights demo).
- ``pretrained="<tag>"`` (e.g. ``"openai"``): the weights must already sit in the folder
  ``{weights_dir}/open_clip/{model_name}-{tag}/`` (``open_clip_config.json`` + a weights file), which is what
  ``make weights-clip`` writes. That folder is loaded through open_clip's ``local-dir:`` schema, so the model config
  (QuickGELU for OpenAI weights) and the preprocessing travel with the weights (open_clip issue #1068).
- ``pretrained="/path/to/file.{safetensors,bin,pt,pth}"``: an open_clip state dict for ``model_name``.
- ``model_name="local-dir:/path"``: an open_clip folder (``open_clip_config.json`` + weights); ``pretrained`` ignored.

When weights are asked for and missing, :class:`ClipWeightsNotFoundError` names the expected file and
``make weights-clip``. Nothing here downloads at run or test time; only :func:`fetch_weights` (the CLI behind
``make weights-clip``, run on a machine with internet) does.

Tiny configs for tests (``tiny_clip``: ViT, 32 px; ``tiny_clip_rn``: ModifiedResNet, 64 px) live in
``common/backbones/configs/`` and are registered with ``open_clip.add_model_config`` by :func:`register_configs`.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import open_clip
import torch
from torch import nn

CONFIG_DIR = Path(__file__).parent / "configs"
TINY_MODELS = ("tiny_clip", "tiny_clip_rn")
_WEIGHT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
    "open_clip_pytorch_model.pth",
    "model.safetensors",
    "pytorch_model.bin",
    "model.pth",
)
_registered = False


class ClipWeightsNotFoundError(FileNotFoundError):
    """Pretrained CLIP weights were asked for but are not on disk."""


@dataclass(frozen=True)
class ClipPreprocess:
    """What the image transform needs to match the weights."""

    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"


def register_configs() -> None:
    """Register the repo's tiny JSON configs with open_clip (idempotent)."""
    global _registered
    if not _registered:
        open_clip.add_model_config(CONFIG_DIR)
        _registered = True


def tag_dir(weights_dir: str | Path, model_name: str, tag: str) -> Path:
    """The folder where ``make weights-clip`` puts the weights of ``(model_name, tag)``."""
    return Path(weights_dir).expanduser() / "open_clip" / f"{model_name}-{tag}"


def _find_weights(folder: Path) -> Path | None:
    for name in _WEIGHT_NAMES:
        if (folder / name).is_file():
            return folder / name
    return None


def _missing(expected: Path, what: str, model_name: str, tag: str | None) -> ClipWeightsNotFoundError:
    fetch = f"make weights-clip CLIP_MODEL={model_name} CLIP_TAG={tag}" if tag else "make weights-clip"
    return ClipWeightsNotFoundError(
        f"CLIP weights for '{model_name}' not found: expected {what} '{expected}'. "
        f"Fetch them on a machine with internet with `{fetch}` (writes {{weights_dir}}/open_clip/<model>-<tag>/), "
        f"or pass `pretrained=<path to an open_clip state dict>` / `model_name=local-dir:<folder>`, "
        f"or `pretrained=null` for a random-init model (numbers then mean nothing)."
    )


def resolve_source(model_name: str, pretrained: str | None, weights_dir: str | Path | None) -> tuple[str, str | None]:
    """Map (model_name, pretrained, weights_dir) to what ``open_clip.create_model`` gets, checking files exist.

    Returns ``(model_name_for_open_clip, pretrained_for_open_clip)``; never returns a bare tag (which open_clip
    would try to download).
    """
    if model_name.startswith("local-dir:"):
        folder = Path(model_name[len("local-dir:") :]).expanduser()
        if not (folder / "open_clip_config.json").is_file():
            raise _missing(folder / "open_clip_config.json", "the config file", model_name, None)
        if _find_weights(folder) is None:
            raise _missing(folder / _WEIGHT_NAMES[0], "a weights file", model_name, None)
        return f"local-dir:{folder}", None
    if pretrained is None or pretrained in ("", "none", "None"):
        return model_name, None
    as_path = Path(str(pretrained)).expanduser()
    if as_path.suffix in (".safetensors", ".bin", ".pt", ".pth") or "/" in str(pretrained):
        if not as_path.is_file():
            raise _missing(as_path, "the weights file", model_name, None)
        return model_name, str(as_path)
    if weights_dir is None:
        raise ValueError(
            f"pretrained='{pretrained}' is a tag; pass weights_dir (configs: ${{paths.weights_dir}}) so the weights "
            f"can be found under weights_dir/open_clip/{model_name}-{pretrained}/"
        )
    folder = tag_dir(weights_dir, model_name, pretrained)
    if not (folder / "open_clip_config.json").is_file() or _find_weights(folder) is None:
        raise _missing(folder / _WEIGHT_NAMES[0], "the weights file", model_name, pretrained)
    return f"local-dir:{folder}", None


def _preprocess_of(model: nn.Module) -> ClipPreprocess:
    cfg = getattr(model.visual, "preprocess_cfg", None) or {}
    size = cfg.get("size", model.visual.image_size)
    size = size[0] if isinstance(size, (tuple, list)) else size
    return ClipPreprocess(
        image_size=int(size),
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        interpolation=cfg.get("interpolation", "bicubic"),
    )


def build_clip(
    model_name: str,
    pretrained: str | None = None,
    weights_dir: str | Path | None = None,
    precision: str = "fp32",
    device: str | torch.device = "cpu",
    quick_gelu: bool | None = None,
    seed: int | None = None,
) -> tuple[nn.Module, ClipPreprocess]:
    """Build an open_clip ``CLIP`` model and its preprocessing config. See the module docstring for sources.

    Args:
        model_name: an open_clip model name (``ViT-B-16``, ``RN50``, ``tiny_clip``) or ``local-dir:<folder>``.
        pretrained: ``None`` (random init), a tag found under ``weights_dir``, or a weights file.
        weights_dir: the root that holds ``open_clip/<model>-<tag>/`` (``${paths.weights_dir}``).
        quick_gelu: force QuickGELU (OpenAI weights need it); ``None`` keeps the config's choice.
        seed: seed for a random-init model (so tests and the no-weights demo are reproducible).
    """
    register_configs()
    name, file = resolve_source(model_name, pretrained, weights_dir)
    kwargs = {}
    if quick_gelu:
        kwargs["force_quick_gelu"] = True
    if seed is not None:
        torch.manual_seed(seed)
    model = open_clip.create_model(
        name, pretrained=file, precision=precision, device=device, pretrained_text=False, **kwargs
    )
    return model, _preprocess_of(model)


def fetch_weights(model_name: str, tag: str, weights_dir: str | Path) -> Path:
    """Download the open_clip weights of ``(model_name, tag)`` and write a ``local-dir:`` folder (needs internet).

    This is the only function that downloads; ``make weights-clip`` calls it. The folder holds
    ``open_clip_config.json`` (model config, with QuickGELU when the tag needs it, and preprocessing) and the weights.
    """
    from open_clip.pretrained import download_pretrained, get_pretrained_cfg

    register_configs()
    pcfg = get_pretrained_cfg(model_name, tag)
    if not pcfg:
        raise ValueError(
            f"open_clip has no tag '{tag}' for '{model_name}': {open_clip.list_pretrained_tags_by_model(model_name)}"
        )
    out = tag_dir(weights_dir, model_name, tag)
    out.mkdir(parents=True, exist_ok=True)
    src = Path(download_pretrained(pcfg, cache_dir=str(out / ".cache")))
    dst = out / ("open_clip_model.safetensors" if src.suffix == ".safetensors" else "open_clip_pytorch_model.bin")
    shutil.copyfile(src, dst)
    shutil.rmtree(out / ".cache", ignore_errors=True)
    model_cfg = open_clip.get_model_config(model_name)
    if pcfg.get("quick_gelu"):
        model_cfg["quick_gelu"] = True
    pre = {k: pcfg[k] for k in ("mean", "std", "interpolation", "resize_mode") if k in pcfg}
    pre["size"] = model_cfg["vision_cfg"]["image_size"]
    (out / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg, "preprocess_cfg": pre}, indent=2))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fetch open_clip weights into {weights_dir}/open_clip/<model>-<tag>/")
    p.add_argument("--model", default="ViT-B-16")
    p.add_argument("--tag", default="openai")
    p.add_argument("--weights-dir", required=True)
    a = p.parse_args(argv)
    print(fetch_weights(a.model, a.tag, a.weights_dir))


def create_clip(
    model_name: str,
    pretrained: str | None = None,
    weights_dir: str | Path | None = None,
    precision: str = "fp32",
    quick_gelu: bool | None = None,
    seed: int | None = None,
) -> nn.Module:
    """:func:`build_clip` without the preprocessing config: the ``_target_`` Hydra configs use."""
    return build_clip(model_name, pretrained, weights_dir, precision, "cpu", quick_gelu, seed)[0]


if __name__ == "__main__":
    main()
