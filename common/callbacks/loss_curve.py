"""A callback that keeps the training loss of every step, for plots of runs that have no logger (the demos)."""

from __future__ import annotations

from pathlib import Path

import lightning as L

__all__ = ["LossCurve"]


class LossCurve(L.Callback):
    """Records ``(global step, <key>)`` after every training batch; :meth:`write_csv` writes ``step,loss`` rows
    (the format ``make report`` reads from ``<demo out>/artifacts/<method>_curve_<model>.csv``)."""

    def __init__(self, key: str = "train/loss") -> None:
        self.key = key
        self.points: list[tuple[int, float]] = []

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch, batch_idx: int) -> None:
        value = trainer.callback_metrics.get(self.key)
        if value is not None:
            self.points.append((trainer.global_step, float(value)))

    def write_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("step,loss\n" + "".join(f"{step},{value:.6g}\n" for step, value in self.points))
        return path
