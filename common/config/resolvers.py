"""All OmegaConf resolvers of the project, registered once when :mod:`common` is imported.

- ``${eval:'1 + 2'}``: a Python expression over literals (used for derived sizes such as ``batch // m``).
- ``${method_of:roadmap/sop_resnet50}``: the method part of an experiment name (for wandb tags and groups).
- ``${run_dir:logs/demo/runs}``: a new, unique run folder under a parent (time to the millisecond and the process id;
  the SLURM job inside a SLURM job): :func:`common.utils.run_folder.new_run_dir`. Cached: one value per config.
"""

from __future__ import annotations

from omegaconf import OmegaConf


def _safe_eval(expr: str):
    """Evaluate an arithmetic expression with no builtins (configs must not run arbitrary code)."""
    return eval(str(expr), {"__builtins__": {}}, {"min": min, "max": max, "int": int, "round": round})


def _method_of(experiment: str | None) -> str:
    return str(experiment).split("/")[0] if experiment else "none"


def _run_dir(parent: str) -> str:
    from common.utils.run_folder import new_run_dir

    return new_run_dir(parent)


def register() -> None:
    for name, fn in (("eval", _safe_eval), ("method_of", _method_of)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", _run_dir, use_cache=True)


register()
