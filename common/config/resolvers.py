"""All OmegaConf resolvers of the project, registered once when :mod:`common` is imported.

- ``${eval:'1 + 2'}``: a Python expression over literals (used for derived sizes such as ``batch // m``).
- ``${method_of:roadmap/sop_resnet50}``: the method part of an experiment name (for wandb tags and groups).
- ``${run_dir:logs/demo/runs}``: a new, unique run folder under a parent (time to the millisecond and the process id;
  the SLURM job inside a SLURM job): :func:`common.utils.run_folder.new_run_dir`. Cached: one value per config.
- ``${job_type_of:${train}}``: the wandb job type, ``train`` when the run fits a model, ``eval`` when it only tests.
- ``${group_of:${method},${table},${experiment_name}}``: the wandb group, ``<method>/<table>`` for a paper-table run,
  else the experiment's name (so the seeds of one experiment share a group).
- ``${run_name_of:${row},${experiment_name},${seed}}``: the wandb run name, ``<row>-s<seed>`` (the experiment's last
  path part stands in for the row outside the paper tables).
- ``${basename:${experiment_name}}``: the last path part (``happier/sop_happier`` -> ``sop_happier``); the make
  targets name each job folder of a multirun after its experiment with it (``hydra.sweep.subdir``).
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


def _job_type_of(train: bool | None) -> str:
    return "train" if train else "eval"


def _group_of(method: str | None, table: str | None, experiment: str | None) -> str:
    if table:
        return f"{method}/{table}"
    return str(experiment) if experiment else "dev"


def _run_name_of(row: str | None, experiment: str | None, seed: int | None) -> str:
    stem = row or (str(experiment).split("/")[-1] if experiment else "run")
    return f"{stem}-s{seed}"


def _basename(path: str | None) -> str:
    return str(path).rstrip("/").split("/")[-1]


_RESOLVERS = {
    "eval": _safe_eval,
    "basename": _basename,
    "method_of": _method_of,
    "job_type_of": _job_type_of,
    "group_of": _group_of,
    "run_name_of": _run_name_of,
}


def register() -> None:
    for name, fn in _RESOLVERS.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
    if not OmegaConf.has_resolver("run_dir"):
        OmegaConf.register_new_resolver("run_dir", _run_dir, use_cache=True)


register()
