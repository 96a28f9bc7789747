"""Extract features from a frozen backbone once, and cache them on disk.

See docs/methods/heat.md#formulas and docs/codebase.md#how-a-run-flows.

Cache layout, under ``cache_dir``::

    <dataset>_<split>_<key>.json      the sidecar: the key fields, shapes, dtype, ``"complete": true``
    <dataset>_<split>_<key>/avg.npy   [N, D] float, written as a streamed np.memmap (np.lib.format.open_memmap)
                          .../std.npy, max.npy, logits.npy, labels.npy, fc_weight.npy, fc_bias.npy

``key`` is the first 16 hex digits of the SHA-1 of the JSON of what determines the features (:func:`cache_key`): the
backbone name, a fingerprint of the backbone weights (the checkpoint file's name, size and content SHA-1, or the
state dict of an in-memory model), the dataset and split, the instantiated transform's ``repr`` (torchvision prints
every parameter, so changing ``extract.transform.mean`` gives another key) and the layer read (:data:`LAYER`).
Arrays are written batch by batch into pre-sized memmaps, so an ImageNet-train cache (1,281,167 x 2048) never has to
fit in memory, and they are read back memory-mapped. The sidecar is written last with ``complete: true``; a cache
without it (an interrupted run) is recomputed. So is an entry that cannot be trusted: a sidecar that is not valid JSON,
an array that is missing, truncated, of another length than the sidecar's ``num_samples`` or not numeric (arrays are
read with ``allow_pickle=False``: a cache never runs code). :func:`load_cached` logs a warning naming the file and
returns None, and :func:`extract_features` then recomputes the entry.

Backbones: any timm model. ``forward_features`` gives the last-stage map (``[N, C, H, W]`` or tokens ``[N, T, C]``),
``forward_head(map)`` the logits and ``forward_head(map, pre_logits=True)`` the vector the classifier sees. For CNNs the
stored ``avg`` is the spatial mean of the map (= timm's pre-logits for ResNets); for token models ``avg`` is the
pre-logits vector and ``std`` / ``max`` pool over all tokens.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from heat.features import Features, pool_feature_map

_ARRAYS = ("avg", "std", "max", "logits", "labels")
#: the activations a cache holds: the last stage's map (``forward_features``) pooled three ways and ``forward_head``'s
#: logits. It enters the key, so features of another layer are never read as these.
LAYER = "last_stage"
log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=64)
def _file_sha1(path: str, size: int, mtime_ns: int) -> str:  # noqa: ARG001 - size and mtime key the memo
    h = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def weights_fingerprint(checkpoint: str | Path | nn.Module | None) -> dict[str, Any] | None:
    """What identifies the backbone weights: None (random init / built-in weights), the checkpoint file's name, size
    and content SHA-1 (read once per process and file version; the folder does not enter, so the same file under
    another ``weights_dir`` shares the cache), or the SHA-1 of an in-memory model's state dict."""
    if checkpoint is None:
        return None
    if isinstance(checkpoint, nn.Module):
        h = hashlib.sha1()
        for k, v in checkpoint.state_dict().items():
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        return {"state_dict_sha1": h.hexdigest()}
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        from common.backbones.timm_backbone import WeightsNotFoundError

        raise WeightsNotFoundError(
            f"backbone weights '{path}' do not exist. The feature cache key includes their content hash, so the "
            f"weights are needed to find (or write) cached features: fetch them (`make weights-heat`, heat/README.md) "
            f"or point `extract.backbone.checkpoint` at them."
        )
    st = path.stat()
    return {"file": path.name, "bytes": st.st_size, "sha1": _file_sha1(str(path.resolve()), st.st_size, st.st_mtime_ns)}


def transform_fingerprint(transform: Any) -> str:
    """A stable text of the transform applied before the backbone: the ``repr`` of the instantiated transform (a
    config mapping with ``_target_`` is instantiated first). A string is taken as given: it describes inputs that
    are transformed in code (the demo's tensors) and must change when that code does."""
    if transform is None:
        return "none"
    if isinstance(transform, str):
        return transform
    if isinstance(transform, Mapping) or type(transform).__name__ == "DictConfig":
        import hydra

        transform = hydra.utils.instantiate(transform)
    text = repr(transform)
    if re.search(r" at 0x[0-9a-fA-F]+", text):
        raise ValueError(
            f"the transform's repr holds a memory address ({text!r}), so it would give a new cache key on every run. "
            f"Use torchvision transforms (their repr lists every parameter) or pass a string describing the transform."
        )
    return text


