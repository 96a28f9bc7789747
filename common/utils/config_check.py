"""Check a launch before anything loads: overrides that name unknown keys or options, and values of the wrong type.

- :func:`check_overrides` composes the config with the command-line overrides. A typo gets Hydra's message, a
  "did you mean" and the options of the group concerned only (the keys of the node, or the options of the config
  group).
- :func:`check_types` checks the composed values against the signatures of their ``_target_`` (every node that Hydra
  will instantiate: trainer, model, optimizer, data, callbacks, loggers) and the top-level keys of ``train.yaml``.
  ``trainer.max_epochs=abc`` gives ``trainer.max_epochs='abc': expected int or null (lightning...Trainer)``, one line
  per problem, before data and model are built. Only clear mismatches are reported (a string where a number or a
  flag is expected, a number where a list is expected, a value outside a ``Literal``, an argument the target does
  not take); values the signatures do not describe are left to the target.
"""

from __future__ import annotations

import collections.abc
import difflib
import inspect
import os
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
_NOT_GROUPS = ("local", "hydra")

# top-level keys of configs/train.yaml with their types
TOP_LEVEL_TYPES: dict[str, Any] = {
    "seed": int | None,
    "train": bool,
    "test": bool,
    "ckpt_path": str | None,
    "test_ckpt": Literal["best", "last"],
    "optimized_metric": str | None,
    "allow_undefined_metrics": bool,
}


class ConfigError(ValueError):
    """An override names an unknown key or config group option, or a value has the wrong type."""


def config_groups() -> list[str]:
    return sorted(p.name for p in CONFIG_DIR.iterdir() if p.is_dir() and p.name not in _NOT_GROUPS)


def group_options(group: str) -> list[str]:
    """The options of a config group, e.g. ``group_options("trainer") -> ["cpu", "ddp", ...]``."""
    folder = CONFIG_DIR / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


# ---------------------------------------------------------------------------------------------- overrides
def _compose(overrides: list[str], config_name: str, hydra_config: bool = False) -> DictConfig:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name=config_name, overrides=overrides, return_hydra_config=hydra_config)


def _did_you_mean(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.6)
    return f"Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""


def _hydra_lines(message: str) -> list[str]:
    """Hydra's message without the search path and OmegaConf's internals."""
    lines = []
    for line in message.splitlines():
        if line.startswith("Config search path") or line.startswith("\tprovider="):
            continue
        if line.strip().startswith(("object_type=", "full_key:")) or not line.strip():
            continue
        lines.append(line)
    return lines


def _options_line(group: str, option: str = "") -> str:
    """``group: a, b, c``; for nested groups (``experiment``) the sub-folder of ``option`` when there is one."""
    options = group_options(group)
    sub = option.rsplit("/", 1)[0] if "/" in option else ""
    if sub and (CONFIG_DIR / group / sub).is_dir():
        return f"Options of {group}/{sub}: {', '.join(o[len(sub) + 1 :] for o in options if o.startswith(sub + '/'))}"
    if any("/" in o for o in options):  # nested: list the folders, then the options at the top
        folders = sorted({o.split("/", 1)[0] for o in options if "/" in o})
        flat = [o for o in options if "/" not in o]
        return f"Options of {group}: {', '.join(flat + [f + '/...' for f in folders])}"
    return f"{group}: {', '.join(options)}"


def _key_typo_message(full_key: str, overrides: list[str], config_name: str) -> list[str]:
    """For an unknown key: a close match, the keys of its node, and the options of its config group when the node
    is a group (``trainer.max_epoch``) or the key looks like a group name (``loger=csv``)."""
    parent, _, leaf = full_key.rpartition(".")
    rest = [o for o in overrides if o.split("=", 1)[0].lstrip("+~") != full_key]
    try:
        cfg = _compose(rest, config_name)
    except Exception:
        cfg = _compose([], config_name)
    node = OmegaConf.select(cfg, parent) if parent else cfg
    keys = sorted(str(k) for k in node.keys() if not str(k).startswith("_")) if isinstance(node, DictConfig) else []
    groups = config_groups()
    lines = []
    hint = _did_you_mean(leaf, sorted(set(keys) | (set(groups) if not parent else set())))
    if hint:
        lines.append(hint)
    if keys:
        lines.append(f"Keys of {parent or 'the root config'}: {', '.join(keys)}")
    concerned = [parent] if parent in groups else []
    if not parent:
        concerned += difflib.get_close_matches(leaf, groups, n=1, cutoff=0.6)
    lines += [_options_line(g) for g in concerned]
    return lines


