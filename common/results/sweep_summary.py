"""``make sweep-summary``: mean ± std over seeds of every configuration of a Hydra multirun.

A multirun folder holds one job folder per run (``<multirun>/<job num>/``), each with Hydra's
``.hydra/overrides.yaml`` (the command-line values of that job) and the launcher's ``metrics.json``. Jobs whose
overrides differ only in ``seed`` are one configuration: for each configuration and each ``test/`` metric this prints
``mean ± std (n seeds)`` (population std, as the tables use) and writes ``sweep_summary.json`` into the multirun
folder. Jobs that left no ``metrics.json`` (crashed, still running) are listed, never averaged in silently.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections import defaultdict
from pathlib import Path

import yaml


def _job_folders(multirun: Path) -> list[Path]:
    return sorted((p.parent.parent for p in multirun.glob("*/.hydra/overrides.yaml")), key=lambda p: p.name)


def _configuration(overrides: list[str]) -> tuple[tuple[str, ...], str | None]:
    """(the overrides without the seed, sorted; the seed or None)."""
    seed = next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0].lstrip("+~") == "seed"), None)
    rest = tuple(sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") != "seed"))
    return rest, seed


def _mean_std(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))


def summarise(multirun: Path, prefix: str = "test/") -> dict:
    """``{"configurations": [{"overrides", "seeds", "metrics": {key: {"mean", "std", "n"}}}], "unfinished": [...]}``."""
    jobs = _job_folders(multirun)
    if not jobs:
        raise FileNotFoundError(
            f"{multirun} holds no Hydra job folders (<job>/.hydra/overrides.yaml): give the folder of one multirun, "
            "e.g. logs/<task>/multiruns/<date>_<time>..."
        )
    groups: dict[tuple[str, ...], list[tuple[str | None, dict[str, float]]]] = defaultdict(list)
    unfinished = []
    for job in jobs:
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text()) or []
        config, seed = _configuration([str(o) for o in overrides])
        metrics_file = job / "metrics.json"
        if not metrics_file.is_file():
            unfinished.append(str(job))
            continue
        metrics = json.loads(metrics_file.read_text())
        groups[config].append((seed, {k: float(v) for k, v in metrics.items() if k.startswith(prefix)}))
    configurations = []
    for config, runs in sorted(groups.items()):
        keys = sorted(set().union(*(m.keys() for _, m in runs)))
        stats = {}
        for key in keys:
            values = [m[key] for _, m in runs if key in m and math.isfinite(m[key])]
            if values:
                mean, std = _mean_std(values)
                stats[key] = {"mean": mean, "std": std, "n": len(values)}
        configurations.append({"overrides": list(config), "seeds": [s for s, _ in runs], "metrics": stats})
    return {"multirun": str(multirun), "configurations": configurations, "unfinished": unfinished}


def newest_multirun(log_dir: Path) -> Path:
    candidates = [p for p in log_dir.glob("*/multiruns/*") if p.is_dir()]
    if not candidates:
        raise FileNotFoundError(f"no multirun under {log_dir}/<task>/multiruns/: run `make sweep-<name>` first")
    return max(candidates, key=lambda p: p.stat().st_mtime)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m common.results.sweep_summary", description=__doc__.splitlines()[0])
    parser.add_argument("multirun", nargs="?", type=Path, help="a multirun folder (default: the newest under logs/)")
    parser.add_argument("--log-dir", type=Path, default=Path("logs"))
    args = parser.parse_args(argv)
    try:
        multirun = args.multirun or newest_multirun(args.log_dir)
        summary = summarise(multirun)
    except FileNotFoundError as e:
        print(f"sweep-summary: {e}", file=sys.stderr)
        return 2
    (multirun / "sweep_summary.json").write_text(json.dumps(summary, indent=2))
    print(f"# {multirun}")
    for conf in summary["configurations"]:
        print(f"\n{' '.join(conf['overrides']) or '(no overrides)'}  seeds: {', '.join(map(str, conf['seeds']))}")
        for key, s in conf["metrics"].items():
            print(f"  {key:32s} {s['mean']:.4f} ± {s['std']:.4f}  (n={s['n']})")
    if summary["unfinished"]:
        print("\njobs without metrics.json (crashed or running; not averaged):")
        for job in summary["unfinished"]:
            print(f"  {job}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
