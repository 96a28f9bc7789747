"""SIGTERM and SIGINT stop a run cleanly: a mid-epoch checkpoint, then a non-zero exit.

SLURM sends SIGTERM at the time limit, on preemption and on ``scancel``; Ctrl+C sends SIGINT. Lightning alone exits
0 on SIGTERM without a checkpoint, and on Ctrl+C loses the batches of the current epoch. Here:

- :class:`InterruptHandler` (installed by :func:`common.launch.run` for the whole run, or by the callback) catches
  both signals. Inside the training loop it only records the signal; anywhere else (data setup, sanity check, test)
  it raises :class:`RunInterrupted` at once, since there is no training progress to save there.
- :class:`InterruptCheckpoint` acts on the recorded signal at the next point where Lightning's own checkpoints are
  consistent: the end of the current training batch (or of the epoch / its validation). It writes
  ``<checkpoint dir>/last.ckpt`` (atomically: a temporary file, then a rename) with everything an exact resume needs
  (model, optimizers, schedulers, loop counters, the RNG states of
  :class:`~common.callbacks.rng_state.RNGStateCallback` and the batch position of
  :class:`~common.data.resumable.ResumableDataLoader`), then raises :class:`RunInterrupted`.
- :class:`RunInterrupted` is a ``SystemExit`` with code ``128 + signal`` (143 for SIGTERM, 130 for SIGINT), so the
  process ends non-zero; the launcher marks the run folder ``interrupted`` and prints the command that resumes it.

A second Ctrl+C stops at once, without a checkpoint. Under DDP every rank takes the decision of any rank (one
all-reduce per batch), so all ranks write the same checkpoint and stop together. Under SLURM, Lightning's own
``USR1`` requeue handler (``SLURMEnvironment(auto_requeue=True)``) is left as it is; the SIGTERM that follows the
requeue is handled here.

DataLoader workers forked while the handler is installed inherit it and ignore both signals: the main process stops
them. Worker deaths after a signal (SLURM signals every process of the job) no longer raise in the middle of a step;
the loader reports them when it next fetches, at a batch boundary, where :meth:`InterruptCheckpoint.on_exception`
can still save a consistent checkpoint.
"""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path
from types import FrameType
from typing import Any

import lightning as L
from lightning.pytorch.trainer.states import TrainerFn

log = logging.getLogger(__name__)