def _focused_message(e: Exception, overrides: list[str], config_name: str) -> str:
    lines = [f"invalid override: {line}" if i == 0 else line for i, line in enumerate(_hydra_lines(str(e)))]
    cause = e.__cause__
    if isinstance(cause, OmegaConfBaseException) and getattr(cause, "full_key", None):
        lines += [f"  {line}" for line in _hydra_lines(str(cause))]
        lines += _key_typo_message(str(cause.full_key), overrides, config_name)
    elif isinstance(e, MissingConfigException) and e.missing_cfg_file:
        group, _, option = e.missing_cfg_file.partition("/")
        if group in config_groups():
            hint = _did_you_mean(option, group_options(group))
            if hint:
                lines.append(hint)
            if not e.options:  # Hydra listed nothing (nested groups such as experiment)
                lines.append(_options_line(group, option))
    lines.append("New keys can be added with '+key=value'; see `python -m common.launch --help`.")
    return "\n".join(lines)


def check_overrides(overrides: list[str], config_name: str = "train") -> DictConfig:
    """Compose the config with ``overrides`` (``hydra.*`` ones aside) and return it (with its ``hydra`` node);
    raise :class:`ConfigError` naming the problem and the options of the group concerned."""
    overrides = [o for o in overrides if not o.startswith(("hydra.", "hydra/", "-"))]
    try:
        return _compose(overrides, config_name, hydra_config=True)
    except (ConfigCompositionException, MissingConfigException, ConfigKeyError) as e:
        raise ConfigError(_focused_message(e, overrides, config_name)) from e


def _has_key(cfg: DictConfig, key: str) -> bool:
    """Whether the dotted ``key`` exists in ``cfg`` (a mandatory ``???`` value counts as existing)."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, DictConfig) or part not in node.keys():
            return False
        node = node._get_node(part)
    return True


def multirun_overrides(overrides: list[str], config_name: str = "train") -> list[str]:
    """The overrides of a multirun over experiments, with each plain ``key=value`` whose key only the experiments
    have turned into ``++key=value``.

    Hydra composes a multirun's overrides once on the root config before it sweeps (``experiment=a,b`` is not applied
    then), so ``model.sgld_steps=10`` fails there when only the HEAT experiments define ``model.sgld_steps``. Such a key
    is checked in every swept experiment instead: present in all of them, it is passed as ``++`` (applied to each run
    as a plain override would be); missing from some, :class:`ConfigError` names them. Group choices, ``hydra``
    overrides, ``+``/``++``/``~`` and keys of the root config are left as they are; without a sweep over
    ``experiment`` nothing changes.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.core.override_parser.types import OverrideType

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
        sweep = next((o for o in parsed if o.key_or_group == "experiment" and o.is_sweep_override()), None)
        experiments = list(sweep.sweep_string_iterator()) if sweep is not None else []
    except Exception:  # a form this check does not read (glob, range): Hydra reports it
        return overrides
    if not experiments:
        return overrides
    candidates = [
        i
        for i, o in enumerate(parsed)
        if o.type == OverrideType.CHANGE
        and not o.is_hydra_override()
        and o.package is None
        and "/" not in o.key_or_group
        and not (CONFIG_DIR / o.key_or_group.replace(".", "/")).is_dir()  # a config group choice
    ]
    if not candidates:
        return overrides
    root = _compose([], config_name)
    only_in_experiments = [i for i in candidates if not _has_key(root, parsed[i].key_or_group)]
    if not only_in_experiments:
        return overrides
    composed = {e: _compose([f"experiment={e}"], config_name) for e in experiments}
    out = list(overrides)
    for i in only_in_experiments:
        key = parsed[i].key_or_group
        lacking = [e for e, cfg in composed.items() if not _has_key(cfg, key)]
        if lacking:
            parent, _, leaf = key.rpartition(".")
            node = OmegaConf.select(composed[lacking[0]], parent) if parent else composed[lacking[0]]
            keys = sorted(str(k) for k in node.keys()) if isinstance(node, DictConfig) else []
            hint = _did_you_mean(leaf, keys)
            raise ConfigError(
                "\n".join(
                    [
                        f"invalid override: {overrides[i]}: no key {key!r} in the root config nor in "
                        f"experiment(s) {', '.join(lacking)} of this multirun",
                        *([hint] if hint else []),
                        *([f"Keys of {parent or 'the root config'} there: {', '.join(keys)}"] if keys else []),
                        "New keys can be added with '+key=value'; see `python -m common.launch --help`.",
                    ]
                )
            )
        out[i] = "++" + overrides[i]
    return out


# ---------------------------------------------------------------------------------------------- types
def _describe(ann: Any) -> str:
    origin = typing.get_origin(ann)
    if origin in (Union, types.UnionType):
        args = typing.get_args(ann)
        literals = [v for a in args if typing.get_origin(a) is Literal for v in typing.get_args(a)]
        rest = [_describe(a) for a in args if typing.get_origin(a) is not Literal]
        parts = ([_describe(Literal[tuple(literals)])] if literals else []) + rest
        return " or ".join(dict.fromkeys(parts))
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(ann))
    if ann is type(None):
        return "null"
    if origin is not None:
        return getattr(origin, "__name__", str(origin))
    return getattr(ann, "__name__", str(ann))


