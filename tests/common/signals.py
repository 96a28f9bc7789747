"""Test helpers: callbacks that make a signal (a SLURM preemption, a Ctrl+C) arrive in the middle of an epoch at a
reproducible point: sent by the run to itself (:class:`SignalAt`), or from outside while the run waits
(:class:`WaitForSignalAt`)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import lightning as L


class SignalAt(L.Callback):
    """Send ``signum`` (default SIGTERM) ``times`` times to this process when a batch starts: the training batch of
    global step ``step`` (0-based, ``stage="train"``) or the test batch ``step`` (``stage="test"``)."""

    def __init__(
        self, step: int, signum: int = signal.SIGTERM, times: int = 1, stage: str = "train", rank: int | None = None
    ) -> None:
        self.step, self.signum, self.times, self.stage, self.rank = step, int(signum), times, stage, rank

    def _send(self) -> None:
        for _ in range(self.times):
            os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        mine = self.rank is None or trainer.global_rank == self.rank  # under DDP: only that rank's process
        if self.stage == "train" and trainer.global_step == self.step and mine:
            self._send()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.stage == "test" and batch_idx == self.step:
            self._send()


class WaitForSignalAt(L.Callback):
    """At the start of training step ``step``, create the file ``marker`` and wait (at most ``timeout`` seconds) until
    the run's interrupt handler has received a signal: the test sends it from outside, as SLURM does, at a known
    point in the middle of an epoch."""

    def __init__(self, step: int, marker: str, timeout: float = 120.0, rank: int | None = None) -> None:
        self.step, self.marker, self.timeout, self.rank = step, marker, timeout, rank

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if trainer.global_step != self.step or (self.rank is not None and trainer.global_rank != self.rank):
            return
        from common.callbacks.interrupt import active_handler

        Path(self.marker).touch()
        deadline = time.monotonic() + self.timeout
        while active_handler() is not None and active_handler().received is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no signal arrived within {self.timeout} s of {self.marker}")
            time.sleep(0.05)