def cache_key(
    *,
    backbone: str,
    checkpoint: str | Path | nn.Module | None,
    dataset: str,
    split: str,
    transform: Any,
    layer: str = LAYER,
) -> str:
    """16-hex-digit key of everything that determines the features (see the module docstring).

    Args:
        backbone: the architecture's name.
        checkpoint: the backbone weights file (hashed by content), an in-memory model, or None.
        transform: the instantiated transform, its config (``_target_``), or a string describing it.
        layer: which activations are cached (:data:`LAYER`).
    """
    return key_of(key_fields(backbone, checkpoint, dataset, split, transform, layer))


def key_of(fields: Mapping[str, Any]) -> str:
    """The first 16 hex digits of the SHA-1 of ``fields`` as sorted JSON."""
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:16]


def key_fields(backbone, checkpoint, dataset: str, split: str, transform: Any, layer: str = LAYER) -> dict[str, Any]:
    """The JSON-able fields :func:`cache_key` hashes (also written to the sidecar)."""
    return {
        "backbone": backbone,
        "weights": weights_fingerprint(checkpoint),
        "dataset": dataset,
        "split": split,
        "transform": transform_fingerprint(transform),
        "layer": layer,
    }


def cache_paths(cache_dir: str | Path, *, dataset: str, split: str, key: str) -> tuple[Path, Path]:
    """``(array folder, JSON sidecar)`` of one cache entry."""
    stem = f"{dataset}_{split}_{key}".replace("/", "-")
    return Path(cache_dir) / stem, Path(cache_dir) / f"{stem}.json"


def linear_head(model: nn.Module) -> tuple[Tensor, Tensor] | None:
    """The ``(weight [C, D], bias [C])`` of a timm model's final Linear classifier, or None."""
    head = model.get_classifier() if hasattr(model, "get_classifier") else getattr(model, "fc", None)
    if isinstance(head, nn.Linear):
        bias = head.bias if head.bias is not None else torch.zeros(head.out_features)
        return head.weight.detach().cpu().float(), bias.detach().cpu().float()
    return None


@torch.no_grad()
def backbone_outputs(model: nn.Module, images: Tensor) -> dict[str, Tensor]:
    """Run a timm-style model once; returns ``avg``, ``std``, ``max`` ``[B, D]`` and ``logits`` ``[B, C]``."""
    fmap = model.forward_features(images)
    pooled = pool_feature_map(fmap)
    logits = model.forward_head(fmap)
    if fmap.ndim == 3:
        pooled["avg"] = model.forward_head(fmap, pre_logits=True)
    return {**pooled, "logits": logits}