__all__ = ["InterruptCheckpoint", "InterruptHandler", "RunInterrupted", "active_handler"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class RunInterrupted(SystemExit):
    """The run was stopped by ``signum``; ``checkpoint`` is the checkpoint written on the way out, if any."""

    def __init__(self, signum: int, checkpoint: Path | None = None, where: str = "") -> None:
        super().__init__(128 + int(signum))
        self.signum = int(signum)
        self.checkpoint = checkpoint
        self.where = where

    @property
    def signal_name(self) -> str:
        return signal.Signals(self.signum).name

    def __str__(self) -> str:
        saved = f"checkpoint {self.checkpoint}" if self.checkpoint else "no checkpoint written"
        return f"stopped by {self.signal_name}{' ' + self.where if self.where else ''} ({saved})"


_ACTIVE: InterruptHandler | None = None


def active_handler() -> InterruptHandler | None:
    """The handler installed in this process, if any."""
    return _ACTIVE


class InterruptHandler:
    """Process-wide SIGINT/SIGTERM handler; ``graceful`` is True while the training loop can stop at a batch end."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.received: int | None = None
        self.graceful = False
        self.checkpoint: Path | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> InterruptHandler:
        global _ACTIVE
        for sig in SIGNALS:
            self._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, self._handle)
        _ACTIVE = self
        return self

    def restore(self) -> None:
        global _ACTIVE
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous = {}
        if _ACTIVE is self:
            _ACTIVE = None

    def reassert(self) -> None:
        """Be the SIGINT/SIGTERM handler again (in the process that installed it), without changing what
        :meth:`restore` puts back. Lightning's fit wraps an existing SIGTERM handler with its own notifier, which
        under DDP runs a ``broadcast`` inside the signal handler of whichever rank got the signal: a collective that
        the other ranks never join, which desynchronises or kills the process group. The ranks' stop is decided
        here instead, by an all-reduce at a batch boundary (:class:`InterruptCheckpoint`)."""
        if os.getpid() != self.pid:
            return
        for sig in SIGNALS:
            if signal.getsignal(sig) != self._handle:
                try:
                    signal.signal(sig, self._handle)
                except ValueError:  # not the main thread: signals cannot be caught here
                    return

    def __enter__(self) -> InterruptHandler:
        return self.install()

    def __exit__(self, *exc: Any) -> None:
        self.restore()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if os.getpid() != self.pid:  # a forked DataLoader worker: the main process decides
            return
        first = self.received is None
        if first:
            self.received = signum
            # SLURM signals every process: a DataLoader worker may die now; let the loader report it at the next fetch
            # instead of torch's SIGCHLD handler raising in the middle of a step
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        if not self.graceful:
            raise RunInterrupted(signum)
        if not first and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl+C: stop now, without a checkpoint
        if first:
            log.warning(
                "%s received: saving a checkpoint at the end of this batch, then stopping (Ctrl+C again stops at once)",
                signal.Signals(signum).name,
            )


class InterruptCheckpoint(L.Callback):
    """Write ``last.ckpt`` at the first consistent point after SIGTERM/SIGINT and stop the run (see module docstring).

    Args:
        dirpath: where to write the checkpoint; default the ``ModelCheckpoint`` folder, else
            ``<default_root_dir>/checkpoints``.
        filename: the checkpoint's file name (``last.ckpt``: ``ckpt_path=<run>/checkpoints/last.ckpt`` always resumes
            from the newest state).
    """

    def __init__(self, dirpath: str | None = None, filename: str = "last.ckpt") -> None:
        self.dirpath = dirpath
        self.filename = filename
        self._own: InterruptHandler | None = None

    # -------------------------------------------------------------------------------------- window
    @property
    def handler(self) -> InterruptHandler | None:
        return active_handler()

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if active_handler() is None:
            try:
                self._own = InterruptHandler().install()
            except ValueError:  # not the main thread: signals cannot be caught here
                self._own = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.handler is not None:
            self.handler.reassert()  # after Lightning's signal connector has wrapped it (see reassert)
            self.handler.graceful = True

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.handler is not None:
            self.handler.graceful = False

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if self.handler is not None:
            self.handler.graceful = False
        if self._own is not None:
            self._own.restore()
            self._own = None

    # -------------------------------------------------------------------------------------- decisions
    def _signalled(self, trainer: L.Trainer) -> bool:
        mine = self.handler is not None and self.handler.received is not None
        if trainer.world_size > 1:  # any rank's signal stops every rank
            return bool(trainer.strategy.reduce_boolean_decision(mine, all=False))
        return mine

    def _stop(self, trainer: L.Trainer, where: str) -> None:
        handler = self.handler
        signum = handler.received if handler is not None and handler.received is not None else signal.SIGTERM
        path = self.save(trainer)
        if handler is not None:
            handler.checkpoint = path
        raise RunInterrupted(signum, path, where)

    def _where(self, trainer: L.Trainer) -> str:
        return f"at epoch {trainer.current_epoch}, global step {trainer.global_step}"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        if self._signalled(trainer):
            self._stop(trainer, self._where(trainer))

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._signalled(trainer):
            self._stop(trainer, self._where(trainer) + " (end of epoch)")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.FITTING and not trainer.sanity_checking and self._signalled(trainer):
            self._stop(trainer, self._where(trainer) + " (after validation)")

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        """After a signal, an exception raised between two batches (Lightning's own SIGTERM exit, a DataLoader worker
        killed by the same signal) leaves a consistent state: save it. Mid-batch, nothing is saved."""
        handler = self.handler
        if handler is None or handler.received is None or handler.checkpoint is not None:
            return
        if isinstance(exception, (RunInterrupted, KeyboardInterrupt)) or trainer.world_size > 1:
            return
        progress = trainer.fit_loop.epoch_loop.batch_progress.current
        between_batches = progress.ready == progress.completed
        if trainer.state.fn == TrainerFn.FITTING and trainer.training and between_batches:
            handler.checkpoint = self.save(trainer)

    # -------------------------------------------------------------------------------------- saving
    def checkpoint_path(self, trainer: L.Trainer) -> Path:
        folder = self.dirpath or getattr(trainer.checkpoint_callback, "dirpath", None)
        return Path(folder or Path(trainer.default_root_dir) / "checkpoints") / self.filename

    def save(self, trainer: L.Trainer) -> Path:
        path = self.checkpoint_path(trainer)
        tmp = path.with_name(f".{path.name}.tmp")
        if trainer.is_global_zero:
            path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save_checkpoint(tmp)  # collective under DDP; rank 0 writes
        if trainer.is_global_zero:
            os.replace(tmp, path)
            log.warning("interrupted %s: checkpoint written to %s", self._where(trainer), path)
        trainer.strategy.barrier("interrupt_checkpoint")
        return path
