"""Write the run's result record (``common.results.record``) at the end of ``trainer.test``.

Configured in ``configs/callbacks/result_record.yaml`` (part of ``callbacks: default``). A run whose config sets no
``table``/``row`` (a run that belongs to no paper table) writes nothing and says so in the log.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger

from common.results.record import ROOT, write_record

__all__ = ["ResultRecordCallback", "command_line"]

log = logging.getLogger(__name__)


def command_line(argv: list[str] | None = None) -> str:
    """The command that started this process, as a user would type it (``python -m common.launch ...``)."""
    argv = list(sys.argv if argv is None else argv)
    script = Path(argv[0]).resolve() if argv else None
    if script is not None and script.suffix == ".py" and script.is_relative_to(ROOT):
        module = ".".join(script.relative_to(ROOT).with_suffix("").parts)
        return " ".join(["python", "-m", module, *argv[1:]])
    return " ".join(["python", *argv])


class ResultRecordCallback(L.Callback):
    """At the end of ``test``, write one record: the ``test/*`` metrics of the run with its method, table, row,
    dataset, backbone and seed, into ``records_dir`` and ``<run_dir>/record.json``.

    ``protocol`` in the record: the trainer's ``precision``, plus what the datamodule's ``record_protocol()`` returns
    when it has one (the few-shot ``sampling`` of GalLoP's data).

    The wall time runs from the creation of the callback (the launcher builds it just before the trainer) to the
    end of the test.
    """

    def __init__(
        self,
        method: str,
        table: str | None,
        row: str | None,
        seed: int | None,
        dataset: str | None = None,
        backbone: str | None = None,
        run_dir: str | None = None,
        records_dir: str | None = None,
    ) -> None:
        self.method, self.table, self.row, self.seed = method, table, row, seed
        self.dataset, self.backbone = dataset, backbone
        self.run_dir, self.records_dir = run_dir, records_dir
        self.start = time.monotonic()
        self.record = None

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if not self.table or not self.row:
            log.info("no result record: the config sets no `table`/`row` (the run belongs to no paper table)")
            return
        metrics = {}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("test/"):
                v = float(value.item() if isinstance(value, torch.Tensor) else value)
                metrics[key] = v if math.isfinite(v) else math.nan
        protocol = {"precision": str(trainer.precision)}
        record_protocol = getattr(getattr(trainer, "datamodule", None), "record_protocol", None)
        if callable(record_protocol):
            protocol.update(record_protocol())
        wandb_id = next((str(lg.version) for lg in trainer.loggers if isinstance(lg, WandbLogger)), None)
        self.record = write_record(
            method=self.method,
            table=str(self.table),
            row=str(self.row),
            seed=self.seed,
            metrics=metrics,
            records_dir=self.records_dir,
            run_dir=self.run_dir,
            dataset=self.dataset,
            backbone=self.backbone,
            command=command_line(),
            wall_time_s=round(time.monotonic() - self.start, 3),
            wandb_run_id=wandb_id,
            protocol=protocol,
        )
        log.info("result record written for %s/%s/%s (seed %s)", self.method, self.table, self.row, self.seed)
