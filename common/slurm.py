"""SLURM helpers: show the job that ``hydra/launcher=slurm*`` would submit, without submitting it.

``python -m common.slurm experiment=roadmap/sop_resnet50 hydra/launcher=slurm_4gpu trainer=ddp`` prints the
``#SBATCH`` header that hydra-submitit-launcher's executor generates for that config, and the command each task
runs. Requeue on the time limit: the launcher configs ask SLURM for ``--signal=USR1@90``; Lightning's
``SLURMEnvironment(auto_requeue=True)`` catches it, saves ``hpc_ckpt_<n>.ckpt`` in the run directory and requeues
the job, which resumes from it (Lightning looks for it in ``trainer.default_root_dir``).
"""

from __future__ import annotations

import shlex
import sys
from typing import Any

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from common.utils.config_check import CONFIG_DIR

# hydra-submitit-launcher config key -> submitit's sbatch-string argument
_RENAMES = {"timeout_min": "time", "tasks_per_node": "ntasks_per_node", "name": "job_name"}
_DROP = {"_target_", "submitit_folder", "max_num_timeout", "mem_gb", "stderr_to_stdout"}


def sbatch_params(launcher: dict[str, Any]) -> dict[str, Any]:
    """Map a ``hydra.launcher`` config to ``submitit.slurm.slurm._make_sbatch_string`` keyword arguments."""
    params = {_RENAMES.get(k, k): v for k, v in launcher.items() if k not in _DROP and v is not None}
    if launcher.get("mem_gb"):
        params["mem"] = f"{launcher['mem_gb']}GB"
    params["additional_parameters"] = dict(launcher.get("additional_parameters") or {})
    return params


def dry_run(overrides: list[str]) -> str:
    """The sbatch script (header and command) for one job of ``python -m common.launch -m <overrides>``."""
    from submitit.slurm.slurm import _make_sbatch_string

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    if "slurm" not in str(cfg.hydra.launcher.get("_target_", "")).lower():
        raise ValueError(
            "pick a SLURM launcher, e.g. hydra/launcher=slurm (options: slurm, slurm_4gpu, slurm_multinode)"
        )
    OmegaConf.update(cfg, "hydra.job.name", "launch", force_add=True)
    launcher = OmegaConf.to_container(cfg.hydra.launcher, resolve=True)  # ${slurm.*} resolve against the job config
    job = "python -m common.launch -m " + " ".join(shlex.quote(o) for o in overrides)
    folder = launcher["submitit_folder"]
    # each array task runs submitit's runner on the pickled Hydra job (the multirun's overrides)
    script = _make_sbatch_string(
        command=f"python -u -m submitit.core._submit {folder}", folder=folder, **sbatch_params(launcher)
    )
    return f"# submitted by: {job}\n{script}"


def main(argv: list[str] | None = None) -> None:
    overrides = [a for a in (sys.argv[1:] if argv is None else argv) if a not in ("--dry-run", "-m")]
    print(dry_run(overrides))


if __name__ == "__main__":
    main()
