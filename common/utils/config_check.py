"""Check command-line overrides before Hydra runs, so that a typo gets a message naming the valid choices."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigKeyError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


class ConfigError(ValueError):
    """An override names an unknown key or config group option."""


def group_options(group: str) -> list[str]:
    """The options of a config group, e.g. ``group_options("trainer") -> ["cpu", "ddp", ...]``."""
    folder = CONFIG_DIR / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def check_overrides(overrides: list[str], config_name: str = "train") -> None:
    """Compose the config with ``overrides``; raise :class:`ConfigError` with Hydra's message and the valid options."""
    overrides = [o for o in overrides if not o.startswith(("hydra.", "hydra/", "-"))]
    try:
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            compose(config_name=config_name, overrides=overrides)
    except (ConfigCompositionException, MissingConfigException, ConfigKeyError) as e:
        msg = str(e)
        cause = e.__cause__
        if cause is not None and str(cause) not in msg:
            msg += f"\n{cause}"
        groups = [p.name for p in sorted(CONFIG_DIR.iterdir()) if p.is_dir() and p.name not in ("local",)]
        lines = [f"invalid override: {msg}", "Valid config groups and their options:"]
        for g in groups:
            lines.append(f"  {g}: {', '.join(group_options(g))}")
        lines.append("Keys that do not exist yet can be added with '+key=value'; see `python -m common.launch --help`.")
        raise ConfigError("\n".join(lines)) from e