def _is_tensor_type(ann: Any) -> bool:
    return getattr(ann, "__module__", "") == "torch" and getattr(ann, "__name__", "") == "Tensor"


def accepts(ann: Any, value: Any) -> bool | None:
    """Whether ``value`` (a composed config value) fits the annotation ``ann``: True, False, or None (cannot tell)."""
    origin = typing.get_origin(ann)
    if ann is Any or ann is inspect.Parameter.empty or isinstance(ann, (str, typing.TypeVar)):
        return None
    if origin in (Union, types.UnionType):
        verdicts = [accepts(a, value) for a in typing.get_args(ann)]
        return True if True in verdicts else (None if None in verdicts else False)
    if origin is Literal:
        return value in typing.get_args(ann)
    if ann is type(None):
        return value is None
    if value is None or isinstance(value, (DictConfig, ListConfig)):
        if isinstance(value, ListConfig) and ann in (int, float, bool, str):
            return False
        return None
    if ann is bool:
        return isinstance(value, (bool, int))
    if ann is int:
        return isinstance(value, int)
    if ann is float or _is_tensor_type(ann):
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if ann is str:
        return True if isinstance(value, str) else None
    if inspect.isclass(ann) and (issubclass(ann, os.PathLike) or ann is Path):
        return isinstance(value, str) or None
    container = origin or ann
    if inspect.isclass(container) and issubclass(container, (collections.abc.Sequence, collections.abc.Mapping)):
        if issubclass(container, str):
            return None
        return False if isinstance(value, (bool, int, float)) else None
    return None


def _locate(target: str) -> Any:
    from hydra._internal.utils import _locate as locate

    return locate(target)


def _signature(fn: Any) -> tuple[inspect.Signature, dict[str, Any]] | None:
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    try:
        hints = typing.get_type_hints(fn.__init__ if inspect.isclass(fn) else fn)
    except Exception:
        hints = {n: p.annotation for n, p in sig.parameters.items() if not isinstance(p.annotation, str)}
    return sig, hints


def _check_node(node: DictConfig, path: str, problems: list[str]) -> None:
    try:
        target = node.get("_target_")
        fn = _locate(str(target))
    except Exception:
        return  # an import problem is reported by instantiate itself
    found = _signature(fn)
    if found is None:
        return
    sig, hints = found
    params = sig.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    name = f"{getattr(fn, '__module__', '')}.{getattr(fn, '__qualname__', target)}"
    for key in node.keys():
        key = str(key)
        if key.startswith("_"):
            continue
        if key not in params:
            if not takes_any:
                names = [
                    n for n, p in params.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n != "self"
                ]
                hint = _did_you_mean(key, names)
                problems.append(f"{path}{key}: {name} has no argument '{key}'. {hint}".rstrip())
            continue
        ann = hints.get(key, params[key].annotation)
        try:
            value = node[key]
        except Exception:
            continue
        if accepts(ann, value) is False:
            shown = value if not isinstance(value, (DictConfig, ListConfig)) else OmegaConf.to_container(value)
            problems.append(f"{path}{key}={shown!r}: expected {_describe(ann)} (argument of {name})")


def _walk(node: Any, path: str, problems: list[str]) -> None:
    if isinstance(node, DictConfig):
        if "_target_" in node:
            _check_node(node, path, problems)
        keys = [k for k in node.keys() if not (path == "" and k == "hydra")]
        for key in keys:
            try:
                child = node[key]
            except Exception:
                continue
            _walk(child, f"{path}{key}.", problems)
    elif isinstance(node, ListConfig):
        for i in range(len(node)):
            try:
                child = node[i]
            except Exception:
                continue
            _walk(child, f"{path}{i}.", problems)


def type_problems(cfg: DictConfig) -> list[str]:
    """One line per value whose type does not fit (see the module docstring); empty when all is well."""
    problems: list[str] = []
    for key, ann in TOP_LEVEL_TYPES.items():
        if key in cfg:
            try:
                value = cfg[key]
            except Exception:
                continue
            if accepts(ann, value) is False:
                problems.append(f"{key}={value!r}: expected {_describe(ann)}")
    _walk(cfg, "", problems)
    return problems


def check_types(cfg: DictConfig) -> None:
    """Raise :class:`ConfigError` listing every value whose type does not fit, one line each."""
    problems = type_problems(cfg)
    if problems:
        raise ConfigError("config error: " + "\nconfig error: ".join(problems))
