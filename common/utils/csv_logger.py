"""Lightning's CSVLogger, made safe for a ``ddp_spawn`` fit followed by a test in new worker processes.

The problem: the logger's writer remembers the CSV columns (``metrics_keys``) in memory. Under ``ddp_spawn``
(``trainer=ddp_sim``) every ``trainer.fit`` / ``trainer.test`` runs in fresh worker processes that unpickle the
parent's logger, whose writer never saw the fit's columns. When the test writes its first row, the writer finds an
existing ``metrics.csv``, rewrites it with the test columns only, and Lightning 2.6 fails with ``ValueError: dict
contains fields not in fieldnames: 'lr-AdamW/backbone', ...``, after having truncated the file to that header (the
fit's rows are lost). Single-process runs and ``strategy=ddp`` (one process per rank for the whole script) are
unaffected.

The fix: before each save, the columns already in the file join the writer's columns, so a later stage adds its
columns to the header and keeps the earlier rows.
"""

from __future__ import annotations

import csv

from lightning.pytorch.loggers import CSVLogger as _LightningCSVLogger
from lightning.pytorch.utilities import rank_zero_only


class CSVLogger(_LightningCSVLogger):
    """``lightning.pytorch.loggers.CSVLogger`` whose columns survive a new process (see the module docstring)."""

    @rank_zero_only
    def save(self) -> None:
        writer = self.experiment
        path = writer.metrics_file_path
        if writer.metrics and writer._fs.isfile(path):
            with writer._fs.open(path, "r", newline="") as f:
                header = next(csv.reader(f), [])
            missing = [k for k in header if k not in writer.metrics_keys]
            if missing:
                writer.metrics_keys = sorted([*writer.metrics_keys, *missing])
        super().save()