def _batch_images_labels(batch) -> tuple[Tensor, Tensor | None]:
    if isinstance(batch, dict):
        return batch["image"], batch.get("label")
    if isinstance(batch, list | tuple):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def load_cached(cache_dir: str | Path, *, dataset: str, split: str, key: str, mmap: bool = True) -> Features | None:
    """Read a complete cache entry (memory-mapped copy-on-write when ``mmap``), or None if absent or incomplete.

    A corrupt entry (see the module docstring) also gives None, with a warning naming the file.
    """
    folder, sidecar = cache_paths(cache_dir, dataset=dataset, split=split, key=key)
    if not sidecar.exists():
        return None

    def corrupt(path: Path, why: str) -> None:
        log.warning("feature cache %s is unusable (%s): ignoring the entry, it will be recomputed", path, why)

    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        return corrupt(sidecar, f"{type(e).__name__}: {e}")
    if not isinstance(meta, dict):
        return corrupt(sidecar, "the sidecar is not a JSON object")
    if not meta.get("complete"):
        return None
    n = meta.get("num_samples")
    kw = {}
    for name in (*_ARRAYS, "fc_weight", "fc_bias"):
        f = folder / f"{name}.npy"
        if not f.exists():
            if name in meta.get("arrays", ()):
                return corrupt(f, "the sidecar lists it but the file is missing")
            continue
        try:
            arr = np.load(f, mmap_mode="c" if mmap else None, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            return corrupt(f, f"{type(e).__name__}: {e}")
        if arr.dtype.kind not in "fiu":
            return corrupt(f, f"dtype {arr.dtype} is not numeric")
        if name in _ARRAYS and (arr.ndim == 0 or arr.shape[0] != n):
            return corrupt(f, f"shape {arr.shape}, but the sidecar says num_samples={n}")
        kw[name] = torch.from_numpy(arr)
    if "labels" in kw and bool((kw["labels"] < 0).all()):
        kw["labels"] = None  # unlabelled (OOD) set
    return Features(**kw)


def extract_features(
    model: nn.Module,
    loader: Iterable,
    *,
    cache_dir: str | Path,
    backbone: str,
    checkpoint: str | Path | nn.Module | None,
    dataset: str,
    split: str,
    transform: Any,
    layer: str = LAYER,
    num_samples: int | None = None,
    device: torch.device | str = "cpu",
    dtype: np.dtype = np.float32,
    overwrite: bool = False,
) -> Features:
    """Features of ``loader`` under ``model`` (eval mode, no grad), cached on disk.

    Args:
        model: a timm model (``forward_features`` / ``forward_head``); it is put in eval mode and not modified.
        loader: yields dicts ``{"image", "label"}`` or ``(image, label)`` tuples, **in a fixed order** (no shuffle).
        backbone, checkpoint, dataset, split, transform, layer: the key fields (:func:`cache_key`); ``transform`` is the
            transform the loader's dataset applies (or its config, or a string for inputs transformed in code).
        num_samples: the dataset size, used to pre-size the memmaps (default ``len(loader.dataset)``).
        dtype: on-disk float dtype (HEAT used float64 for ImageNet; float32 halves the 10 GB).
    Returns the cached Features (memory-mapped). Labels absent or negative mean "unlabelled" and load as None.
    """
    fields = key_fields(backbone, checkpoint, dataset, split, transform, layer)
    key = key_of(fields)
    if not overwrite and (hit := load_cached(cache_dir, dataset=dataset, split=split, key=key)) is not None:
        return hit
    folder, sidecar = cache_paths(cache_dir, dataset=dataset, split=split, key=key)
    folder.mkdir(parents=True, exist_ok=True)
    if sidecar.exists():
        sidecar.unlink()
    n = num_samples if num_samples is not None else len(loader.dataset)  # type: ignore[attr-defined]
    was_training = model.training
    model.eval()
    out: dict[str, np.memmap] = {}
    pos = 0
    try:
        for batch in loader:
            images, labels = _batch_images_labels(batch)
            res = backbone_outputs(model, images.to(device))
            b = len(images)
            if pos + b > n:
                raise ValueError(f"the loader yielded more than num_samples={n} items; pass the dataset size")
            lab = torch.full((b,), -1, dtype=torch.int64) if labels is None else torch.as_tensor(labels).long()
            if lab.ndim > 1:
                lab = lab[:, 0]  # finest level of hierarchical labels
            res["labels"] = lab
            for name, t in res.items():
                arr = t.detach().cpu().numpy()
                if name not in out:
                    dt = np.int64 if name == "labels" else dtype
                    out[name] = np.lib.format.open_memmap(
                        folder / f"{name}.npy", mode="w+", dtype=dt, shape=(n, *arr.shape[1:])
                    )
                out[name][pos : pos + b] = arr
            pos += b
    finally:
        model.train(was_training)
    if pos != n:
        raise ValueError(f"the loader yielded {pos} items but num_samples={n}")
    for arr in out.values():
        arr.flush()
    del out
    head = linear_head(model)
    if head is not None:
        np.save(folder / "fc_weight.npy", head[0].numpy())
        np.save(folder / "fc_bias.npy", head[1].numpy())
    meta = {
        **fields,
        "checkpoint": str(checkpoint) if isinstance(checkpoint, str | Path) else None,
        "key": key,
        "num_samples": n,
        "dtype": np.dtype(dtype).name,
        "arrays": sorted(p.stem for p in folder.glob("*.npy")),
        "complete": True,
    }
    tmp = sidecar.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    os.replace(tmp, sidecar)
    feats = load_cached(cache_dir, dataset=dataset, split=split, key=key)
    assert feats is not None
    return feats
