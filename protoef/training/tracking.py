"""Optional TensorBoard log of a run, for watching multi-hour GPU runs (``tensorboard: true``).

`fit` hands it the same dict that becomes the epoch's history row, so every column of
history.csv (loss terms, validation metrics, learning rates, wall clock and any column
added later, such as interpretability diagnostics) becomes a scalar, grouped by its prefix:
``train_loss`` → ``train/loss``, ``val_mae`` → ``val/mae``, ``lr_backbone`` → ``lr/backbone``.
Events go to ``RUN_DIR/tensorboard/``; watch them with ``tensorboard --logdir runs/``.

TensorBoard is an optional extra (``pip install -e .[monitor]``), so the base install does
not grow; asking for the log without it is an error that says so.
"""
from __future__ import annotations

import math
import numbers
import pathlib

__all__ = ["TensorBoardLog", "scalar_tag"]


def scalar_tag(column: str) -> str:
    """The TensorBoard tag of a history column: its first ``_`` becomes a ``/`` group."""
    group, _, name = column.partition("_")
    return f"{group}/{name}" if name else column


class TensorBoardLog:
    """One SummaryWriter for a run directory; `log` one row per epoch, then `close`."""

    def __init__(self, run_dir):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as error:  # torch raises this when the tensorboard package is missing
            raise RuntimeError("config.tensorboard is on but TensorBoard is not installed: "
                               "pip install -e '.[monitor]' (or pip install tensorboard), or set tensorboard=false") from error
        self.directory = pathlib.Path(run_dir) / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.directory))

    def log(self, row: dict, *, step: int) -> None:
        """Every finite number of `row` as a scalar at `step` (the epoch); flushed at once,
        so a run that is killed keeps every epoch it finished."""
        for column, value in row.items():
            if column == "epoch" or isinstance(value, bool) or not isinstance(value, numbers.Real):
                continue
            if math.isfinite(float(value)):
                self.writer.add_scalar(scalar_tag(column), float(value), global_step=step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
