"""Test helper: a callback that sends a signal to its own process at a chosen step (a SLURM preemption or a Ctrl+C
arriving in the middle of an epoch, at a reproducible point)."""

from __future__ import annotations

import os
import signal

import lightning as L


class SignalAt(L.Callback):
    """Send ``signum`` (default SIGTERM) ``times`` times to this process (``group=True``: to its process group) when
    a batch starts: the training batch of global step ``step`` (0-based, ``stage="train"``) or the test batch
    ``step`` (``stage="test"``)."""

    def __init__(
        self, step: int, signum: int = signal.SIGTERM, times: int = 1, stage: str = "train", group: bool = False
    ) -> None:
        self.step, self.signum, self.times, self.stage, self.group = step, int(signum), times, stage, group

    def _send(self) -> None:
        for _ in range(self.times):
            if self.group:  # every process of the job, DataLoader workers included (what SLURM and Ctrl+C do)
                os.killpg(os.getpgid(0), self.signum)
            else:
                os.kill(os.getpid(), self.signum)

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch, batch_idx: int) -> None:
        if self.stage == "train" and trainer.global_step == self.step:
            self._send()

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.stage == "test" and batch_idx == self.step:
            self._send()
