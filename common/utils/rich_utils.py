"""Rich printing of the config tree and the final metrics table."""

from __future__ import annotations

import math
from collections.abc import Mapping

import rich
import rich.syntax
import rich.table
import rich.tree
from omegaconf import DictConfig, OmegaConf

ORDER = ("data", "model", "callbacks", "logger", "trainer", "paths", "extras")


def print_config_tree(cfg: DictConfig, resolve: bool = False) -> None:
    tree = rich.tree.Tree("CONFIG", style="dim", guide_style="dim")
    keys = [k for k in ORDER if k in cfg] + [k for k in cfg if k not in ORDER]
    for key in keys:
        branch = tree.add(str(key), style="bold", guide_style="dim")
        value = cfg[key]
        text = OmegaConf.to_yaml(value, resolve=resolve) if isinstance(value, DictConfig) else str(value)
        branch.add(rich.syntax.Syntax(text, "yaml"))
    rich.print(tree)


def print_metrics_table(metrics: Mapping[str, float | None], title: str = "metrics") -> None:
    table = rich.table.Table(title=title)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for k in sorted(metrics):
        v = metrics[k]
        table.add_row(k, f"{v:.4f}" if v is not None and math.isfinite(v) else "undefined")
    rich.print(table)
