"""One attempt of a run, from claim to status: :class:`RunTracker` wraps the body of :func:`common.launch.run`.

On entry it claims the run folder (:func:`common.utils.run_folder.claim_run_folder`: ``status.json`` says
``running``) and installs the SIGINT/SIGTERM handler (:class:`common.callbacks.interrupt.InterruptHandler`). On exit it
records how the attempt ended:

- ``completed``: the body returned;
- ``interrupted``: SIGTERM/SIGINT (also Lightning's own SIGTERM exit and a Ctrl+C seen by Lightning). The process
  exits with ``128 + signal`` (:class:`~common.callbacks.interrupt.RunInterrupted`), and the message gives the exact
  command that resumes the run in the same folder;
- ``failed``: any other exception, recorded as ``"<type>: <message>"`` (then re-raised).

Only global rank 0 writes; other ranks use the folder as it is.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from torch.multiprocessing import ProcessExitedException

from common.callbacks.interrupt import InterruptHandler, RunInterrupted
from common.utils.run_folder import claim_run_folder, is_follower_rank, launch_command, resume_hint, task_overrides
from common.utils.runs import newest_checkpoint, now_iso, read_status, write_status

log = logging.getLogger(__name__)


def _sigterm_exception() -> type[BaseException] | None:
    try:
        from lightning.pytorch.utilities.exceptions import SIGTERMException
    except ImportError:  # pragma: no cover
        return None
    return SIGTERMException


class RunTracker:
    """Context manager for one attempt of a run in ``run_dir`` (see the module docstring).

    Attributes set for the caller: ``mode`` (how the folder is used: ``new``, ``resume``, ``requeue``,
    ``follower``) and ``undefined_metrics`` (metric names written as null; recorded in ``status.json``).
    """

    def __init__(
        self, run_dir: str | Path, *, experiment: str | None, task_name: str | None, ckpt_path: str | None
    ) -> None:
        self.run_dir = Path(run_dir)
        self.experiment, self.task_name, self.ckpt_path = experiment, task_name, ckpt_path
        self.overrides = task_overrides()
        self.mode = "follower"
        self.undefined_metrics: list[str] = []
        self.handler: InterruptHandler | None = None
        self.writer = not is_follower_rank()

    def __enter__(self) -> RunTracker:
        self.mode = claim_run_folder(
            self.run_dir,
            experiment=self.experiment,
            task_name=self.task_name,
            ckpt_path=self.ckpt_path,
            command=launch_command(self.overrides),
        )
        if threading.current_thread() is threading.main_thread():
            self.handler = InterruptHandler().install()
        return self

    # ------------------------------------------------------------------------------------------ exit
    def _interrupt_of(self, exc: BaseException) -> RunInterrupted | None:
        received = self.handler.received if self.handler is not None else None
        saved = self.handler.checkpoint if self.handler is not None else None
        if isinstance(exc, RunInterrupted):
            if exc.checkpoint is None and saved is not None:
                exc.checkpoint = saved
            return exc
        sigterm = _sigterm_exception()
        if sigterm is not None and isinstance(exc, sigterm):
            return RunInterrupted(received or signal.SIGTERM, saved)
        if isinstance(exc, KeyboardInterrupt):
            return RunInterrupted(signal.SIGINT, saved)
        # ddp_spawn: a rank process ended with RunInterrupted's exit code
        if isinstance(exc, ProcessExitedException) and exc.exit_code in (128 + signal.SIGINT, 128 + signal.SIGTERM):
            written = saved or newest_checkpoint(self.run_dir)  # the ranks wrote it before they exited
            return RunInterrupted(exc.exit_code - 128, written, f"(a spawned rank exited with code {exc.exit_code})")
        if received is not None:  # Lightning's sys.exit(1) after a Ctrl+C, or a worker killed by the same signal
            return RunInterrupted(received, saved, f"({type(exc).__name__}: {exc})")
        return None

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
        if self.handler is not None:
            self.handler.restore()
        if exc is None:
            self._record("completed")
            return False
        interrupt = self._interrupt_of(exc)
        if interrupt is None:
            error = f"{type(exc).__name__}: {exc}".strip()
            ckpt = newest_checkpoint(self.run_dir)
            hint = launch_command(self.overrides, ckpt.resolve()) if ckpt is not None else None
            self._record("failed", error=error[:4000], resume_command=hint)
            return False
        message, ckpt = resume_hint(self.run_dir, self.overrides, interrupt.checkpoint)
        if self.writer:
            print(f"\nRun {self.run_dir} interrupted: {interrupt}.\n{message}", file=sys.stderr, flush=True)
        self._record(
            "interrupted",
            signal=interrupt.signal_name,
            resume_command=launch_command(self.overrides, ckpt) if ckpt is not None else launch_command(self.overrides),
        )
        if interrupt is not exc:
            raise interrupt from exc
        return False

    def _record(self, status: str, **fields: Any) -> None:
        if not self.writer:
            return
        rec = read_status(self.run_dir) or {}
        ended = now_iso()
        attempts = rec.get("attempts") or [{}]
        attempts[-1] = {**attempts[-1], "ended": ended, "status": status}
        ckpt = newest_checkpoint(self.run_dir)
        rec.update(
            status=status,
            ended=ended,
            error=fields.get("error"),
            signal=fields.get("signal"),
            resume_command=fields.get("resume_command"),
            checkpoint=str(ckpt.relative_to(self.run_dir)) if ckpt is not None else None,
            undefined_metrics=list(self.undefined_metrics),
            attempts=attempts,
        )
        try:
            write_status(self.run_dir, rec)
        except OSError as e:  # the run's own outcome matters more than its record
            log.error("could not write %s/status.json: %s", self.run_dir, e)
