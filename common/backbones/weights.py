"""Fetch pretrained weights into exactly the file names that the configs read (the CLI behind ``make weights-timm``
and ``make weights-clip``; it needs internet, nothing else in the repo downloads).

timm: ``python -m common.backbones.weights timm NAME --weights-dir W`` writes ``W/timm/<model>.<tag>.safetensors``.
``NAME`` is ``<model>.<tag>`` (``resnet50.tv_in1k``) or a bare ``<model>``, which gets timm's *default* pretrained tag
(``resnet50`` -> ``resnet50.a1_in1k``, not torchvision's ``tv_in1k``: name the tag to get other weights). The configs
read ``${paths.weights_dir}/timm/<model>.<tag>.safetensors`` with ``name: <model>.<tag>``; without ``NAME`` every such
file named in ``configs/`` is fetched.

open_clip: ``... clip NAME`` with ``NAME`` = ``<model>-<tag>`` (``ViT-B-16-openai``; open_clip's tags contain no
``-``) writes the folder ``W/open_clip/<model>-<tag>/`` that :func:`common.backbones.clip.build_clip` reads for
``model_name=<model>, pretrained=<tag>``; without ``NAME`` every (model_name, pretrained) pair of ``configs/``.

A file or folder already there is left alone (a second run is a no-op).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
TIMM_FILE = re.compile(r"\$\{paths\.weights_dir\}/timm/([A-Za-z0-9_.\-]+)\.safetensors")


def _require_online() -> None:
    import huggingface_hub.constants as hc

    if hc.HF_HUB_OFFLINE:
        raise RuntimeError(
            "HF_HUB_OFFLINE=1 is set, so nothing can be downloaded: run `make weights-timm` / `make weights-clip` "
            "(they set HF_HUB_OFFLINE=0) or unset HF_HUB_OFFLINE, on a machine with internet."
        )


def timm_stem(name: str) -> str:
    """``<model>.<tag>`` for ``name``: its own tag, else timm's default pretrained tag for the model."""
    import timm
    from timm.models import get_pretrained_cfg, split_model_name_tag

    model, tag = split_model_name_tag(name)
    if model not in timm.list_models():
        raise ValueError(f"timm has no model {model!r} (see timm.list_models())")
    if not tag:
        cfg = get_pretrained_cfg(model)
        if cfg is None or not getattr(cfg, "tag", None):
            raise ValueError(f"timm has no pretrained weights for {model!r}")
        tag = cfg.tag
    stem = f"{model}.{tag}"
    if stem not in timm.list_pretrained(f"{model}.*"):
        raise ValueError(f"timm has no pretrained tag {tag!r} for {model!r}: {timm.list_pretrained(f'{model}.*')}")
    return stem


def timm_file(name: str, weights_dir: str | Path) -> Path:
    """Where ``make weights-timm NAME=name`` writes: ``weights_dir/timm/<model>.<tag>.safetensors``."""
    return Path(weights_dir).expanduser() / "timm" / f"{timm_stem(name)}.safetensors"


def fetch_timm(name: str, weights_dir: str | Path) -> Path:
    """Download timm's pretrained weights for ``name`` and save them as :func:`timm_file` (atomically)."""
    import timm
    from safetensors.torch import save_file

    out = timm_file(name, weights_dir)
    if out.is_file():
        print(f"[ok] {out} is already there", file=sys.stderr)
        return out
    _require_online()
    stem = out.name[: -len(".safetensors")]
    model = timm.create_model(stem, pretrained=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp))
    os.replace(tmp, out)
    print(f"[ok] {out}  (configs: name: {stem}, weights: ${{paths.weights_dir}}/timm/{out.name})", file=sys.stderr)
    return out


def config_timm_names(config_dir: str | Path = CONFIG_DIR) -> list[str]:
    """The ``<model>.<tag>`` of every ``${paths.weights_dir}/timm/*.safetensors`` named in ``config_dir``."""
    found = set()
    for f in Path(config_dir).rglob("*.yaml"):
        found.update(TIMM_FILE.findall(f.read_text()))
    return sorted(found)


def parse_clip_name(name: str) -> tuple[str, str]:
    """``"<model>-<tag>"`` -> ``(model, tag)``, checked against open_clip's list of pretrained weights."""
    import open_clip

    model, _, tag = name.rpartition("-")
    if not model or (model, tag) not in set(open_clip.list_pretrained()):
        known = name if name in open_clip.list_models() else model
        raise ValueError(
            f"{name!r} is not <model>-<tag> of open_clip's pretrained weights (e.g. ViT-B-16-openai); "
            f"tags of {known!r}: {open_clip.list_pretrained_tags_by_model(known)}"
        )
    return model, tag


def config_clip_pairs(config_dir: str | Path = CONFIG_DIR) -> list[tuple[str, str]]:
    """Every ``(model_name, pretrained)`` tag pair of ``config_dir`` (files, ``local-dir:`` and null excluded)."""
    import yaml

    pairs = set()

    def walk(node) -> None:
        if isinstance(node, dict):
            model, tag = node.get("model_name"), node.get("pretrained")
            if isinstance(model, str) and isinstance(tag, str) and "/" not in tag and "$" not in model + tag:
                if not model.startswith("local-dir:") and "." not in tag:
                    pairs.add((model, tag))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    for f in Path(config_dir).rglob("*.yaml"):
        walk(yaml.safe_load(f.read_text()))
    return sorted(pairs)


def fetch_clip(model: str, tag: str, weights_dir: str | Path) -> Path:
    """The ``open_clip/<model>-<tag>/`` folder of :func:`common.backbones.clip.fetch_weights` (kept if present)."""
    from common.backbones.clip import _find_weights, fetch_weights, tag_dir

    out = tag_dir(weights_dir, model, tag)
    if (out / "open_clip_config.json").is_file() and _find_weights(out) is not None:
        print(f"[ok] {out} is already there", file=sys.stderr)
        return out
    _require_online()
    out = fetch_weights(model, tag, weights_dir)
    print(f"[ok] {out}  (configs: model_name: {model}, pretrained: {tag})", file=sys.stderr)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=("timm", "clip"))
    p.add_argument("names", nargs="*", help="timm: <model>[.<tag>]; clip: <model>-<tag>; none = all the configs read")
    p.add_argument("--weights-dir", type=Path, required=True)
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "0")
    try:
        if a.kind == "timm":
            for name in a.names or config_timm_names():
                fetch_timm(name, a.weights_dir)
        else:
            for model, tag in [parse_clip_name(n) for n in a.names] or config_clip_pairs():
                fetch_clip(model, tag, a.weights_dir)
    except (ValueError, RuntimeError) as e:
        print(f"[!!] {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
